"""Checkpoints: ``name.safetensors`` (weights) + ``name.json`` (architecture, config, card).

Loading never unpickles code: safetensors holds tensors only, and ``.pth``/``.pt`` files
(training states, third-party checkpoints) go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import math
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
        # a module of the user's own may leave these None ("any"): 1, as for one without them
        "in_channels": int(getattr(model, "in_channels", None) or 1),
        "out_channels": int(getattr(model, "out_channels", None) or 1),
        "scale": int(getattr(model, "scale", None) or 1),
    }


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` ending in ``.safetensors``: the suffix is added, never put in place of a part of
    the name (``denoise_v1.5`` becomes ``denoise_v1.5.safetensors``, not ``denoise_v1``)."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def check_output(path: str | os.PathLike, what: str = "output") -> Path:
    """Raise ValueError naming ``path`` when a file cannot be written there: it is a folder,
    a part of its folder is a file, or its folder is not writable.  Run before long work
    (training), so that a run is not lost to a wrong name at its end.  Returns ``path``."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p}: is a folder; give the {what} a file name")
    folder = p.parent
    while not folder.exists() and folder != folder.parent:  # created when written
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{p}: cannot write the {what} there: {folder} is a file, not a folder")
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{p}: cannot write the {what} there: folder {folder} is not writable")
    return p


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``
    (JSON has no such numbers; :func:`read_card` reads a card's ``nodata`` back as a float)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def trained_tile(model: nn.Module, patch: int, scale: int = 1) -> int | None:
    """The engine tile of ``model`` when its result depends on the tile's size
    (``tile_dependent``): the input side of its training patches (``patch`` is the target's
    side, ``scale`` times the input's for super-resolution); None for other networks."""
    return max(8, patch // max(1, scale)) if getattr(model, "tile_dependent", False) else None


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    task: str,
    card: dict[str, Any] | None = None,
    half: bool = True,
) -> Path:
    """Write ``path`` (.safetensors) and its JSON card next to it; returns the weights path.

    ``half`` stores floating-point weights as fp16 (they are loaded back as fp32), except
    tensors with values beyond fp16's range, which stay fp32 (they became infinite).
    """
    from safetensors.torch import save

    path = check_output(checkpoint_path(path), "checkpoint")
    check_output(path.with_suffix(".json"), "model card")
    _check_rebuildable(model, task, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if half and _fits_half(v) else v
    meta = {**model_config(model), "task": task, "format_version": FORMAT_VERSION, **(card or {})}
    patch = (meta.get("training") or {}).get("patch")
    tile = trained_tile(model, patch, int(meta.get("scale", 1) or 1)) if isinstance(patch, int) else None
    if tile and "tile" not in meta:
        meta["tile"] = tile  # run as it was trained
    tmp = path.with_suffix(".safetensors.tmp")
    try:  # written by Python, as the card is (safetensors' own file writer makes it 0600)
        tmp.write_bytes(save(state, metadata={"attnrestore": json.dumps({k: meta[k] for k in ("arch", "task", "scale")})}))
        os.replace(tmp, path)
    except BaseException:  # a full disk, a folder in the way, Ctrl-C: no half-written file left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    path.with_suffix(".json").write_text(json.dumps(json_safe(meta), indent=2, default=str, allow_nan=False) + "\n")
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
    training = card.get("training")
    if isinstance(training, dict) and isinstance(training.get("nodata"), str):  # "nan", "inf": see json_safe
        with contextlib.suppress(ValueError):
            training["nodata"] = float(training["nodata"])
    return card


def _check_rebuildable(model: nn.Module, task: str, path: Path) -> None:
    """Raise ValueError unless the card of ``model`` rebuilds it for ``task`` (what loading
    does): a module of the user's own, or another task's, was saved and then could not be
    loaded."""
    from ..models import build_model, list_architectures

    cfg = model_config(model)
    try:
        rebuilt = build_model(cfg["arch"], task=task, scale=cfg["scale"], in_channels=cfg["in_channels"],
                              out_channels=cfg["out_channels"], **cfg["config"])
        rebuilt.load_state_dict(model.state_dict())
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if cfg["arch"] not in list_architectures():
            raise ValueError(f"{path}: checkpoints hold networks of the architectures {', '.join(list_architectures())}"
                             f", not {type(model).__name__}; save this module's weights with "
                             "safetensors.torch.save_file(model.state_dict(), ...)") from None
        raise ValueError(f"{path}: this {cfg['arch']} network cannot be saved as a {task!r} checkpoint: "
                         f"loading would fail ({first})") from None
    from ..engine.plan import TASK_AUX_CHANNELS

    aux = TASK_AUX_CHANNELS.get(task, 0)
    if cfg["in_channels"] - aux not in (1, 3, 4):  # it loads, and restoring refuses it (4: an RGBA network)
        what = {"inpaint": "the image and the mask of its gaps", "demosaic": "the mosaic and its three colour masks"}
        raise ValueError(f"{path}: task {task!r} takes {what.get(task, 'the image')} ({1 + aux}, {3 + aux} or {4 + aux} "
                         f"input channels); this network takes {cfg['in_channels']}: save it with the task it was "
                         "trained for")


def load_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, or from .pth/.pt with ``weights_only=True``."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.is_dir():
        raise CheckpointError(f"{p}: a folder, not a checkpoint file")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a readable safetensors file ({e})") from None
    _check_torch_file(p)
    try:
        with warnings.catch_warnings():  # torch's own advice to unpickle unsafely is not ours
            warnings.simplefilter("ignore")
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError and friends
        if _is_torchscript(p):  # torch's message passed on its advice to unpickle unsafely
            raise CheckpointError(f"{p}: a TorchScript archive, not a checkpoint of weights; load it with "
                                  "torch.jit.load and pass the module as model=") from None
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


def _fits_half(v: torch.Tensor) -> bool:
    """Whether a tensor is floating point with every value inside fp16's range (65504)."""
    return v.is_floating_point() and (v.numel() == 0 or float(v.abs().max()) <= 65504.0)


def _is_torchscript(p: Path) -> bool:
    """Whether ``p`` is a zip archive holding TorchScript code: a ``code/`` folder and a
    ``constants.pkl`` inside its top folder (which torch names after the file: a plain
    checkpoint saved as ``code.pt`` has ``code/data.pkl``)."""
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            inside = {tuple(name.split("/")[1:2]) for name in z.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False
    return {("code",), ("constants.pkl",)} <= inside


#: The first bytes of files given for a checkpoint by mistake, and what they are.
_OTHER_FILES = ((b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"), (b"II+\x00", "a BigTIFF image"),
                (b"MM\x00+", "a BigTIFF image"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                (b"{", "a JSON file"), (b"\x89HDF", "an HDF5 file"))


def _check_torch_file(p: Path) -> None:
    """A CheckpointError unless ``p`` starts as PyTorch files do (a zip archive, or a pickle
    of the old format): a TIFF given for --weights was said to hold pickled code."""
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read the checkpoint ({e.strerror or e})") from None
    if head.startswith((b"PK\x03\x04", b"\x80")):
        return
    what = next((name for magic, name in _OTHER_FILES if head.startswith(magic)), None)
    raise CheckpointError(f"{p}: not a checkpoint" + (f" but {what}" if what else "")
                          + "; give a .safetensors file (with its .json card) or a PyTorch .pth/.pt")


def load_checkpoint(path: str | os.PathLike, task: str | None = None, scale: int | None = None) -> nn.Module:
    """Rebuild a model from a project checkpoint, checking it fits ``task``/``scale``."""
    p = Path(path)
    card = read_card(p)
    return _rebuilt(p, card, lambda: load_state(p), task, scale)


#: Keys every training state saved by :func:`~napari_attnrestore.training.loop.fit` holds.
TRAINING_STATE_KEYS = frozenset({"model", "ema", "opt", "gen", "step"})


def is_training_state(obj: Any) -> bool:
    """Whether ``obj`` (read by :func:`load_state`) is a training state of this program."""
    return isinstance(obj, dict) and TRAINING_STATE_KEYS <= set(obj)


def load_training_state_model(path: str | os.PathLike, task: str | None = None, scale: int | None = None,
                              contents: Any = None) -> nn.Module | None:
    """The EMA weights of a training state (``attnrestore train --state``, ``ar.train(state_path=)``)
    as a model, its card the one the finished training would write; None when ``path`` is no
    training state.  Read with ``weights_only=True`` (no pickled code runs), unless
    ``contents`` gives what :func:`load_state` already read of it.  A state that does not say
    which network it trains (an older one, or one of a foreign module) is refused."""
    p = Path(path)
    obj = load_state(p) if contents is None else contents
    if not is_training_state(obj):
        return None
    network = obj.get("network")
    if not isinstance(network, dict) or not network.get("arch") or not network.get("task"):
        raise CheckpointError(f"{p} is a training state of attnrestore train; rerun the same train command to "
                              "write a .safetensors")
    card = {**network, "name": p.stem}
    card["training"] = {**(card.get("training") or {}), "steps": int(obj["step"]), "state": str(p)}
    return _rebuilt(p, card, lambda: obj["ema"], task, scale)


def _rebuilt(p: Path, card: dict[str, Any], weights: Any, task: str | None, scale: int | None) -> nn.Module:
    """The network ``card`` describes, with the tensors ``weights()`` gives, checked to fit
    ``task``/``scale``; errors name ``p``."""
    from ..models import build_model

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
    state = weights()
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
