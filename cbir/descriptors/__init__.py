"""Tile descriptors. Every name is declared here with the module that implements it; the
module is imported (and registers its factory) on the first `create_descriptor` of the
name, so a stats pipeline never imports torch."""

from cbir.descriptors.base import DESCRIPTORS, Descriptor, create_descriptor, list_descriptors

#: Descriptors that are networks: they take `weights` and `device` (`backbone`: a
#: checkpoint of its backbone, else its packaged weights).
LEARNED_DESCRIPTORS = frozenset(
    {"backbone", "cnn", "deephash", "delf", "lda", "metric", "ssdh", "vae"}
)

for _name, _module in {
    "backbone": "cbir.descriptors.backbone",
    "cnn": "cbir.descriptors.cnn",
    "deephash": "cbir.descriptors.deephash",
    "delf": "cbir.descriptors.delf",
    "lda": "cbir.descriptors.lda",
    "metric": "cbir.descriptors.metric",
    "ssdh": "cbir.descriptors.ssdh",
    "stats": "cbir.descriptors.stats",
    "vae": "cbir.descriptors.vae",
}.items():
    DESCRIPTORS.declare(_name, _module)

__all__ = [
    "DESCRIPTORS",
    "LEARNED_DESCRIPTORS",
    "Descriptor",
    "create_descriptor",
    "list_descriptors",
]
