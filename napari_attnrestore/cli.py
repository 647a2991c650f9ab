"""``attnrestore``: the command-line front door (restore, train, models, demo, bench)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from .io.tiff import COMPRESSIONS

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


class _ProgressBar:
    """A tqdm bar that appears with the first finished chunk (not before input is checked),
    its clock started when the job was; in a log (stderr not a terminal) it prints every 10 s."""

    def __init__(self, desc: str, disable: bool = False, unit: str = "chunk", resumable: bool = True) -> None:
        self.desc, self.disable, self.unit, self.resumable, self.bar = desc, disable, unit, resumable, None
        self.t0 = time.time()

    def __call__(self, done: int, total: int, **postfix: Any) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            start = max(0, done - 1) if self.resumable else 0  # a resumed job: the chunks (steps) done before
            tty = sys.stderr.isatty()
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, disable=self.disable, dynamic_ncols=tty,
                            initial=start, mininterval=0.1 if tty else 10.0, delay=1e-6,
                            file=None if tty else _Lines(sys.stderr), ascii=None if tty else True)
            self.bar.start_t = self.t0  # shown from the first update, timed from the job's start
        self.bar.total = total
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(done - self.bar.n)  # one print at most, and the rate from the updates

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Lines:
    """A stream for a progress bar in a log file (stderr not a terminal): each update a line
    of its own, ended by a newline (tqdm redraws one line with carriage returns, so a log
    showed no progress to ``tail`` or ``grep`` until the end), and no count twice (closing the
    bar printed its last count again, with another rate)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.last = stream, ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        count = line.split("[", 1)[0]  # the bar and n/total, before tqdm's [elapsed<left, rate]
        if line and count != self.last:
            self.stream.write(line + "\n")
            self.last = count

    def flush(self) -> None:
        self.stream.flush()


def _is_zarr(path: str) -> bool:
    return path.rstrip("/").endswith(".zarr")


def _check_folder(path: str | os.PathLike) -> None:
    """A UserError when the folder ``path`` goes into does not exist (a typo in it is named,
    not made into new folders, as the API's writers do) or is not writable."""
    folder = os.path.dirname(os.path.abspath(os.path.realpath(path)))
    if not os.path.isdir(folder):
        raise UserError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):  # said before the work, not after it (a PNG is written at the end)
        raise UserError(f"{path}: folder {folder} is not writable")


def cmd_restore(a: argparse.Namespace) -> int:
    import napari_attnrestore as ar

    if a.weights and a.arch:
        raise UserError("give either --weights or --arch, not both")
    model = a.weights or (f"default:{a.task}" if not a.arch else _arch_default(a.arch, a.task, a.scale))
    out = str(a.output)
    if not (_is_zarr(out) or out.lower().endswith((".tif", ".tiff", ".png"))):
        raise UserError(f"{out}: unsupported output type; use .zarr/.ome.zarr, .tif/.tiff or .png")
    _check_folder(out)
    from .io import refuse_output_over_input

    # before 'exists': with --overwrite the answer would only be that it is the input
    refuse_output_over_input(out, [a.input] + ([a.mask] if isinstance(a.mask, str) else []))
    if a.resume and not _is_zarr(out):  # (before 'exists', which would advise --overwrite alone)
        raise UserError(f"{out}: --resume continues a .zarr output; a TIFF or PNG is written whole")
    if a.compression and not out.lower().endswith((".tif", ".tiff")):
        raise UserError(f"{out}: --compression is for .tif output (a zarr store is zstd-compressed, a PNG deflated)")
    if os.path.exists(out) and not (a.overwrite or (a.resume and _is_zarr(out))):
        raise UserError(f"{out}: output exists; pass --overwrite to replace it" + (" or --resume to continue it" if _is_zarr(out) else ""))
    common: dict[str, Any] = dict(
        task=a.task, model=model, scale=a.scale, tile=a.tile, overlap=a.overlap, batch=a.batch, chunks=a.chunks,
        device=a.device, precision=a.precision, mask=a.mask, nodata=a.nodata, cfa=a.cfa, compile=a.compile,
        ensemble=a.ensemble, invert_mask=a.invert_mask, normalize=a.normalize, channel_axis=a.channel_axis,
        dtype=a.out_dtype, white_level=a.white_level,
    )
    t0 = time.perf_counter()
    if a.workers and a.scheduler not in (None, "threads", "local"):  # (the API's message names num_workers)
        raise UserError(f"--workers sets the threads of the default scheduler or the processes of --scheduler local; "
                        f"--scheduler {a.scheduler} has its own workers")
    if _is_zarr(out):
        bar = _ProgressBar("restore", disable=a.quiet)
        try:
            ar.restore_to_zarr(_input(a), out, overwrite=a.overwrite, resume=a.resume, progress=bar,
                               scheduler=a.scheduler, num_workers=a.workers, **common)
        finally:
            bar.close()
    else:
        if a.scheduler:
            raise UserError("--scheduler needs a .zarr output")
        if a.workers:
            import dask

            dask.config.set(num_workers=a.workers)  # the threaded scheduler's pool, for this process
        if out.lower().endswith(".png"):
            _restore_to_png(a, out, common)
        else:
            bar = _ProgressBar("restore", disable=a.quiet, unit="row", resumable=False)
            try:
                ar.restore_to_tiff(_input(a), out, overwrite=a.overwrite, progress=bar,
                                   compression=a.compression or "zlib", **common)
            finally:
                bar.close()
    if not a.quiet:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0




def _input(a: argparse.Namespace) -> Any:
    """The input of ``restore``: its path, or with ``--series`` that image of the file, opened."""
    if a.series is None:
        return str(a.input)
    from .io import open_image

    return open_image(a.input, series=a.series)  # (a bad N is a ValueError, reported as bad input)


def _restore_to_png(a: argparse.Namespace, out: str, common: dict[str, Any]) -> None:
    """Restore ``a.input`` into one PNG picture, written aside and renamed: a full disk or
    Ctrl-C leaves the old file, not half a PNG."""
    import numpy as np
    from skimage import io as skio

    import napari_attnrestore as ar

    from .api import as_source, channel_named, output_geometry, single_channel_mosaic

    src, meta = as_source(_input(a), stored=a.channel_axis is not None)
    if a.channel_axis is not None and isinstance(meta.get("axes"), str):
        meta = {**meta, "axes": channel_named(meta["axes"], a.channel_axis)}  # as restore names them
    src, meta, _ = single_channel_mosaic(a.task, src, meta, meta.get("channel_axis"))  # as restore sees it
    lazy = ar.restore(_input(a), **common)
    yx = [i for i, ax in enumerate(meta.get("axes") or "") if ax in "yx"][-1:] or [len(src.shape) - 1]
    k = lazy.shape[yx[0]] // src.shape[yx[0]]  # the SR factor, also when the model chose it
    if output_geometry(k, meta, len(src.shape), lazy.ndim, lazy.ndim > len(src.shape))["axes"] == "cyx":
        # gray + alpha, restored channels first: PNG keeps them last
        if lazy.shape[0] != 2 or not (meta.get("alpha") or str(a.input).lower().endswith(".png")):
            raise UserError(f"{out}: PNG holds one gray, gray + alpha or RGB(A) picture; the result has "
                            f"{lazy.shape[0]} channels (the second would be shown as transparency); "
                            "write .tif or .ome.zarr")
        lazy = lazy.transpose(1, 2, 0)
    if lazy.size > 64_000_000:
        raise UserError(f"{out}: image too large for PNG ({lazy.shape}); write .ome.zarr or .tif")
    if lazy.ndim > 3 or (lazy.ndim == 3 and lazy.shape[-1] not in (2, 3, 4)):
        raise UserError(f"{out}: PNG holds one 2D gray, gray + alpha or RGB(A) image; the result has shape {lazy.shape}")
    if np.dtype(lazy.dtype) not in (np.uint8, np.uint16):
        raise UserError(f"{out}: PNG holds 8- or 16-bit integers; the result is {np.dtype(lazy.dtype)}; write .tif")
    if np.dtype(lazy.dtype) == np.uint16 and lazy.ndim == 3:  # found before computing, not after
        raise UserError(f"{out}: a 16-bit PNG is written as one gray image only; the result has "
                        f"{lazy.shape[-1]} channels; write .tif")
    final = os.path.realpath(out)  # through a link: the file it names is replaced, the link kept
    pixels = np.asarray(lazy.compute())
    partial = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.partial-{os.getpid()}.png")
    try:
        skio.imsave(partial, pixels, check_contrast=False)
        os.replace(partial, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(partial)
        if isinstance(exc, OSError):
            raise UserError(f"{out}: cannot write PNG ({exc.strerror or exc})") from exc
        raise


def _kept_aside(a: argparse.Namespace) -> str:
    """Where the output an --overwrite replaces is kept while the new one is unfinished ('' for none)."""
    from .io import replaced_path

    if not (a.overwrite and _is_zarr(str(a.output))) or not os.path.isdir(replaced_path(str(a.output))):
        return ""
    return f" (the output it replaces is kept as {replaced_path(str(a.output))} until it is complete)"


def _arch_default(arch: str, task: str, scale: int | None) -> str:
    """The shipped ``arch`` weight for the task: the task's default when it is one, else the best measured."""
    from napari_attnrestore.zoo import default_key, defaults, headline_metric, list_models

    key = default_key(task, scale)
    cands = [m for m in list_models() if m.get("arch") == arch and default_key(m["task"], m.get("scale")) == key]
    if not cands:
        raise UserError(f"no shipped {arch} weights for {key}; see `attnrestore models`")
    chosen = defaults().get(key)
    return max(cands, key=lambda m: (m["name"] == chosen, headline_metric(m)[1] or float("-inf")))["name"]


def cmd_models(a: argparse.Namespace) -> int:
    import napari_attnrestore as ar
    from napari_attnrestore.models import get_architecture
    from napari_attnrestore.zoo import defaults, headline_metric

    chosen = {name: key for key, name in defaults().items()}
    rows = []
    for m in ar.list_models():
        key, value = headline_metric(m)
        rows.append({"name": m["name"], "task": m["task"], "arch": m["arch"], "scale": m.get("scale", 1),
                     "parameters": m.get("parameters", 0), "default_for": chosen.get(m["name"]),
                     "benchmark": key, "psnr": value})
    archs = []
    for name in ar.list_architectures():
        arch = get_architecture(name)
        n = sum(p.numel() for p in ar.build_model(name, task="denoise").parameters())
        archs.append({"name": name, "tasks": list(arch.tasks), "presets": list(arch.presets), "tiny_parameters": n,
                      "paper": arch.paper})
    if a.json:
        print(json.dumps({"weights": rows, "architectures": archs}, indent=2))
        return 0
    print("Shipped weights (each task's default marked; PSNR as the recipe measured it when training ended, on "
          "whole images; benchmarks/quality.py measures them through the engine, as the README's table):")
    print(f"  {'name':28s} {'task':8s} {'arch':6s} {'scale':>5s} {'params':>8s}  {'default for':12s} metric")
    for r in rows:
        summary = f"{r['benchmark']}: {r['psnr']:.2f} dB" if r["psnr"] is not None else "-"
        print(f"  {r['name']:28s} {r['task']:8s} {r['arch']:6s} {r['scale']:>5d} {r['parameters']:>8d}"
              f"  {r['default_for'] or '-':12s} {summary}")
    if a.measure:
        from napari_attnrestore.benchmarking import table

        print("\nArchitectures (tiny presets, 1-channel denoising head, measured in fresh processes):")
        print(table(ar.list_architectures(), a.sizes, threads=a.threads))
        return 0
    print("\nArchitectures:")
    for r in archs:
        print(f"  {r['name']:6s} tasks={','.join(r['tasks']):28s} presets={','.join(r['presets']):20s} "
              f"tiny params={r['tiny_parameters']}  ({r['paper']})")
    return 0


def _in_folders(images: list[str], clean: list[str]) -> tuple[list[str], list[str]]:
    """Training images with each folder given replaced by the images in it (sorted by name), and
    a clean folder by its files of the same names as the images (a pair is matched by name)."""
    from napari_attnrestore.io import ImageReadError
    from napari_attnrestore.io.images import file_kind
    from napari_attnrestore.training.data import IMAGE_SUFFIXES

    def listed(folder: str) -> list[str]:
        found = sorted(str(f) for f in Path(folder).iterdir()
                       if f.suffix.lower() in IMAGE_SUFFIXES or f.name.lower().endswith(".zarr"))
        if not found:
            raise UserError(f"{folder}: no images in this folder ({', '.join(IMAGE_SUFFIXES)}, .zarr)")
        return found

    def is_folder(path: str) -> bool:  # a zarr store, as the reader takes one (img.ome.zarr/0 too), is one image
        if not os.path.isdir(path):
            return False
        try:
            return file_kind(path) != "zarr"
        except ImageReadError:  # a plain folder
            return True

    expanded = [f for p in images for f in (listed(p) if is_folder(p) else [p])]
    if len(clean) == 1 and is_folder(clean[0]):
        missing = [os.path.basename(f) for f in expanded if not os.path.exists(os.path.join(clean[0], os.path.basename(f)))]
        if missing:
            raise UserError(f"{clean[0]}: a clean folder pairs its images by name, and it has no {missing[0]}"
                            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else ""))
        clean = [os.path.join(clean[0], os.path.basename(f)) for f in expanded]
    elif any(is_folder(c) for c in clean):
        raise UserError("give clean images as files, one per training image, or as one folder of the same names")
    return expanded, clean


def cmd_train(a: argparse.Namespace) -> int:
    import napari_attnrestore as ar
    from napari_attnrestore.training.checkpoint import check_output

    if not a.images:  # argparse's nargs="+" would say "required: images" when --clean took them all
        if len(a.clean) >= 2:
            raise UserError(f"no training images: --clean took all of {' '.join(a.clean)}; put the images before "
                            "--clean (train NOISY... --clean CLEAN...) or give --clean once per file")
        raise UserError("give at least one training image")
    if a.self_supervised and a.clean:
        raise UserError("--self-supervised trains without clean images; drop --clean, or drop --self-supervised to train paired")
    if a.mode and ((a.self_supervised and a.mode != "self-supervised") or (a.clean and a.mode != "paired")):
        given = "--self-supervised" if a.self_supervised else "--clean"
        raise UserError(f"--mode {a.mode} contradicts {given}; give one of them")
    mode = "self-supervised" if a.self_supervised else ("paired" if a.clean else a.mode)
    a.images, a.clean = _in_folders(a.images, a.clean)
    out = Path(a.out)
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the checkpoint name must end with .safetensors")
    # where the results go is checked before training, not after it (a run lost to a typo)
    check_output(out, "checkpoint")
    check_output(out.with_suffix(".json"), "model card")
    for path in (out, out.with_suffix(".json")):  # the weights and their card
        if path.exists() and not a.overwrite:
            raise UserError(f"{path}: exists; pass --overwrite to replace it")
    _check_folder(out)
    if a.state:
        check_output(a.state, "training state")
        _check_folder(a.state)
        for path, what in ((out, "weights"), (out.with_suffix(".json"), "model card")):
            if os.path.abspath(a.state) == os.path.abspath(path):  # saving the result would end the state
                raise UserError(f"{a.state}: the training state and the {what} (--out) are one file; give --state "
                                "another name")
    events = ar.train(
        [str(p) for p in a.images], task=a.task, arch=a.arch, model=a.start, clean=[str(p) for p in a.clean] or None,
        mode=mode, scale=a.scale, steps=a.steps, batch=a.batch, patch=a.patch, lr=a.lr, device=a.device,
        state_path=a.state, log_every=1, nodata=a.nodata, method=a.method, compile=a.compile, cfa=a.cfa,
        precision=a.precision, seed=a.seed, channel_axis=a.channel_axis,
    )
    model = None
    bar = _ProgressBar("train", disable=a.quiet, unit="step")
    try:
        for ev in events:
            if bar.bar is None and ev.step > 1 and a.state and not a.quiet:  # the first step of a resumed run
                print(f"continuing {a.state} from step {ev.step - 1} of {a.steps}", file=sys.stderr)
            bar(ev.step, a.steps, loss=f"{ev.loss:.4g}")
            if ev.done:
                model = ev.model
    finally:
        bar.close()
    assert model is not None
    said = {"training_images": [os.path.abspath(p) for p in a.images]}
    if a.clean:  # paired: what the model learned to give
        said["clean_images"] = [os.path.abspath(p) for p in a.clean]
    ar.save_model(model, out, task=a.task, card={"name": out.stem, **said}, half=a.half)
    if not a.quiet:
        print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from napari_attnrestore.demo import run_demo

    if a.size < 32:
        raise UserError(f"--size must be at least 32 pixels, got {a.size}")
    if not 0 <= a.sigma <= 255:
        raise UserError(f"--sigma is a noise level on the 0-255 scale; got {a.sigma}")
    bar = _ProgressBar("denoise", disable=a.quiet)  # (in a log: a line at most every 10 s)
    try:
        run_demo(Path(a.out), size=a.size, sigma=a.sigma, device=a.device, quiet=a.quiet, progress=bar)
    finally:
        bar.close()
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    import json

    import napari_attnrestore as ar
    from napari_attnrestore.benchmarking import CHEAP, bench, bench_table, model_spec
    from napari_attnrestore.engine.device import resolve_device

    models = a.models or [*(m["name"] for m in ar.list_models()), CHEAP]
    if any(s < 8 for s in a.sizes):
        raise UserError(f"--sizes must be at least 8 pixels, got {a.sizes}")
    # wrong options once, here, rather than as a failed row per run (each in its own process)
    if isinstance(a.tile, int) and a.tile < 8:
        raise UserError(f"--tile must be at least 8 pixels or auto, got {a.tile}")
    if isinstance(a.batch, int) and a.batch < 1:
        raise UserError(f"--batch must be at least 1 or auto, got {a.batch}")
    if a.chunks is not None and a.chunks < 1:
        raise UserError(f"--chunks must be positive, got {a.chunks}")
    resolve_device(a.device)
    for name in models:
        model_spec(name)  # an unknown name or an unreadable checkpoint: its one-line error
    if not a.quiet and not a.json:
        print(f"benchmarking {len(models) * len(a.sizes) * len(a.dtype)} runs "
              f"({'each in a fresh process' if not a.in_process else 'in this process'}) ...", file=sys.stderr)
    rows = bench(models, a.sizes, device=a.device, dtypes=tuple(a.dtype), workdir=a.workdir,
                 isolate=not a.in_process, chunks=a.chunks, tile=a.tile, batch=a.batch, compile=a.compile)
    print(json.dumps(rows, indent=1) if a.json else bench_table(rows, markdown=a.markdown))
    return 0 if all("error" not in r for r in rows) else 1


def _positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _int_or_auto(text: str) -> int | str:
    """argparse type: a positive integer or ``auto``."""
    if text.lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def _normalization(text: str) -> str | tuple[float, float] | list[tuple[float, float]]:
    """argparse type: auto, dtype, percentile, none, an intensity range ``LO,HI``, or one
    per channel, ``LO,HI;LO,HI``."""
    if text.lower() in ("auto", "dtype", "percentile", "none"):
        return text.lower()
    from .engine.normalize import intensity_range

    try:
        ranges = [intensity_range(part.split(",")) for part in text.split(";")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, dtype, percentile, none, LO,HI (e.g. 100,4500) or one "
                                         f"LO,HI per channel (100,400;200,3000), got {text!r}") from None
    return ranges[0] if len(ranges) == 1 else ranges


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help that states each option's default (options without one, or off, say nothing)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text or "(default" in text:
            return action.help  # (a help that states its default already: not twice)
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnrestore", description="Restore huge images with attention networks, chunk by chunk.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore an image file into .ome.zarr, .tif or .png", formatter_class=_Help)
    r.add_argument("input", help=".tif/.tiff (OME/Geo/Big), .png, .zarr/.ome.zarr")
    r.add_argument("output", help=".ome.zarr/.zarr (streamed, resumable), .tif/.tiff (tiled BigTIFF, pyramidal "
                   "when large) or .png")
    r.add_argument("--series", type=int, default=None, metavar="N",
                   help="which image of a TIFF holding several (a multi-position OME-TIFF's positions, a slide's "
                        "label or macro), from 0 (default: the first, with a warning naming the others)")
    r.add_argument("--task", default="denoise", choices=["denoise", "sr", "demosaic", "inpaint"], help="what to do")
    r.add_argument("--scale", type=int, choices=[2, 4], default=None, help="sr: the upscaling factor (default: that of --weights, else 2)")
    r.add_argument("--mask", default=None, help="inpaint: mask file (nonzero = fill), same Y, X as the input; pixels "
                                                         "without data outside it stay without data")
    r.add_argument("--invert-mask", action="store_true",
                   help="the mask marks the valid pixels (0 = fill), as GDAL mask bands and Landsat gap masks do")
    r.add_argument("--nodata", type=float, default=None, help="pixel value marking no data (NaN always does): kept as is, or filled by inpaint")
    r.add_argument("--normalize", type=_normalization, default="auto", metavar="{auto,dtype,percentile,none,LO,HI}",
                   help="the intensity range mapped to 0-1 for the network: auto (uint8: its range; else the 0.1/99.9 "
                        "percentiles of 16 windows), dtype (the type's range), none (data already 0-1), LO,HI "
                        "(a negative LO as --normalize=-128,127), or one LO,HI per channel (100,400;200,3000)")
    r.add_argument("--white-level", type=float, default=None, metavar="V",
                   help="the sensor's saturation value in the input's units (e.g. 4095 for a 12-bit camera): "
                        "results are clipped to it and denoising keeps saturated pixels as they came")
    r.add_argument("--out-dtype", choices=("uint8", "uint16", "int16", "float32"), default=None,
                   help="the result's pixel type (default: the input's), in the input's units, not rescaled "
                        "(values beyond the type's range are clipped); float32 keeps the fractions that integer "
                        "rounding drops, which matter for measuring low counts")
    r.add_argument("--channel-axis", type=int, default=None, metavar="N",
                   help="this axis of the file as stored holds channels (bands), each scaled on its own: a band "
                        "stack stored as pages, read as time or z, shares one range otherwise")
    r.add_argument("--cfa", default=None, type=str.upper, choices=["RGGB", "BGGR", "GRBG", "GBRG"], help="demosaic: Bayer pattern")
    r.add_argument("--arch", default=None, help="use the shipped weights of this architecture")
    r.add_argument("--weights", default=None,
                   help="checkpoint file: .safetensors (or its .json card), a training state (--state's .pt: its "
                        "averaged model), or a HAT/GRL/SwinIR .pth")
    r.add_argument("--tile", type=_int_or_auto, default=None,
                   help="network tile side in pixels (default 256, or the tile the model's card names: CSAttn runs on "
                        "tiles of its training patches), or 'auto': the largest that fits in free memory")
    r.add_argument("--overlap", type=int, default=None, help="tile overlap and chunk halo (default: the model's hint)")
    r.add_argument("--batch", type=_int_or_auto, default=None,
                   help="tiles per forward pass, or 'auto' (fit free memory); default the model's")
    r.add_argument("--chunks", type=int, default=None, help="chunk side (read/write unit; default a multiple of the input's chunk near 1024, else 1024)")
    r.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="the network's arithmetic: auto is fp32 on the CPU and bf16 on a CUDA GPU for models that "
                        "declare it safe (default auto)")
    r.add_argument("--compile", action="store_true", help="run the network through torch.compile (falls back with a warning)")
    r.add_argument("--ensemble", action="store_true",
                   help="self-ensemble: average 8 turned/mirrored passes of every tile (a Bayer mosaic's: turned and "
                        "moved by a pixel; 8x slower, a little better)")
    r.add_argument("--scheduler", default=None, help="'local' (LocalCluster of processes) or tcp://host:port")
    r.add_argument("--workers", type=_positive_int, default=None,
                   help="threads (default scheduler) or worker processes (--scheduler local); default one per core")
    r.add_argument("--resume", action="store_true", help="continue an interrupted .zarr job")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output")
    r.add_argument("--compression", type=str.lower, choices=COMPRESSIONS, default=None,
                   help="TIFF output's compression (default zlib); jpeg: lossy, 8-bit output only, several times "
                        "smaller, as slide scanners store")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary (warnings still show)")
    r.set_defaults(func=cmd_restore)

    t = sub.add_parser("train", help="train or fine-tune on your own images (self-supervised on noisy data)",
                       formatter_class=_Help,
                       description="Train or fine-tune a model on your own images; writes a .safetensors checkpoint "
                                   "and its .json model card.  Paired training: attnrestore train NOISY... --clean "
                                   "CLEAN... --out m.safetensors (the images first, then their clean counterparts "
                                   "in the same order).")
    t.add_argument("images", nargs="*", metavar="IMAGE",
                   help="training images (.tif/.tiff, .png, .jpg, .zarr/.ome.zarr, or folders of them; at least one, "
                        "before --clean); every 2D plane is used (demosaic: colour pictures, mosaicked to make the inputs)")
    t.add_argument("--out", required=True, help="checkpoint to write (.safetensors, with a .json card)")
    t.add_argument("--task", default="denoise", choices=["denoise", "sr", "demosaic", "inpaint"],
                   help="what the model learns")
    t.add_argument("--cfa", default=None, type=str.upper, choices=["RGGB", "BGGR", "GRBG", "GBRG"],
                   help="demosaic: train on your camera's Bayer pattern only (default: all four)")
    t.add_argument("--scale", type=int, choices=[2, 4], default=None,
                   help="sr: the upscaling factor to train (default: that of the --from model, else 2)")
    t.add_argument("--self-supervised", action="store_true",
                   help="train on the degraded images only: denoising by --method, or inpainting known pixels hidden by masks")
    t.add_argument("--method", default=None, choices=["neighbor2neighbor", "blind-spot", "sure"],
                   help="self-supervised denoising: adjacent pixels predict each other (default), Noise2Void blind spots, "
                        "or Stein's unbiased risk estimate (Gaussian noise; its level is estimated from each patch)")
    t.add_argument("--nodata", type=float, default=None,
                   help="value marking the images' gaps (NaN always does): left out of the scaling; inpaint learns around them")
    t.add_argument("--channel-axis", type=int, default=None, metavar="N",
                   help="this axis of the files as stored holds channels (bands), each scaled on its own, as "
                        "restore --channel-axis scales them")
    t.add_argument("--clean", nargs="+", action="extend", default=[], metavar="CLEAN",
                   help="clean counterparts of the images, in their order (paired, supervised training); after "
                        "the images, or once per file (--clean a.tif --clean b.tif), or one folder holding files of "
                        "the images' names")
    t.add_argument("--mode", default=None, choices=["self-supervised", "paired", "synthetic"],
                   help="self-supervised: from the degraded images alone (default for denoise and inpaint); paired: "
                        "with --clean (default when given); synthetic: the images are clean and the task's "
                        "degradation makes the inputs (default for sr and demosaic)")
    t.add_argument("--arch", default=None, help="architecture of a new model (default hat)")
    t.add_argument("--from", dest="start", default=None, help="fine-tune these weights (e.g. default:denoise)")
    t.add_argument("--steps", type=int, default=500, help="optimizer steps to train (default 500)")
    t.add_argument("--batch", type=int, default=8, help="patches per step (default 8)")
    t.add_argument("--patch", type=int, default=64,
                   help="side of the square training patches in pixels (default 64); images smaller than it are left out")
    t.add_argument("--lr", type=float, default=5e-4,
                   help="peak learning rate (default 5e-4; warmup, then a cosine decay to 1/100 of it)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed (default 0): the same command and seed train the same weights")
    t.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    t.add_argument("--compile", action="store_true", help="train through torch.compile (falls back with a warning)")
    t.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: mixed precision (bfloat16 autocast, float32 weights); faster on GPUs and CPUs with bf16")
    t.add_argument("--state", default=None, help="training state file: saved as it goes, resumed if it exists "
                                                 "(restore --weights and train --from take its weights so far)")
    t.add_argument("--half", action="store_true",
                   help="store the weights as float16, at half the size (as the shipped ones); rounds small changes")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar (warnings still show)")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list shipped weights and architectures", formatter_class=_Help)
    m.add_argument("--measure", action="store_true", help="also measure MACs/px, CPU speed and peak memory")
    m.add_argument("--json", action="store_true", help="print the weights and architectures as JSON (for scripts)")
    m.add_argument("--sizes", type=_positive_int, nargs="+", default=[256, 1024], help="image sides to measure at")
    m.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for --measure")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="pipeline speed, memory and efficiency of the shipped models and a 3x3 conv", formatter_class=_Help)
    b.add_argument("--sizes", type=_positive_int, nargs="+", default=[512, 2048], help="image sides (uint16 zarr in, OME-Zarr out)")
    b.add_argument("--models", nargs="+", default=None,
                   help="shipped weight names, checkpoint files or 'conv3x3' (default: every shipped model and conv3x3)")
    b.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    b.add_argument("--precision", "--dtype", dest="dtype", nargs="+", default=["fp32"],
                   choices=["auto", "fp32", "bf16", "fp16"], help="compute precisions to measure (as restore's --precision)")
    b.add_argument("--chunks", type=int, default=1024, help="chunk side")
    b.add_argument("--tile", type=_int_or_auto, default=None, help="tile side or 'auto' (default 256, or the model card's tile)")
    b.add_argument("--batch", type=_int_or_auto, default=None, help="tiles per forward pass or 'auto'")
    b.add_argument("--compile", action="store_true", help="run the networks through torch.compile")
    b.add_argument("--workdir", default=None, help="folder for the generated input and output (default: a temp folder)")
    b.add_argument("--in-process", action="store_true", help="run here, not each in a fresh process (peak RSS is then cumulative)")
    b.add_argument("--json", action="store_true", help="print the measurements as JSON")
    b.add_argument("--markdown", action="store_true", help="print a markdown table")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="denoise a bundled picture chunk by chunk; write OME-Zarr + before/after PNG", formatter_class=_Help)
    d.add_argument("--out", default="attnrestore-demo", help="output folder")
    d.add_argument("--size", type=int, default=1024, help="side of the demo image")
    d.add_argument("--sigma", type=float, default=25.0, help="Gaussian noise sigma (8-bit units)")
    d.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)
    return p


def _version() -> str:
    from napari_attnrestore import __version__

    return f"attnrestore {__version__}"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe bad input: ValueError covers ImageReadError and CheckpointError,
    OSError covers missing files, permissions, ImageWriteError and OutputError, FloatingPointError
    a training that diverged."""
    return (UserError, ValueError, TypeError, OSError, FloatingPointError)


_SHOWN: set[str] = set()


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the command line: ``attnrestore: warning: <message>``, one line,
    without the source line (above a progress bar, not through it)."""
    text = str(message).splitlines()[0] if str(message) else category.__name__
    if text in _SHOWN:  # a file opened twice (metadata, then pixels) warns twice; it is said once
        return
    _SHOWN.add(text)
    try:
        from tqdm.auto import tqdm

        tqdm.write(f"attnrestore: warning: {text}", file=sys.stderr)
    except ImportError:
        print(f"attnrestore: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (2 for bad input, with a one-line message).
    The caller's signal handlers and warning display are as they were afterwards."""
    parser = build_parser()
    a = parser.parse_args(argv)
    with warnings.catch_warnings():  # the caller's own display comes back afterwards
        warnings.showwarning = _show_warning
        _SHOWN.clear()
        return _run(a)


def entry() -> int:
    """The ``attnrestore`` command: :func:`main`, in a process that exits when it returns, so
    after a stop signal further ones stay ignored until it has (a second Ctrl-C or SIGTERM
    killed it by the signal, or aborted it, while it was shutting down)."""
    global _EXITING
    _EXITING = True
    return main()


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch system's time limit, ``docker stop``) or SIGHUP (the ssh
    session closed), handled as Ctrl-C is: a training saves its state at the step it
    reached, a zarr job is left resumable."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__()
        self.signum = signum


#: the signals that end a run as Ctrl-C does (those the platform has)
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _on_stop_signal(signum: int, frame: Any) -> None:
    _ignore_further_stops()
    raise _Terminated(signum)


def _on_interrupt(signum: int, frame: Any) -> None:
    _ignore_further_stops()
    raise KeyboardInterrupt


#: set by the first stop signal: the command is on its way out
_SIGNALLED = threading.Event()
#: the process ends when the command does (the ``attnrestore`` command, not ``main`` called from Python)
_EXITING = False


def _ignore_further_stops() -> None:
    """Once: a second Ctrl-C or signal (timeout and SLURM send them again) waits for the
    cleanup, which the first began (it aborted the process, or killed it by the signal)."""
    import signal

    _SIGNALLED.set()
    for name in (*_STOP_SIGNALS, "SIGINT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _run(a: argparse.Namespace) -> int:
    """Run the parsed command; interrupts and user errors become a line and an exit status."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    stops = [getattr(signal, n) for n in _STOP_SIGNALS if hasattr(signal, n)] if main_thread else []
    previous = {sig: signal.signal(sig, _on_stop_signal) for sig in stops}
    if main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # (not when ignored)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_interrupt)
    _SIGNALLED.clear()
    try:
        return int(a.func(a) or 0)
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, _Terminated) else "interrupted"
        if a.command == "train":
            hint = ("nothing was saved; pass --state FILE to make a training resumable" if not a.state
                    else f"the training state is saved in {a.state}; the same command continues it"
                    if os.path.exists(a.state) else "no training step had run; nothing was saved")
        elif a.command == "restore" and not _is_zarr(str(a.output)):
            hint = f"{a.output} was not written (an earlier file of that name is left as it was)"
        elif a.command == "restore" and os.path.isdir(str(a.output)):
            hint = f"{a.output} can be continued with --resume" + _kept_aside(a)
        else:
            hint = "nothing was written" if a.command == "restore" else ""
        print(f"attnrestore: {what}" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return 128 + stop.signum if isinstance(stop, _Terminated) else 130
    except BrokenPipeError:  # `attnrestore models | head -1`: the reader has all it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (Python's flush at exit would fail again)
        return 141
    except _user_errors() as e:
        if os.environ.get("ATTNRESTORE_DEBUG"):
            raise
        from .io.errors import OVERWRITE, RESUME

        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = msg.replace(OVERWRITE, "--overwrite").replace(RESUME, "--resume")  # the options as typed here
        # the API's argument names as the options that set them
        msg = re.sub(r"^(chunks|tile|overlap|batch|steps|patch|lr)( and (batch|steps))? must be",
                     lambda m: f"--{m[1]}" + (f" and --{m[3]}" if m[3] else "") + " must be", msg)
        print(f"attnrestore: error: {msg}" + (_kept_aside(a) if a.command == "restore" else ""), file=sys.stderr)
        return EXIT_USAGE
    finally:
        if not (_EXITING and _SIGNALLED.is_set()):  # (a second signal now would end the exit it waits for)
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(entry())
