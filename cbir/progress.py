"""Progress reporting interface for long work; the CLI renders it with rich on stderr."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def plan(self, units: int, steps: int) -> None:
        """The whole work: `units` units (slides) of `steps` steps (tiles) in all."""
        ...

    def start(self, label: str, total: int, unit: str = "tiles") -> None:
        """A new unit of work of `total` steps (`unit`: what a step is) begins."""
        ...

    def advance(self, steps: int) -> None: ...


class NoProgress:
    """Progress that shows nothing (library default)."""

    def plan(self, units: int, steps: int) -> None:
        pass

    def start(self, label: str, total: int, unit: str = "tiles") -> None:
        pass

    def advance(self, steps: int) -> None:
        pass
