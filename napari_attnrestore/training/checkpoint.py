"""Checkpoints: ``name.safetensors`` (weights) + ``name.json`` (architecture, config, card).

Loading never unpickles code: safetensors holds tensors only, and ``.pth``/``.pt`` files
(training states, third-party checkpoints) go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, corrupt, unsafe, or for another task)."""


def model_config(model: nn.Module) -> dict[str, Any]:
    """The JSON-serializable description needed to rebuild ``model``."""
    cfg = getattr(model, "cfg", None)
    return {
        "arch": getattr(model, "arch", type(model).__name__.lower()),
        "config": asdict(cfg) if is_dataclass(cfg) else dict(cfg or {}),
        "in_channels": int(getattr(model, "in_channels", 1)),
        "out_channels": int(getattr(model, "out_channels", 1)),
        "scale": int(getattr(model, "scale", 1)),
    }


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` ending in ``.safetensors``: the suffix is added, never put in place of a part of
    the name (``denoise_v1.5`` becomes ``denoise_v1.5.safetensors``, not ``denoise_v1``)."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    task: str,
    card: dict[str, Any] | None = None,
    half: bool = True,
) -> Path:
    """Write ``path`` (.safetensors) and its JSON card next to it; returns the weights path.

    ``half`` stores floating-point weights as fp16 (they are loaded back as fp32).
    """
    from safetensors.torch import save

    path = checkpoint_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if (half and v.is_floating_point()) else v
    meta = {**model_config(model), "task": task, "format_version": FORMAT_VERSION, **(card or {})}
    tmp = path.with_suffix(".safetensors.tmp")
    # written by Python, as the card is (safetensors' own file writer makes it 0600)
    tmp.write_bytes(save(state, metadata={"attnrestore": json.dumps({k: meta[k] for k in ("arch", "task", "scale")})}))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return path


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read the JSON card of a checkpoint (``x.safetensors`` -> ``x.json``)."""
    p = Path(path)
    card_path = p.with_suffix(".json")
    if not card_path.exists():
        raise CheckpointError(f"{p}: no model card {card_path.name} next to the weights")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{card_path}: model card is not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{card_path}: model card is not a JSON object (got {type(card).__name__})")
    return card


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, or from .pth/.pt with ``weights_only=True``."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    if p.is_dir():
        raise CheckpointError(f"{p}: a folder, not a checkpoint file")
    try:
        with warnings.catch_warnings():  # torch's own advice to unpickle unsafely is not ours
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and friends
        if not isinstance(e, pickle.UnpicklingError):  # not a pickle at all: text, a truncated file
            raise CheckpointError(f"{p}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if "global" in ln.lower()), "")
        detail = detail.split(" Please", 1)[0]  # torch goes on to say how to allow it: not our advice
        raise CheckpointError(
            f"{p}: refused to load: it is not a plain tensor checkpoint (it may hold pickled code)"
            + (f": {detail}" if detail else f" ({type(e).__name__})")
        ) from None
    return obj


def load_checkpoint(path: str | os.PathLike, task: str | None = None, scale: int | None = None) -> nn.Module:
    """Rebuild a model from a project checkpoint, checking it fits ``task``/``scale``."""
    from ..models import build_model

    p = Path(path)
    card = read_card(p)
    if task is not None and card.get("task") != task:
        raise CheckpointError(f"{p}: checkpoint is for task {card.get('task')!r}, not {task!r}")
    if scale is not None and int(card.get("scale", 1)) != int(scale):
        raise CheckpointError(f"{p}: checkpoint is for scale {card.get('scale')}, not {scale}")
    try:
        model = build_model(
            card["arch"], task=card["task"], scale=card.get("scale", 1),
            in_channels=card.get("in_channels"), out_channels=card.get("out_channels"), **card.get("config", {}),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{p}: model card does not describe a known model ({e})") from None
    state = load_state(p)
    damaged = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if damaged:  # a damaged file (or a diverged training) would restore every image to NaN
        raise CheckpointError(f"{p}: weights hold NaN or infinite values ({len(damaged)} tensors, e.g. {damaged[0]}); "
                              "the file is damaged or its training diverged")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensors of other shapes: the card describes another network
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e).splitlines()[0])
        raise CheckpointError(f"{p}: weights do not match the {card['arch']} config in its card ({first})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{p}: weights do not match the {card['arch']} config in its card "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
        )
    model.card = card  # type: ignore[attr-defined]
    return model.eval()
