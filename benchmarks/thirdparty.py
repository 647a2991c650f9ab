"""Published-architecture checkpoints through the tiled engine (needs the ``thirdparty`` extra).

    python benchmarks/thirdparty.py [--size 2048] [--device auto] [--workdir /tmp/attnrestore-3p]

Builds HAT-S (x4 SR) and GRL-T (x1 denoising) with spandrel's own classes and random
weights, saves each as ``.pth`` and ``.safetensors``, loads both with ``ar.load_model``
(tensors only, never pickled code), checks they compute the same network, restores a
``size x size`` RGB image through the tiled engine into OME-Zarr (``--resume`` continues
an interrupted run), and prints load/restore times and throughput.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def hat_s(scale: int = 4):
    """HAT-S as published: embed 144, 6x6 blocks, 6 heads, window 16, compress 24, squeeze 24."""
    from spandrel.architectures.HAT import HAT

    return HAT(in_chans=3, embed_dim=144, depths=(6,) * 6, num_heads=(6,) * 6, window_size=16, compress_ratio=24,
               squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, mlp_ratio=2.0, upscale=scale,
               upsampler="pixelshuffle", img_size=64)


def grl_t():
    """GRL-T (denoising): embed 64, depths [4, 4, 4, 4], 2 + 2 heads, window 16, stripes 64x64 (anchors / 4).

    The paper's denoisers use 64x128 stripes; spandrel 0.4 cannot load those (it rebuilds
    the network at a 64-px image size, smaller than the stripe).
    """
    from spandrel.architectures.GRL import GRL

    return GRL(in_channels=3, out_channels=3, embed_dim=64, upscale=1, upsampler="", depths=[4, 4, 4, 4],
               num_heads_window=[2, 2, 2, 2], num_heads_stripe=[2, 2, 2, 2], window_size=16, stripe_size=[64, 64],
               stripe_groups=[None, None], stripe_shift=True, mlp_ratio=2.0, anchor_window_down_factor=4,
               local_connection=False, img_size=64)


def _same_network(*nets) -> bool:
    """Whether the networks give bitwise-identical output on a small random image."""
    import torch

    x = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        first, *others = (n.eval()(x) for n in nets)
        return all(torch.equal(first, o) for o in others)


def checkpoint_state(net) -> dict:
    """What a released checkpoint holds: the state dict and the buffers a class marks
    non-persistent (GRL's stripe tables), from which spandrel reads the window and stripe
    sizes; without them it assumes window 8 and 8x8 stripes, another network."""
    state = dict(net.state_dict())
    for name, buf in net.named_buffers():
        state.setdefault(name, buf)
    return {k: v.contiguous() for k, v in state.items()}


def main(argv: list[str] | None = None) -> int:
    import torch
    import zarr
    from safetensors.torch import save_file

    import napari_attnrestore as ar
    from napari_attnrestore.engine.store import job_state

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--device", default="auto")
    # 384: a 1024-px chunk plus its 32-px halo takes 3 x 3 tiles (1.3 Mpx of work for 1 Mpx; 512 px tiles need 2.4)
    p.add_argument("--tile", type=int, default=384)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/attnrestore-3p"))
    p.add_argument("--only", choices=["hat-s", "grl-t"], default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted restore in --workdir")
    a = p.parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    img = (np.random.default_rng(0).random((a.size, a.size, 3)) * 255).astype(np.uint8)
    builds = {"hat-s": (hat_s, "sr", 4), "grl-t": (grl_t, "denoise", None)}
    for name, (build, task, scale) in builds.items():
        if a.only and name != a.only:
            continue
        torch.manual_seed(0)
        net = build()
        n = sum(p.numel() for p in net.parameters())
        state = checkpoint_state(net)
        loaded = {}
        for suffix in (".pth", ".safetensors"):
            path = a.workdir / f"{name}{suffix}"
            torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
            t0 = time.perf_counter()
            loaded[suffix] = ar.load_model(str(path))
            print(f"{path.name}: {n / 1e6:.2f}M params, loaded as {loaded[suffix].arch} "
                  f"(x{loaded[suffix].scale}, {loaded[suffix].in_channels}->{loaded[suffix].out_channels} channels) in {time.perf_counter() - t0:.1f} s",
                  flush=True)
        same = _same_network(net, loaded[".pth"], loaded[".safetensors"])
        print(f"{name}: the built network, .pth and .safetensors give identical output: {same}", flush=True)
        if not same:
            return 1
        dst = a.workdir / f"{name}.ome.zarr"
        resume = a.resume and dst.exists()
        if not resume:
            shutil.rmtree(dst, ignore_errors=True)
        t0 = time.perf_counter()
        ar.restore_to_zarr(img, dst, task=task, scale=scale, model=loaded[".safetensors"], tile=a.tile,
                           batch=a.batch, device=a.device, pyramid=False, resume=resume)
        dt = time.perf_counter() - t0
        out = zarr.open_array(str(dst / "0"), mode="r")
        status = job_state(dst).get("status")
        shape = f"{tuple(out.shape)} {out.dtype}"
        print(f"{name}: {a.size}x{a.size} RGB restored through the tiled engine in {dt:.1f} s"
              f"{' (resumed)' if resume else ''} ({a.size**2 / 1e6 / dt:.4f} Mpx/s in), tile {a.tile}, "
              f"batch {a.batch}, torch threads {torch.get_num_threads()}; output {shape}, store {status} -> {dst}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
