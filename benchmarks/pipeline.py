"""Pipeline efficiency: time in the network's forward passes over wall time.

    python benchmarks/pipeline.py [--size 4096] [--model default:denoise] [--device auto]

Streams a ``size x size`` uint16 zarr through a model into OME-Zarr and prints Mpx/s and
the efficiency: the share of the wall time the network spent computing (the rest is
reading, normalizing, tiling, blending and writing that did not overlap with it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import zarr

    import napari_attnrestore as ar
    from napari_attnrestore.api import resolve_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--model", default="default:denoise")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--chunks", type=int, default=1024)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attnrestore-pipeline"))
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    src = a.workdir / f"in_{a.size}.zarr"
    if not src.exists():
        arr = zarr.create_array(str(src), shape=(a.size, a.size), chunks=(1024, 1024), dtype="uint16")
        rng = np.random.default_rng(0)
        for y in range(0, a.size, 1024):
            for x in range(0, a.size, 1024):
                arr[y : y + 1024, x : x + 1024] = rng.normal(20000, 3000, (min(1024, a.size - y), min(1024, a.size - x)))
    handle = resolve_model(a.model, "denoise", None, a.device, a.precision)
    dst = a.workdir / "out.ome.zarr"
    shutil.rmtree(dst, ignore_errors=True)
    t0 = time.perf_counter()
    ar.restore_to_zarr(str(src), dst, model=handle, chunks=a.chunks, pyramid=False)
    wall = time.perf_counter() - t0
    eff = handle.forward_seconds / wall
    print(f"{a.size}x{a.size} uint16, model {handle.info.name}, device {a.device}: {a.size**2 / 1e6 / wall:.3f} Mpx/s, "
          f"wall {wall:.1f} s, forward {handle.forward_seconds:.1f} s in {handle.forward_calls} batches, "
          f"pipeline efficiency {eff:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
