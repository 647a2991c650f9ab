"""Render the napari window with the Restore widget docked, input and result side by side.

``python scripts/screenshot.py [--sample noisy_camera] [--out docs/images/napari_restore.png]``.
Without a display it re-runs itself under ``xvfb-run``.  The shipped default denoiser
is used when present; otherwise a fixed smoothing network stands in (the picture then
shows the widget, not the quality of a trained model) and the script says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ensure_display() -> None:
    if os.environ.get("DISPLAY") or os.environ.get("ATTNRESTORE_NO_XVFB"):
        return
    xvfb = shutil.which("xvfb-run")
    if xvfb is None:
        sys.exit("no display and no xvfb-run: install xvfb (see NOTES) or run on a desktop")
    env = {**os.environ, "ATTNRESTORE_NO_XVFB": "1"}
    cmd = [xvfb, "-a", "-s", "-screen 0 1920x1200x24", sys.executable, *sys.argv]
    sys.exit(subprocess.call(cmd, env=env))


def _stand_in() -> object:
    import torch
    from torch import nn

    conv = nn.Conv2d(1, 1, 5, padding=2, padding_mode="reflect", bias=False)
    r = torch.arange(-2, 3, dtype=torch.float32)
    g = torch.exp(-(r**2) / (2 * 1.2**2))
    k = torch.outer(g, g)
    conv.weight.data[:] = k / k.sum()
    conv.in_channels, conv.out_channels, conv.scale = 1, 1, 1
    return conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="noisy_camera")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "napari_restore.png")
    parser.add_argument("--size", type=int, nargs=2, default=(1500, 820), metavar=("W", "H"))
    args = parser.parse_args()
    _ensure_display()

    import napari
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from napari_attnrestore.zoo import defaults

    viewer = napari.Viewer(title="AttnRestore", show=True)
    viewer.window.resize(*args.size)
    (layer,) = viewer.open_sample("napari-attnrestore", args.sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    if "denoise" not in defaults():
        print("no shipped default denoiser: a fixed Gaussian smoother stands in", file=sys.stderr)
        widget.add_model("gaussian smoother (stand-in)", _stand_in())
    widget.set_options(input=layer)
    widget.run()
    t0 = time.monotonic()
    while widget.busy and time.monotonic() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.05)
    if widget.busy:
        sys.exit("restore did not finish in 10 minutes")
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid
    grid.enabled = True
    viewer.layers.selection.active = layer
    widget.set_options(input=layer)
    viewer.reset_view()
    for w in QApplication.allWidgets():  # drop toasts (e.g. napari's PyQt5 deprecation warning)
        if type(w).__name__ == "NapariQtNotification":
            w.close()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    img = viewer.screenshot(canvas_only=False, flash=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imsave(args.out, img, check_contrast=False)
    print(f"saved {args.out} ({img.shape[1]}x{img.shape[0]}); layers: {[lyr.name for lyr in viewer.layers]}")
    viewer.close()


if __name__ == "__main__":
    main()
