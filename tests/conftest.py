"""Shared fixtures: the shared real-text corpus and one Ray session for the whole test run."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()

try:  # STYLE rule 3: a Python UDF in polars is a bug in tamis.
    import polars as pl
    warnings.filterwarnings("error", category=pl.exceptions.PolarsInefficientMapWarning)
except Exception:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"shared corpus not found at {CORPUS}: tests expect ../shared/corpus beside the repo")
    return CORPUS


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for every test that needs it (starting Ray costs seconds)."""
    from tamis.pipeline.runner import session as ray_runner

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray_runner.init_ray(address=None, num_cpus=2, object_store_memory=512 * 1024**2)
    yield
    ray_runner.shutdown_ray()


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread in this process: on a shared 2-core machine two spinning threads are slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
