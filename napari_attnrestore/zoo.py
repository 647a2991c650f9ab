"""Shipped weights: where they live, which is the default per task, how names resolve."""

from __future__ import annotations

import json
import re
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
        from .tasks import get_task

        t = name.split(":", 1)[1]
        t, _, sc = t.partition("-x")
        if sc and not sc.isdigit():
            raise ValueError(f"{name!r}: the scale after -x is a number: default:sr-x2 or default:sr-x4")
        try:
            t = get_task(t).name  # the task's other names (superres, denoising)
        except ValueError:
            pass  # named below, with the defaults there are
        key = default_key(t, int(sc) if sc else scale)
        chosen = defaults().get(key)
        if chosen is None:
            have = ", ".join(sorted(defaults())) or "none"
            raise ValueError(f"no shipped default model for {key!r} (defaults exist for: {have})")
        name = chosen
    p = WEIGHTS_DIR / f"{name}.safetensors"
    return p if p.exists() else None


def headline_metric(card: dict[str, Any]) -> tuple[str, float | None]:
    """The benchmark number that ranks a weight for its task: (metric key, PSNR or None).

    Denoise: Set12 sigma 25; SR: Set5 Y at the weight's scale; demosaic: McMaster RGGB;
    inpaint: Set12 scan-line stripes (keys as the recipes write them into model cards).
    """
    task = card.get("task")
    key = {
        "denoise": "set12_sigma25",
        "sr": f"set5_x{card.get('scale', 2)}_Y",
        "demosaic": "mcmaster_RGGB",
        "inpaint": "set12_stripes",
    }.get(str(task), "")
    value = card.get("metrics", {}).get(key, {}).get("psnr")
    return key, None if value is None else float(value)


def trained_on(card: dict[str, Any]) -> str:
    """The machines that trained a weight: one entry per machine over the resumed segments of
    its recipe (``training.segments``; else the card's ``training.machine``), a CPU's
    thread counts merged into a range (``AMD EPYC, 1-2 threads (CPU), torch ...``)."""
    training = card.get("training", {})
    machines = [s["machine"] for s in training.get("segments", [])] or [training.get("machine", "")]
    threads: dict[str, list[int]] = {}
    for m in machines:
        found = _CPU_THREADS.match(m)
        if found:  # the same CPU and torch with other thread counts is the same machine
            key = f"{found['cpu']}, {{}} threads (CPU), {found['rest']}"
            threads.setdefault(key, []).extend(int(t) for t in found["threads"].split("-"))
        elif m:
            threads.setdefault(m, [])
    def span(counts: list[int]) -> str:
        return str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"

    return "; ".join(key.format(span(counts)) if counts else key for key, counts in threads.items())


_CPU_THREADS = re.compile(r"^(?P<cpu>.*), (?P<threads>\d+(?:-\d+)?) threads \(CPU\), (?P<rest>.*)$")


#: Denoisers within this many dB of the best on Set12 sigma 25 count as tied; the one that
#: leaves the least noise on flat fields (``metrics.flat_fields.noise_left``) is chosen.
TIE_DB = 0.02


def choose_defaults(write: bool = True) -> dict[str, dict[str, Any]]:
    """Pick the best measured weight per task (:func:`headline_metric`) as its default.

    Denoisers within :data:`TIE_DB` of the best are tied on the photos; among the tied ones
    whose cards record flat-field figures (``benchmarks/flat_levels.py --record``), the one
    that leaves the least noise on flat fields wins: backgrounds are what a microscopist's
    image is mostly made of, and a 0.01 dB difference on Set12 is below what anyone sees.

    With ``write``, ``defaults.json`` is rewritten and each card records what it is the
    default for and the numbers of the comparison (``default_choice``).  Returns, per task
    key, the chosen name, the metric and every candidate's value (and, after a tie, the rule
    and the tied weights' flat-field noise).
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for card in list_models():
        groups.setdefault(default_key(card["task"], card.get("scale")), []).append(card)
    choice: dict[str, dict[str, Any]] = {}
    for key, cards in sorted(groups.items()):
        scored = [(headline_metric(c)[1], c["name"]) for c in cards if headline_metric(c)[1] is not None]
        if not scored:
            continue
        top, best = max(scored)
        choice[key] = {"name": best, "metric": headline_metric(cards[0])[0], "candidates": {n: v for v, n in sorted(scored, reverse=True)}}
        flat = {c["name"]: c.get("metrics", {}).get("flat_fields", {}).get("noise_left") for c in cards}
        tied = [n for v, n in scored if v >= top - TIE_DB and flat.get(n) is not None]
        if key == "denoise" and len(tied) > 1 and flat.get(best) is not None:
            choice[key]["name"] = min(tied, key=lambda n: (flat[n], -choice[key]["candidates"][n]))
            choice[key]["tie"] = {"rule": f"within {TIE_DB} dB of the best: least noise left on flat fields",
                                  "flat_noise_left": {n: flat[n] for n in sorted(tied, key=flat.get)}}
    if write:
        (WEIGHTS_DIR / "defaults.json").write_text(json.dumps({k: v["name"] for k, v in choice.items()}, indent=1) + "\n")
        for card in list_models():
            path = Path(card.pop("path")).with_suffix(".json")
            keys = [k for k, v in choice.items() if v["name"] == card["name"]]
            card["default_for"] = keys
            card["default_choice"] = {k: {m: choice[k][m] for m in ("metric", "candidates", "tie") if m in choice[k]}
                                      for k in keys}
            path.write_text(json.dumps(card, indent=2) + "\n")
    return choice


def record_metric(name: str, key: str, value: Any) -> Path:
    """Write a measurement into a shipped weight's model card (``metrics[key]``); returns the card's path."""
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{name!r} is not a shipped weight (no {path})")
    card = json.loads(path.read_text())
    card.setdefault("metrics", {})[key] = value
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path
