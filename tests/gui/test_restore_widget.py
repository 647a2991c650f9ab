"""The Restore dock widget in a real napari viewer (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from standins import FillHalf, RightNeighbourMean, SplitCFA, plus_filter
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
    assert "checkpoint file..." in w._model.choices
    assert w._model.value == w._model_choices()[0][1]  # a shipped SR weight when there is one
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


def test_self_ensemble_option(viewer, widget, qtbot) -> None:
    """The checkbox runs the 8-orientation ensemble; unticked again, the plain network runs."""
    img = np.random.default_rng(1).random((48, 48)).astype(np.float32)
    viewer.add_image(img, name="img")
    widget.add_model("asymmetric", RightNeighbourMean())
    widget.set_options(ensemble=True, tile=32, overlap=8)
    run(qtbot, widget)
    widget.set_options(ensemble=False)
    run(qtbot, widget)
    ens, plain = viewer.layers["img (denoised)"].data, viewer.layers["img (denoised) [1]"].data
    lo, hi = np.percentile(img, (0.1, 99.9))  # the engine's percentile normalization is undone on output
    np.testing.assert_allclose(ens[1:-1, 1:-1], plus_filter(img), atol=1e-4 * (hi - lo))
    assert np.abs(plain - ens).max() > 0.05
    assert_idle(widget)


class _Brighter(nn.Module):
    def forward(self, x):
        return x * 1.3


def test_white_level_field_clips_results_to_the_sensors_range(viewer, widget, qtbot, notifications) -> None:
    """From a quantitative review: the API and CLI took the camera's saturation value, the
    widget had no field for it, so a 12-bit layer's bright blobs came back above 4095."""
    img = np.random.default_rng(2).integers(0, 4096, (48, 48)).astype(np.uint16)
    img[10:14, 10:14] = 4095  # saturated
    viewer.add_image(img, name="img")
    widget.add_model("brighter", _Brighter())
    widget.set_options(white_level=4095)
    run(qtbot, widget)
    widget.set_options(white_level=None)
    run(qtbot, widget)
    clipped, free = viewer.layers["img (denoised)"].data, viewer.layers["img (denoised) [1]"].data
    assert clipped.max() <= 4095 and free.max() > 4095
    assert (clipped[10:14, 10:14] == 4095).all()  # denoising keeps the saturated pixels
    widget.set_options(white_level="bright")
    widget.run()
    assert any("white level must be a number or empty, not 'bright'" in str(n.message) for n in notifications)
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


def test_results_of_a_rotated_layer_lie_over_it(viewer, widget, qtbot, denoiser, upsampler) -> None:
    """rotate, shear and affine go on to the result; a super-resolved origin turns with them."""
    img = np.random.default_rng(5).integers(0, 255, (32, 40), dtype=np.uint8)
    lr = viewer.add_image(img, name="tilted", scale=(2.0, 2.0), translate=(5.0, 7.0), rotate=30, shear=[0.2])
    for name, model, k in (("dn", denoiser, 1), ("up", upsampler, 2)):
        widget.add_model(name, model)
        run(qtbot, widget)
        out = viewer.layers[-1]
        for y, x in ((0, 0), (10, 31)):  # a pixel's centre, and the centre of its k x k block
            block = (k * y + (k - 1) / 2, k * x + (k - 1) / 2)
            np.testing.assert_allclose(out.data_to_world(block), lr.data_to_world((y, x)), atol=1e-9)


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


def test_preview_reads_a_lazy_layer_off_the_gui_thread(viewer, widget, qtbot, denoiser) -> None:
    """Preview read the visible crop on the GUI thread: a lazy layer whose chunks take
    seconds froze the viewer for as long.  Here a chunk is read only once the event loop has
    run a timer: on the GUI thread it waits in vain."""
    import threading

    import dask.array as da
    from qtpy.QtCore import QTimer

    loop_ran = threading.Event()
    loop_ran.set()  # (napari's own reads for the display)
    waits: list[bool] = []

    def slow(block):
        waits.append(loop_ran.wait(timeout=3))
        return block

    viewer.add_image(da.zeros((64, 64), dtype=np.float32, chunks=64).map_blocks(slow, dtype=np.float32), name="lazy",
                     contrast_limits=(0, 1))
    widget.add_model("den", denoiser)
    widget.set_options(input=viewer.layers["lazy"])
    loop_ran.clear()
    waits.clear()
    QTimer.singleShot(50, loop_ran.set)
    run(qtbot, widget, "preview")
    assert "lazy (preview)" in viewer.layers and waits and all(waits)


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


def test_a_job_leaves_a_thread_of_qts_pool_to_spare(viewer, widget, qtbot, slow_denoiser) -> None:
    """The job ran on Qt's global pool, where napari's activity spinner converts its frames:
    with every thread held by jobs (a pool of 1 here, as on one core) the GUI thread waited
    for the whole run."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    before = pool.maxThreadCount()
    pool.setMaxThreadCount(1)
    try:
        viewer.add_image(np.zeros((64, 64), np.float32), name="z")
        widget.add_model("slow", slow_denoiser)
        widget.set_options(chunk=32, tile=32)
        widget.run()
        qtbot.waitUntil(lambda: pool.activeThreadCount() >= 1, timeout=TIMEOUT)
        assert widget.busy and pool.activeThreadCount() < pool.maxThreadCount()
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    finally:
        pool.setMaxThreadCount(max(before, pool.maxThreadCount()))


def test_closing_the_dock_cancels_the_running_job(viewer, widget, qtbot, slow_denoiser) -> None:
    """napari's remove_dock_widget (the dock's close button) keeps the widget alive: its job
    ran on, with nothing left to stop it, and added its layer afterwards."""
    viewer.add_image(np.zeros((128, 128), np.float32), name="z")
    widget.add_model("slow", slow_denoiser)
    widget.set_options(chunk=32, tile=32)  # 16 chunks x 0.2 s
    widget.run()
    assert widget.busy
    viewer.window.remove_dock_widget(widget.native)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert widget._status.value == "cancelled" and "z (denoised)" not in viewer.layers


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
    first = viewer.layers["img (denoised)"]
    widget.add_model("up", upsampler)
    # the first result reads that store: replacing it would leave the layer reading chunks of
    # another shape (every redraw an error) or another image under its name
    run(qtbot, widget)
    assert any("'img (denoised)' shows this store" in str(n.message) for n in notifications)
    assert "img (x2)" not in viewer.layers
    assert np.asarray(first.data[0] if first.multiscale else first.data).shape == (32, 32)
    viewer.layers.remove(first)
    notifications.clear()
    run(qtbot, widget)
    assert not [n for n in notifications if "error" in str(n.severity).lower()]
    out = viewer.layers["img (x2)"]
    data = np.asarray(out.data[0] if out.multiscale else out.data)
    assert data.shape == (64, 64) and data.std() > 0.01


def test_zarr_output_keeps_the_layer_geometry_and_units(viewer, widget, qtbot, upsampler, tmp_path) -> None:
    from napari_attnrestore.api import output_geometry
    from napari_attnrestore.io import open_image

    units = {"z": "micrometer", "y": "nanometer", "x": "nanometer"}
    img = np.random.default_rng(3).integers(0, 255, (2, 32, 40), dtype=np.uint8)
    viewer.add_image(img, name="lr", scale=(0.3, 60.0, 50.0), translate=(0.0, 10.0, 20.0),
                     metadata={"axes": "zyx", "units": units}, colormap="red", contrast_limits=(10, 200))
    widget.add_model("up", upsampler)
    dst = tmp_path / "sr.ome.zarr"
    widget.set_options(output="zarr file", zarr=str(dst))
    run(qtbot, widget)
    out = open_image(dst)
    # the channel's name, colour and window, as the plugin's writer keeps them (the store reopened gray)
    (channel,) = out.meta["ome"]["omero"]["channels"]
    assert channel["label"] == "lr" and channel["color"] == "FF0000" and channel["window"]["end"] == 200
    ref = output_geometry(2, {"axes": "zyx", "scale": (0.3, 60.0, 50.0), "translate": (0.0, 10.0, 20.0)}, 3, 3, False)
    assert out.axes == "zyx" and out.data.shape == (2, 64, 80)
    np.testing.assert_allclose(out.scale, (0.3, 30.0, 25.0))
    np.testing.assert_allclose(out.translate, ref["translate"])
    assert out.units == units


def test_napari_units_reach_the_result_layer_and_the_zarr(viewer, widget, qtbot, upsampler, tmp_path) -> None:
    from napari_attnrestore.io import open_image

    viewer.add_image(np.zeros((32, 40), np.uint8), name="um", scale=(0.5, 0.5), units=("um", "um"))
    widget.add_model("up", upsampler)
    run(qtbot, widget)
    result = next(lyr for lyr in viewer.layers if lyr.name != "um")
    assert [str(u) for u in result.units] == ["micrometer", "micrometer"]  # was pixel: the scale bar lost its unit
    dst = tmp_path / "um.ome.zarr"
    widget.set_options(output="zarr file", zarr=str(dst))
    run(qtbot, widget)
    assert open_image(dst).units == {"y": "micrometer", "x": "micrometer"}


def test_a_time_lapse_and_labelled_axes_restored_to_zarr_keep_their_axes(viewer, widget, qtbot, denoiser, tmp_path):
    """napari's time unit (and its t/c/z/y/x axis labels) name the axes of the store."""
    from napari_attnrestore.io import open_image

    viewer.add_image(np.zeros((3, 24, 24), np.uint8), name="movie", scale=(2, 0.5, 0.5), units=("s", "um", "um"))
    viewer.add_image(np.zeros((2, 24, 24), np.uint8), name="stack", axis_labels=("c", "y", "x"))
    widget.add_model("conv", denoiser)
    for name, axes in (("movie", "tyx"), ("stack", "cyx")):
        dst = tmp_path / f"{name}.ome.zarr"
        widget.set_options(input=viewer.layers[name], output="zarr file", zarr=str(dst))
        run(qtbot, widget)
        assert open_image(dst).axes == axes  # the movie was a z axis of type space in seconds
    assert tuple(viewer.layers["stack (denoised)"].axis_labels) == ("c", "y", "x")  # it was ('-3', '-2', '-1')


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


class _NeedsBigInput(nn.Module):
    """A user's network without the engine's attributes whose shape probe fails in torch."""

    def forward(self, x):
        return x + nn.functional.avg_pool2d(x, 64).mean()  # RuntimeError below 64 x 64


def test_torch_error_while_setting_up_the_model_notifies_and_reenables(viewer, widget, qtbot, notifications) -> None:
    viewer.add_image(np.zeros((40, 48), np.uint8), name="img")
    widget.add_model("needs 64 px", _NeedsBigInput())
    run(qtbot, widget)  # it stayed busy for good: the error never reached the widget
    assert_idle(widget)
    assert any("RuntimeError" in str(n.message) for n in notifications)


def test_task_options_visibility(viewer, widget) -> None:
    assert [c for c in widget._task.choices] == ["denoise", "sr", "demosaic", "inpaint"]
    widget.set_options(task="inpaint")
    assert shown(widget._mask) and shown(widget._nodata) and not shown(widget._cfa) and not shown(widget._scale)
    widget.set_options(task="demosaic")
    assert shown(widget._cfa) and not shown(widget._mask) and not shown(widget._nodata)
    assert list(widget._cfa.choices) == ["RGGB", "BGGR", "GRBG", "GBRG"] and widget._cfa.tooltip
    widget.set_options(task="denoise")
    assert not shown(widget._cfa) and not shown(widget._mask)


def test_inpaint_with_labels_mask(viewer, widget, qtbot, notifications) -> None:
    img = np.random.default_rng(8).random((48, 64), dtype=np.float32) * 0.4
    viewer.add_image(img, name="img", scale=(2.0, 2.0))
    labels = np.zeros((48, 64), np.uint8)
    labels[10:20, 30:40] = 3
    viewer.add_labels(labels, name="holes", scale=(2.0, 2.0))
    widget.add_model("fill", FillHalf())
    assert widget._task.value == "inpaint"
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["holes"], nodata=None)
    run(qtbot, widget)
    assert not [n for n in notifications if "error" in str(n.severity).lower()]
    out = viewer.layers["img (inpainted)"]
    assert out.data.shape == img.shape and not out.rgb
    np.testing.assert_allclose(out.scale, (2.0, 2.0))
    hole = labels > 0
    np.testing.assert_allclose(out.data[~hole], img[~hole], atol=1e-5)  # known pixels kept
    assert np.abs(out.data[hole] - img[hole]).mean() > 0.05  # masked pixels filled
    assert out.metadata["attnrestore"]["task"] == "inpaint"


def test_inpainting_chooses_the_inputs_own_nodata_mask_once(viewer, widget) -> None:
    """The reader gives a GeoTIFF's internal nodata mask as a ``NAME [no data]`` Labels layer:
    inpainting that image takes it as its mask unless another one (or none) was chosen."""
    viewer.add_image(np.zeros((16, 16), np.float32), name="other")
    viewer.add_image(np.zeros((16, 16), np.uint8), name="scene")
    gaps = viewer.add_labels(np.zeros((16, 16), np.uint8), name="scene [no data]")
    widget.set_options(input=viewer.layers["other"], task="inpaint")
    assert widget._mask.value is None  # not that image's mask
    widget.set_options(input=viewer.layers["scene"])
    assert widget._mask.value is gaps
    widget.set_options(mask=None, task="denoise")
    widget.set_options(task="inpaint", input=viewer.layers["other"])
    widget.set_options(input=viewer.layers["scene"])
    assert widget._mask.value is None  # set back to none by the user: it stays none


def test_an_integer_image_layer_serves_as_the_mask(viewer, widget, qtbot, notifications) -> None:
    """A gap mask file (Landsat's, 1 where there are data) opens as an Image layer: the widget
    offered only Labels and Shapes, so it had to be converted by hand."""
    img = np.random.default_rng(8).random((48, 64), dtype=np.float32) * 0.4
    viewer.add_image(img, name="img")
    valid = np.ones((48, 64), np.uint8)
    valid[:, 30:34] = 0  # a scan-line gap
    viewer.add_image(valid, name="gapmask")
    names = [c.name for c in widget._mask.choices if c is not None]
    assert "gapmask" in names and "img" not in names  # a float picture is no mask
    widget.add_model("fill", FillHalf())
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["gapmask"], invert_mask=True, nodata=None)
    run(qtbot, widget)
    out = viewer.layers["img (inpainted)"].data
    np.testing.assert_allclose(out[:, :30], img[:, :30], atol=1e-5)
    assert np.abs(out[:, 30:34] - img[:, 30:34]).mean() > 0.05


def test_inpaint_with_a_labels_mask_of_the_valid_pixels(viewer, widget, qtbot, notifications) -> None:
    """A Landsat gap mask (1 where there is data) opened as labels filled the data, kept the
    gaps; left uninverted it replaced most of the data with no word: the worker caught the
    engine's warning and nothing showed it."""
    img = np.random.default_rng(8).random((48, 64), dtype=np.float32) * 0.4
    viewer.add_image(img, name="img")
    valid = np.ones((48, 64), np.uint8)
    valid[10:20] = 0
    viewer.add_labels(valid, name="valid")
    widget.add_model("fill", FillHalf())
    assert widget._invert_mask.native.isHidden()  # shown only with a mask
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["valid"], nodata=None)
    run(qtbot, widget)
    warned = [str(n.message) for n in notifications if "warning" in str(n.severity).lower()]
    assert len(warned) == 1 and "the mask marks about 79% of the pixels to fill" in warned[0], warned
    widget.set_options(invert_mask=True)
    assert not widget._invert_mask.native.isHidden()
    run(qtbot, widget)
    out = viewer.layers["img (inpainted) [1]"].data
    gap = valid == 0
    np.testing.assert_allclose(out[~gap], img[~gap], atol=1e-5)
    assert np.abs(out[gap] - img[gap]).mean() > 0.05


def test_only_the_jobs_own_warnings_are_notified(viewer, widget, qtbot, notifications, slow_denoiser) -> None:
    """The worker catches every warning of the process while it runs: another plugin's, on
    the GUI thread, was shown as "AttnRestore: ..."."""
    import warnings

    viewer.add_image(np.zeros((64, 64), np.float32), name="z")
    widget.add_model("slow", slow_denoiser)
    widget.set_options(input=viewer.layers["z"])
    widget.run()
    warnings.warn("a warning of some other plugin", UserWarning, stacklevel=1)
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)
    assert not any("other plugin" in str(n.message) for n in notifications)


def test_a_session_module_changed_in_place_is_used_as_it_is_now(viewer, widget, qtbot) -> None:
    """The widget cached the engine's copy of a session module: a second Run used the weights
    of the first while the module trained on."""
    import torch

    img = np.random.default_rng(2).random((32, 32), dtype=np.float32)
    viewer.add_image(img, name="img")
    net = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    widget.add_model("net", net)
    widget.set_options(input=viewer.layers["img"])
    run(qtbot, widget)
    with torch.no_grad():
        net.weight.fill_(1.0)  # now the identity
    run(qtbot, widget)
    np.testing.assert_allclose(viewer.layers["img (denoised) [1]"].data, img, atol=1e-5)


def test_inpaint_with_shapes_rectangle_and_nodata(viewer, widget, qtbot) -> None:
    img = np.random.default_rng(9).random((40, 48), dtype=np.float32) * 0.4
    img[2, 2] = -1.0  # nodata
    viewer.add_image(img, name="img")
    shapes = viewer.add_shapes([np.array([[5, 6], [15, 20]])], shape_type="rectangle", name="roi")
    widget.add_model("fill", FillHalf())
    widget.set_options(mask=shapes, nodata=-1)
    from napari_attnrestore.gui.shapes_mask import ShapesMask

    # pressing Run only copies the outlines: a gigapixel mask drawn there froze the viewer
    assert isinstance(widget._request()[2]["mask"], ShapesMask)
    run(qtbot, widget)
    out = viewer.layers["img (inpainted)"].data
    hole = shapes.to_labels(labels_shape=img.shape) > 0
    assert hole[10, 10] and hole.sum() > 50
    np.testing.assert_allclose(out[~hole], img[~hole], atol=1e-5)
    assert np.abs(out[10:14, 10:14] - img[10:14, 10:14]).mean() > 0.05
    assert out[2, 2] == -1  # no data outside the mask: not asked to fill, it stays no data
    # the value this job took for no data goes on with the result, as the CLI's GeoTIFF declares it
    assert viewer.layers["img (inpainted)"].metadata["nodata"] == -1


def test_preview_of_a_transposed_view_says_so(viewer, widget, notifications, denoiser, qtbot) -> None:
    """With x on the slider it restored a y-x plane the view shows as one line, silently;
    Y and X only swapped on screen still show that plane, and preview it."""
    viewer.add_image(np.zeros((20, 64, 80), np.float32), name="vol")
    widget.add_model("conv", denoiser)
    viewer.dims.order = (2, 0, 1)
    widget.preview()
    assert not widget.busy and "vol (preview)" not in viewer.layers
    assert any("Preview restores a (Y, X) plane" in str(n.message) for n in notifications)
    viewer.dims.order = (0, 2, 1)
    run(qtbot, widget, "preview")
    assert viewer.layers["vol (preview)"].data.shape[-2:] == (64, 80)


def test_inpaint_mask_of_wrong_size_is_an_error(viewer, widget, notifications) -> None:
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    viewer.add_labels(np.zeros((16, 32), np.uint8), name="small")
    widget.add_model("fill", FillHalf())
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["small"])
    widget.run()
    assert_idle(widget)
    errors = [n for n in notifications if "small" in str(n.message) and "Y, X" in str(n.message)]
    assert errors and str(errors[0].severity).lower().endswith("error")
    assert len(viewer.layers) == 2


def test_inpaint_labels_mask_elsewhere_in_the_world_is_an_error(viewer, widget, notifications) -> None:
    viewer.add_image(np.zeros((32, 32), np.float32), name="img", scale=(0.5, 0.5))
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="coarse")  # same shape, twice the pixel size
    widget.add_model("fill", FillHalf())
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["coarse"])
    widget.run()
    assert_idle(widget)
    assert any("coarse" in str(n.message) and "lies elsewhere" in str(n.message) for n in notifications)
    assert any("(scale (1, 1), translate (0, 0) against scale (0.5, 0.5)" in str(n.message) for n in notifications)
    assert not any("np.float64" in str(n.message) for n in notifications)
    assert len(viewer.layers) == 2


def test_masks_of_a_rotated_image_are_refused_unless_they_turn_alike(viewer, widget, qtbot, notifications) -> None:
    """A Shapes gap over a rotated image filled nothing (it was placed by scale and translate
    only), and an unrotated Labels mask was used pixel for pixel on a rotated image."""
    img = np.random.default_rng(3).random((32, 32), dtype=np.float32)
    viewer.add_image(img, name="img", rotate=30)
    viewer.add_shapes([np.array([[10, 10], [10, 20], [20, 20], [20, 10]])], shape_type="rectangle", name="gap")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="flat")
    holes = np.zeros((32, 32), np.uint8)
    holes[4:8] = 1
    viewer.add_labels(holes, name="turned", rotate=30)
    widget.add_model("fill", FillHalf())
    for mask, said in (("gap", "a Shapes mask is placed on the image by scale and translate only"),
                       ("flat", "lies elsewhere than the input")):
        widget.set_options(input=viewer.layers["img"], mask=viewer.layers[mask])
        widget.run()
        assert_idle(widget)
        assert any(said in str(n.message) for n in notifications), [str(n.message) for n in notifications]
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["turned"], nodata=None)
    run(qtbot, widget)
    out = viewer.layers["img (inpainted)"].data
    assert np.abs(out[4:8] - img[4:8]).mean() > 0.05 and np.allclose(out[8:], img[8:], atol=1e-5)


def test_a_geotiffs_nodata_is_kept_in_a_new_layer_too(viewer, widget, qtbot, denoiser) -> None:
    """Restored into a new layer, a GeoTIFF's declared nodata border became data (values up to
    16 around the scene), while its zarr output, the API and the CLI kept it."""
    img = np.random.default_rng(1).integers(20, 200, (48, 64)).astype(np.uint8)
    img[:, :16] = 0
    viewer.add_image(img, name="scene", metadata={"nodata": 0.0})
    widget.add_model("conv", denoiser)
    widget.set_options(input=viewer.layers["scene"], task="denoise", model=denoiser)
    run(qtbot, widget)
    out = viewer.layers["scene (denoised)"].data
    assert (np.asarray(out)[:, :16] == 0).all() and (np.asarray(out)[:, 20:] != 0).all()


def test_napari_axis_labels_name_the_channel_axis(viewer, widget) -> None:
    """A (C, Y, X) layer labelled c, y, x was normalized as one z stack (a dim channel came out
    worse than its noisy input), although the writers read those labels."""
    viewer.add_image(np.zeros((2, 32, 32), np.uint16), name="cyx", axis_labels=("c", "y", "x"))
    widget.set_options(input=viewer.layers["cyx"], task="denoise")
    assert widget._request()[2]["channel_axis"] == 0


def test_clearing_a_file_option_is_not_the_working_folder(viewer, widget, notifications) -> None:
    """set_options(zarr="") became the working folder, and the result was written beside it."""
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget.set_options(input=viewer.layers["img"], output="zarr file", zarr="")
    with pytest.raises(ValueError, match="choose an output zarr file"):
        widget._zarr_path()


def test_closing_the_viewer_under_a_run_touches_no_deleted_widget(viewer, widget, qtbot, denoiser) -> None:
    """The job's end updated buttons Qt had deleted with the closed viewer: the process aborted."""
    viewer.add_image(np.random.default_rng(0).random((4, 64, 64)).astype(np.float32), name="img")
    widget.add_model("conv", denoiser)
    widget.set_options(input=viewer.layers["img"], model=denoiser, chunk=256)
    touched = []
    widget._set_busy = lambda busy, status=None: touched.append(busy)  # as a deleted button would be
    widget.run()
    widget._on_destroyed()  # what Qt emits as the closing viewer deletes the widget
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert touched == [True] and "img (denoised)" not in viewer.layers


def test_demosaic_gives_rgb_layer(viewer, widget, qtbot, notifications) -> None:
    from napari_attnrestore.tasks.demosaic import mosaic

    rgb = np.random.default_rng(10).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    cfa = mosaic(rgb, "GRBG")
    viewer.add_image(cfa, name="raw", scale=(2.0, 3.0), translate=(1.0, 4.0))
    widget.add_model("split", SplitCFA())
    assert widget._task.value == "demosaic"
    widget.set_options(cfa="GRBG")
    run(qtbot, widget)
    assert not [n for n in notifications if "error" in str(n.severity).lower()]
    out = viewer.layers["raw (demosaiced)"]
    assert out.rgb and out.data.shape == (40, 48, 3) and out.data.dtype == np.uint8
    np.testing.assert_allclose(out.scale, (2.0, 3.0))
    np.testing.assert_allclose(out.translate, (1.0, 4.0))
    np.testing.assert_array_equal(mosaic(np.asarray(out.data), "GRBG"), cfa)


def test_the_widget_takes_the_pattern_a_raw_layer_states(viewer, widget) -> None:
    """A raw TIFF's CFAPattern (the reader's layer metadata "cfa") was ignored: the widget
    stayed at RGGB and swapped red and blue of a BGGR camera."""
    viewer.add_image(np.zeros((16, 16), np.uint16), name="plain")
    viewer.add_image(np.zeros((16, 16), np.uint16), name="raw", metadata={"cfa": "BGGR"})
    widget._image.value = viewer.layers["raw"]
    assert widget._cfa.value == "BGGR"
    widget._image.value = viewer.layers["plain"]  # a layer that states none leaves the choice as it is
    assert widget._cfa.value == "BGGR"


def test_demosaic_preview_keeps_bayer_phase() -> None:
    from napari_attnrestore.gui.restore_widget import shift_pattern
    from napari_attnrestore.tasks.demosaic import mosaic

    rgb = np.random.default_rng(11).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    for pattern in ("RGGB", "BGGR", "GRBG", "GBRG"):
        full = mosaic(rgb, pattern)
        for y0, x0 in ((0, 1), (1, 0), (1, 1), (2, 3)):
            np.testing.assert_array_equal(mosaic(rgb[y0:, x0:], shift_pattern(pattern, y0, x0)), full[y0:, x0:])


def test_inpaint_without_model_notifies(viewer, widget, qtbot, notifications, tmp_path, monkeypatch) -> None:
    from napari_attnrestore import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)  # an install without a shipped inpainter
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget.set_options(task="inpaint")
    assert list(widget._model.choices) == ["checkpoint file..."]
    assert any("no model for inpaint yet" in str(n.message) for n in notifications)
    notifications.clear()
    widget.run()
    assert_idle(widget)
    assert any("no model for inpaint yet" in str(n.message) for n in notifications)
    assert len(viewer.layers) == 1


def test_preview_demosaic_and_inpaint(viewer, widget, qtbot, notifications) -> None:
    from napari_attnrestore.tasks.demosaic import mosaic

    cfa = mosaic(np.random.default_rng(12).integers(0, 255, (32, 40, 3), dtype=np.uint8), "BGGR")
    viewer.add_image(cfa, name="raw")
    widget.add_model("split", SplitCFA())
    widget.set_options(cfa="BGGR")
    run(qtbot, widget, "preview")
    prev = viewer.layers["raw (preview)"]
    assert prev.rgb and prev.data.shape[-1] == 3
    y0, x0 = (round(float(t)) for t in prev.translate)
    h, w = prev.data.shape[:2]
    np.testing.assert_array_equal(mosaic(prev.data, "BGGR"), cfa[y0 : y0 + h, x0 : x0 + w])

    img = np.full((32, 40), 0.2, np.float32)
    viewer.add_image(img, name="img")
    labels = np.zeros(img.shape, np.uint8)
    labels[4:8, 4:8] = 1
    viewer.add_labels(labels, name="holes")
    widget.add_model("fill", FillHalf())
    widget.set_options(input=viewer.layers["img"], mask=viewer.layers["holes"])
    run(qtbot, widget, "preview")
    assert not [n for n in notifications if "error" in str(n.severity).lower()]
    prev = viewer.layers["img (preview)"].data
    assert prev.shape == (32, 40) and abs(prev[5, 5] - 0.2) > 0.05 and prev[20, 20] == pytest.approx(0.2)


def test_a_zarr_result_of_a_layer_whose_axes_are_out_of_ngff_order_overlays_it(viewer, widget, qtbot,
                                                                                denoiser, tmp_path) -> None:
    """A z-t layer (a stack of time-lapses opened as one) restored to a zarr file came back t-z
    under the layer's z-t labels and pixel sizes: the store holds NGFF's t, z order."""
    img = np.zeros((2, 3, 32, 32), np.float32)
    for z in range(2):
        for t in range(3):
            img[z, t] = 10 * z + t
    viewer.add_image(img, name="zt", axis_labels=("z", "t", "y", "x"), scale=(4.0, 60.0, 0.5, 0.5))
    widget.add_model("conv", denoiser)
    widget.set_options(output="zarr file", zarr=str(tmp_path / "zt.ome.zarr"))
    run(qtbot, widget)
    out = viewer.layers["zt (denoised)"]
    data = np.asarray(out.data[0] if out.multiscale else out.data)
    assert data.shape == img.shape and tuple(out.scale) == (4.0, 60.0, 0.5, 0.5)
    means = data.mean(axis=(2, 3))
    assert means[1, 0] > means[0, 2]  # z 1 of t 0 is brighter than z 0 of t 2, as in the input
