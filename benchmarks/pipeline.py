"""Pipeline efficiency: time in the network's forward passes over wall time.

    python benchmarks/pipeline.py [--size 4096] [--model default:denoise] [--device auto] [--output tif]

Streams a ``size x size`` uint16 zarr through a model into OME-Zarr (or a tiled TIFF) and
prints Mpx/s, the forward passes, and the efficiency: the share of the wall time the
network spent computing (the rest is reading, normalizing, tiling, blending and writing
that did not overlap with it).  The same number of forward passes for both outputs shows
that writing a TIFF computes each chunk once.
``attnrestore bench`` measures the same for several models, sizes and precisions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from napari_attnrestore.benchmarking import run_pipeline

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--model", default="default:denoise", help="a shipped weight, a checkpoint, or conv3x3")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--chunks", type=int, default=1024)
    p.add_argument("--output", choices=["zarr", "tif"], default="zarr")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attnrestore-pipeline"))
    a = p.parse_args(argv)
    r = run_pipeline(a.model, a.size, a.workdir, device=a.device, precision=a.precision, chunks=a.chunks,
                     output=a.output)
    print(f"{a.size}x{a.size} uint16 to {a.output}, model {a.model}, device {r['device']}: {r['mpx_s']:.3f} Mpx/s, "
          f"wall {r['wall_s']:.1f} s, forward {r['forward_s']:.1f} s in {r['forward_calls']} batches, "
          f"pipeline efficiency {r['efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
