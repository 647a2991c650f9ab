"""Gigapixel streaming: a 32768x32768 uint16 zarr (1.07 Gpx) through a cheap module into zarr.

    python benchmarks/scale.py [--size 32768] [--graph-chunks 100000]

Prints peak RSS and Mpx/s of the stream (in a fresh process, as benchmarks/memory.py
does), and how long building the dask graph takes and how much memory it needs for an
image of about ``--graph-chunks`` chunks (built, not computed).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path


def graph_cost(n_chunks: int, chunk: int = 128) -> dict:
    """Build (not run) the restore graph of a square image of about ``n_chunks`` chunks."""
    import dask.array as da
    import torch

    import napari_attnrestore as ar

    side = int(math.sqrt(n_chunks)) * chunk
    src = da.zeros((side, side), dtype="uint16", chunks=chunk)  # a lazy source: no pixels exist
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = ar.restore(src, model=model, chunks=chunk, tile=chunk, overlap=8, normalize="none")
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "chunks": int(math.prod(out.numblocks)), "tasks": len(out.__dask_graph__()),
            "build_s": dt, "rss_growth_mb": rss1 - rss0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32768)
    p.add_argument("--graph-chunks", type=int, default=100_000)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attnrestore-scale"))
    p.add_argument("--skip-stream", action="store_true")
    p.add_argument("--graph-child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.graph_child:
        print(json.dumps(graph_cost(a.graph_child)))
        return 0
    r = subprocess.run([sys.executable, __file__, "--graph-child", str(a.graph_chunks)], capture_output=True, text=True, check=True)
    g = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"graph: {g['side']}x{g['side']} in {g['chunks']:,} chunks ({g['tasks']:,} tasks) built in "
          f"{g['build_s']:.2f} s, +{g['rss_growth_mb']:.0f} MB")
    if not a.skip_stream:
        here = Path(__file__).parent
        subprocess.run([sys.executable, str(here / "memory.py"), "--sizes", str(a.size), "--workdir", str(a.workdir)],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
