"""Restore a chunked zarr image to OME-Zarr without any GUI (a server, a batch job).

``python examples/headless_zarr.py /tmp/attnrestore-demo`` writes a noisy 2D+t uint16
input (from scikit-image's cell picture) as OME-Zarr, restores it chunk by chunk into
another OME-Zarr with a progress bar, and reads back a corner.  Stop it with Ctrl-C and
run it again with ``--resume``: only the missing chunks are computed.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
from skimage import data
from tqdm import tqdm

import napari_attnrestore as ar
from napari_attnrestore.io import write_ome_zarr
from napari_attnrestore.io.samples import add_poisson_noise
from napari_attnrestore.zoo import defaults


def make_input(path: Path, frames: int, size: int) -> str:
    """A (T, Y, X) uint16 OME-Zarr made of shifted, noisy crops of the cell picture."""
    cell = np.pad(data.cell(), size, mode="reflect")
    planes = [add_poisson_noise(cell[7 * t : 7 * t + size, 5 * t : 5 * t + size], seed=t) for t in range(frames)]
    stack = da.from_array(np.stack(planes), chunks=(1, 256, 256))
    return write_ome_zarr(stack, path, "tyx", scale=(60.0, 0.65, 0.65), units={"t": "second", "y": "micrometer", "x": "micrometer"}, overwrite=True)


def demo_model() -> object:
    """The shipped default denoiser, else a fixed smoothing convolution (a stand-in)."""
    if "denoise" in defaults():
        return None
    import torch
    from torch import nn

    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect", bias=False)
    conv.weight.data[:] = torch.full((1, 1, 3, 3), 1 / 9)
    conv.in_channels, conv.out_channels, conv.scale = 1, 1, 1
    return conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="working folder for the input and output stores")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    args = parser.parse_args()

    args.folder.mkdir(parents=True, exist_ok=True)
    src, dst = args.folder / "input.ome.zarr", args.folder / "denoised.ome.zarr"
    if not src.exists():
        make_input(src, args.frames, args.size)

    bar = tqdm(unit="chunk", desc="restoring")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    cancel = threading.Event()
    try:
        ar.restore_to_zarr(str(src), str(dst), task="denoise", model=demo_model(), chunks=args.chunk,
                           progress=progress, cancel=cancel, resume=args.resume, overwrite=not args.resume)
    except KeyboardInterrupt:
        cancel.set()
        raise
    finally:
        bar.close()

    out = zarr.open_group(str(dst), mode="r")
    print(f"wrote {dst}: shape {out['0'].shape}, dtype {out['0'].dtype}, status {out.attrs['attnrestore']['status']}")
    print("axes:", [a["name"] for a in out.attrs["ome"]["multiscales"][0]["axes"]])
    print("corner of frame 0:\n", np.asarray(out["0"][0, :4, :4]))


if __name__ == "__main__":
    main()
