"""Automatic tile and batch size: the choice from (fake) memory numbers, the probe, equal results."""

import numpy as np
import pytest
import torch
from standins import Box3

import napari_attnrestore as ar
from napari_attnrestore.engine import ModelHandle, make_plan
from napari_attnrestore.engine.autotune import (
    LiveTensorBytes,
    MemoryModel,
    choose_tile_batch,
    measure_memory,
    peak_forward_bytes,
    tiles_for,
)
from napari_attnrestore.engine.model_handle import describe
from napari_attnrestore.engine.tiling import tile_starts

MB = 2**20


def fake(peaks=(1 * MB, 4 * MB), free=1000 * MB, fraction=0.5, sides=(64, 128)):
    return MemoryModel(sides, peaks, free, fraction)


def test_estimate_follows_the_probes_growth():
    linear = fake()
    assert linear.exponent == 1.0
    assert linear.estimate(256) == 16 * MB and linear.estimate(256, batch=3) == 48 * MB
    quadratic = fake(peaks=(1 * MB, 16 * MB))
    assert quadratic.exponent == 2.0 and quadratic.estimate(256) == 256 * MB
    flat = fake(peaks=(3 * MB, 4 * MB))  # fixed overhead dominates small probes: still assume linear
    assert flat.exponent == 1.0 and flat.estimate(256) == 16 * MB


def test_plenty_of_memory_gives_one_tile_per_region():
    assert choose_tile_batch(fake(), region=304, overlap=24, multiple=16) == (304, 1)
    # RGB channels run one by one: the three planes' tiles batch together
    assert choose_tile_batch(fake(), region=304, overlap=24, multiple=16, planes=3) == (304, 3)


@pytest.mark.parametrize("budget_mb", [20, 60, 150])
def test_tile_is_the_largest_even_split_that_fits(budget_mb):
    mem = fake(free=budget_mb * MB, fraction=1.0)  # 4 MB per 128^2 px, linear
    region, overlap, m = 1088, 32, 16
    tile, batch = choose_tile_batch(mem, region=region, overlap=overlap, multiple=m, max_batch=16)
    assert tile % m == 0 and mem.estimate(tile, batch) <= mem.budget
    n = len(tile_starts(region, tile, overlap))
    assert tiles_for(region, n, overlap, m) == tile  # the region splits into n x n tiles, no wasted margin
    if n > 1:  # one tile fewer per axis would not fit
        assert mem.estimate(tiles_for(region, n - 1, overlap, m)) > mem.budget
    assert batch <= n * n and (batch == n * n or mem.estimate(tile, batch + 1) > mem.budget)


def test_given_sizes_are_kept_and_too_little_memory_gives_the_smallest_tile():
    mem = fake(free=40 * MB, fraction=1.0)
    assert choose_tile_batch(mem, region=1088, overlap=32, multiple=16, tile=256, max_batch=16) == (256, 2)
    tile, batch = choose_tile_batch(mem, region=1088, overlap=32, multiple=16, batch=4)
    assert batch == 4 and mem.estimate(tile, 4) <= mem.budget < mem.estimate(tile + 16, 4)
    assert choose_tile_batch(fake(free=1 * MB, fraction=0.1), region=1088, overlap=32, multiple=16) == (80, 1)


def test_plan_takes_auto_from_the_memory_model():
    info = describe(Box3())
    sample = lambda key: np.zeros((8, 8), np.float32)  # noqa: E731
    plan = make_plan((512, 512), np.float32, info, sample, chunk=256, tile="auto", batch="auto",
                     memory=fake(free=8 * MB, fraction=1.0))
    assert plan.tile == tiles_for(256 + 16, 2, 8, 1) and plan.batch == 1 and plan.overlap == 8
    with pytest.raises(ValueError, match="memory probe"):
        make_plan((64, 64), np.float32, info, sample, tile="auto")
    with pytest.raises(ValueError, match="number of pixels or 'auto'"):
        make_plan((64, 64), np.float32, info, sample, tile="big", memory=fake())


def test_live_tensor_bytes_tracks_the_peak_not_the_total():
    with LiveTensorBytes() as probe:
        x = torch.zeros(1_000_000)  # 4 MB
        y = x + 1  # 8 MB live
        del x, y
        z = torch.zeros(500_000)  # 2 MB after both were freed
        del z
    assert 8e6 <= probe.peak < 9e6


def test_probe_measures_memory_without_counting_as_work():
    handle = ModelHandle(Box3(), device="cpu")
    assert peak_forward_bytes(handle, 64) > 0
    mem = measure_memory(handle)
    assert mem.sides == (64, 128) and min(mem.peaks) >= 0 and mem.free > 0 and mem.device == "cpu"
    assert handle.forward_calls == 0


def test_auto_gives_the_same_result_as_fixed_sizes(rng, tiny_hat):
    img = rng.random((80, 96)).astype(np.float32)
    kw = dict(chunks=48, overlap=8, normalize="none", device="cpu")
    auto = ar.restore(img, model=Box3(), tile="auto", batch="auto", **kw).compute()
    fixed = ar.restore(img, model=Box3(), tile=32, batch=2, **kw).compute()
    np.testing.assert_allclose(auto, fixed, atol=1e-5)  # a 3x3 filter inside the halo: exact
    auto = ar.restore(img, model=tiny_hat, tile="auto", batch="auto", **kw).compute()
    fixed = ar.restore(img, model=tiny_hat, tile=32, **kw).compute()
    assert np.abs(auto - fixed).mean() < 0.05 * np.abs(fixed).mean()  # attention sees other context: blending


def test_resume_keeps_the_tile_the_job_started_with(tmp_path, rng):
    img = rng.random((64, 64)).astype(np.float32)
    dst = tmp_path / "out.ome.zarr"
    ar.restore_to_zarr(img, dst, model=Box3(), chunks=32, tile=24, pyramid=False)
    assert ar.restore_to_zarr(img, dst, model=Box3(), chunks=32, tile="auto", resume=True) == str(dst)


def test_cli_takes_auto():
    from napari_attnrestore.cli import build_parser

    a = build_parser().parse_args(["restore", "in.tif", "out.zarr", "--tile", "auto", "--batch", "4"])
    assert a.tile == "auto" and a.batch == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["restore", "in.tif", "out.zarr", "--tile", "big"])


def test_cpu_tiles_are_capped():
    tile, _ = choose_tile_batch(fake(free=10**6 * MB), region=1104, overlap=32, multiple=16, max_tile=512)
    assert tile == tiles_for(1104, 3, 32, 16) <= 512
