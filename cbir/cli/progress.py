"""Progress of long work on stderr: a rich bar on a terminal, plain lines elsewhere (CI
logs, `nohup`, a pipe), where a bar would draw nothing."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cbir.cli.render import stderr
from cbir.errors import CbirError

#: A plain progress line is written at most this often (seconds; CBIR_PROGRESS_SECONDS
#: overrides), and when a unit ends; work shorter than this writes none.
LINE_EVERY_S = 5.0
PROGRESS_ENV = "CBIR_PROGRESS_SECONDS"


class RichProgress:
    """`cbir.progress.Progress` drawn as a rich bar on stderr, one bar per unit (slide,
    training run)."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self.task: int | None = None
        self.started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.bar.stop()

    def plan(self, units: int, steps: int) -> None:
        pass  # one bar per unit shows its own time left

    def start(self, label: str, total: int, unit: str = "tiles") -> None:
        if not self.started:  # draw nothing until there is work to show
            self.bar.start()
            self.started = True
        self.task = self.bar.add_task(label, total=total, unit=unit)

    def advance(self, steps: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, steps)


def duration(seconds: float) -> str:
    """12s, 3m05s, 2h14m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """`cbir.progress.Progress` as plain lines on a stream that is not a terminal: at
    most one every `every` seconds and one when a unit ends (once the work has run that
    long: a short build prints none), each with the unit's count, the steps done (of all
    units, when `plan` told their total), the rate and the time left."""

    def __init__(
        self,
        stream: TextIO | None = None,
        every: float = LINE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.every, self.clock = stream, every, clock
        self.units = self.steps = 0  # planned totals (0: not told)
        self.unit_no = 0
        self.label, self.unit, self.total, self.done = "", "tiles", 0, 0
        self.all_done = 0
        self.began = self.last = 0.0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def plan(self, units: int, steps: int) -> None:
        self.units, self.steps = units, steps

    def start(self, label: str, total: int, unit: str = "tiles") -> None:
        now = self.clock()
        if self.unit_no == 0:
            self.began = self.last = now
        self.unit_no += 1
        self.label, self.total, self.done, self.unit = label, total, 0, unit

    def advance(self, steps: int) -> None:
        self.done += steps
        self.all_done += steps
        now = self.clock()
        ended = self.done >= self.total and now - self.began >= self.every
        if now - self.last >= self.every or ended:
            self.last = now
            self.write(now)

    def write(self, now: float) -> None:
        elapsed = max(now - self.began, 1e-9)
        rate = self.all_done / elapsed
        count = f" {self.unit_no}/{self.units}" if self.units else ""
        text = f"cbir: {self.label}{count}: {self.done}/{self.total} {self.unit}"
        if self.steps:
            left = max(self.steps - self.all_done, 0)
            text += f"; all: {self.all_done}/{self.steps} {self.unit}"
        else:
            left = max(self.total - self.done, 0)
        text += f", {rate:.1f} {self.unit}/s"
        if rate > 0:
            text += f", {duration(left / rate)} left"
        print(text, file=self.stream or sys.stderr, flush=True)


def stderr_progress() -> RichProgress | LineProgress:
    """A rich bar when stderr is a terminal, else plain lines (every LINE_EVERY_S, or
    the seconds in CBIR_PROGRESS_SECONDS)."""
    if sys.stderr.isatty():
        return RichProgress()
    every = os.environ.get(PROGRESS_ENV, "").strip()
    try:
        return LineProgress(every=float(every) if every else LINE_EVERY_S)
    except ValueError:
        raise CbirError(f"{PROGRESS_ENV}={every!r}: expected seconds, e.g. 5") from None
