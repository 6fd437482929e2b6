"""Helpers shared by the benchmark scripts in tools/ (not part of the cbir package)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def log(tag: str, msg: str) -> None:
    """Write a timestamped progress line to stderr."""
    print(f"[{tag} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class CpuMeter:
    """CPU seconds used on this machine by other processes since construction
    (from /proc/stat, minus this process's own CPU time); None where /proc is missing."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float] | None:
        """(machine busy seconds, this process's CPU seconds), or None."""
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(v) for v in fields]
        busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        own = os.times()
        return busy, own.user + own.system

    def other_seconds(self) -> float | None:
        """CPU seconds of other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        return round(max(0.0, (end[0] - self.start[0]) - (end[1] - self.start[1])), 2)


def memory_mb() -> dict[str, float]:
    """This process's resident memory now and at its peak since the last
    `reset_peak_memory` (VmRSS, VmHWM; RssAnon = its own, RssFile = mapped files, shared
    with the OS's cache), in MB; {} where /proc is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = round(int(rest.split()[0]) / 1024, 1)
    return out


def reset_peak_memory() -> None:
    """Reset VmHWM (Linux: write 5 to /proc/self/clear_refs); no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def evict_from_cache(root: Path) -> int:
    """Drop `root`, or every file under it, from the OS page cache (posix_fadvise
    DONTNEED: clean pages go; no root needed), so the next reads come from the disk.
    Files counted."""
    count = 0
    for f in [root] if root.is_file() else root.rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages are not dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            count += 1
    return count
