"""The three stage shapes every tamis stage takes: a per-batch `Scorer`, its text-rewriting
variant `Editor`, and a `GlobalStage`.

A scorer computes columns from an Arrow batch and does nothing else: it never drops rows, edits
`text` or writes files. An editor is the one kind that rewrites `text` (PII redaction, line
cleaning, main-text extraction), and the runner accounts for every edit. Keep/reject decisions are filter rules in the job spec (`keep:`), compiled by
`tamis.pipeline.rules`. A global stage needs the whole dataset (dedup, k-means, sampling): it is an
estimator with `fit(data) -> self` over a `tamis.pipeline.data.Data` view and a per-batch `transform`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pragma: no cover
    from tamis.pipeline.data import Data


ORIGINAL_TEXT = "text_original"  # the text before the first editing stage that keeps it


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
    # True for a stage whose output includes a new `text` (every `Editor`; a global stage may set it
    # and return `text` from `transform`, e.g. cross-document paragraph dedup).
    edits_text: ClassVar[bool] = False
    keep_original: bool = False  # an editing stage keeps the text before its edit in `text_original`

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
        """Columns this instance adds (not `text`); override `columns` when they depend on parameters."""
        cols = dict(self.columns)
        if self.edits_text and self.keep_original:
            cols[ORIGINAL_TEXT] = pa.large_string()
        return cols

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


class Editor(Scorer):
    """Rewrites `text`. Subclasses set `name`, `columns` (their per-row edit counters) and implement
    `edit(batch) -> {"text": new texts, **columns}`, one value per row, in the batch's order.

    The runner replaces `text` of the live rows with the returned values, so later stages (rules,
    dedup, export) see the edited text. For every editor it also
    - rejects a row whose text the edit left empty or blank (reason `emptied`), or None;
    - counts `rows_edited` and `chars_removed` (net) in the stage's report;
    - keeps the text as it was before the first keeping editor in `text_original` when the stage
      has `keep_original=True` (a parameter every editor takes; off by default: it doubles the
      text on disk).
    `setup()` works as for scorers (an actor pool when overridden).
    """

    edits_text = True

    def edit(self, batch: pa.Table) -> dict[str, pa.Array]:
        raise NotImplementedError

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        return self.edit(batch)


class GlobalStage(Stage):
    """Needs the whole dataset: `fit(data)` learns state (names end in `_`), `transform` applies it.

    `fit` receives a `tamis.pipeline.data.Data` over the live rows, restricted to `requires` plus `id`.
    It may set `decisions_`, a table (or `Data`) keyed by `id`; the runner joins it back onto every
    row before `transform(batch)`, so per-document results never pass through the driver.
    `transform` returns the stage's output columns for the batch (rows missing from `decisions_`
    carry nulls in the joined columns), plus `text` when the stage sets `edits_text` (then the
    runner treats it as an editor: see `Editor`).
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


def join_decisions(batch: pa.Table, decisions: pa.Table, keys: tuple[str, ...] = ("id",)) -> pa.Table:
    """`batch` with the columns of `decisions` (a fitted stage's `decisions_`) joined by `keys`.

    This is how a global stage's decisions reach its `transform`: the runner calls
    `transform(join_decisions(live_rows, decisions_, join_on))` on every batch, on any worker. Decision
    columns replace batch columns of the same name; rows without a decision get nulls. Keys of any
    type match by their string form.
    """
    pos = pc.index_in(_join_key(batch, keys), value_set=_join_key(decisions, keys))
    cols = [c for c in decisions.column_names if c not in keys]
    batch = batch.drop_columns([c for c in cols if c in batch.column_names])
    for col in cols:
        batch = batch.append_column(col, decisions[col].take(pos))
    return batch


def _join_key(table: pa.Table, keys: tuple[str, ...]) -> pa.Array:
    if len(keys) == 1:
        return table[keys[0]].cast(pa.string())
    return pc.binary_join_element_wise(*[table[k].cast(pa.string()) for k in keys], "\x1f")


def check_fitted(stage: Stage, *attrs: str) -> None:
    missing = [a for a in attrs if not hasattr(stage, a)]
    if missing:
        raise RuntimeError(f"{type(stage).__name__} is not fitted: call fit() first (missing {missing})")
