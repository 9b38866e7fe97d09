"""Drop Ray's one known harmless line from a `tamis run`'s stderr; pass everything else through.

Ray's C++ core logs, at ERROR, every time Ray Data starts an actor pool (a stage with `setup()`):
`core_worker.cc:NNNN: Actor with class name: 'MapWorker(...)' ... has constructor arguments in the
object store and max_restarts > 0 ...` (ray-project/ray#53727). Ray Data always passes that
argument by reference and keeps it alive, so the line tells a tamis user nothing, and Ray has no
setting for it short of muting all of its C++ errors (`RAY_BACKEND_LOG_LEVEL=fatal`). The filter
works on the process's stderr file descriptor (C++ writes there directly): a line is held back only
while it starts with `[` (Ray's log prefix) and has no end yet, at most `HOLD_S`; anything else,
progress bars included, passes at once.
"""
from __future__ import annotations

import os
import re
import select
import sys
import threading
from contextlib import contextmanager

HARMLESS = (re.compile(rb"^\[[^\]]*\] core_worker\.cc:\d+: Actor with class name: .* has constructor arguments "
                       rb"in the object store and max_restarts > 0"),)
HOLD_S = 0.5


def _pump(src: int, dst: int, patterns) -> None:
    held = b""
    while True:
        ready, _, _ = select.select([src], [], [], HOLD_S)
        chunk = os.read(src, 65536) if ready else None
        if chunk == b"":  # every writer closed the pipe
            break
        data, held, out = held + (chunk or b""), b"", []
        lines = data.split(b"\n")
        for line in lines[:-1]:
            if not any(p.match(line) for p in patterns):
                out.append(line + b"\n")
        rest = lines[-1]
        if rest.startswith(b"[") and chunk is not None:  # maybe a Ray line: wait for its end
            held = rest
        else:
            out.append(rest)
        if out:
            os.write(dst, b"".join(out))
    if held:
        os.write(dst, held)


@contextmanager
def drop_harmless_ray_lines(patterns=HARMLESS):
    """Within the block, this process's stderr (and its children's, Ray's embedded processes
    included) passes through a filter that drops whole lines matching `patterns`."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):  # no real stderr (e.g. captured by a test): nothing to filter
        yield
        return
    pump = threading.Thread(target=_pump, args=(read_end, saved, patterns), daemon=True,
                            name="tamis-stderr-filter")
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # our end of the pipe closes; Ray's processes may still hold theirs
        pump.join(timeout=2 * HOLD_S)
