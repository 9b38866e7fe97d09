"""`tamis export` on Ray: the three passes of `tamis.pipeline.export.work` as plain Ray tasks.

pass 1  one task per input unit: tokenize (one tokenizer per task), spill tokens + document table
pass 2  one task per key-range bucket: gather its document copies from every unit, sort by key
pass 3  one task per shard: cut from the ordered buckets, write the shard's files
The driver holds only per-unit counts and one bucket's token lengths at a time (for the cuts).
"""
from __future__ import annotations

from tamis.pipeline.export import shuffle, work
from tamis.pipeline.runner.session import init_ray, map_tasks


def _call(job: tuple):
    """`fn(*args, item)`: Ray's remote wants a plain function, not a `functools.partial`."""
    fn, args, item = job
    return fn(*args, item)


def _local(fn, items, **_):
    return [fn(i) for i in items]


def run_export(settings: dict, output, *, restart: bool = False, local: bool = False,
               address: str | None = None, num_cpus: int | None = None) -> tuple[dict, bool]:
    """(manifest, already complete) of the export of `settings` into `output`, resuming a killed one."""
    folder = work.ExportFolder(output)
    if folder.prepare(settings, restart):
        import json
        return json.loads(folder.manifest_file.read_text()), True
    root = str(folder.root)
    if not local:
        init_ray(address=address, num_cpus=num_cpus)

    def run(fn, args, items, desc):
        jobs = [(fn, args, i) for i in items]
        return _local(_call, jobs) if local else map_tasks(_call, jobs, desc=desc)

    records = run(work.tokenize_unit, (settings, root), work.units(settings), "tokenize")
    plan = work.make_plan(settings, records)
    run(work.bucket_task, (settings, root, plan), list(range(plan["n_buckets"])), "shuffle")
    cuts = shuffle.cuts(work.bucket_lengths(root, plan["n_buckets"]), settings["shard_tokens"])
    shards = run(work.shard_task, (settings, root), list(enumerate(cuts)), "write shards")
    return work.write_manifest(settings, root, records, plan, shards), False
