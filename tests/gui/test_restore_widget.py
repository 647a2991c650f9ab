"""The Restore dock widget in a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

TIMEOUT = 60_000


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def widget(viewer, qtbot):
    from napari_attnrestore.gui.restore_widget import RestoreWidget

    w = RestoreWidget(viewer)
    viewer.window.add_dock_widget(w, name="Restore")
    yield w
    if w.busy:
        w.cancel()
        qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)


def run(qtbot, widget, action: str = "run") -> None:
    getattr(widget, action)()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)


def shown(w) -> bool:
    """Visible once the (hidden test) viewer is shown."""
    return not w.native.isHidden()


def assert_idle(widget) -> None:
    assert not widget.busy
    assert widget._run_btn.enabled and widget._preview_btn.enabled
    assert not widget._cancel_btn.enabled


def test_plugin_widget_docks(viewer) -> None:
    _dock, w = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    assert type(w).__name__ == "RestoreWidget"
    viewer.add_image(np.zeros((16, 16), np.uint8), name="a")
    assert next(iter(w._image.choices)).name == "a"
    assert w._tile.value == 0 and w._tile.native.text() == "auto"
    w.set_options(tile=64)
    assert w._tile.value == 64 and w._tile.native.text() == "64"
    assert not shown(w._scale) and not shown(w._zarr)
    w.set_options(task="sr", output="zarr file")
    assert shown(w._scale) and shown(w._zarr)
    assert w._model.choices[-1] == "checkpoint file..."
    assert shown(w._checkpoint) == (w._model.value == "checkpoint file...")
    assert w._tile.tooltip and "auto" in w._tile.tooltip


def test_restore_2d_layer(viewer, widget, qtbot, denoiser) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    viewer.add_image(img, name="img", scale=(2.0, 3.0), translate=(5.0, 7.0))
    widget.add_model("conv", denoiser)
    run(qtbot, widget)
    out = viewer.layers["img (denoised)"]
    assert out.data.shape == (64, 64) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, (2.0, 3.0))
    np.testing.assert_allclose(out.translate, (5.0, 7.0))
    assert out.metadata["attnrestore"]["task"] == "denoise"
    assert np.abs(out.data.astype(float) - img).mean() > 1  # it was really filtered
    assert widget._status.value == "done"
    assert_idle(widget)


def test_restore_time_series(viewer, widget, qtbot, denoiser) -> None:
    img = np.random.default_rng(1).random((3, 64, 64), dtype=np.float32)
    viewer.add_image(img, name="movie", scale=(10.0, 1.0, 1.0))
    widget.add_model("conv", denoiser)
    widget.set_options(chunk=32)
    run(qtbot, widget)
    out = viewer.layers["movie (denoised)"]
    assert out.data.shape == (3, 64, 64) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, (10.0, 1.0, 1.0))


def test_restore_rgb_layer(viewer, widget, qtbot, denoiser) -> None:
    img = np.random.default_rng(2).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    viewer.add_image(img, name="rgb", rgb=True)
    widget.add_model("conv", denoiser)
    run(qtbot, widget)
    out = viewer.layers["rgb (denoised)"]
    assert out.rgb and out.data.shape == (48, 40, 3) and out.data.dtype == np.uint8


def test_restore_multichannel_layer(viewer, widget, qtbot, denoiser) -> None:
    img = np.stack([np.full((32, 32), 10, np.uint16), np.full((32, 32), 4000, np.uint16)])
    img[:, 8:24, 8:24] += 50
    viewer.add_image(img, name="cells", metadata={"axes": "cyx"})
    widget.add_model("conv", denoiser)
    assert widget._request()[2]["channel_axis"] == 0
    run(qtbot, widget)
    out = viewer.layers["cells (denoised)"]
    assert out.data.shape == (2, 32, 32) and out.data.dtype == np.uint16
    assert abs(float(out.data[1].mean()) - float(img[1].mean())) < 100  # per-channel statistics kept the levels


def test_super_resolution_x2_geometry(viewer, widget, qtbot, upsampler) -> None:
    from napari_attnrestore.api import output_geometry

    img = np.random.default_rng(3).integers(0, 255, (2, 32, 40), dtype=np.uint8)
    viewer.add_image(img, name="lr", scale=(1.0, 2.0, 2.0), translate=(0.0, 10.0, 20.0))
    widget.add_model("up", upsampler)
    assert widget._task.value == "sr" and widget._scale.value == 2
    run(qtbot, widget)
    out = viewer.layers["lr (x2)"]
    assert out.data.shape == (2, 64, 80) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(out.translate, (0.0, 9.5, 19.5))
    ref = output_geometry(2, {"axes": "tyx", "scale": (1.0, 2.0, 2.0), "translate": (0.0, 10.0, 20.0)}, 3, 3, False)
    np.testing.assert_allclose(out.translate, ref["translate"])
    # the outer pixel edges coincide in world coordinates (extent.world spans pixel centres)
    lr = viewer.layers["lr"]

    def edges(layer):
        half = np.asarray(layer.scale[1:]) / 2
        return np.stack([layer.extent.world[0, 1:] - half, layer.extent.world[1, 1:] + half])

    np.testing.assert_allclose(edges(out), edges(lr))


def test_preview_current_plane(viewer, widget, qtbot, upsampler) -> None:
    img = np.random.default_rng(4).integers(0, 255, (3, 40, 48), dtype=np.uint8)
    layer = viewer.add_image(img, name="stack")
    widget.add_model("up", upsampler)
    viewer.dims.set_current_step(0, 2)
    run(qtbot, widget, "preview")
    prev = viewer.layers["stack (preview)"]
    assert prev.data.shape[0] == 1 and prev.data.shape[1] % 2 == 0
    assert prev.translate[0] == pytest.approx(2.0)
    assert viewer.layers.selection.active is prev or "stack (preview)" in viewer.layers
    run(qtbot, widget, "preview")  # a second preview replaces the first
    assert [lyr.name for lyr in viewer.layers].count("stack (preview)") == 1
    assert widget._image.value is layer


def test_event_loop_runs_during_restore(viewer, widget, qtbot, slow_denoiser) -> None:
    from qtpy.QtCore import QTimer

    viewer.add_image(np.zeros((64, 64), np.float32), name="z")
    widget.add_model("slow", slow_denoiser)
    widget.set_options(chunk=32, tile=32)
    ticks: list[int] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    widget.run()
    assert widget.busy and not widget._run_btn.enabled and widget._cancel_btn.enabled
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    timer.stop()
    assert len(ticks) >= 10  # 4 chunks x 0.2 s: the timer kept ticking
    assert "z (denoised)" in viewer.layers


def test_cancel_zarr_run_leaves_partial_store(viewer, widget, qtbot, slow_denoiser, tmp_path, notifications) -> None:
    from napari_attnrestore.engine.store import done_chunks, job_state

    viewer.add_image(np.random.default_rng(5).random((128, 128), dtype=np.float32), name="big")
    widget.add_model("slow", slow_denoiser)
    dst = tmp_path / "out.ome.zarr"
    widget.set_options(chunk=32, tile=32, output="zarr file", zarr=str(dst))
    seen: list = []
    widget.run()
    widget.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=TIMEOUT)
    assert widget._pbar is not None and widget._pbar.total == 16  # 4 x 4 chunks in the activity dock
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert_idle(widget)
    assert widget._status.value == "cancelled"
    assert "big (denoised)" not in viewer.layers
    assert (dst / "zarr.json").exists()
    assert job_state(dst).get("status") != "complete"
    assert 1 <= len(done_chunks(dst)) < 16
    assert any("cancelled" in str(n.message) for n in notifications)
    viewer.add_image(np.zeros((8, 8)), name="still usable")  # the viewer is fine
    # resume completes the store and opens it lazily with the input's geometry
    widget.set_options(existing="resume")
    run(qtbot, widget)
    assert job_state(dst).get("status") == "complete"
    out = viewer.layers["big (denoised)"]
    lvl0 = out.data[0] if out.multiscale else out.data
    assert lvl0.shape == (128, 128) and type(lvl0).__module__.startswith("dask")
    assert out.metadata["attnrestore"]["path"] == str(dst)


def test_bad_checkpoint_notifies_and_reenables(viewer, widget, qtbot, tmp_path, notifications) -> None:
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget.set_options(model="checkpoint file...", checkpoint=str(tmp_path / "missing.safetensors"))
    run(qtbot, widget)
    assert_idle(widget)
    errors = [n for n in notifications if "missing.safetensors" in str(n.message)]
    assert errors and str(errors[0].severity).lower().endswith("error")
    assert widget._status.value.startswith("error")
    assert len(viewer.layers) == 1


def test_missing_input_is_an_error_not_a_crash(viewer, widget, notifications) -> None:
    widget.run()
    assert not widget.busy
    assert any("image layer" in str(n.message) for n in notifications)


def test_preview_visible_region_only(make_napari_viewer, qtbot, denoiser) -> None:
    from napari_attnrestore.gui.restore_widget import RestoreWidget

    viewer = make_napari_viewer(show=True)
    widget = RestoreWidget(viewer)
    viewer.window.add_dock_widget(widget)
    viewer.add_image(np.random.default_rng(6).random((256, 256), dtype=np.float32), name="big")
    widget.add_model("conv", denoiser)
    viewer.camera.center = (64, 64)
    viewer.camera.zoom = viewer.camera.zoom * 6
    qtbot.wait(200)  # let the canvas draw, which updates corner_pixels
    run(qtbot, widget, "preview")
    prev = viewer.layers["big (preview)"]
    h, w = prev.data.shape
    assert 8 <= h < 200 and 8 <= w < 200
    y0, x0 = prev.translate
    assert y0 <= 64 <= y0 + h and x0 <= 64 <= x0 + w  # covers the centre of the view
    import napari_attnrestore as ar

    full = ar.restore(viewer.layers["big"].data, model=denoiser).compute()
    np.testing.assert_allclose(prev.data, full[int(y0) : int(y0) + h, int(x0) : int(x0) + w], atol=1e-3)


def test_huge_layer_output_asks_for_zarr(viewer, widget, notifications, denoiser, monkeypatch) -> None:
    from napari_attnrestore.gui import restore_widget

    monkeypatch.setattr(restore_widget, "MAX_LAYER_BYTES", 4000)  # stands for a 4 GiB result
    viewer.add_image(np.zeros((64, 64), np.uint8), name="huge")
    widget.add_model("conv", denoiser)
    widget.run()
    assert not widget.busy
    assert any("zarr file" in str(n.message) for n in notifications)


def test_zarr_overwrite_with_other_shape(viewer, widget, qtbot, denoiser, upsampler, tmp_path, notifications) -> None:
    viewer.add_image(np.random.default_rng(7).random((32, 32), dtype=np.float32), name="img")
    dst = tmp_path / "o.ome.zarr"
    widget.add_model("conv", denoiser)
    widget.set_options(output="zarr file", zarr=str(dst), existing="overwrite")
    run(qtbot, widget)
    widget.add_model("up", upsampler)
    run(qtbot, widget)
    assert not [n for n in notifications if "error" in str(n.severity).lower()]
    out = viewer.layers["img (x2)"]
    data = np.asarray(out.data[0] if out.multiscale else out.data)
    assert data.shape == (64, 64) and data.std() > 0.01


class _TorchFailure(nn.Module):
    """Fails inside the forward pass the way torch does (RuntimeError, e.g. out of memory)."""

    in_channels, out_channels, scale = 1, 1, 1

    def forward(self, x):
        raise RuntimeError("simulated torch failure")


def test_torch_runtime_error_notifies_and_reenables(viewer, widget, qtbot, notifications) -> None:
    viewer.add_image(np.zeros((32, 32), np.uint8), name="img")
    widget.add_model("failing", _TorchFailure())
    run(qtbot, widget)
    assert_idle(widget)
    assert any("simulated torch failure" in str(n.message) for n in notifications)
    assert len(viewer.layers) == 1
