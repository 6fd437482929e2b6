"""Tile descriptors. Import each implementation module here so it registers."""

from cbir.descriptors import backbone as _backbone  # noqa: F401  (registers "backbone")
from cbir.descriptors import cnn as _cnn  # noqa: F401  (registers "cnn")
from cbir.descriptors import deephash as _deephash  # noqa: F401  (registers "deephash")
from cbir.descriptors import delf as _delf  # noqa: F401  (registers "delf")
from cbir.descriptors import lda as _lda  # noqa: F401  (registers "lda")
from cbir.descriptors import metric as _metric  # noqa: F401  (registers "metric")
from cbir.descriptors import ssdh as _ssdh  # noqa: F401  (registers "ssdh")
from cbir.descriptors import stats as _stats  # noqa: F401  (registers "stats")
from cbir.descriptors import vae as _vae  # noqa: F401  (registers "vae")
from cbir.descriptors.base import DESCRIPTORS, Descriptor, create_descriptor, list_descriptors

__all__ = ["DESCRIPTORS", "Descriptor", "create_descriptor", "list_descriptors"]
