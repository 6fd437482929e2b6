"""Encoders from descriptors to codes. Every name is declared here with the module that
implements it; the module is imported (and registers its factory) on first use."""

from cbir.encoders.base import ENCODERS, Encoder, create_encoder, list_encoders

for _name, _module in {
    "float": "cbir.encoders.float_vectors",
    "lsh": "cbir.encoders.lsh",
    "threshold": "cbir.encoders.threshold",
}.items():
    ENCODERS.declare(_name, _module)

__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
