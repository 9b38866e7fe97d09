"""The stage registry: `use:` names and `class:` paths to stage classes.

Every stage, built-in or plug-in, is an entry point in the group `tamis.stages` (tamis's own are
declared in `pyproject.toml`), so the engine never imports a stage family by name. A job may also
name any class directly (`class: my_pkg.module:MyScorer`). References to the layout before
tamis 0.2 (`scorers.signals:SignalsScorer`) get an error naming the new path.
"""
from __future__ import annotations

import importlib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tamis.pipeline.stage import GlobalStage, Scorer, Stage

GROUP = "tamis.stages"
OLD_GROUP = "tamis.scorers"  # the group's name before tamis 0.2

# Modules and classes of the layout before tamis 0.2 (top-level `pipeline`, `scorers`, `mixers`).
MOVED_MODULES = {
    "scorers.filter": "tamis.scorers.filter", "scorers.signals": "tamis.scorers.signals",
    "scorers.langid": "tamis.scorers.langid", "scorers.gopher_quality": "tamis.scorers.gopher.quality",
    "scorers.gopher_repetition": "tamis.scorers.gopher.repetition",
    "scorers.unique_ids": "tamis.scorers.dedup.unique_ids", "scorers.exact_dedup": "tamis.scorers.dedup.exact",
    "scorers.minhash_dedup": "tamis.scorers.dedup.minhash", "scorers.semantic_dedup": "tamis.scorers.dedup.semantic",
    "scorers.perplexity": "tamis.scorers.perplexity.model", "scorers.kenlm_scorer": "tamis.scorers.perplexity.kenlm",
    "scorers.ppl_bucket": "tamis.scorers.perplexity.bucket", "scorers.rater": "tamis.scorers.meta_rater.rater",
    "scorers.decontaminate": "tamis.scorers.decontamination.decontaminate", "scorers.base": "tamis.pipeline.stage",
    "scorers": "tamis.pipeline.stage", "mixers.embed": "tamis.mixers.embed", "mixers.kmeans": "tamis.mixers.kmeans",
    "mixers.cluster_sampler": "tamis.mixers.cluster_sample", "mixers.quality_weights": "tamis.mixers.quality_weights",
    "mixers.mixture": "tamis.mixers.mixture",
}
MOVED_CLASSES = {"SignalsScorer": "Signals", "GopherQualityScorer": "GopherQuality",
                 "GopherRepetitionScorer": "GopherRepetition", "PerplexityScorer": "Perplexity",
                 "KenLMScorer": "KenLM", "LangIdScorer": "LangId", "RaterScorer": "Rater", "EmbedScorer": "Embed",
                 "KMeansStage": "KMeans", "ClusterSampler": "ClusterSample", "MixtureSampler": "Mixture"}
OLD_TOP_LEVEL = ("pipeline", "scorers", "mixers")


class UnknownStage(LookupError):
    """A `use:` name or `class:` path that does not resolve to a stage class."""


ENTRY_POINTS_FILE = "_entry_points.json"  # the registry shipped with code to a cluster (`tamis submit`)


class _Ref:
    """An entry point read from `ENTRY_POINTS_FILE` (`name = module:attr`)."""

    def __init__(self, value: str):
        self.value = value

    def load(self):
        module, _, attr = self.value.partition(":")
        return getattr(importlib.import_module(module), attr)


def _entry_points() -> dict:
    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    shipped = Path(__file__).with_name(ENTRY_POINTS_FILE)
    if shipped.is_file():  # code shipped without package metadata: the submitting machine's registry
        for name, value in json.loads(shipped.read_text()).items():
            eps.setdefault(name, _Ref(value))
    return eps


def registered() -> dict[str, str]:
    """{`use:` name: `module:Class`} of every registered stage."""
    return {name: ep.value for name, ep in sorted(_entry_points().items())}


def stage_names() -> list[str]:
    """Every registered `use:` name."""
    return sorted(_entry_points())


def stage_class(name: str) -> type[Stage]:
    """The class registered under `use: name`."""
    eps = _entry_points()
    if name not in eps:
        if any(ep.name == name for ep in entry_points(group=OLD_GROUP)):
            raise UnknownStage(f"stage {name!r} is registered in the entry-point group {OLD_GROUP!r} of "
                               f"tamis before 0.2; register it in {GROUP!r} instead")
        raise UnknownStage(f"unknown stage {name!r}; known: {', '.join(sorted(eps))}")
    return _checked(eps[name].load(), name)


def load_class(ref: str, job_dir: Path | None = None) -> type[Stage]:
    """Resolve a `use:` name or a `class: pkg.module:Class` path (importable from the shell's folder
    or the job file's folder)."""
    if ":" not in ref:
        return stage_class(ref)
    module, _, attr = ref.partition(":")
    if module.split(".")[0] in OLD_TOP_LEVEL and module not in sys.modules:
        new = MOVED_MODULES.get(module)
        hint = f"{new}:{MOVED_CLASSES.get(attr, attr)}" if new else f"tamis.{ref}"
        raise UnknownStage(f"{ref!r} names the layout before tamis 0.2; tamis's modules now live under "
                           f"`tamis.`: use {hint!r} (or its `use:` name)")
    for extra in (str(Path.cwd()), str(job_dir)) if job_dir else (str(Path.cwd()),):
        if extra not in sys.path:
            sys.path.append(extra)  # `class: my_module:MyScorer` next to the job file or the shell
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as e:
        raise UnknownStage(f"cannot import {ref!r}: {e}") from None
    except AttributeError:
        raise UnknownStage(f"module {module!r} has no class {attr!r}") from None
    return _checked(cls, ref)


def _checked(cls, ref: str) -> type[Stage]:
    if not (isinstance(cls, type) and issubclass(cls, (Scorer, GlobalStage))):
        raise UnknownStage(f"{ref!r} is not a tamis.pipeline.stage.Scorer or GlobalStage subclass")
    return cls
