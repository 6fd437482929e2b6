"""Strict named registries: one per stage (descriptor, encoder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from cbir.errors import UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a factory. Registering a name twice is an error; an unknown
    name raises `UnknownComponentError` listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def create(self, name: str, **params: object) -> T:
        try:
            factory = self._factories[name]
        except KeyError:
            valid = ", ".join(sorted(self._factories)) or "(none)"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; valid names: {valid}"
            ) from None
        try:
            return factory(**params)
        except (TypeError, ValueError) as exc:
            raise UnknownComponentError(f"bad parameters for {self.kind} {name!r}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(self._factories)
