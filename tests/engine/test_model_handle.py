"""ModelHandle: optional torch.compile once per process, with an eager fallback."""

import numpy as np
import pytest
import torch
from standins import Box3, NearestUp, RightNeighbourMean, plus_filter

import napari_attnrestore as ar
from napari_attnrestore.engine import ModelHandle
from napari_attnrestore.engine import model_handle as mh


class _Calls:
    """A stand-in for torch.compile that records its calls and wraps (or breaks) the module."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.compiled, self.calls, self.fail_at = [], 0, fail_at

    def __call__(self, module):
        self.compiled.append(module)
        if self.fail_at == "compile":
            raise RuntimeError("no backend")

        def run(x):
            self.calls += 1
            if self.fail_at == "run":
                raise RuntimeError("inductor: C++ compiler not found")
            return module(x)

        return run


def test_compile_flag_reaches_the_handle_and_compiles_once(monkeypatch, rng):
    fake = _Calls()
    monkeypatch.setattr(torch, "compile", fake)
    handle = ar.api.resolve_model(Box3(), device="cpu", compile=True)
    assert handle.compile
    img = rng.random((64, 64)).astype(np.float32)
    out = ar.restore(img, model=handle, chunks=32, tile=32, overlap=8, normalize="none").compute()
    assert len(fake.compiled) == 1 and fake.calls == handle.forward_calls > 1
    np.testing.assert_allclose(out, ar.restore(img, model=Box3(), chunks=32, tile=32, overlap=8,
                                               normalize="none").compute(), atol=1e-6)
    assert not ModelHandle(Box3(), device="cpu").compile  # off by default


@pytest.mark.parametrize("fail_at", ["compile", "run"])
def test_failed_compilation_warns_and_runs_eagerly(monkeypatch, fail_at):
    fake = _Calls(fail_at)
    monkeypatch.setattr(torch, "compile", fake)
    handle = ModelHandle(Box3(), device="cpu", compile=True)
    x = np.ones((1, 1, 16, 16), np.float32)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        y = handle.infer(x)
    np.testing.assert_allclose(y[0, 0, 5:-5, 5:-5], 1.0, atol=1e-6)
    assert handle.compiled() is None  # not tried again in this process
    handle.infer(x)
    assert len(fake.compiled) == 1 and fake.calls <= 1
    handle.release()
    assert handle.key not in mh._COMPILED


def test_model_errors_are_not_hidden_by_the_fallback(monkeypatch):
    monkeypatch.setattr(torch, "compile", _Calls())
    handle = ModelHandle(Box3(), device="cpu", compile=True)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError):
        handle.infer(np.ones((1, 2, 16, 16), np.float32))  # wrong channel count fails eagerly too


def test_cli_passes_compile_and_ensemble(monkeypatch, tmp_path):
    import tifffile

    from napari_attnrestore import cli

    seen = {}

    def fake_restore_to_zarr(src, dst, **kw):
        seen.update(kw)

    monkeypatch.setattr(ar, "restore_to_zarr", fake_restore_to_zarr)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((16, 16), np.uint8))
    assert cli.main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "b.ome.zarr"), "--compile", "-q"]) == 0
    assert seen["compile"] is True and seen["ensemble"] is False
    assert cli.main(["restore", str(tmp_path / "a.tif"), str(tmp_path / "c.ome.zarr"), "--ensemble", "-q"]) == 0
    assert seen["ensemble"] is True


@pytest.mark.slow
def test_real_torch_compile_of_a_small_conv(rng):
    img = rng.random((48, 48)).astype(np.float32)
    kw = dict(chunks=48, tile=48, overlap=8, normalize="none", device="cpu")
    compiled = ar.restore(img, model=Box3(), compile=True, **kw).compute()
    np.testing.assert_allclose(compiled, ar.restore(img, model=Box3(), **kw).compute(), atol=1e-5)


def test_self_ensemble_averages_the_eight_orientations():
    x = torch.rand(2, 1, 12, 20, generator=torch.Generator().manual_seed(0))
    ens = mh.self_ensemble(RightNeighbourMean(), x)[0, 0].numpy()
    np.testing.assert_allclose(ens[1:-1, 1:-1], plus_filter(x[0, 0].numpy()), atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(mh.self_ensemble(Box3(), x), Box3()(x), atol=1e-6)  # symmetric: unchanged
    up = mh.self_ensemble(NearestUp(), x)  # non-square input, x2 output: every orientation turned back
    np.testing.assert_allclose(up, NearestUp()(x), atol=1e-6)


class _CountsPasses(torch.nn.Module):
    """Its input's first channel plus the number of the pass (0, 1, ...), with one-pixel moves."""

    ensemble_orientations = ((0, False),)
    ensemble_shifts = ((0, 1), (1, 0), (1, 1))  # the unmoved pass runs first whether named or not

    def __init__(self) -> None:
        super().__init__()
        self.passes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return x[:, :1] + (self.passes - 1)


def test_self_ensemble_moves_its_shifted_passes_back_and_averages_the_passes_each_pixel_has():
    x = torch.rand(1, 2, 6, 8, generator=torch.Generator().manual_seed(0))
    net = _CountsPasses()
    ens = mh.self_ensemble(net, x)[0, 0] - x[0, 0]  # what is left is each pixel's mean pass number
    assert net.passes == 4
    torch.testing.assert_close(ens[:-1, :-1], torch.full((5, 7), 1.5))  # passes 0-3 (unmoved, right, down, both)
    torch.testing.assert_close(ens[-1, :-1], torch.full((7,), 0.5))  # moved down, a pass lacks the last row
    torch.testing.assert_close(ens[:-1, -1], torch.full((5,), 1.0))  # moved right, the last column
    assert float(ens[-1, -1]) == 0.0  # the corner: the unmoved pass only
    torch.testing.assert_close(mh.shifted(x, 1, 1)[..., 1:, 1:], x[..., :-1, :-1])
    torch.testing.assert_close(mh.shifted(x, 1, 0)[..., 0, :], x[..., 1, :])  # reflected: a Bayer row's parity kept
    odd = torch.rand(1, 2, 5, 8)
    net.passes = 0
    mh.self_ensemble(net, odd)
    assert net.passes == 8  # an odd size: all 8 orientations, unmoved


def test_self_ensemble_of_a_network_that_turns_its_gaps_runs_four_orientations():
    from napari_attnrestore.models.psal import PSAL

    torch.manual_seed(0)
    net = PSAL(2, 1, dims=[8, 16], blocks=1, mid_blocks=1, match_dim=4, iters=1, gap_rows=True).eval()
    x = torch.rand(1, 2, 24, 24, generator=torch.Generator().manual_seed(1))
    x[:, 1] = 0
    x[:, 1, 6:10] = 1  # a row-wise gap
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))

    def turned_back(k: int, flip: bool) -> torch.Tensor:
        z = torch.rot90(x, k, (-2, -1))
        y = net(z.flip(-1) if flip else z)
        return torch.rot90(y.flip(-1) if flip else y, -k, (-2, -1))

    with torch.no_grad():
        ens = mh.self_ensemble(net, x)
        assert len(calls) == 4  # the quarter turns would repeat mirrored passes
        every = torch.stack([turned_back(k, flip) for k, flip in mh.DIHEDRAL])
    torch.testing.assert_close(ens, every.mean(0), atol=1e-6, rtol=0)  # the same mean as all 8


def test_restore_with_ensemble_through_the_engine(rng, tmp_path):
    """Tiles, halo and blending with the self-ensemble: the plus filter everywhere inside."""
    img = rng.random((96, 80)).astype(np.float32)
    out = ar.restore(img, model=RightNeighbourMean(), chunks=48, tile=32, overlap=8, normalize="none",
                     ensemble=True).compute()
    np.testing.assert_allclose(out[1:-1, 1:-1], plus_filter(img), atol=1e-5)
    plain = ar.restore(img, model=RightNeighbourMean(), chunks=48, tile=32, overlap=8, normalize="none").compute()
    assert np.abs(plain - out).max() > 0.05
    dst = ar.restore_to_zarr(img, tmp_path / "e.ome.zarr", model=RightNeighbourMean(), chunks=48, tile=32, overlap=8,
                             normalize="none", ensemble=True)
    with pytest.raises(OSError, match=r"other settings \(ensemble differ\)"):  # a resume must use the same setting
        ar.restore_to_zarr(img, dst, model=RightNeighbourMean(), chunks=48, tile=32, overlap=8, normalize="none",
                           resume=True)


def test_restoring_with_a_users_module_leaves_it_trainable(rng):
    net = torch.nn.Conv2d(1, 1, 3, padding=1).train()
    ar.restore(rng.random((40, 40)).astype(np.float32), model=net, tile=32).compute()
    assert all(p.requires_grad for p in net.parameters())  # they were frozen: an optimizer stood still
    net.train()(torch.zeros(1, 1, 8, 8)).sum().backward()  # the caller can keep training it
    assert net.weight.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_a_users_module_keeps_its_mode_and_type_and_runs_in_any_float_type(rng, dtype):
    """ar.restore put the caller's module in eval mode (dropout off for the rest of its
    training) and ran one in float16 on a float32 input: a raw dtype error."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Dropout(0.5)).to(dtype).train()
    img = rng.random((40, 40)).astype(np.float32)
    lazy = ar.restore(img, model=net, tile=32, device="cpu")
    assert net.training and net[0].weight.dtype == dtype
    out = lazy.compute()
    assert out.shape == img.shape and np.isfinite(out).all() and net.training
    again = ar.restore(img, model=net, tile=32, device="cpu").compute()
    np.testing.assert_array_equal(out, again)  # eval mode in the engine: no dropout


def test_a_module_that_does_not_upscale_is_refused_for_super_resolution(rng):
    with pytest.raises(ValueError, match="does not upscale; task 'sr' needs a super-resolution model"):
        ar.restore(rng.random((32, 32)).astype(np.float32), task="sr", model=torch.nn.Conv2d(1, 1, 3, padding=1))
    with pytest.raises(ValueError, match=r"does not upscale \(a denoise model\)"):
        ar.restore(rng.random((32, 32)).astype(np.float32), task="sr", model=ar.load_model("default:denoise"))


@pytest.mark.parametrize("device", ["xpu", "meta", "hpu", 0, 1])
def test_devices_the_engine_cannot_run_on_are_refused_up_front(rng, device):
    from napari_attnrestore.engine.device import resolve_device

    with pytest.raises(ValueError, match="device"):
        resolve_device(device)
    with pytest.raises(ValueError, match="device"):
        ar.restore(rng.random((32, 32)).astype(np.float32), model=Box3(), device=device)


def test_fp16_on_the_cpu_warns_that_it_is_slow():
    from napari_attnrestore.engine.device import resolve_precision

    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        assert resolve_precision("fp16", torch.device("cpu"), True) == torch.float16


def test_unpickled_copies_share_the_cache_and_the_last_one_frees_it():
    """On a long-lived dask.distributed worker every job left its device copy (and pinned
    buffers) in the cache: only the client's handle freed it, and workers unpickle copies."""
    import gc
    import pickle

    from napari_attnrestore.engine import model_handle

    handle = model_handle.ModelHandle(torch.nn.Conv2d(1, 1, 3, padding=1))
    handle.runtime()
    key = handle.key
    copy_a, copy_b = pickle.loads(pickle.dumps(handle)), pickle.loads(pickle.dumps(handle))
    assert copy_a.runtime() is model_handle._CACHE[key]  # the copies use the process's one device copy
    del handle, copy_a
    gc.collect()
    assert key in model_handle._CACHE  # a copy still lives
    del copy_b
    gc.collect()
    assert key not in model_handle._CACHE and key not in model_handle._LIVE


def test_a_float64_buffer_of_float32_weights_is_kept(rng):
    class Fine(torch.nn.Module):
        in_channels = out_channels = scale = 1

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 1, bias=False)
            torch.nn.init.ones_(self.conv.weight)
            self.register_buffer("step", torch.tensor([1 + 1e-9], dtype=torch.float64))

        def forward(self, x):
            return (self.conv(x) * self.step - x) / 1e-9  # 1 in float64 arithmetic, 0 if the buffer were float32

    out = ar.restore(np.full((32, 32), 0.5, np.float32), model=Fine(), normalize="none", device="cpu").compute()
    np.testing.assert_allclose(out, 0.5, rtol=1e-3)
