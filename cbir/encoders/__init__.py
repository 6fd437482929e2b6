"""Encoders from descriptors to codes. Each module of this package is the encoder of its
own name (`lsh.py` is `lsh`), but the helpers `base` and `bits`; a module is imported (and
registers its factory) on first use."""

from cbir.encoders.base import ENCODERS, Encoder, create_encoder, list_encoders

ENCODERS.declare_modules(__name__, __path__, helpers={"base", "bits"})

__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
