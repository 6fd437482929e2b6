"""Tile descriptors. Each module of this package is the descriptor of its own name
(`stats.py` is `stats`), but the helpers `base`, `network` and `head_input`; a module is
imported (and registers its factory) on the first `create_descriptor` of its name, so a
stats pipeline never imports torch. A network descriptor registers with `learned=True`:
it takes `weights` and `device` (`backbone`: a checkpoint of its backbone, else its
packaged weights)."""

from cbir.descriptors.base import DESCRIPTORS, Descriptor, create_descriptor, list_descriptors

DESCRIPTORS.declare_modules(__name__, __path__, helpers={"base", "network", "head_input"})


def is_learned(name: str) -> bool:
    """Whether descriptor `name` is a network that takes a weights file and a device."""
    return bool(DESCRIPTORS.trait(name, "learned", False))


__all__ = ["DESCRIPTORS", "Descriptor", "create_descriptor", "is_learned", "list_descriptors"]
