"""Strict named registries: one per stage (descriptor, encoder).

A stage's package declares every name with the module that implements it: each module
of the package is the component of its own name (`declare_modules`: the file
`cbir/descriptors/stats.py` declares `stats`), but the package's helpers. The module
registers its factory with the decorator (`@register_descriptor("stats")`) when it is
imported, which happens on the first `create` of its name. So listing names imports
nothing, and a stats pipeline never imports torch. A factory may carry traits
(`@register_descriptor("cnn", learned=True)`), read with `trait`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from cbir.errors import UnknownComponentError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a factory. Registering a name twice is an error; an unknown
    name raises `UnknownComponentError` listing the valid ones.

    Names are either declared (`declare(name, module)`: the module is imported on first
    use and must register that name, and only declared names may be registered) or, in a
    registry without declarations, registered directly."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._modules: dict[str, str] = {}  # declared name -> module that registers it
        self._traits: dict[str, dict[str, object]] = {}

    def declare(self, name: str, module: str) -> None:
        """Declare `name`, implemented in `module` (imported on the first create)."""
        if name in self._modules or name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._modules[name] = module

    def declare_modules(self, package: str, path: Iterable[str], helpers: set[str]) -> None:
        """Declare every module of `package` (at `path`) but `helpers` as the component of
        its own name."""
        for info in sorted(pkgutil.iter_modules(list(path)), key=lambda i: i.name):
            if info.name not in helpers:
                self.declare(info.name, f"{package}.{info.name}")

    def register(
        self, name: str, **traits: object
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            declared = self._modules.get(name)
            if self._modules and declared is None:
                raise ValueError(
                    f"{self.kind} {name!r} (in {factory.__module__}) is not declared; "
                    f"declare it with its module where the other {self.kind}s are"
                )
            if declared is not None and factory.__module__ != declared:
                raise ValueError(
                    f"{self.kind} {name!r} is declared in {declared}, "
                    f"registered in {factory.__module__}"
                )
            self._factories[name] = factory
            self._traits[name] = traits
            return factory

        return decorate

    def require(self, name: str) -> None:
        """Refuse (UnknownComponentError) a name neither declared nor registered, without
        importing anything."""
        if name not in self._factories and name not in self._modules:
            valid = ", ".join(self.names()) or "(none)"
            raise UnknownComponentError(f"unknown {self.kind} {name!r}; valid names: {valid}")

    def factory(self, name: str) -> Callable[..., T]:
        """The factory of `name`, importing its module first if it is declared."""
        found = self._factories.get(name)
        if found is not None:
            return found
        self.require(name)
        module = self._modules[name]
        importlib.import_module(module)
        found = self._factories.get(name)
        if found is None:
            raise ValueError(f"{module} does not register {self.kind} {name!r}")
        return found

    def trait(self, name: str, key: str, default: object = None) -> object:
        """A trait the factory of `name` was registered with (imports its module)."""
        self.factory(name)
        return self._traits.get(name, {}).get(key, default)

    def create(self, name: str, **params: object) -> T:
        factory = self.factory(name)
        try:
            return factory(**params)
        except (TypeError, ValueError) as exc:
            raise UnknownComponentError(f"bad parameters for {self.kind} {name!r}: {exc}") from exc

    def loaded(self, name: str) -> bool:
        """Whether `name`'s factory is registered yet (its module has been imported)."""
        return name in self._factories

    def names(self) -> list[str]:
        return sorted(self._modules.keys() | self._factories.keys())
