"""``ar.train``: fine-tune or train a model on the user's own images, as a generator of events."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.geotiff import nodata_can_occur
from ..warning import warn
from .checkpoint import trained_tile
from .data import PairedPatchSampler, PatchSampler, colour_pictures_of, planes_of
from .gaps import gap_pairs, known_loss
from .loop import LOSSES, TrainConfig, TrainEvent, fit
from .selfsupervised import denoise_objective, hide_known, hole_loss

MODES = ("self-supervised", "paired", "synthetic")


def _as_list(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)) or hasattr(images, "shape"):
        return [images]
    return list(images)


#: How the images a session trains on are scaled (as restoring scales them), for model cards.
NORMALIZATION = "each image scaled to about [0, 1] as a whole (dtype range for uint8, 0.1/99.9 percentiles otherwise)"


def training_card(task: str, mode: str, steps: int, patch: int, lr: float, precision: str, *,
                  method: str | None = None, cfa: str | None = None, init: str | None = None,
                  nodata: float | None = None, batch: int | None = None, seed: int | None = None,
                  **extra: Any) -> dict[str, Any]:
    """The card of a model trained by :func:`train` (or stopped early in the Train widget,
    with ``extra`` saying so): task, training settings, what it started from, scaling.
    A NaN ``nodata`` is written to the JSON card as ``"nan"`` (read back as NaN)."""
    training: dict[str, Any] = {"mode": mode, "steps": steps, "patch": patch, "lr": lr, "precision": precision, **extra}
    optional = {"batch": batch, "seed": seed, "method": method, "cfa": cfa.upper() if cfa else None, "init": init,
                "nodata": nodata}
    training.update({k: v for k, v in optional.items() if v is not None})
    return {"task": task, "training": training, "normalization": NORMALIZATION}


def _name(x: Any, index: int, role: str = "training image") -> str:
    """What messages call an image: its file, else its place in the list."""
    return str(x) if isinstance(x, (str, os.PathLike)) else f"{role} {index + 1}"


def _open(x: Any, channel_axis: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The pixels of an array or a file, and what the file says of them: the nodata value it
    declares (GeoTIFF), whether it is RGB, its channel axis and whether 2 channels after Y, X
    are gray + alpha (a PNG's are, a TIFF's when it declares the second opacity) (``planes_of``
    keywords).  ``channel_axis``: the axis of the file as stored that holds channels, as
    ``restore(channel_axis=)`` takes it (a band stack stored as pages is read as time)."""
    if isinstance(x, (str, os.PathLike)):
        from ..io import open_image

        img = open_image(x)
        said = {"nodata": img.meta.get("nodata"), "rgb": img.rgb, "channel_axis": img.channel_axis,
                "alpha": str(x).lower().endswith(".png") or bool(img.meta.get("alpha"))}
        if channel_axis is not None:
            img = img.as_stored()  # an RGB OME-Zarr's stored cyx: channels, as restoring reads them
            n = len(img.axes)
            if not -n <= channel_axis < n:
                raise ValueError(f"{x}: channel_axis {channel_axis} is out of range for its {n} axes ({img.axes})")
            if img.axes[channel_axis % n] in "yx":
                raise ValueError(f"{x}: channel_axis {channel_axis} is its {img.axes[channel_axis % n].upper()} "
                                 f"axis ({img.axes}); give the axis that holds the bands")
            said.update(rgb=False, channel_axis=channel_axis % n)
        return _guarded(img), said
    return x, {}


def _guarded(img: Any) -> Any:
    """An opened file's pixels, whose damaged chunks are one error naming the file (a codec's
    own traceback otherwise)."""
    from ..io import GuardedArray

    return img.data if isinstance(img.data, np.ndarray) else GuardedArray(img.data, img.path)


def _colour_pictures(x: Any, index: int) -> list:
    """The RGB pictures of an array (colours on the last axis) or a file (RGB, or an OME C axis of 3)."""
    if isinstance(x, (str, os.PathLike)):
        from ..io import open_image

        img = open_image(x)
        return colour_pictures_of(_guarded(img), channel_axis=None if img.rgb else img.channel_axis, origin=str(x))
    return colour_pictures_of(x, origin=_name(x, index))


def _planes(images: Sequence[Any], nodata: float | None = None, first: int = 0, role: str = "training image",
            unmarked_gaps_warn: bool = False, channel_axis: int | None = None, **plane_kw: Any) -> list:
    """The normalized planes of every image; ``nodata`` (else the one a file declares) marks gaps.
    Messages name a file, or an array by its place (``first`` + its index in ``images``).
    With ``unmarked_gaps_warn`` (self-supervised inpainting, which learns around the image's
    own gaps) an integer image where nothing marks gaps is warned about."""
    out = []
    for i, im in enumerate(images):
        data, said = _open(im, channel_axis)
        declared = said.pop("nodata", None)
        if channel_axis is not None and not isinstance(im, (str, os.PathLike)):
            said["channel_axis"] = channel_axis
        name = _name(im, first + i, role)
        dtype = np.dtype(getattr(data, "dtype", np.float64))
        if dtype.kind == "c":
            raise ValueError(f"{name}: complex pixels ({dtype}) cannot be trained on; give real intensities")
        if nodata is not None and not np.isnan(nodata) and not nodata_can_occur(dtype, nodata):  # NaN: a gap anyway
            raise ValueError(f"{name}: nodata {nodata:g} cannot occur in this {dtype} image, so it marks no gap")
        if unmarked_gaps_warn and dtype.kind in "iub" and nodata is None and declared is None:
            warn(f"{name}: nothing marks gaps in this {dtype} image (it holds no NaN and declares no "
                 "nodata): any gaps it has are learned as data; give their value (nodata=, CLI --nodata; "
                 "0 for a Landsat-7 band)")
        planes = planes_of(data, nodata=nodata if nodata is not None else declared, origin=name, **said, **plane_kw)
        _refuse_flat(planes, name)
        out += planes
    return out


def _warn_other_units(noisy: Any, clean: Any, noisy_name: str, clean_name: str) -> None:
    """Warn when a clean image's intensities are not in its noisy input's units: the target is
    scaled with the input's range (as restoring maps the output back), so a clean float
    image paired with counts teaches the network to change the intensity scale."""
    span = noisy.hi - noisy.lo
    lo, hi = (clean.lo - noisy.lo) / span, (clean.hi - noisy.lo) / span
    if not (-0.5 <= lo <= 1.5 and -0.5 <= hi <= 1.5 and 0.2 <= hi - lo <= 5):
        warn(f"{clean_name} ({clean.lo:.4g} to {clean.hi:.4g}) is not in the intensity units of "
             f"{noisy_name} ({noisy.lo:.4g} to {noisy.hi:.4g}): the network learns to change the scale "
             "too; give clean images in the noisy ones' units")


def _refuse_flat(planes: list, name: str) -> None:
    """A ValueError when every pixel of an image holds one value: nothing to learn from it (it
    taught the denoiser to flatten images).  A subsample decides unless it is flat too."""
    seen: set[float] = set()
    for step in (max(1, max(planes[0].shape[-2:]) // 256), 1) if planes else ():
        for plane in planes:
            x = plane.values(step)
            x = x[np.isfinite(x)]
            if x.size:
                seen |= {float(x.min()), float(x.max())}
            if len(seen) > 1:
                return
        if step == 1:
            break
    raise ValueError(f"{name}: every pixel holds the same value ({', '.join(f'{v:g}' for v in seen) or 'none'}): "
                     "there is nothing to learn from it")


def _train(
    images: Any,
    task: str = "denoise",
    arch: str | None = None,
    model: Any = None,
    clean: Any = None,
    mode: str | None = None,
    scale: int | None = None,
    steps: int = 500,
    batch: int = 8,
    patch: int = 64,
    lr: float = 5e-4,
    device: str = "auto",
    preset: str = "tiny",
    config: dict[str, Any] | None = None,
    sigma: tuple[float, float] | None = None,
    state_path: str | Path | None = None,
    seed: int = 0,
    log_every: int = 10,
    nodata: float | None = None,
    method: str | None = None,
    compile: bool = False,
    cfa: str | None = None,
    precision: str = "fp32",
    channel_axis: int | None = None,
) -> Iterator[TrainEvent]:
    """Train on ``images``; yields :class:`~napari_attnrestore.training.loop.TrainEvent`
    (step, total, loss, elapsed, lr, done), the last (``done``) with the model.

    Arguments are checked when this is called; the training runs as the events are taken.

    Parameters
    ----------
    images
        An array (numpy, dask, zarr, napari layer data), a path, or a list of them.
        Every 2D plane is used; intensities are normalized as the engine does.  For
        demosaicing, colour pictures ``(..., Y, X, 3)``: each is mosaicked to make the
        inputs (``synthetic``, the only mode there).
    task
        ``denoise``, ``sr``, ``demosaic`` or ``inpaint``.
    arch
        Architecture of a new network (``hat``, ``grl``, ``acla``, ``psal``, ``csattn``).
    model
        Starting weights to fine-tune (``default:denoise``, a checkpoint, an nn.Module);
        None builds a fresh ``arch`` network (default ``hat``; ``preset`` plus ``config``).
    scale
        Super-resolution: 2 or 4 (a given model's own by default, else 2).
    steps, batch, patch, lr
        Optimizer steps, patches per step, patch side in pixels, peak learning rate (AdamW,
        warm-up then cosine decay to lr / 100).  Fine-tune a shipped weight at about 1e-5
        to 5e-5.
    device
        ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    log_every
        An event every this many steps (the loss averaged over them).
    clean
        Clean counterparts of ``images`` (same shapes) for supervised training.
    mode
        ``self-supervised`` (the default for denoising and inpainting without ``clean``:
        denoising learns from the noisy images alone, by ``method`` (neighbor2neighbor unless
        told), inpainting fills known pixels hidden behind random masks in gapped images),
        ``paired`` (the default with ``clean``), or ``synthetic`` (``images`` are clean; the
        task's degradation makes the inputs; the default for super-resolution and demosaicing).
    nodata
        This value (as well as NaN) marks the images' gaps: left out of the scaling, filled
        in the network's input as restoring fills them and never scored; inpainting learns
        around them (not for demosaicing's colour pictures).
    method
        Self-supervised denoising: ``neighbor2neighbor`` (the default; two adjacent pixels of every 2x2
        cell predict each other; every pixel trains), ``blind-spot`` (Noise2Void: hidden
        pixels are predicted from their neighbours) or ``sure`` (Stein's unbiased risk
        estimate of the squared error, for Gaussian noise whose level is estimated from each
        patch).
    sigma
        Synthetic denoising: the range of Gaussian noise levels (0-255 scale) added to the
        clean images (default 0 to 50).
    state_path
        Save the training state there and resume from it if it exists.  ``ar.load_model``
        loads a state's EMA weights as a model.
    seed
        Seeds the network's initial weights, the patches, the degradations and the random
        choices inside the network (ACLA's), so that the same call gives the same weights.
    cfa
        Demosaicing: mosaic with this Bayer pattern only (your camera's); default: all four.
    compile
        Train through ``torch.compile`` (about 10-15% faster per step on a CPU for the
        attention networks here, after a minute of compiling; a failure falls back to
        eager with a warning).
    precision
        ``bf16``: forward pass and loss under bfloat16 autocast, while the weights, AdamW
        and the EMA stay in float32 (mixed precision).  Faster on GPUs and on CPUs with
        bfloat16 instructions (AVX512-BF16, AMX); ``fp32`` (the default) everywhere else.
    channel_axis
        The axis of the images (and their clean counterparts) that holds channels: each
        scaled on its own, as ``restore(channel_axis=)`` scales them (a dim channel beside a
        bright one was learned at a hundredth of the range it is restored at).  For a file,
        an axis as stored (a band stack stored as pages reads as time), as restoring takes
        it; without it a file's own channel axis is used.

    To stop early, break out of the loop and take ``event.current_model()`` of the last
    event: the averaged weights so far, with a card that says so.  A given nn.Module is
    copied, not changed.  A ``state_path`` holding a state trained on other images or with
    another batch, patch, learning rate or nodata is refused.
    """
    from ..engine import resolve_device
    from ..models import build_model
    from ..tasks import get_task

    t = get_task(task)
    asked_scale, scale = scale, t.check_scale(scale)
    for key, value in (("steps", steps), ("batch", batch), ("patch", patch), ("log_every", log_every), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key} must be a whole number, not {value!r}")
    if log_every < 1:
        raise ValueError(f"log_every must be at least 1, got {log_every}")
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float, np.number))):
        raise ValueError(f"nodata must be a number, not {nodata!r}")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be at least 1 (got steps {steps}, batch {batch})")
    if patch < 8:
        raise ValueError(f"patch must be at least 8 pixels, got {patch}")
    if not 0 < lr < 1:
        raise ValueError(f"lr must be between 0 and 1, got {lr}")
    imgs = _as_list(images)
    if not imgs:
        raise ValueError("no training images given")
    cleans = _as_list(clean)
    if mode is None:
        mode = "paired" if cleans else ("synthetic" if t.name in ("sr", "demosaic") else "self-supervised")
    if mode not in MODES:
        raise ValueError(f"unknown training mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "self-supervised" and t.name in ("sr", "demosaic"):
        raise ValueError(f"self-supervised training is for denoising and inpainting, not {t.name}")
    if t.name == "demosaic" and mode != "synthetic":
        raise ValueError("demosaicing trains on colour pictures, mosaicked to make the inputs (mode 'synthetic'); "
                         "give the pictures as images, without clean counterparts")
    if cfa is not None and t.name != "demosaic":
        raise ValueError(f"cfa (a Bayer pattern) is for demosaicing, not {t.name}")
    if nodata is not None and t.name == "demosaic":
        raise ValueError("nodata marks gaps in gray images; demosaicing trains on whole colour pictures")
    if method is not None and not (mode == "self-supervised" and t.name == "denoise"):
        raise ValueError(f"method {method!r} is for self-supervised denoising, not {mode} {t.name}")
    if arch is not None and model is not None:
        raise ValueError(f"arch {arch!r} builds a new network; the model given is trained as it is: give one of them")
    if state_path is not None:  # found now, not when the first state is saved
        from .checkpoint import check_output

        check_output(state_path, "training state")
    if sigma is not None:
        if not (mode == "synthetic" and t.name == "denoise"):
            raise ValueError(f"sigma (the noise levels added to clean images) is for synthetic denoising, not {mode} "
                             f"{t.name}")
        if len(sigma) != 2 or not 0 <= float(sigma[0]) <= float(sigma[1]) <= 255:
            raise ValueError(f"sigma must be (low, high) noise levels with 0 <= low <= high <= 255, got {sigma!r}")
    sigma = (0.0, 50.0) if sigma is None else (float(sigma[0]), float(sigma[1]))
    method = method or "neighbor2neighbor"
    if mode == "paired" and t.name == "inpaint":
        raise ValueError("inpainting trains self-supervised on gapped images or synthetic on clean ones, not paired")
    if mode == "paired" and t.name == "sr":
        raise ValueError("super-resolution trains on high-resolution images, downsampled to make the inputs "
                         "(mode 'synthetic'); give them as images, without clean counterparts")
    if cleans and mode != "paired":
        raise ValueError(f"clean images are for paired training; mode {mode!r} does not use them")
    if mode == "paired" and len(cleans) != len(imgs):
        raise ValueError(f"paired training needs one clean image per input ({len(imgs)} inputs, {len(cleans)} clean)")

    yield None  # the arguments are checked: ``train`` runs to here when it is called
    # the new network's weights and torch's global generator (ACLA's Gumbel key choice draws
    # from it) start from the seed: the same call trains the same weights (a resumed state
    # puts its saved generator back)
    torch.manual_seed(seed)
    if isinstance(model, nn.Module):  # a copy: the caller's module stays as it was given
        net = copy.deepcopy(model)
    elif model is not None:
        from ..api import load_model

        net = load_model(model, task=t.name, scale=asked_scale if t.name == "sr" else None)
    else:
        net = build_model(arch or "hat", task=t.name, scale=scale, preset=preset, **(config or {}))
    scale = _check_trainable(net, t, asked_scale, scale)
    dev = resolve_device(device)
    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, min_lr=lr / 100, warmup=min(100, steps // 10),
                      seed=seed, log_every=log_every, checkpoint_every=max(50, steps // 10), compile=compile,
                      precision=precision)
    loss_fn = known_loss(LOSSES[cfg.loss])  # a target's gaps (NaN) are not scored
    if mode == "paired":
        pairs = []
        for i, (a, b) in enumerate(zip(imgs, cleans, strict=True)):
            if a is b or (isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike))
                          and os.path.realpath(a) == os.path.realpath(b)):
                raise ValueError(f"{_name(a, i)} is given as its own clean counterpart: paired training needs a "
                                 "clean image of the same scene (or train self-supervised on the noisy one)")
            pa, pb = _planes([a], nodata=nodata, first=i, channel_axis=channel_axis, keep_gaps=True), _planes(
                [b], nodata=nodata, first=i, role="clean image", channel_axis=channel_axis, keep_gaps=True)
            _warn_other_units(pa[0], pb[0], _name(a, i), _name(b, i, "clean image"))
            if len(pa) != len(pb):
                raise ValueError(f"paired images have a different number of planes: {_name(a, i)} has {len(pa)}, "
                                 f"its clean counterpart {_name(b, i, 'clean image')} has {len(pb)}")
            for pin, pout in zip(pa, pb, strict=True):  # the target in the input's units: inference maps the
                pout.lo, pout.hi = pin.lo, pin.hi  # output back with the input's statistics
            pairs += list(zip(pa, pb, strict=True))
        sampler: PatchSampler = PairedPatchSampler(pairs, patch, seed=seed)

        @gap_pairs
        def make_pair(x, gen):
            return x[:, :1], x[:, 1:]
    elif t.name == "demosaic":
        from ..tasks.demosaic import PATTERNS, check_pattern
        from ..tasks.demosaic import make_training_pair as mosaicked

        pictures = []
        for i, im in enumerate(imgs):
            pictures += _colour_pictures(im, i)
        sampler = PatchSampler(pictures, patch, seed=seed)
        patterns = [check_pattern(cfa)] if cfa else list(PATTERNS)

        def make_pair(x, gen):
            return mosaicked(x, gen, patterns=patterns)
    elif t.name == "inpaint":
        # the image's own gaps (NaN, nodata) stay holes without a target in both modes: read as
        # 0 they would be scored as truth, and the network would learn to paint gaps black
        sampler = PatchSampler(_planes(imgs, nodata=nodata, keep_gaps=True, channel_axis=channel_axis,
                                       unmarked_gaps_warn=mode == "self-supervised"), patch, seed=seed)
        loss_fn = hole_loss(LOSSES[cfg.loss])

        def make_pair(x, gen):
            return hide_known(x, gen)
    else:
        # scaled without the gaps, as restoring does; the gaps stay NaN: they are filled in the
        # input as restoring fills them, and not scored (read as 0 they were learned as truth)
        sampler = PatchSampler(_planes(imgs, nodata=nodata, channel_axis=channel_axis, keep_gaps=True), patch,
                               seed=seed)
        if mode == "self-supervised":
            if method in ("neighbor2neighbor", "nbr2nbr") and patch % 2:
                raise ValueError(f"neighbor2neighbor needs an even patch size, got {patch}")
            loss_fn, make_pair = denoise_objective(method, seed=seed)
        elif t.name == "denoise":
            from ..tasks.denoise import make_training_pair

            @gap_pairs
            def make_pair(x, gen):
                return make_training_pair(x, gen, sigma=sigma)
        else:
            from ..tasks.sr import make_training_pair as lowres

            @gap_pairs
            def make_pair(x, gen):
                return lowres(x, gen, scale=scale)

    if t.name == "sr" and patch % scale:
        raise ValueError(f"patch ({patch}) must be a multiple of the scale ({scale})")
    # what the state learns: resuming it with another objective would switch losses mid-run
    ss_method = method if mode == "self-supervised" and t.name == "denoise" else None
    objective = t.name if t.name == "inpaint" else f"{t.name}:{mode}"  # inpainting: one objective in both modes
    objective += f":{ss_method}" if ss_method else ""
    init = None  # what it was fine-tuned from: a weight's name, or a module that was trained before
    if isinstance(model, nn.Module):
        card = getattr(model, "card", None)
        init = (card.get("name") or f"a {type(model).__name__} module") if card is not None else None
    elif model is not None:
        init = (getattr(net, "card", None) or {}).get("name") or str(model)

    noise = [float(v) for v in sigma] if mode == "synthetic" and t.name == "denoise" else None  # the levels added

    def card_at(step: int, **extra: Any) -> dict[str, Any]:
        card = training_card(t.name, mode, step, patch, lr, precision, cfa=cfa, init=init, nodata=nodata,
                             method=ss_method, batch=batch, seed=seed, **({"sigma": noise} if noise else {}), **extra)
        tile = trained_tile(net, patch, int(getattr(net, "scale", 1) or 1))
        if tile:  # run as it was trained, before it is saved too
            card["tile"] = tile
        return card

    inputs = {"images": [_described(x) for x in imgs], "clean": [_described(x) for x in cleans], "batch": batch,
              "patch": patch, "lr": lr, "nodata": None if nodata is None else str(float(nodata)),
              "sigma": noise,
              "cfa": cfa.upper() if cfa else None,
              # a resumed run goes on in the state's stream, from its weights: a new seed, start or
              # arithmetic would not apply, and the card would say it had
              "seed": seed, "init": init, "precision": precision,
              **({"channel_axis": channel_axis} if channel_axis is not None else {})}  # (absent: earlier states resume)
    events = fit(net, sampler.sample, make_pair, cfg, state_path=state_path,
                 sampler_state=(sampler.state, sampler.set_state), device=dev, loss_fn=loss_fn, objective=objective,
                 network=_network(net, card_at(steps)), inputs=inputs)
    for ev in events:
        if ev.done and ev.model is not None:
            ev.model.card = card_at(ev.step)  # type: ignore[attr-defined]
        elif ev.snapshot is not None:
            ev = replace(ev, snapshot=_carded(ev.snapshot, lambda at=ev.step: card_at(
                at, planned_steps=steps, stopped_early=True)))
        yield ev


@functools.wraps(_train)
def train(*args: Any, **kwargs: Any) -> Iterator[TrainEvent]:
    state_path = inspect.signature(_train).bind(*args, **kwargs).arguments.get("state_path")
    events = _train(*args, **kwargs)
    next(events)  # a wrong argument is an error of this call, not of the first step
    return _apart_from_the_caller(events, state_path)


train.__name__ = train.__qualname__ = "train"  # help(ar.train) says train, not _train


def _rng_state() -> tuple:
    """torch's global generators: the CPU's, and every CUDA device's once CUDA is in use."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None and torch.cuda.is_initialized():
        torch.cuda.set_rng_state_all(state[1])


#: the training states this process's live trainings write (real path)
_STATES: set[str] = set()
_STATES_LOCK = threading.Lock()


def _apart_from_the_caller(events: Iterator[TrainEvent], state_path: str | os.PathLike | None) -> Iterator[TrainEvent]:
    """``events`` run on torch's global generator (seeded; a resumed state's) between their
    events, the caller's generator given back around each event and at the end: ``ar.train``
    reseeded the caller's random stream.  While it runs, ``state_path`` is its own: a
    training left paused (a notebook's generator after ``break``) saved its older state over
    a newer one when it was collected."""
    key = os.path.realpath(state_path) if state_path else None
    with _STATES_LOCK:
        if key in _STATES:
            raise ValueError(f"{state_path}: another training of this process is using this state file; run it to "
                             "its end or close it (its generator's .close()) first")
        if key:
            _STATES.add(key)
    try:
        lock = _lock_state_file(state_path) if state_path and os.name == "posix" else None
    except BaseException:
        with _STATES_LOCK:
            _STATES.discard(key)
        raise
    caller, ours = _rng_state(), None
    try:
        while True:
            if ours is not None:
                caller = _rng_state()
                _set_rng_state(ours)
            try:
                ev = next(events)
            except StopIteration:
                return
            finally:
                ours = _rng_state()
                _set_rng_state(caller)
            yield ev
    finally:
        if ours is not None:
            caller = _rng_state()
            _set_rng_state(ours)
        try:
            events.close()  # (a closed training saves its state: with its own generator's)
        finally:
            _set_rng_state(caller)
            if lock is not None:
                lock.unlink(missing_ok=True)
            with _STATES_LOCK:
                _STATES.discard(key)


def _lock_state_file(state_path: str | os.PathLike) -> Path:
    """Claim ``state_path`` for this process with ``STATE.lock`` beside it (host, pid and the
    process's start): two trainings given one state in two processes each saved over the
    other's, and were told the same command continues them.  A live holder on this machine
    is refused; a lock whose process is gone (or whose pid now names another process), or
    that another machine left (a batch job requeued on another node), is taken over, as a
    zarr output's owner is."""
    import socket

    import psutil

    lock = Path(f"{os.fspath(state_path)}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = f"{socket.gethostname()} {os.getpid()} {psutil.Process().create_time():.3f}\n"
    for _ in range(3):
        tmp = lock.with_name(f".{lock.name}.{os.getpid()}")
        tmp.write_text(mine)
        try:  # a link appears whole, or not at all: nobody reads a lock half written
            os.link(tmp, lock)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder:
                raise ValueError(f"{state_path}: another training ({holder}) is using this state file; wait for it "
                                 "to end, or give another --state") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # its process is gone
            continue
        except OSError:  # a file system without hard links: created, then written
            try:
                with open(lock, "x") as f:
                    f.write(mine)
            except FileExistsError:
                continue
        finally:
            tmp.unlink(missing_ok=True)
        return lock
    raise ValueError(f"{state_path}: cannot claim this state file ({lock} keeps coming back)")


def _lock_holder(lock: Path) -> str | None:
    """The live process of this machine that holds ``lock``, or None (gone, or elsewhere)."""
    from ..io._output import other_live_process

    try:
        host, pid, started = lock.read_text().split()[:3]
    except (OSError, ValueError):
        return None
    return other_live_process(host, pid, started)


def _described(x: Any) -> str:
    """An image as a training state records it: its file (path, size, time), or an array's
    shape, type and a hash of three small windows of its pixels."""
    from ..engine.store import content_sample, data_identity

    if isinstance(x, (str, os.PathLike)):
        return data_identity(x)
    shape = tuple(int(n) for n in getattr(x, "shape", ()))
    return f"array {shape} {getattr(x, 'dtype', '')} {content_sample(x) if shape else ''}".rstrip()


def _carded(snapshot: Callable[[], nn.Module], card: Callable[[], dict[str, Any]]) -> Callable[[], nn.Module]:
    """``snapshot`` whose model carries the card ``card()`` gives (a model stopped early)."""
    def model() -> nn.Module:
        net = snapshot()
        net.card = card()  # type: ignore[attr-defined]
        return net

    return model


def _network(net: nn.Module, card: dict[str, Any]) -> dict[str, Any] | None:
    """What a training state records to rebuild ``net`` (its architecture, config, channels,
    scale and card); None for a network not built from this package's architectures."""
    from ..models import list_architectures
    from .checkpoint import model_config

    desc = model_config(net)
    if desc["arch"] not in list_architectures():
        return None
    return {**desc, **card}


def _check_trainable(net: nn.Module, t: Any, asked_scale: int | None, scale: int) -> int:
    """The scale to train ``net`` at for task ``t``; a ValueError when the network cannot do the task."""
    own = int(getattr(net, "scale", 1) or 1)
    if t.name == "sr" and asked_scale is None and own in t.scales:
        scale = own  # a given x4 network trains at x4
    want = scale if t.name == "sr" else 1
    if own != want:
        needs = f"a x{want} model" if want > 1 else "a model that keeps the image size"
        raise ValueError(f"the model upscales x{own}; {t.name}{f' x{want}' if want > 1 else ''} needs {needs}")
    cin = getattr(net, "in_channels", None)
    if cin is not None and int(cin) != t.in_channels:
        raise ValueError(f"the model takes {cin} input channels; {t.name} feeds {t.in_channels}")
    return scale


def save_model(model: nn.Module, path: str | os.PathLike, task: str, card: dict[str, Any] | None = None,
               half: bool = False) -> Path:
    """Save a trained model as ``.safetensors`` + ``.json`` card (loadable with ``ar.load_model``).

    The card is the model's own (its architecture, configuration, training), named after
    the file; what described the weights it started as (their measured metrics, recipe,
    default choice), unless ``card`` gives them again, is left out: a shipped model changed
    and saved kept the shipped name and numbers.  The weights are stored as they are
    (float32), so the model loaded is the model saved; ``half`` stores them as float16 at
    half the size (the shipped weights are), which rounds a fine-tuning's small changes.
    The model stays on its device.
    """
    from .checkpoint import save_checkpoint

    base = dict(getattr(model, "card", {}) or {})
    for key in ("metrics", "recipe", "default_for", "default_choice", "description"):
        base.pop(key, None)
    earlier, name = base.get("name"), Path(path).stem
    if earlier and earlier != name:
        base["derived_from"] = earlier
    base["name"] = name
    base.update(card or {})
    base.pop("task", None)
    return save_checkpoint(model, path, task=task, card=base, half=half)


def train_to_end(events: Iterator[TrainEvent]) -> nn.Module:
    """Run a training generator to its end and return the model."""
    last = None
    for ev in events:
        last = ev
    if last is None or last.model is None:
        raise RuntimeError("training ended without a model")
    return last.model


__all__ = ["MODES", "save_model", "train", "train_to_end"]
