"""Whole-command measurements shared by the benchmarks: wall time and peak memory of a process tree."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak summed RSS (MB) of `cmd` and every process it starts, sampled every
    0.2 s; exits naming the command (with the end of its stderr) when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak, root = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        rss = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-3000:]}")
    return wall, peak / 1e6
