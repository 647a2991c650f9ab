"""Cost of every architecture: parameters, multiply-adds per pixel, CPU speed, peak memory.

    python benchmarks/models.py [--sizes 256 1024] [--threads 1] [--archs hat grl ...] [--markdown]

For each registered architecture (tiny preset, 1-channel denoising head): parameters,
multiply-adds per input pixel (torch's FLOP counter / 2), and per size the CPU forward
throughput of one whole-image pass (best of 2 after a warm-up) and the peak RSS of a
fresh process doing it.  For PSAL it also prints what one full non-local attention map
would need at the largest size.  Same table as ``attnrestore models --measure``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    import napari_attnrestore as ar
    from napari_attnrestore.benchmarking import table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", nargs="*", default=None)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    print(table(a.archs or ar.list_architectures(), a.sizes, threads=a.threads, preset=a.preset, markdown=a.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
