"""Encoders from descriptors to binary codes. Import each implementation here so it registers."""

from cbir.encoders import float_vectors as _float  # noqa: F401  (registers "float")
from cbir.encoders import lsh as _lsh  # noqa: F401  (registers "lsh")
from cbir.encoders import threshold as _threshold  # noqa: F401  (registers "threshold")
from cbir.encoders.base import ENCODERS, Encoder, create_encoder, list_encoders

__all__ = ["ENCODERS", "Encoder", "create_encoder", "list_encoders"]
