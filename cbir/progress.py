"""Progress reporting interface for long work; the CLI renders it with rich on stderr."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, label: str, total: int) -> None:
        """A new unit of work of `total` steps begins."""
        ...

    def advance(self, steps: int) -> None: ...


class NoProgress:
    """Progress that shows nothing (library default)."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, steps: int) -> None:
        pass
