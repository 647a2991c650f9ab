"""Shipped weights: where they live, which is the default per task, how names resolve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_dir() -> Path:
    """Folder of the shipped ``*.safetensors`` checkpoints and their ``*.json`` cards."""
    return WEIGHTS_DIR


def list_models() -> list[dict[str, Any]]:
    """Model cards of the shipped weights (name, task, arch, scale, metrics, ...)."""
    cards = []
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        if card_path.name == "defaults.json" or not card_path.with_suffix(".safetensors").exists():
            continue
        card = json.loads(card_path.read_text())
        card.setdefault("name", card_path.stem)
        card["path"] = str(card_path.with_suffix(".safetensors"))
        cards.append(card)
    return cards


def defaults() -> dict[str, str]:
    """Task (``denoise``, ``sr-x2``, ...) to the name of its default shipped weight."""
    p = WEIGHTS_DIR / "defaults.json"
    return json.loads(p.read_text()) if p.exists() else {}


def default_key(task: str, scale: int | None = None) -> str:
    """Key of ``defaults.json`` for a task (SR keys carry the scale: ``sr-x2``)."""
    return f"{task}-x{scale or 2}" if task == "sr" else task


def resolve_weight(name: str, task: str | None = None, scale: int | None = None) -> Path | None:
    """Path of a shipped weight given ``default:<task>``, ``default`` or a weight name; None if unknown."""
    if name in ("default", "default:"):
        if task is None:
            raise ValueError("'default' needs a task; use default:<task>, e.g. default:denoise")
        name = f"default:{task}"
    if name.startswith("default:"):
        t = name.split(":", 1)[1]
        t, _, sc = t.partition("-x")
        key = default_key(t, int(sc) if sc else scale)
        chosen = defaults().get(key)
        if chosen is None:
            have = ", ".join(sorted(defaults())) or "none"
            raise ValueError(f"no shipped default model for {key!r} (defaults exist for: {have})")
        name = chosen
    p = WEIGHTS_DIR / f"{name}.safetensors"
    return p if p.exists() else None
