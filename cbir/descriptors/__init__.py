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


def check_base(recipe_name: str, descriptor: Descriptor) -> None:
    """Refuse (CbirError, one line) a `--base-recipe` whose network has no trained
    weights: a head trained on seeded random features learns nothing it could keep."""
    from cbir.errors import CbirError

    sha = descriptor.spec.params.get("weights_sha256")
    if is_learned(descriptor.spec.name) and (sha is None or str(sha).startswith("random-init")):
        raise CbirError(
            f"--base-recipe {recipe_name}: its {descriptor.spec.name} network has no trained "
            "weights here; give a recipe of packaged weights (e.g. effnet-flat)"
        )


__all__ = [
    "DESCRIPTORS", "Descriptor", "check_base", "create_descriptor", "is_learned",
    "list_descriptors",
]  # fmt: skip
