"""The two stage shapes every tamis stage takes: a per-batch `Scorer` and a `GlobalStage`.

A scorer computes columns from an Arrow batch and does nothing else: it never drops rows, edits
`text` or writes files. Keep/reject decisions are filter rules in the job spec (`keep:`), compiled by
`pipeline.rules`. A global stage needs the whole dataset (dedup, k-means, sampling): it is an
estimator with `fit(data) -> self` over a `pipeline.data.Data` view and a per-batch `transform`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.data import Data


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs. `actors` sizes the pool of a stateful stage."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int | None = None
    actors: int | None = None

    def __post_init__(self):
        if self.cpus <= 0 and self.gpus <= 0:
            raise ValueError("a stage needs cpus > 0 or gpus > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.actors is not None and self.actors < 1:
            raise ValueError("actors must be >= 1")


class Stage:
    """Shared parts of scorers and global stages: name, columns, parameters, validation.

    `__init__` of a subclass only stores its keyword parameters (scikit-learn style), so a stage
    pickles cheaply and converts back to the job spec with `get_params()`.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ("text",)
    columns: ClassVar[dict[str, pa.DataType]] = {}
    resources: ClassVar[Resources] = Resources()
    packages: ClassVar[tuple[str, ...]] = ()
    # Rules (reason -> expression over `columns`) used when a job says `keep: default`.
    default_keep: ClassVar[dict[str, str]] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.param_names()}

    def required_columns(self) -> tuple[str, ...]:
        """Columns this instance reads; override when they depend on parameters."""
        return tuple(self.requires)

    def output_columns(self) -> dict[str, pa.DataType]:
        """Columns this instance adds; override when they depend on parameters."""
        return dict(self.columns)

    def default_rules(self) -> dict[str, str]:
        """The rules `keep: default` stands for; override when they depend on parameters."""
        return dict(self.default_keep)

    def validate(self) -> None:
        """Check parameters when the job loads; raise ValueError naming the parameter."""

    def prepare(self) -> None:
        """Runs once on the driver before the job starts (e.g. train a missing reference model)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Scorer(Stage):
    """Adds columns to a batch. Subclasses set `name`, `columns` and implement `score`.

    `setup()` runs once per worker before the first batch (load models there); a scorer that
    overrides it runs as a Ray actor pool, otherwise as stateless tasks.
    """

    def setup(self) -> None:
        """Load models or other per-worker state (default: nothing)."""

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    @classmethod
    def is_stateful(cls) -> bool:
        return cls.setup is not Scorer.setup


class GlobalStage(Stage):
    """Needs the whole dataset: `fit(data)` learns state (names end in `_`), `transform` applies it.

    `fit` receives a `pipeline.data.Data` over the live rows, restricted to `requires` plus `id`.
    It may set `decisions_`, a table (or `Data`) keyed by `id`; the runner joins it back onto every
    row before `transform(batch)`, so per-document results never pass through the driver.
    `transform` returns the stage's output columns for the batch (rows missing from `decisions_`
    carry nulls in the joined columns).
    """

    # Columns that identify a row in `decisions_` (ids are unique once `unique_ids` has run).
    join_on: ClassVar[tuple[str, ...]] = ("id",)

    def fit(self, data: "Data") -> "GlobalStage":
        raise NotImplementedError

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    def report(self) -> dict:
        """Extra figures for this stage's report (component sizes, clusters, ...)."""
        return {}


def check_fitted(stage: Stage, *attrs: str) -> None:
    missing = [a for a in attrs if not hasattr(stage, a)]
    if missing:
        raise RuntimeError(f"{type(stage).__name__} is not fitted: call fit() first (missing {missing})")
