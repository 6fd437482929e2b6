"""Weight files: {"format", "model", "spec", "state_dict"} saved with torch.save and
loaded with torch.load(weights_only=True), so loading never unpickles code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from cbir.errors import CbirError
from cbir.files import sha256_file

WEIGHTS_FORMAT = "cbir-weights-1"


class WeightsError(CbirError):
    """A weights file is missing, unreadable, or for another model."""


def save_weights(
    path: str | os.PathLike[str],
    model: str,
    spec: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
) -> str:
    """Write atomically (nothing is left behind when it fails); returns the file's sha256."""
    path = Path(path)
    check_weights_target(path)
    cpu_state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    bad = sum(int((~torch.isfinite(v)).sum()) for v in cpu_state.values() if v.is_floating_point())
    if bad:  # a run that diverged: its weights would describe every tile as NaN
        raise WeightsError(
            f"{path}: not written: training diverged ({bad} weights are NaN or infinite; "
            "try a smaller --lr)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never a user's file
    try:
        torch.save(
            {"format": WEIGHTS_FORMAT, "model": model, "spec": spec, "state_dict": cpu_state}, tmp
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha256_file(path)


def check_weights_target(path: Path) -> None:
    """Refuse (WeightsError, one line) a weights path that is a folder, not a regular
    file, or in a folder this process cannot write: checked before training, so no run
    is lost to it."""
    if path.is_dir():
        raise WeightsError(f"{path}: is a folder; --out takes a weights file, e.g. {path}/w.pt")
    if path.exists() and not path.is_file():  # a device, a pipe: replacing it is no write
        raise WeightsError(f"{path}: exists and is not a regular file; --out takes a file")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise WeightsError(f"{path}: cannot write in {parent} (permission denied)")


def load_weights(
    path: str | os.PathLike[str], model: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(spec, state_dict) of a cbir weights file for `model` (on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise WeightsError(f"{path}: not a readable weights file ({unloadable(exc)})") from exc
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{path}: not a cbir weights file (format {WEIGHTS_FORMAT})")
    if data.get("model") != model:
        raise WeightsError(f"{path}: weights of model {data.get('model')!r}, not {model!r}")
    from cbir.nn.verdict import warn_if_not_learned

    warn_if_not_learned(str(path), data["spec"])
    return data["spec"], data["state_dict"]


def unloadable(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in words: for a file that is no
    checkpoint at all torch says only "KeyError: 105" (a pickle opcode)."""
    if isinstance(exc, (KeyError, EOFError, UnicodeDecodeError)) or "magic number" in str(exc):
        return "not a PyTorch checkpoint"
    if isinstance(exc, pickle.UnpicklingError):  # torch's advice (weights_only=False) is
        # what we never do: its objects would run code
        return "not a PyTorch checkpoint of tensors and plain values, read weights-only"
    return (
        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if str(exc)
        else type(exc).__name__
    )


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A plain state_dict file, e.g. torchvision's or timm's (weights_only load; a
    {"state_dict": ...} or {"model": ...} wrapper is unwrapped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise WeightsError(f"{path}: not a readable state_dict ({unloadable(exc)})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a state_dict")
    return state


def load_strict(model: torch.nn.Module, path: str) -> None:
    """Load every key of `model` from a file of the same key layout; keys the model lacks
    (a classifier: VGG's classifier.6, ResNet's fc) are ignored, a missing or wrongly
    shaped key is an error."""
    state = read_state_dict(path)
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in state)
    bad = sorted(k for k in wanted if k in state and state[k].shape != wanted[k].shape)
    if missing or bad:
        raise WeightsError(
            f"{path}: does not fit the backbone (missing {missing[:3]}, wrong shape {bad[:3]})"
        )
    model.load_state_dict({k: state[k] for k in wanted})


def prefixed_state(**parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge state_dicts under prefixes: prefixed_state(backbone=a, head=b) ->
    {"backbone.<key>": ..., "head.<key>": ...} (what `load_parts` splits again)."""
    return {f"{prefix}.{k}": v for prefix, state in parts.items() for k, v in state.items()}
