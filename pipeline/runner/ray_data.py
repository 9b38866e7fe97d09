"""`RayData`: the `tamis.pipeline.data.Data` contract over a Ray Dataset, and reads of the Parquet
files tamis wrote itself (segments)."""
from __future__ import annotations

import os
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from tamis.pipeline.data import LocalData
from tamis.pipeline.readers import conform, unify_types
from tamis.pipeline.runner.session import cluster_cpus, map_tasks

LOCAL_GROUPBY_ROWS = 300_000
SEGMENT_TASK_BYTES = 64 << 20


def to_table(b) -> pa.Table:
    return b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else pa.table(b)


class RayData:
    """`Data` backed by a Ray Dataset (see `tamis.pipeline.data` for the contract).

    `rows` is the number of documents behind the view when known. Below `LOCAL_GROUPBY_ROWS` a
    `groupby_map` or `partition_map` collects its (narrow, key-only) input and groups in memory, which
    is seconds faster than a Ray hash shuffle; above it, the shuffle runs across the cluster.
    """

    def __init__(self, ds: "ray.data.Dataset", rows: int | None = None):
        self.ds = ds
        self.rows = rows

    def map_batches(self, fn):
        return RayData(self.ds.map_batches(fn, batch_format="pyarrow"), self.rows)

    def map_tasks(self, fn: Callable, items: list, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                  desc: str | None = None) -> list:
        return map_tasks(fn, items, num_cpus=num_cpus, num_gpus=num_gpus, desc=desc)

    def _local(self):
        if self.rows is not None and self.rows <= LOCAL_GROUPBY_ROWS:
            return LocalData(self.to_arrow(), map_tasks)
        return None

    def _partitions(self) -> int:
        # a partition must stay one block (Ray Data splits blocks past 128 MiB): <= 1M narrow key rows
        return max(2 * cluster_cpus(), -(-(self.rows or 0) // 1_000_000), 2)

    def groupby_map(self, keys, fn):
        if (local := self._local()) is not None:
            return local.groupby_map(list(keys), fn)
        return RayData(self.ds.groupby(list(keys), num_partitions=self._partitions()).map_groups(
            fn, batch_format="pyarrow"))

    def partition_map(self, keys, fn):
        if (local := self._local()) is not None:
            return local.partition_map(list(keys), fn)
        return RayData(self.ds.repartition(self._partitions(), shuffle=True, keys=list(keys)).map_batches(
            fn, batch_size=None, batch_format="pyarrow"))

    def sample(self, n: int, seed: int = 0) -> pa.Table:
        total = self.count()
        if total == 0:
            return self.to_arrow()
        frac = min(1.0, 1.2 * n / total)
        got = to_table(self.ds.random_sample(frac, seed=seed).take_batch(
            n, batch_format="pyarrow") if frac < 1.0 else self.ds.take_batch(n, batch_format="pyarrow"))
        return got.slice(0, n)

    def iter_batches(self, batch_size: int = 65536) -> Iterator[pa.Table]:
        for b in self.ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            yield to_table(b)

    def to_arrow(self) -> pa.Table:
        blocks = [to_table(b) for b in self.ds.iter_batches(batch_size=None, batch_format="pyarrow")]
        blocks = [b for b in blocks if b.num_rows]
        return pa.concat_tables(blocks, promote_options="permissive") if blocks else pa.table({})

    def count(self) -> int:
        return self.ds.count()

    def from_arrow(self, table: pa.Table) -> "RayData":
        return RayData(ray.data.from_arrow(table))

    def union(self, other) -> "RayData":
        ds = other.ds if isinstance(other, RayData) else ray.data.from_arrow(other.to_arrow())
        return RayData(self.ds.union(ds))

    def materialize(self) -> "RayData":
        return RayData(self.ds.materialize(), self.rows)


def over_files(files: list[str], read, tasks: int):
    """A dataset of `tasks` read tasks, each calling generator `read` on its share of `files` (a
    table with a `path` column)."""
    ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, tasks))
    return ds.map_batches(read, batch_size=None, batch_format="pyarrow")  # retried by Ray Data (session.py)


def read_segments(files: list[str], columns: list[str] | None = None, unit_root: str | None = None):
    """A dataset over Parquet files tamis wrote itself, ~64 MB of files per read task. With
    `unit_root`, a `path` column names each row's file relative to that folder (its resume unit).

    `ray.data.read_parquet` starts metadata actors on every call (seconds of CPU each on a small
    machine), and one task per batch-sized segment file costs more in scheduling than in reading.
    """
    schema = unify_types(pq.read_schema(f) for f in files)  # types drift between input files
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns if c in schema.names])

    def read(batch: pa.Table):
        for path in batch["path"].to_pylist():
            t = conform(pq.read_table(path, columns=columns), schema)
            if unit_root is not None:
                t = t.append_column("path", pa.array([os.path.relpath(path, unit_root)] * t.num_rows, pa.string()))
            yield t

    size = sum(os.path.getsize(f) for f in files)
    return over_files(files, read, min(len(files), max(2 * cluster_cpus(), -(-size // SEGMENT_TASK_BYTES))))
