"""`Data`: the few distributed operations a global stage may use, with an in-memory twin.

Global stages (`tamis.pipeline.stage.GlobalStage`) are written against this interface only, so they run the
same on a laptop (`LocalData`, used in unit tests) and on a Ray cluster (`tamis.pipeline.runner.ray_data.RayData`,
backed by Ray Data). Only `to_arrow()` and `sample()` bring rows to the caller: use them for results
that stay small (centroids, duplicate edges), never for the corpus itself.
"""
from __future__ import annotations

from typing import Callable, Iterator, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BatchFn = Callable[[pa.Table], pa.Table]


class Data(Protocol):
    def map_batches(self, fn: BatchFn) -> "Data": ...
    def groupby_map(self, keys: list[str], fn: BatchFn) -> "Data":
        """Call `fn` once per group with all of that group's rows; concatenate the outputs.
        For a few large groups (clusters, buckets, domains)."""
    def partition_map(self, keys: list[str], fn: BatchFn) -> "Data":
        """Call `fn` on tables of whole groups (all rows of a key in one call, any number of groups
        per call; maybe zero rows); concatenate the outputs. For many small groups, such as dedup
        keys, with a vectorized `fn` (polars `over`): no Python call per group."""
    def sample(self, n: int, seed: int = 0) -> pa.Table: ...
    def iter_batches(self, batch_size: int = 65536) -> Iterator[pa.Table]: ...
    def to_arrow(self) -> pa.Table: ...
    def count(self) -> int: ...
    def from_arrow(self, table: pa.Table) -> "Data":
        """A `Data` of the same kind holding `table` (for results a stage builds itself)."""
    def union(self, other: "Data") -> "Data":
        """The rows of both (same column names and types), for joins done as a `partition_map`."""
    def materialize(self) -> "Data":
        """Computed once and kept (in the object store on Ray): iterative algorithms call it
        each round so a round does not re-run the whole lineage."""
    def map_tasks(self, fn: Callable, items: list, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                  desc: str | None = None) -> list:
        """`[fn(item) for item in items]`, as parallel tasks where the data lives (Ray tasks on a
        cluster); for coarse work inside `fit`, such as training one proxy model per item."""


class LocalData:
    """`Data` over one in-memory Arrow table. `map_tasks` runs in this process unless a task runner
    with `map_tasks`' signature is given (the runner passes Ray's when it fits on the driver)."""

    def __init__(self, table: pa.Table, tasks: Callable | None = None):
        self.table = table
        self.tasks = tasks

    def map_batches(self, fn: BatchFn) -> "LocalData":
        return LocalData(fn(self.table), self.tasks)

    def groupby_map(self, keys: list[str], fn: BatchFn) -> "LocalData":
        t = self.table
        if t.num_rows == 0:
            return LocalData(fn(t), self.tasks)
        order = pc.sort_indices(t, [(k, "ascending") for k in keys])
        t = t.take(order)
        key_cols = [t[k].to_numpy(zero_copy_only=False) for k in keys]
        change = np.zeros(t.num_rows, dtype=bool)
        change[0] = True
        for col in key_cols:
            change[1:] |= col[1:] != col[:-1]
        starts = np.append(np.flatnonzero(change), t.num_rows).tolist()
        outs = [fn(t.slice(a, b - a)) for a, b in zip(starts[:-1], starts[1:])]
        outs = [o for o in outs if o is not None and o.num_rows]
        if not outs:
            return LocalData(fn(t.slice(0, 0)), self.tasks)
        return LocalData(pa.concat_tables(outs, promote_options="permissive"), self.tasks)

    def partition_map(self, keys: list[str], fn: BatchFn) -> "LocalData":
        return LocalData(fn(self.table), self.tasks)

    def sample(self, n: int, seed: int = 0) -> pa.Table:
        if n >= self.table.num_rows:
            return self.table
        idx = np.sort(np.random.default_rng(seed).choice(self.table.num_rows, n, replace=False))
        return self.table.take(pa.array(idx))

    def iter_batches(self, batch_size: int = 65536) -> Iterator[pa.Table]:
        for b in self.table.to_batches(max_chunksize=batch_size):
            yield pa.Table.from_batches([b])

    def to_arrow(self) -> pa.Table:
        return self.table

    def count(self) -> int:
        return self.table.num_rows

    def from_arrow(self, table: pa.Table) -> "LocalData":
        return LocalData(table, self.tasks)

    def union(self, other: "LocalData") -> "LocalData":
        return LocalData(pa.concat_tables([self.table, other.to_arrow()], promote_options="permissive"), self.tasks)

    def materialize(self) -> "LocalData":
        return self

    def map_tasks(self, fn: Callable, items: list, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                  desc: str | None = None) -> list:
        if self.tasks is not None:
            return self.tasks(fn, items, num_cpus=num_cpus, num_gpus=num_gpus, desc=desc)
        return [fn(item) for item in items]
