"""Reproduce a shipped weight from a committed recipe (JSON config) with one command.

    python -m napari_attnrestore.training.recipe recipes/denoise_hat_tiny.json --data ../shared/data

Runs resumably: the training state is saved in ``--workdir`` every few hundred steps and
a rerun of the same command continues from it.  At the end the EMA weights are written to
``--out`` with a model card (config, data, steps, wall time, machine, metrics).  On a CUDA
device the recipe's ``train_gpu`` block (more steps, larger batches) overrides ``train``,
and the state lives in ``<workdir>/<name>-gpu``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import build_model
from ..tasks import get_task
from ..tasks.denoise import estimate_noise_sigma
from .checkpoint import CheckpointError, json_safe, save_checkpoint, trained_tile
from .data import PatchSampler, channels_first_rgb, load_folder, patch_pixels, skimage_pictures, to_gray
from .evaluate import recipe_metrics
from .loop import LOSSES, PRECISIONS, TrainConfig, fit, training_state
from .selfsupervised import denoise_objective, hole_loss, with_sigma_plane

log = logging.getLogger("attnrestore.recipe")

#: ``make_pair(patches, generator) -> (network input, target)``
MakePair = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
#: ``loss(model, input, target) -> scalar`` (replaces ``cfg.loss(model(input), target)``)
LossFn = Callable[..., torch.Tensor]


def machine_description(device: torch.device) -> str:
    """A short description of the machine that trained (CPU model / GPU name)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (CPU), torch {torch.__version__}"


def block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """Average ``k x k`` blocks of an ``(H, W)`` or ``(H, W, C)`` image (edges cropped)."""
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    x = np.asarray(image[:h, :w], dtype=np.float32)
    return x.reshape(h // k, k, w // k, k, *x.shape[2:]).mean(axis=(1, 3))


def noisy_once(images: list[np.ndarray], seed: int, **noise: Any) -> list[np.ndarray]:
    """One fixed noisy copy of each image (its own sigma drawn from the range), for
    self-supervised recipes: a real noisy dataset, not fresh noise at every step."""
    from ..tasks.denoise import add_noise

    rng = np.random.default_rng(seed)
    return [add_noise(im, rng, **noise) for im in images]


def load_training_images(recipe: dict[str, Any], data_dir: Path) -> list:
    """The recipe's training images: folders under ``data_dir`` and/or ``skimage``.

    Gray ``(H, W)`` by default; with ``"color": true`` only the colour images, as
    ``(3, H, W)`` (demosaicing).  ``"downscale": k`` averages k x k blocks first: photos
    stored as JPEG carry their colour at half resolution (4:2:0) over a camera's own
    demosaicing, so their chroma is far smoother than a real scene's; block averaging
    restores full-resolution colour (Malvar's demosaic scores 43.7 dB on color80 as
    stored, 35.6 dB after 2x2 averaging, 34.5 on McMaster).
    """
    color = bool(recipe.get("color", False))
    k = int(recipe.get("downscale", 1))
    images = []
    for src in recipe["data"]:
        if "bench" in Path(src).parts:
            raise ValueError(f"{src}: benchmark sets are never used for training")
        found = skimage_pictures(gray=not color) if src == "skimage" else load_folder(data_dir / src, gray=not color)
        if k > 1:
            found = [block_mean(im, k) for im in found]
        images += channels_first_rgb(found) if color else found
    return images


def init_from(model: torch.nn.Module, source: str, out_dir: Path, rename: list[list[str]] | None = None) -> None:
    """Start ``model`` from another weight (as the HAT paper starts x4 from x2).

    ``source`` is a shipped weight name or a ``.safetensors`` path; tensors whose names and
    shapes match are copied (e.g. everything but an SR model's upsampler).

    ``rename``: ``[from_prefix, to_prefix]`` pairs (the recipe's ``init_map``; ``[]`` when the
    names already line up, as for stages appended at the end) for starting a deeper network
    from a shallower one: a source tensor whose name starts with a ``from_prefix`` (the first
    that matches) is loaded under ``to_prefix`` instead.  The residual blocks, stages and
    attention modules that then received nothing start as the identity
    (:func:`start_as_identity`), so the grown network computes what the source did and
    training goes on from there (network growth as in Net2Net's deeper networks).
    """
    from ..zoo import resolve_weight
    from .checkpoint import load_state

    path = Path(source) if source.endswith(".safetensors") else (out_dir / f"{source}.safetensors")
    if not path.exists():
        path = resolve_weight(source) or path
    if not path.exists():
        raise FileNotFoundError(f"init weight {source!r} not found (train it first: its recipe is in recipes/)")
    own = model.state_dict()
    src = load_state(path)
    if rename is not None:
        src = {_renamed(k, rename): v for k, v in src.items()}
    state = {k: v.float() for k, v in src.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state, strict=False)
    log.info("initialized %d of %d tensors from %s", len(state), len(own), path)
    if rename is not None:
        grown = start_as_identity(model, set(state))
        log.info("%d modules the init weight lacks start as the identity: %s", len(grown), ", ".join(grown))


def _renamed(name: str, rename: list[list[str]]) -> str:
    """``name`` under the first ``[from_prefix, to_prefix]`` rule whose prefix it starts with."""
    for old, new in rename:
        if name.startswith(old):
            return new + name[len(old):]
    return name


def start_as_identity(model: torch.nn.Module, loaded: set[str]) -> list[str]:
    """Make the residual modules of ``model`` that no tensor in ``loaded`` reached the identity.

    A module qualifies by a ``start_as_identity()`` method (a residual block zeroes its last
    convolution, an attention module its output projection).  Returns their names.
    """
    done = []
    for name, module in model.named_modules():
        if name and hasattr(module, "start_as_identity") and not any(k.startswith(name + ".") for k in loaded):
            module.start_as_identity()
            done.append(name)
    return done


def evaluate(recipe: dict[str, Any], model: torch.nn.Module, data_dir: Path, tile: int | None = None
             ) -> dict[str, Any]:
    """The recipe's metrics on its benchmark set (skipped when the set is absent): whole
    pictures, or ``tile``-px tiles as the engine runs a network whose card names them."""
    ev = recipe.get("eval")
    if not ev:
        return {}
    if not (data_dir / ev["set"]).exists():
        log.warning("%s not found: no metrics in the model card", data_dir / ev["set"])
        return {}
    metrics = recipe_metrics(recipe["task"], model, data_dir, ev, scale=recipe.get("scale", 1), tile=tile)
    out = {key: {k: round(v, 3) if isinstance(v, float) else v for k, v in vals.items()} for key, vals in metrics.items()}
    for key, vals in out.items():
        log.info("eval %s: %s", key, vals)
    return out


def record_segment(run_dir: Path, start_step: int, schedule_steps: int, machine: str,
                   precision: str = "fp32", loss: str | None = None) -> list[dict]:
    """Append this run to ``run_dir/segments.json`` and return every segment so far.

    A weight trained over several resumed runs (different machines, thread counts,
    precisions or extended schedules) lists each in its model card: the step it started
    from, the schedule length it ran under, the machine, the loss (when given: a recipe may
    change its loss part-way) and, when not fp32, the precision.  A segment that ended
    before saving any state (the next one starts at the same step) is replaced.  A run
    with nothing left to train (``start_step >= schedule_steps``: scoring and saving only)
    adds no segment.
    """
    path = run_dir / "segments.json"
    segments = json.loads(path.read_text()) if path.exists() else []
    if segments and start_step >= schedule_steps:
        return segments
    segments = [s for s in segments if s["from_step"] < start_step]
    rebuilt = run_dir / "rebuilt_at"
    fresh_optimizer = rebuilt.exists() and int(rebuilt.read_text()) == start_step
    segments.append({"from_step": start_step, "schedule_steps": schedule_steps, "machine": machine,
                     "started": time.strftime("%Y-%m-%d %H:%M"),
                     **({"loss": loss} if loss else {}),
                     **({"precision": precision} if precision != "fp32" else {}),
                     **({"optimizer": "state rebuilt from the weight (fresh AdamW moments)"} if fresh_optimizer else {})})
    path.write_text(json.dumps(segments, indent=1) + "\n")
    return segments


def rebuild_state(model: nn.Module, cfg: TrainConfig, weight: Path, run_dir: Path, name: str | None = None) -> int:
    """Rebuild a lost training state from a trained weight and its card; returns its step.

    For continuing a shipped weight when ``run_dir`` no longer holds its state (a new
    checkout, another machine).  Weights and EMA both start from the weight (its stored
    EMA); the step count, elapsed time and earlier segments come from its card.  What the
    weight does not hold starts afresh: AdamW's moments (empty) and the random streams,
    which are seeded from ``cfg.seed`` and the step so the continuation does not replay the
    first run's patches.  The new segment records that its optimizer state was rebuilt.
    ``name``: the recipe's; a weight whose card names another is refused (starting from
    another weight is the recipe's ``init``).
    """
    from .checkpoint import load_state, read_card

    state_path = run_dir / "state.pt"
    if state_path.exists():
        raise FileExistsError(f"{state_path} exists: the run resumes from it; remove it to rebuild from {weight}")
    card = read_card(weight)
    if name is not None and card.get("name") != name:
        raise ValueError(f"{weight} is {card.get('name')!r}, not this recipe's {name!r}: only a weight of the same "
                         "recipe can be continued (start from another weight with the recipe's \"init\")")
    training = card.get("training", {})
    step = int(training.get("steps_done", 0))
    if step <= 0:
        raise ValueError(f"{weight}: its model card records no training steps, so there is nothing to continue")
    own = model.state_dict()
    src = {k: v.float() for k, v in load_state(weight).items()}
    wrong = sorted(k for k in own if k not in src or src[k].shape != own[k].shape)
    if wrong:
        raise ValueError(f"{weight} does not fit this recipe's network ({len(wrong)} tensors missing or of another shape, "
                         f"e.g. {wrong[0]!r})")
    model.load_state_dict(src)
    seed = cfg.seed + step
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = training_state(model, model, opt, gen, step, [], float(training.get("wall_time_s", 0.0)), cfg,
                           sampler=np.random.default_rng(seed).bit_generator.state, torch_rng=gen.get_state())
    state["fresh_optimizer"] = True  # fit warms the learning rate up again: AdamW's moments are empty
    torch.save(state, state_path)
    earlier = [{k: v for k, v in seg.items() if k != "to_step"} for seg in training.get("segments", [])]
    (run_dir / "segments.json").write_text(json.dumps(earlier, indent=1) + "\n")
    (run_dir / "rebuilt_at").write_text(f"{step}\n")
    log.info("rebuilt the training state at step %d from %s (fresh optimizer moments)", step, weight)
    return step


def training_parts(recipe: dict[str, Any], data_dir: Path, cfg: TrainConfig) -> tuple[nn.Module, PatchSampler, MakePair, LossFn | None]:
    """A recipe's fresh network, patch sampler, input/target maker and loss (None: the plain ``cfg.loss``).

    Self-supervised recipes drop the clean images here: their sampler holds one fixed noisy
    copy of each, and the loss never sees a clean pixel.
    """
    name, task = recipe["name"], get_task(recipe["task"])
    torch.manual_seed(cfg.seed)
    model = build_model(recipe["arch"], task=task.name, scale=recipe.get("scale", 1), preset=recipe.get("preset", "tiny"), **recipe.get("config", {}))
    images = load_training_images(recipe, data_dir)
    from .. import tasks as _tasks

    task_mod = getattr(_tasks, task.name)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in recipe.get("degradation", {}).items()}
    if task.name == "sr":
        kwargs["scale"] = recipe.get("scale", 2)

    def make_pair(clean: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return task_mod.make_training_pair(clean, gen, **kwargs)

    loss_fn: LossFn | None = hole_loss(LOSSES[cfg.loss]) if task.name == "inpaint" else None
    method = recipe.get("self_supervised")
    if method:
        if task.name != "denoise":
            raise ValueError(f"recipe {name}: self_supervised recipes are for denoising, not {task.name}")
        if recipe.get("synthetic"):
            raise ValueError(f"recipe {name}: self_supervised recipes train on noisy pictures only; drop 'synthetic'")
        images = noisy_once(images, cfg.seed, **kwargs)
        if method == "sure":  # each image's noise level, estimated from the noisy image alone
            images = [with_sigma_plane(im, estimate_noise_sigma(im)) for im in images]
        loss_fn, make_pair = denoise_objective(method, seed=cfg.seed)
    images, weights = with_synthetic(images, recipe.get("synthetic"), seed=cfg.seed, patch=recipe["patch"])
    return model, PatchSampler(images, recipe["patch"], seed=cfg.seed, weights=weights), make_pair, loss_fn


def with_synthetic(images: list, synthetic: dict[str, Any] | None, seed: int = 0,
                   patch: int = 1) -> tuple[list, list[float] | None]:
    """The recipe's images plus its synthetic pictures, and the sampling weights that mix them.

    ``synthetic = {"dead_leaves": n, "share": s, "size": px}`` adds ``n`` dead-leaves
    pictures (:func:`~napari_attnrestore.training.synthetic.dead_leaves`, fixed by ``seed``)
    that together make up the fraction ``s`` of the patches drawn; the real images share the
    rest by pixel count (those smaller than ``patch``, which the sampler skips, get none, so
    the share holds).  Gray recipes get the pictures' luma.  Without it: the images and None
    (the sampler's own weighting).
    """
    if not synthetic:
        return images, None
    from .synthetic import dead_leaves_set

    unknown = set(synthetic) - {"dead_leaves", "share", "size"}
    if unknown or "dead_leaves" not in synthetic:
        raise ValueError(f"synthetic: expected dead_leaves (count), share and size, got {sorted(synthetic)}")
    if int(synthetic["dead_leaves"]) < 1:
        raise ValueError(f"synthetic: dead_leaves must be a positive count, got {synthetic['dead_leaves']}")
    share = float(synthetic.get("share", 0.5))
    if not 0 < share < 1:
        raise ValueError(f"synthetic share must lie between 0 and 1, got {share}")
    size = int(synthetic.get("size", 128))
    if size < patch:
        raise ValueError(f"synthetic size {size} is smaller than the training patch {patch}")
    extra = dead_leaves_set(int(synthetic["dead_leaves"]), size=size, seed=seed + 1)
    if images and images[0].ndim == 2:
        extra = [to_gray(np.moveaxis(im, 0, -1)) for im in extra]
    pixels = patch_pixels(images, patch)
    if not pixels.sum():
        raise ValueError(f"no training image is at least {patch}x{patch} pixels")
    weights = [*((1 - share) * pixels / pixels.sum()), *([share / len(extra)] * len(extra))]
    return images + extra, weights


def tau_schedule(model: nn.Module, anneal: Sequence[float] | None, steps: int) -> Callable[[int], None]:
    """``set_tau(step)`` for ACLA's Gumbel-softmax temperature (a no-op for other models).

    ``anneal = [from, to]`` or ``[from, to, over]``: geometric from ``from`` to ``to`` over
    the first ``over`` steps (default: the run's ``steps``), then held at ``to``.  With
    ``over`` fixed, extending a finished run's schedule continues at ``to`` instead of
    raising the temperature again.
    """
    if not anneal or not hasattr(model, "set_temperature"):
        return lambda step: None
    if len(anneal) not in (2, 3):
        raise ValueError(f"anneal_tau: expected [from, to] or [from, to, steps], got {anneal}")
    t0, t1 = float(anneal[0]), float(anneal[1])
    over = int(anneal[2]) if len(anneal) == 3 else steps
    if t0 <= 0 or t1 <= 0 or over < 1:
        raise ValueError(f"anneal_tau: temperatures and step count must be positive, got {anneal}")
    return lambda step: model.set_temperature(t0 * (t1 / t0) ** min(step / over, 1.0))


def run_folder(recipe: dict[str, Any], workdir: Path, gpu: bool) -> Path:
    """Where a recipe's run keeps its state: ``<name>-gpu`` under the recipe's ``train_gpu``
    settings (which a GPU uses), else ``<name>``."""
    return workdir / (f"{recipe['name']}-gpu" if gpu and recipe.get("train_gpu") else recipe["name"])


def run(recipe_path: Path, data_dir: Path, out_dir: Path, workdir: Path, device: str = "auto", steps: int | None = None,
        compile: bool | None = None, continue_weight: Path | None = None, precision: str | None = None,
        gpu_settings: bool | None = None) -> Path:
    """Train (or resume) the recipe and write its weights and model card; returns the weights path.

    ``steps``, ``compile`` (train through ``torch.compile``) and ``precision`` (``bf16``:
    mixed precision), when given, override the recipe for this run (its card segment says so).
    ``continue_weight``: with no saved state, continue from this trained weight of the
    recipe (:func:`rebuild_state`) instead of starting over.  ``gpu_settings``: train with
    the recipe's ``train_gpu`` block (and its run folder) or without it, whatever the device
    (None: on a CUDA device), e.g. to score and save on a CPU a run a GPU trained to its end.
    """
    recipe = json.loads(recipe_path.read_text())
    name = recipe["name"]
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    task = get_task(recipe["task"])
    train = dict(recipe["train"])
    gpu = dev.type == "cuda" if gpu_settings is None else gpu_settings
    if gpu:  # a GPU trains longer and with larger batches in the same wall time
        train.update(recipe.get("train_gpu", {}))
    cfg = TrainConfig(**train)
    if steps is not None:
        cfg.steps = steps
    if compile is not None:
        cfg.compile = compile
    if precision is not None:
        cfg.precision = precision
    run_dir = run_folder(recipe, workdir, gpu)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.pt"
    model, sampler, make_pair, loss_fn = training_parts(recipe, data_dir, cfg)
    if continue_weight is not None and not state_path.exists():
        rebuild_state(model, cfg, continue_weight, run_dir, name)
    if recipe.get("init") and not state_path.exists():  # a resumed run restores its own weights
        init_from(model, recipe["init"], out_dir, recipe.get("init_map"))  # (absent: None, no growing)
    method, deg = recipe.get("self_supervised"), recipe.get("degradation", {})

    n_params = sum(p.numel() for p in model.parameters())
    log.info("recipe %s: %s (%d parameters), %d images, device %s", name, recipe["arch"], n_params, len(sampler.images), dev)
    final = None
    set_tau = tau_schedule(model, recipe.get("anneal_tau"), cfg.steps)

    start = _resumed_step(state_path)
    set_tau(start)
    # what the weights learned from: a recipe edited under a saved state is refused, not resumed
    # with a card crediting the new settings for every step (length, precision, loss and
    # compiling may change between runs: the segments record them)
    inputs = {**{k: recipe.get(k) for k in _RECIPE_INPUTS}, "batch": cfg.batch, "lr": cfg.lr, "seed": cfg.seed}
    segments = record_segment(run_dir, start, cfg.steps, machine_description(dev), cfg.precision, cfg.loss)
    with open(run_dir / "loss.tsv", "a") as curve:
        try:
            for ev in fit(model, sampler.sample, make_pair, cfg, state_path=state_path,
                          sampler_state=(sampler.state, sampler.set_state), device=dev,
                          loss_fn=loss_fn, inputs=inputs):
                if ev.done:
                    final = ev
                    break
                set_tau(ev.step)
                curve.write(f"{ev.step}\t{ev.loss:.6f}\t{ev.elapsed:.1f}\n")
                curve.flush()
                if ev.step % (cfg.log_every * 10) == 0:
                    log.info("step %d/%d loss %.5f lr %.2e elapsed %.0fs", ev.step, ev.total, ev.loss, ev.lr,
                             ev.elapsed)
        except CheckpointError as e:  # the loop's advice names train's options; a recipe keeps its state here
            raise CheckpointError(f"{e} (recipe {name}: --steps N goes on; removing {run_dir} starts again)") from None
    assert final is not None and final.model is not None
    ema = final.model.float()
    # on the training device (a GPU scores McMaster in seconds), on the tiles its card will name
    metrics = evaluate(recipe, ema, data_dir, tile=trained_tile(ema, recipe["patch"], recipe.get("scale", 1)))
    ema = ema.to("cpu")
    card = {
        "name": name,
        # the committed recipe, as the repository names it (a run from another checkout wrote its
        # absolute path there); a copy elsewhere by its own path
        "recipe": (f"recipes/{recipe_path.name}" if recipe_path.parent.name == "recipes"
                   and (recipe_path.parent.parent / "napari_attnrestore").is_dir() else str(recipe_path.resolve())),
        "preset": recipe.get("preset", "tiny"),
        "parameters": n_params,
        "training": {
            "data": recipe["data"],
            **({"synthetic": recipe["synthetic"]} if recipe.get("synthetic") else {}),
            "degradation": deg,
            **({"self_supervised": method, "clean_images_used": False} if method else {}),
            **({"init": recipe["init"]} if recipe.get("init") else {}),
            **({"init_map": recipe["init_map"]} if recipe.get("init_map") is not None else {}),
            "patch": recipe["patch"],
            **{k: v for k, v in vars(cfg).items()},
            "steps_done": final.step,
            "wall_time_s": round(final.elapsed, 1),
            "machine": segments[-1]["machine"],  # the last that trained it (each segment names its own)
            "date": time.strftime("%Y-%m-%d"),
            "segments": [{**seg, "to_step": nxt["from_step"] if nxt else final.step}
                         for seg, nxt in zip(segments, [*segments[1:], None], strict=True)],
        },
        "normalization": "input scaled to [0, 1] (dtype range for uint8, percentiles otherwise)",
        "metrics": metrics,
        "description": recipe.get("description", ""),
    }
    path = save_checkpoint(ema, out_dir / f"{name}.safetensors", task=task.name, card=card)
    log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


#: the recipe's keys that say what a model learns from and what it is
_RECIPE_INPUTS = ("task", "arch", "preset", "config", "scale", "data", "color", "downscale", "synthetic", "degradation",
                  "self_supervised", "patch", "init", "init_map")


def _resumed_step(state_path: Path) -> int:
    """The step a recipe's run resumes from: its state's, or 0 when it has none."""
    if not state_path.exists():
        return 0
    try:
        return int(torch.load(state_path, map_location="cpu", weights_only=True)["step"])
    except Exception as e:  # truncated by a killed machine, another file, pickled code
        raise CheckpointError(f"{state_path}: cannot resume: not a readable training state ({type(e).__name__}); "
                              f"remove it to start the run again") from None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def rescore(recipe_path: Path, weight: Path, data_dir: Path) -> dict[str, Any]:
    """Score ``weight`` (a trained weight of the recipe) by the recipe's protocol again and
    write the metrics into its card, the rest of the card untouched; returns them."""
    from .checkpoint import load_checkpoint, read_card

    recipe = json.loads(Path(recipe_path).read_text())
    card = read_card(weight)
    if card.get("recipe") and Path(card["recipe"]).name != Path(recipe_path).name:
        raise ValueError(f"{weight} was trained by {card['recipe']}, not {recipe_path}")
    model = load_checkpoint(weight, task=recipe["task"])
    metrics = evaluate(recipe, model, data_dir, tile=card.get("tile"))  # as the engine runs it
    if not metrics:
        raise ValueError(f"{recipe_path} has no benchmark set to score {weight} on")
    card["metrics"] = {**card.get("metrics", {}), **metrics}
    path = weight.with_suffix(".json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(json_safe(card), indent=2, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)  # (a failed write leaves the card as it was)
    return metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", type=Path)
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="data folder (train/, bench/)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "weights")
    p.add_argument("--workdir", type=Path, default=Path("runs"))
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's step count")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="train through torch.compile (overrides the recipe's train.compile)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="bf16: mixed precision for this run (overrides the recipe's train.precision)")
    p.add_argument("--continue", dest="continue_weight", type=Path, default=None, metavar="WEIGHT",
                   help="when no training state is saved, continue from this trained weight of the recipe "
                        "(its .safetensors; step count and history from its card, fresh optimizer moments)")
    p.add_argument("--gpu-settings", action=argparse.BooleanOptionalAction, default=None,
                   help="use the recipe's train_gpu block and its run folder whatever the device (default: on CUDA)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("ATTNRESTORE_THREADS", 0)) or None)
    p.add_argument("--rescore", type=Path, default=None, metavar="WEIGHT",
                   help="train nothing: score this trained weight of the recipe again (as its network is now "
                        "run) and write the metrics into its card")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` saves the training state, then exits
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        if a.rescore is not None:
            rescore(a.recipe, a.rescore, a.data)
            return 0
        run(a.recipe, a.data, a.out, a.workdir, a.device, a.steps, a.compile, a.continue_weight, a.precision, a.gpu_settings)
    except (CheckpointError, ValueError, OSError) as e:  # a wrong recipe, weight, state or folder: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or `kill`: the loop saved its state on the way out
        print(f"interrupted; the training state is kept under {a.workdir}: run the same command to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
