"""Peak memory of streaming a uint16 zarr through a 3x3 convolution into zarr.

    python benchmarks/memory.py [--sizes 4096 16384] [--workdir /tmp/attnrestore-mem]

Each size runs in a fresh subprocess; peak RSS is that process's ``ru_maxrss`` (it
includes the Python interpreter, torch and dask).  Memory must not grow with the image.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def child(size: int, workdir: Path) -> None:
    """Run one streaming restoration and print a JSON line with its measurements."""
    import napari_attnrestore as ar
    from napari_attnrestore.benchmarking import conv3x3, make_input

    src = workdir / f"in_{size}.zarr"
    dst = workdir / f"out_{size}.ome.zarr"
    if not src.exists():
        make_input(src, size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ar.restore_to_zarr(str(src), str(dst), model=conv3x3(), chunks=1024, tile=1056, overlap=8, overwrite=True,
                       pyramid=False, device="cpu")
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": size, "seconds": dt, "mpx_per_s": size * size / 1e6 / dt,
                      "peak_rss_mb": peak, "rss_after_input_mb": rss_before}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attnrestore-mem"))
    p.add_argument("--keep", action="store_true", help="keep the generated zarr stores")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.child:
        child(a.child, a.workdir)
        return 0
    results = []
    for size in a.sizes:
        # the input is made in its own process so that its memory does not count
        subprocess.run([sys.executable, "-c", "from napari_attnrestore.benchmarking import make_input; "
                        f"from pathlib import Path; "
                        f"p = Path({str(a.workdir)!r}) / 'in_{size}.zarr'; p.exists() or make_input(p, {size})"], check=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(size), "--workdir", str(a.workdir)],
                             check=True, capture_output=True, text=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{size}x{size} uint16 ({size * size / 1e6:.0f} Mpx): peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"{r['mpx_per_s']:.1f} Mpx/s ({r['seconds']:.1f} s)")
    if len(results) >= 2:
        ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
        print(f"peak RSS ratio {results[-1]['size']} / {results[0]['size']}: {ratio:.2f}")
    if not a.keep:
        shutil.rmtree(a.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
