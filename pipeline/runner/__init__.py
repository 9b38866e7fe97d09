"""The Ray runner: the only part of tamis that runs a job on Ray.

`session` (start or join Ray, plain tasks), `ray_data` (`RayData`, segment reads), `apply` (one
stage on one batch, pure), `udf` (the batch UDF: decision join, rules, bisection, counters),
`streams` (stages cut at global stages, input reads), `fits` (global fits and their resume),
`writers` (idempotent Parquet sinks), `job` (`run_job`: the run folder, the streams, the reports).
Stage families never import this package; they see `tamis.pipeline.data.Data`.
"""
