"""Vision Transformer in plain PyTorch with timm's state_dict key names and shapes
(`timm.models.vision_transformer.VisionTransformer`, num_classes=0), so a user's local
timm ViT or pathology foundation model checkpoint (UNI, UNI2-h) loads strictly; nothing
is downloaded. Maps (n, 3, H, W) images, H and W multiples of the patch size, to
(n, embed_dim) pooled features.

Checked against huggingface/pytorch-image-models commit aa4b5850c154 (2026-08-08):
timm/models/vision_transformer.py (Block, VisionTransformer), timm/layers/attention.py,
mlp.py (Mlp, GluMlp/SwiGLUPacked, SwiGLU), layer_scale.py, patch_embed.py, pos_embed.py
(resample_abs_pos_embed), norm.py (LayerNorm eps 1e-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cbir.nn.weights import WeightsError

#: MLP variants: "gelu" = timm `Mlp` (fc1, GELU, fc2); "swiglu_packed" = timm
#: `SwiGLUPacked` with act_layer=nn.SiLU (GluMlp, gate_last=False: fc1 -> [a, b],
#: silu(a) * b, fc2 from hidden/2; UNI2-h, timm's *_dinov2 giants); "swiglu" = timm `SwiGLU`
#: with act_layer=nn.SiLU (silu(fc1_g(x)) * fc1_x(x), fc2). timm's Block passes the ViT's
#: act_layer to the MLP, so these match checkpoints built with act_layer=nn.SiLU.
MLPS = ("gelu", "swiglu_packed", "swiglu")


@dataclass(frozen=True)
class ViTConfig:
    """timm VisionTransformer arguments (names as timm's). mlp_ratio gives the hidden width
    int(embed_dim * mlp_ratio), as timm's Block computes it."""

    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    reg_tokens: int = 0
    init_values: float | None = None  # None: no layer scale (no ls1/ls2 keys)
    mlp: str = "gelu"
    class_token: bool = True
    no_embed_class: bool = False  # pos_embed covers patches only, not cls/reg tokens
    global_pool: str = "token"  # "token": CLS after `norm`; "avg": patch mean, `fc_norm`
    img_size: int = 224

    def __post_init__(self) -> None:
        if self.mlp not in MLPS:
            raise ValueError(f"mlp {self.mlp!r} not one of {MLPS}")
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool {self.global_pool!r} not 'token' or 'avg'")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool 'token' needs class_token")
        if self.embed_dim % self.num_heads:
            raise ValueError("embed_dim must be a multiple of num_heads")
        if self.mlp == "swiglu_packed" and int(self.embed_dim * self.mlp_ratio) % 2:
            raise ValueError("swiglu_packed needs an even hidden width (as timm's GluMlp)")


VIT_CONFIGS: dict[str, ViTConfig] = {
    # timm vit_*_patch16_224 entrypoints (vision_transformer.py), defaults otherwise.
    "vit_small_patch16_224": ViTConfig(16, 384, 12, 6),
    "vit_base_patch16_224": ViTConfig(16, 768, 12, 12),
    "vit_large_patch16_224": ViTConfig(16, 1024, 24, 16),
    # UNI (MahmoodLab/UNI): timm vit_large_patch16_224 with init_values=1e-5,
    # dynamic_img_size=True, num_classes=0 (mahmoodlab/UNI uni/get_encoder/get_encoder.py).
    "uni": ViTConfig(16, 1024, 24, 16, init_values=1e-5),
    # UNI2-h (MahmoodLab/UNI2-h), same source: vit_giant_patch14_224 overridden to
    # patch 14, embed 1536, depth 24, heads 24, mlp_ratio 2.66667*2, SwiGLUPacked + SiLU,
    # reg_tokens 8, no_embed_class, init_values 1e-5, dynamic_img_size, num_classes 0.
    "uni2_h": ViTConfig(
        14, 1536, 24, 24, 2.66667 * 2, True, 8, 1e-5, "swiglu_packed", no_embed_class=True
    ),
}


class Attention(nn.Module):
    """timm Attention: qkv (D -> 3D) reshaped (B, N, 3, heads, head_dim), softmax(q k^T /
    sqrt(head_dim)) v, then proj."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """timm Mlp / SwiGLUPacked / SwiGLU, (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            self.fc1_g = nn.Linear(dim, hidden)
            self.fc1_x = nn.Linear(dim, hidden)
        else:
            self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU() if kind == "gelu" else nn.SiLU()
        self.fc2 = nn.Linear(hidden // 2 if kind == "swiglu_packed" else hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.fc2(self.act(self.fc1_g(x)) * self.fc1_x(x))
        x = self.fc1(x)
        if self.kind == "swiglu_packed":
            gate, val = x.chunk(2, dim=-1)  # gate_last=False: first half is gated
            return self.fc2(self.act(gate) * val)
        return self.fc2(self.act(x))


class LayerScale(nn.Module):
    """x * gamma, gamma (D,)."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = Attention(d, cfg.num_heads, cfg.qkv_bias)
        iv = cfg.init_values  # timm: layer scale `if init_values` (so 0 / None: none)
        self.ls1: nn.Module = LayerScale(d, iv) if iv else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio), cfg.mlp)
        self.ls2: nn.Module = LayerScale(d, iv) if iv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Conv patch_size/stride patch_size: (n, 3, H, W) -> (n, D, H/ps, W/ps)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(nn.Module):
    """timm VisionTransformer (num_classes=0, dynamic image size) as a feature extractor;
    `out_dim` = embed_dim. Token order: [cls, reg_1..reg_R, patches row-major]."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, self.grid = cfg.embed_dim, cfg.img_size // cfg.patch_size
        self.num_prefix_tokens = int(cfg.class_token) + cfg.reg_tokens
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        embed_len = self.grid**2 + (0 if cfg.no_embed_class else self.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_len, d))
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        avg = cfg.global_pool == "avg"  # timm: fc_norm after pooling replaces `norm`
        self.norm: nn.Module = nn.Identity() if avg else nn.LayerNorm(d, eps=1e-6)
        self.fc_norm: nn.Module = nn.LayerNorm(d, eps=1e-6) if avg else nn.Identity()
        self.out_dim = d
        self.map_channels = d  # feature_map: patch tokens as a (d, h, w) grid
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # timm's init, for untrained use
        for p in (self.cls_token, self.reg_token):
            if p is not None:
                nn.init.normal_(p, std=1e-6)

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        """pos_embed (1, L, D) for an h x w patch grid: the patch part bicubically resampled
        (antialiased, in float32) as timm's resample_abs_pos_embed when (h, w) != grid."""
        pe = self.pos_embed
        if (h, w) == (self.grid, self.grid):
            return pe
        n_pre = 0 if self.cfg.no_embed_class else self.num_prefix_tokens
        prefix, patches = pe[:, :n_pre], pe[:, n_pre:]
        g = patches.float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(h, w), mode="bicubic", antialias=True)
        patches = g.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pe.dtype)
        return torch.cat([prefix, patches], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> all tokens after the blocks and `norm`, (n, prefix + HW/ps^2, D)."""
        ps = self.cfg.patch_size
        if x.shape[-2] % ps or x.shape[-1] % ps:
            raise ValueError(f"input {tuple(x.shape[-2:])} not a multiple of patch size {ps}")
        x = self.patch_embed(x)  # (n, D, h, w)
        n, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (n, hw, D)
        pos = self._pos_embed(h, w)
        prefix = [t.expand(n, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.cfg.no_embed_class:  # add to patches, then prepend prefix tokens
            x = torch.cat([*prefix, x + pos], dim=1)
        else:  # prepend, then add (pos_embed has prefix entries)
            x = torch.cat([*prefix, x], dim=1) + pos
        return self.norm(self.blocks(x))

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(n, L, D) tokens -> (n, D): CLS token, or patch mean (prefix excluded) + fc_norm."""
        if self.cfg.global_pool == "token":
            return tokens[:, 0]
        return self.fc_norm(tokens[:, self.num_prefix_tokens :].mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> (n, D) pooled features (timm forward with num_classes=0)."""
        return self.pool(self.forward_features(x))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) -> patch tokens as a grid (n, D, H/ps, W/ps)."""
        ps = self.cfg.patch_size
        h, w = x.shape[-2] // ps, x.shape[-1] // ps
        tokens = self.forward_features(x)[:, self.num_prefix_tokens :]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def load_timm_state(model: VisionTransformer, state: dict, path: str) -> None:
    """Strictly load a timm-layout state_dict (optionally wrapped as {"model": ...} or
    {"state_dict": ...}) into `model`, ignoring classifier `head.*` keys; a mismatch raises
    WeightsError naming up to 3 keys of each kind."""
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state_dict ({type(state).__name__})")
    state = {k: v for k, v in state.items() if not (k == "head" or k.startswith("head."))}
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in state)
    unexpected = sorted(k for k in state if k not in wanted)
    bad = sorted(
        k
        for k in wanted
        if k in state
        and (not isinstance(state[k], torch.Tensor) or state[k].shape != wanted[k].shape)
    )
    problems = [
        f"{what} {keys[:3]}" + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad))
        if keys
    ]
    if problems:
        raise WeightsError(f"{path}: does not fit the ViT: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
