"""cbir.nn.vit: timm-compatible ViT key layout, forward shapes, checkpoint loading."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from cbir.nn.vit import VIT_CONFIGS, Attention, VisionTransformer, ViTConfig, load_timm_state
from cbir.nn.weights import WeightsError

TINY = ViTConfig(patch_size=16, embed_dim=64, depth=2, num_heads=4)
VARIANTS = {
    "gelu_token": TINY,
    "gelu_ls_reg_avg": replace(TINY, init_values=1e-5, reg_tokens=4, global_pool="avg"),
    "swiglu_packed_reg_noembed": replace(
        TINY,
        mlp="swiglu_packed",
        mlp_ratio=5.0,
        reg_tokens=8,
        no_embed_class=True,
        init_values=1e-5,
    ),
    "swiglu_avg_nocls": replace(TINY, mlp="swiglu", class_token=False, global_pool="avg"),
    "gelu_reg_embedclass": replace(TINY, reg_tokens=2),
}


def _model(cfg: ViTConfig, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(cfg).eval()


def _keys(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = VisionTransformer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# Depth-1 key layouts written out from timm's source (vision_transformer.py Block /
# VisionTransformer, layers/mlp.py, layers/layer_scale.py, layers/patch_embed.py).
_BLOCK = {
    "blocks.0.norm1.weight", "blocks.0.norm1.bias",
    "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias",
    "blocks.0.norm2.weight", "blocks.0.norm2.bias",
    "blocks.0.mlp.fc2.weight", "blocks.0.mlp.fc2.bias",
}  # fmt: skip
_STEM = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
_FC1 = {"blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc1.bias"}
_LS = {"blocks.0.ls1.gamma", "blocks.0.ls2.gamma"}
_NORM = {"norm.weight", "norm.bias"}
EXPECTED_DEPTH1 = {
    "vit_small_patch16_224": _STEM | _BLOCK | _FC1 | _NORM,
    "vit_base_patch16_224": _STEM | _BLOCK | _FC1 | _NORM,
    "vit_large_patch16_224": _STEM | _BLOCK | _FC1 | _NORM,
    "uni": _STEM | _BLOCK | _FC1 | _LS | _NORM,
    "uni2_h": _STEM | {"reg_token"} | _BLOCK | _FC1 | _LS | _NORM,
}


@pytest.mark.parametrize("name", sorted(VIT_CONFIGS))
def test_named_config_keys_match_timm_layout(name: str) -> None:
    cfg = VIT_CONFIGS[name]
    assert set(_keys(replace(cfg, depth=1))) == EXPECTED_DEPTH1[name]
    full = _keys(cfg)
    per_block = {k.split(".", 2)[2] for k in full if k.startswith("blocks.")}
    assert len(full) == len(EXPECTED_DEPTH1[name]) + (cfg.depth - 1) * len(per_block)
    assert f"blocks.{cfg.depth - 1}.attn.qkv.weight" in full


def test_real_config_shapes() -> None:
    uni2 = _keys(VIT_CONFIGS["uni2_h"])
    assert uni2["cls_token"] == (1, 1, 1536)
    assert uni2["reg_token"] == (1, 8, 1536)
    assert uni2["pos_embed"] == (1, 256, 1536)  # no_embed_class: 16 x 16 patches only
    assert uni2["patch_embed.proj.weight"] == (1536, 3, 14, 14)
    assert uni2["blocks.23.mlp.fc1.weight"] == (8192, 1536)  # packed gate + value
    assert uni2["blocks.23.mlp.fc2.weight"] == (1536, 4096)
    assert uni2["blocks.23.ls2.gamma"] == (1536,)
    uni = _keys(VIT_CONFIGS["uni"])
    assert uni["pos_embed"] == (1, 197, 1024)
    assert uni["blocks.0.attn.qkv.weight"] == (3072, 1024)
    assert uni["blocks.0.mlp.fc1.weight"] == (4096, 1024)


def _params(cfg: ViTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in VisionTransformer(cfg).parameters())


def test_parameter_counts_match_timm_model_cards() -> None:
    # timm cards: vit_small_patch16_224.augreg_in21k_ft_in1k 22.1M (1000-class head),
    # vit_base_patch16_224.orig_in21k 85.8M (no head).
    assert round((_params(VIT_CONFIGS["vit_small_patch16_224"]) + 384 * 1001) / 1e6, 1) == 22.1
    assert round(_params(VIT_CONFIGS["vit_base_patch16_224"]) / 1e6, 1) == 85.8
    # UNI: 303.4M (lazyslide's UNI model entry, param_size "303.4M").
    assert round(_params(VIT_CONFIGS["uni"]) / 1e6, 1) == 303.4


def test_avg_pool_and_reg_layout() -> None:
    keys = _keys(replace(TINY, depth=1, reg_tokens=3, global_pool="avg", class_token=False))
    assert "fc_norm.weight" in keys and "norm.weight" not in keys
    assert "cls_token" not in keys and keys["reg_token"] == (1, 3, 64)
    assert keys["pos_embed"] == (1, 3 + 196, 64)  # not no_embed_class: covers prefix
    swiglu = _keys(replace(TINY, depth=1, mlp="swiglu"))
    assert {"blocks.0.mlp.fc1_g.weight", "blocks.0.mlp.fc1_x.bias"} <= set(swiglu)
    assert "blocks.0.mlp.fc1.weight" not in swiglu


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_forward_shapes(name: str) -> None:
    cfg = VARIANTS[name]
    model = _model(cfg)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        tokens = model.forward_features(x)
        fmap = model.feature_map(x)
    assert out.shape == (2, 64) and out.dtype == torch.float32 and model.out_dim == 64
    assert torch.isfinite(out).all()
    assert tokens.shape == (2, model.num_prefix_tokens + 196, 64)
    assert fmap.shape == (2, 64, 14, 14)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, model.num_prefix_tokens + 14 + 2])
    if cfg.global_pool == "token":
        assert torch.equal(out, tokens[:, 0])
    else:
        pooled = tokens[:, model.num_prefix_tokens :].mean(1)
        assert torch.allclose(out, F.layer_norm(pooled, (64,), eps=1e-6), atol=1e-5)


@pytest.mark.parametrize("name", ["gelu_token", "swiglu_packed_reg_noembed"])
def test_other_input_sizes_interpolate_pos_embed(name: str) -> None:
    model = _model(VARIANTS[name])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 448, 448))
        fmap = model.feature_map(torch.randn(1, 3, 160, 256))
    assert out.shape == (1, 64) and torch.isfinite(out).all()
    assert fmap.shape == (1, 64, 10, 16)
    pe = model._pos_embed(28, 28)
    n_pre = 0 if VARIANTS[name].no_embed_class else model.num_prefix_tokens
    assert pe.shape == (1, n_pre + 28 * 28, 64)
    assert torch.equal(pe[:, :n_pre], model.pos_embed[:, :n_pre])
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 200, 224))


def test_swiglu_packed_gates_first_half() -> None:
    model = _model(replace(TINY, depth=1, mlp="swiglu_packed", mlp_ratio=2.0))
    mlp = model.blocks[0].mlp
    x = torch.randn(3, 5, 64)
    h = mlp.fc1(x)
    expected = mlp.fc2(F.silu(h[..., :64]) * h[..., 64:])
    assert torch.allclose(mlp(x), expected, atol=1e-6)


def test_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = Attention(64, 4, qkv_bias=True).eval()
    x = torch.randn(2, 7, 64)
    q, k, v = attn.qkv(x).reshape(2, 7, 3, 4, 16).permute(2, 0, 3, 1, 4)
    weights = ((q * 16**-0.5) @ k.transpose(-2, -1)).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 7, 64))
    with torch.no_grad():
        assert torch.allclose(attn(x), expected, atol=1e-5)


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_save_load_round_trip(tmp_path, wrapper: str | None) -> None:
    cfg = VARIANTS["swiglu_packed_reg_noembed"]
    src, dst = _model(cfg, seed=1), _model(cfg, seed=2)
    state = dict(src.state_dict())
    state["head.weight"] = torch.zeros(10, 64)  # a classifier is ignored
    state["head.bias"] = torch.zeros(10)
    path = tmp_path / "vit.pth"
    torch.save(state if wrapper is None else {wrapper: state}, path)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    load_timm_state(dst, loaded, str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_mismatched_checkpoints_raise() -> None:
    model = _model(TINY)
    good = model.state_dict()
    wrong = dict(good, pos_embed=torch.zeros(1, 50, 64))
    with pytest.raises(WeightsError, match=r"^ckpt\.pth: .*wrong shape \['pos_embed'\]") as exc:
        load_timm_state(model, wrong, "ckpt.pth")
    assert "\n" not in str(exc.value)
    missing = {k: v for k, v in good.items() if not k.startswith("blocks.1.")}
    with pytest.raises(WeightsError, match=r"missing .*\(\+\d+ more\)"):
        load_timm_state(model, missing, "ckpt.pth")
    with pytest.raises(WeightsError, match=r"unexpected \['blocks.0.ls1.gamma'\]"):
        load_timm_state(model, dict(good, **{"blocks.0.ls1.gamma": torch.ones(64)}), "c")
    with pytest.raises(WeightsError, match="not a state_dict"):
        load_timm_state(model, [1, 2], "c")  # type: ignore[arg-type]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        replace(TINY, class_token=False)  # token pooling needs a class token
    with pytest.raises(ValueError):
        replace(TINY, mlp="relu")
    with pytest.raises(ValueError):  # int(64 * 5.33334) = 341 is odd
        replace(TINY, mlp="swiglu_packed", mlp_ratio=2.66667 * 2)
