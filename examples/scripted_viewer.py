"""Open napari with a noisy sample, dock the Restore widget and restore the image.

Run ``python examples/scripted_viewer.py`` (add ``--quit`` to close napari once the
result is shown, e.g. under ``xvfb-run``).  The shipped default denoiser is used when
present; otherwise a small fixed smoothing network stands in, so the example always
runs (any ``torch.nn.Module`` mapping (B, 1, H, W) to (B, 1, H, W) works the same way).
"""

from __future__ import annotations

import argparse

import napari
import torch
from torch import nn

from napari_attnrestore.zoo import defaults


class GaussianSmoother(nn.Module):
    """A fixed 5x5 Gaussian blur: a stand-in when no trained weights are installed."""

    in_channels, out_channels, scale = 1, 1, 1

    def __init__(self, sigma: float = 1.2) -> None:
        super().__init__()
        r = torch.arange(-2, 3, dtype=torch.float32)
        g = torch.exp(-(r**2) / (2 * sigma**2))
        k = torch.outer(g, g)
        self.conv = nn.Conv2d(1, 1, 5, padding=2, padding_mode="reflect", bias=False)
        self.conv.weight.data[:] = k / k.sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", default="noisy_camera", help="sample key (noisy_camera, noisy_cell, ...)")
    parser.add_argument("--quit", action="store_true", help="close napari when the restored layer is shown")
    args = parser.parse_args()

    viewer = napari.Viewer(title="AttnRestore example")
    viewer.open_sample("napari-attnrestore", args.sample)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    if "denoise" not in defaults():
        widget.add_model("gaussian smoother (demo)", GaussianSmoother())
    (viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid).enabled = True
    widget.run()  # runs in a worker thread; progress appears in the activity dock
    if args.quit and widget.worker is not None:
        widget.worker.finished.connect(lambda: viewer.close())
    napari.run()


if __name__ == "__main__":
    main()
