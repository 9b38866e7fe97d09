"""The Ray session: start or join Ray, run plain tasks, ship plug-in code by value."""
from __future__ import annotations

import logging
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any, Callable

import ray
from ray import cloudpickle
from ray._raylet import Config as _RayConfig
from tqdm import tqdm

from tamis.pipeline.spec import SpecError

# A killed worker process loses nothing: Ray Data retries a lost read/score/write task and restarts a
# lost actor by itself (its defaults: `max_retries=-1`, `max_restarts=-1`); tamis passes no retry
# arguments to `map_batches` (`ray_remote_args` is deprecated, removed in Ray 2.64).
THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# The workers' environment: one library thread each (below), and Arrow's allocations from the system
# allocator instead of jemalloc, which keeps freed pages: the Gopher job's peak went from 2.23-2.25 GB
# to 2.12-2.15 GB at the same speed (docs/benchmarks.md, "Whole jobs").
WORKER_ENV = {**{k: "1" for k in THREAD_VARS}, "ARROW_DEFAULT_MEMORY_POOL": "system"}
TAMIS_ROOT = Path(__file__).resolve().parents[2]  # the checkout or site-packages folder holding tamis


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> None:
    """Join `address` / RAY_ADDRESS if given, else start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    check_address(address)
    quiet_ray(local=not address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    # One library thread per worker (polars, BLAS, OpenMP, torch): Ray already runs one task per CPU,
    # and a thread pool per task on top oversubscribes the cores (1.23x -> 1.45x on 2 CPUs). A stage
    # that asks for more CPUs gets that many torch threads (`udf.StageUDF`); variables the driver
    # already has (a submitted job's runtime env, the user's shell) are left alone.
    threads = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    if address:
        if threads:
            kwargs["runtime_env"] = {"env_vars": threads}
        try:
            ray.init(address=address, **kwargs)
        except (ray.exceptions.AuthenticationError, ConnectionError, RuntimeError) as e:
            refused = _auth_error(e)  # Ray retries the GCS for ~20 s, then says ConnectionError
            if refused is None:
                raise
            raise SpecError(auth_refused(address, refused)) from None
    else:
        # "local": always a fresh embedded Ray, even where a `ray start` cluster runs on this machine.
        # Its workers inherit the thread variables from the raylet, which inherits them from this
        # process while `ray.init` starts it (the driver keeps its own threads): a runtime env
        # would cost ~0.7 s of worker start-up, and Ray's metrics export (no dashboard reads it
        # here) ~1 s of `ray.init` (measured: 5.1 s -> 3.3 s to the first tasks on 2 CPUs).
        os.environ.update(threads)
        try:
            ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                     include_dashboard=False, _system_config={"enable_metrics_collection": False}, **kwargs)
        finally:
            for k in threads:
                os.environ.pop(k, None)
    ctx = ray.data.DataContext.get_current()
    # Per-operator CPU reservations leave a CPU idle between tasks on small clusters (measured: 32
    # tasks of 0.5 s on 2 CPUs took 12.0 s with them, 9.1 s without, 8.4 s as plain Ray tasks); the
    # object-store backpressure policies stay on, so memory stays bounded.
    ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = False  # tamis draws its own progress (job.py `_drain`)
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # ...and Ray Data would say so on every run ("Progress bars disabled"): its progress module only
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


AUTH_ENV = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def token_file() -> Path:
    """Where Ray 2.60 looks for the cluster's token when no variable names one."""
    return Path.home() / ".ray" / "auth_token"


def use_cluster_token() -> bool:
    """Turn on Ray's token authentication for a Ray Jobs client (`tamis submit|status|...`) when a
    token is at hand.

    `ray start --head` turns token authentication on by itself when `~/.ray/auth_token` exists (an
    embedded `tamis run` writes one), but a client only sends the token when `RAY_AUTH_MODE=token`:
    without it a token cluster refuses `tamis submit`. So, as `ray start --head` does, a token in
    `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token` turns the mode on here unless
    `RAY_AUTH_MODE` is set; the dashboard of a cluster without authentication ignores the header.
    Not for a driver joining the GCS (`tamis run --address`): a token driver on a cluster without
    authentication hangs (its workers call back without a token), so there the mode must match the
    cluster's and a refusal says so (`auth_refused`). Returns whether the mode is token."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    if not (any(os.environ.get(k) for k in AUTH_ENV) or token_file().is_file()):
        return False
    os.environ["RAY_AUTH_MODE"] = "token"
    _RayConfig.initialize("")  # Ray read the mode when imported: read it again, as Ray itself does
    return True


def auth_refused(address: str, error: Exception) -> str:
    """One line for a cluster that refused this client: what was (not) sent, and what to set."""
    have = next((k for k in AUTH_ENV if os.environ.get(k)), None) or (
        str(token_file()) if token_file().is_file() else None)
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        why = "this client sent no token (RAY_AUTH_MODE is not 'token')"
    elif have:
        why = f"it refused the token from {have}"
    else:
        why = "no token was found here"
    return (f"the Ray cluster at {address} uses token authentication and {why}: export RAY_AUTH_MODE=token "
            f"RAY_AUTH_TOKEN=<the head's token> (`ray get-auth-token` on the head prints it; or copy the "
            f"head's ~/.ray/auth_token, or set RAY_AUTH_TOKEN_PATH; docs/scaling.md)")


def _auth_error(error: BaseException | None) -> BaseException | None:
    """The AuthenticationError in `error`'s chain of causes, if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(error):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def check_address(address: str | None) -> None:
    """Refuse a Ray Client address (`ray://`) at once: Ray Data does not run through Ray Client
    (`'Worker' object has no attribute 'core_worker'` half-way into the run)."""
    if address and address.startswith("ray://"):
        host = address[len("ray://"):].split(":")[0] or "HEAD"
        raise SpecError(f"Ray Client addresses ({address}) do not work with Ray Data: submit the job with "
                        f"`tamis submit JOB.yaml --address http://{host}:8265`, or run `tamis run JOB.yaml "
                        f"--address auto` on a node of the cluster (docs/scaling.md)")


def quiet_ray(local: bool) -> None:
    """Ray's logging for a run that prints only tamis's own lines.

    An embedded Ray (`local`) turns on token authentication by default and says so on every start
    ("Token authentication is enabled..."): the default is right (and kept), the line is not the
    user's to act on. Setting `RAY_AUTH_MODE=token` in the environment would not do: Ray reads its
    config when imported, so the driver would still run unauthenticated against a token GCS. Ray's
    other warnings about authentication (e.g. that it is disabled) still show.
    """
    if local and "RAY_AUTH_MODE" not in os.environ:
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_default_auth)


def _not_default_auth(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


def map_tasks(fn: Callable, items: list, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
              desc: str | None = None, max_retries: int = 3) -> list:
    """Run `fn(item)` for every item as Ray tasks; results in input order, with a progress bar."""
    init_ray()
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(fn)
    refs = [remote.remote(item) for item in items]
    index = {r: i for i, r in enumerate(refs)}
    out: list = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc or getattr(fn, "__name__", "tasks"), disable=None) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                out[index[r]] = ray.get(r)
                bar.update(1)
    return out


def ship_plugin(cls) -> None:
    """Send a plug-in's code with the tasks when its module is not part of an installed package.

    A scorer in the user's own file (`class: my_scorers:MyScorer`) then runs on workers and cluster
    nodes that cannot import that file.
    """
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    installed = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
    if module and path and not path.startswith(installed) and not path.startswith(str(TAMIS_ROOT)):
        cloudpickle.register_pickle_by_value(module)
