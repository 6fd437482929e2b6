"""The DELF global descriptor from a forward pass's dense outputs (shared by the
`delf` descriptor and the local extractor, so that one pass can feed both)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cbir.nn.delf import attention_pool


def pooled_global(unit_features: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) L2-normalised features and (n, 1, h, w) attention -> (n, c)
    L2-normalised attention-pooled descriptor (DelfNet.global_descriptor)."""
    return F.normalize(attention_pool(unit_features, attention), dim=1)
