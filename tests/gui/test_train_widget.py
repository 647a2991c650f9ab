"""The Train dock widget in a real napari viewer (Xvfb): train, stop, save, restore with the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

TIMEOUT = 120_000
SMALL = {"dim": 16, "depths": [1], "heads": 2, "window": 8}
FAST = {"steps": 3, "batch": 2, "patch": 32, "config": SMALL, "device": "cpu"}


def _noisy(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = np.kron(rng.random((size // 8, size // 8)), np.ones((8, 8))) * 3000 + 500
    return (clean + rng.normal(0, 150, clean.shape)).astype(np.uint16), clean.astype(np.uint16)


@pytest.fixture(autouse=True)
def _fresh_session_models():
    from napari_attnrestore.gui import session_models

    session_models.clear()
    yield
    session_models.clear()


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def trainer(viewer, qtbot):
    from napari_attnrestore.gui.train_widget import TrainWidget

    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    yield w
    if w.busy:
        w.stop()
        qtbot.waitUntil(lambda: not w.busy, timeout=TIMEOUT)


def train(qtbot, widget) -> None:
    widget.train()
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT)


def assert_idle(widget) -> None:
    assert not widget.busy and widget.worker is None
    assert widget._train_btn.enabled and not widget._stop_btn.enabled


def shown(w) -> bool:
    return not w.native.isHidden()


def test_plugin_widget_docks(viewer) -> None:
    _dock, w = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Train")
    assert type(w).__name__ == "TrainWidget"
    noisy, clean = _noisy()
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(clean, name="clean")
    assert w._image.value.name in ("noisy", "clean") and w._clean.value is None
    assert "self-supervised" in w._mode.value
    assert w._start.choices[0] == ("new", "hat") and w._start.value == ("new", "hat")
    assert shown(w._clean) and not shown(w._scale) and shown(w._preset) and w._preset.value == "tiny"
    w.set_options(input=viewer.layers["noisy"], clean=viewer.layers["clean"])
    assert "supervised (noisy" in w._mode.value
    w.set_options(task="sr", scale=4, start="grl")
    assert shown(w._scale) and not shown(w._clean) and "synthetic" in w._mode.value
    assert w._start.value == ("new", "grl") and "tiny" in w._preset.choices
    assert w._lr.native.text() == "0.000500" and w._steps.tooltip and w._lr.tooltip
    assert not w._save_btn.enabled and not w._stop_btn.enabled


def test_self_supervised_training_then_restore(viewer, trainer, qtbot) -> None:
    from qtpy.QtCore import QTimer

    noisy, _ = _noisy()
    viewer.add_image(noisy, name="noisy")
    _dock, restore = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    ticks: list[bool] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(trainer.busy))
    timer.start(5)
    trainer.set_options(**{**FAST, "steps": 4})
    events: list = []
    trainer.train()
    trainer.worker.yielded.connect(events.append)
    qtbot.waitUntil(lambda: not trainer.busy, timeout=TIMEOUT)
    timer.stop()

    assert sum(ticks) >= 3  # the viewer's event loop kept running while training
    assert [e.step for e in events if not e.done] == [1, 2, 3, 4] and events[-1].done
    assert [s for s, _ in trainer.history] == [1, 2, 3, 4]
    assert trainer._progress.value.startswith("step 4/4") and "loss" in trainer._progress.value
    assert not trainer._curve.native.pixmap().isNull()
    assert trainer._status.value.startswith("done: 4 steps")
    assert_idle(trainer)
    assert trainer._save_btn.enabled

    model = trainer.model
    assert model is events[-1].model and not model.training
    assert model.card["training"]["mode"] == "self-supervised"
    assert trainer.model_name == "trained: noisy (4 steps)"
    assert restore._model.value is model  # offered and selected in the Restore widget
    combo = restore._model.native
    assert "trained: noisy (4 steps) (session)" in [combo.itemText(i) for i in range(combo.count())]
    restore.run()
    qtbot.waitUntil(lambda: not restore.busy, timeout=TIMEOUT)
    out = viewer.layers["noisy (denoised)"]
    assert out.data.shape == noisy.shape and out.data.dtype == np.uint16


def test_supervised_with_clean_layer_and_save(viewer, trainer, qtbot, tmp_path) -> None:
    import napari_attnrestore as ar

    noisy, clean = _noisy(seed=1)
    viewer.add_image(noisy, name="noisy")
    viewer.add_image(clean, name="clean")
    trainer.set_options(input=viewer.layers["noisy"], clean=viewer.layers["clean"], precision="bf16", **FAST)
    assert trainer.request().precision == "bf16"
    train(qtbot, trainer)
    assert trainer.model is not None and trainer.model.card["training"]["mode"] == "paired"
    assert trainer.model.card["training"]["precision"] == "bf16"
    assert trainer._status.value.startswith("done: 3 steps")

    path = trainer.save(tmp_path / "mine")
    assert path == tmp_path / "mine.safetensors" and path.exists()
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["task"] == "denoise" and card["training"]["mode"] == "paired" and card["training"]["data"] == "noisy"
    loaded = ar.load_model(path)
    out = ar.restore(noisy, model=loaded, device="cpu").compute()
    assert out.shape == noisy.shape and out.dtype == np.uint16
    # the weights as trained (the tooltip said 16-bit after save_model had stopped storing that)
    session = ar.restore(noisy, model=trainer.model, device="cpu").compute()
    assert np.array_equal(out, session) and "32-bit" in trainer._save_btn.tooltip
    # through the widget's file box too
    trainer.set_options(checkpoint=str(tmp_path / "again.safetensors"))
    trainer._save_btn.clicked.emit()
    assert (tmp_path / "again.safetensors").exists() and (tmp_path / "again.json").exists()


def test_stop_keeps_the_model_trained_so_far(viewer, trainer, qtbot) -> None:
    import napari_attnrestore as ar

    noisy, _ = _noisy(seed=2)
    viewer.add_image(noisy, name="noisy")
    trainer.set_options(**{**FAST, "steps": 200})
    trainer.train()
    run = trainer._run
    trainer.worker.yielded.connect(lambda ev: trainer.stop())
    qtbot.waitUntil(lambda: not trainer.busy, timeout=TIMEOUT)

    assert_idle(trainer)
    step = run.last.step
    assert 1 <= step < 50 and len(trainer.history) == step  # stopped within a step or two of the request
    assert trainer._status.value.startswith(f"stopped at step {step}/200")
    model = trainer.model
    assert model is not run.net and not model.training  # the averaged weights so far, in eval mode
    assert model.card["training"]["stopped_early"] and model.card["training"]["steps"] == step
    assert trainer.model_name == f"trained: noisy ({step} steps)" and trainer._save_btn.enabled
    out = ar.restore(noisy, model=model, device="cpu").compute()
    assert out.shape == noisy.shape and out.dtype == np.uint16 and np.isfinite(out.astype(float)).all()


def test_stop_right_after_train_publishes_no_model(viewer, trainer, qtbot) -> None:
    """Stop pressed while training was set up ran one step and published that model, which
    took over an idle Restore widget's task and model."""
    noisy, _ = _noisy(seed=2)
    viewer.add_image(noisy, name="noisy")
    trainer.set_options(**{**FAST, "steps": 200})
    trainer.train()
    trainer.stop()
    qtbot.waitUntil(lambda: not trainer.busy, timeout=TIMEOUT)
    assert_idle(trainer)
    assert trainer.model is None and trainer._status.value == "stopped before the first step: no model"


def test_a_channel_layer_is_trained_with_its_channels_scaled_apart(viewer, trainer) -> None:
    x = np.stack([np.full((64, 64), 3000, np.uint16), np.full((64, 64), 30, np.uint16)])
    viewer.add_image(x, name="cyx", axis_labels=("c", "y", "x"))
    trainer.set_options(input=viewer.layers["cyx"], patch=32)
    assert trainer.request().channel_axis == 0


def test_closing_the_widget_stops_training(viewer, trainer, qtbot) -> None:
    from napari_attnrestore.gui import session_models

    noisy, _ = _noisy(seed=5)
    viewer.add_image(noisy, name="noisy")
    trainer.set_options(**{**FAST, "steps": 200})
    trainer.train()
    run = trainer._run
    trainer.worker.yielded.connect(lambda ev: trainer._on_destroyed())  # as when the viewer closes
    qtbot.waitUntil(lambda: not trainer.busy, timeout=TIMEOUT)
    assert run.stop.is_set() and run.last.step < 50 and run.final is None
    assert trainer.model is None and session_models.items() == []  # nothing reported to a closed widget


def test_super_resolution_training(viewer, trainer, qtbot) -> None:
    noisy, _ = _noisy(seed=3)
    viewer.add_image(noisy, name="hr")
    _dock, restore = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    trainer.set_options(task="sr", scale=2, **FAST)
    assert trainer.request().mode == "synthetic"
    train(qtbot, trainer)
    assert trainer.model is not None and int(trainer.model.scale) == 2
    assert restore._task.value == "sr" and restore._model.value is trainer.model
    # a session model can be fine-tuned further (a copy is trained)
    trainer.set_options(start=f"fine-tune {trainer.model_name}")
    first = trainer.model
    before = {k: v.clone() for k, v in first.state_dict().items()}
    train(qtbot, trainer)
    assert trainer._status.value.startswith("done: 3 steps")
    assert trainer.model is not first and trainer.model_name == "trained: hr (3 steps) #2"
    after = first.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the original was not touched


def test_fine_tune_a_shipped_weight(viewer, trainer, qtbot, tmp_path, monkeypatch) -> None:
    import napari_attnrestore as ar
    from napari_attnrestore import zoo

    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    ar.save_model(ar.build_model("hat", task="denoise", **SMALL), tmp_path / "mini-denoise.safetensors", task="denoise")
    noisy, _ = _noisy(seed=4)
    viewer.add_image(noisy, name="noisy")
    trainer._start.reset_choices()
    trainer.set_options(**FAST, start="fine-tune mini-denoise")
    assert trainer._start.value == ("weights", "mini-denoise") and not shown(trainer._preset)
    train(qtbot, trainer)
    assert trainer._status.value.startswith("done: 3 steps") and trainer.model is not None


def test_errors_notify_and_return_to_idle(viewer, trainer, qtbot, notifications, monkeypatch) -> None:
    import napari_attnrestore

    noisy, _ = _noisy(size=32)
    viewer.add_image(noisy, name="small")
    trainer.set_options(**{**FAST, "patch": 64})
    trainer.train()  # patch larger than the image: refused before starting
    assert_idle(trainer)
    assert trainer._status.value.startswith("error: patch (64)")
    assert any("larger than the image" in str(n.message) for n in notifications)

    trainer._save_btn.clicked.emit()  # nothing trained yet: a notification, no exception
    assert any("train a model first" in str(n.message) for n in notifications)

    def failing_train(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")
        yield  # a generator, like ar.train

    monkeypatch.setattr(napari_attnrestore, "train", failing_train)
    trainer.set_options(patch=32)
    train(qtbot, trainer)  # a RuntimeError in the worker still ends the run
    assert_idle(trainer)
    assert trainer._status.value == "error: CUDA out of memory (simulated)"
    assert any("out of memory" in str(n.message) for n in notifications)
    assert trainer.model is None

    monkeypatch.undo()  # the real ar.train: its errors name the layer, not "training image 1"
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="empty")
    trainer.set_options(input=viewer.layers["empty"])
    train(qtbot, trainer)
    assert_idle(trainer)
    assert trainer._status.value.startswith("error: layer 'empty': ")

    viewer.add_image(np.zeros((64, 64), bool), name="bits")  # trained, though no widget could restore it
    trainer.set_options(input=viewer.layers["bits"])
    trainer.train()
    assert_idle(trainer)
    assert trainer._status.value == "error: layer 'bits': unsupported pixel type bool; use integer or floating-point data"


def test_curve_polyline_is_bounded_and_thinned() -> None:
    from napari_attnrestore.gui.train_widget import curve_polyline, smooth

    steps = list(range(1, 1001))
    values = [1.0 / s for s in steps]
    pts = curve_polyline(steps, values, 1000, (0, 0, 200, 100), min(values), max(values))
    assert len(pts) <= 201  # one point per pixel column
    assert all(0 <= x <= 200 and 0 <= y <= 100 for x, y in pts)
    assert pts[0][1] < pts[-1][1]  # the loss falls: y grows downwards
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_inpainting_training_on_a_gapped_layer(viewer, trainer, qtbot) -> None:
    img, clean = _noisy(seed=4)
    gapped = img.astype(np.float32)
    gapped[20:26, :] = np.nan
    viewer.add_image(gapped, name="gapped")
    trainer.set_options(task="inpaint", **FAST)
    assert trainer.request().mode == "self-supervised"
    train(qtbot, trainer)
    assert trainer.model is not None and trainer._status.value.startswith("done: 3 steps")
    viewer.add_image(clean, name="clean")
    trainer.set_options(input=viewer.layers["gapped"], clean=viewer.layers["clean"])
    with pytest.raises(ValueError, match="gapped layer alone"):
        trainer.request()


def test_inpainting_training_takes_the_gaps_value(viewer, trainer) -> None:
    """The widget had no nodata field: a band whose gaps are 0 (Landsat-7) trained with its
    gaps as data; a GeoTIFF layer's declared nodata is taken as restoring takes it."""
    band = (np.random.default_rng(0).random((64, 64)) * 200 + 20).astype(np.uint8)
    band[20:26] = 0
    viewer.add_image(band, name="band")
    trainer.set_options(task="inpaint", nodata=0, **FAST)
    assert not trainer._nodata.native.isHidden() and trainer.request().nodata == 0.0
    trainer.set_options(nodata="gap")
    with pytest.raises(ValueError, match="nodata must be a number or empty, not 'gap'"):
        trainer.request()
    trainer.set_options(nodata=None, task="denoise")
    assert trainer._nodata.native.isHidden() and trainer.request().nodata is None
    viewer.layers["band"].metadata["nodata"] = 0  # as the reader records a GeoTIFF's GDAL_NODATA
    assert trainer.request().nodata == 0.0


def test_demosaicing_training_on_a_colour_layer(viewer, trainer, qtbot) -> None:
    from napari_attnrestore.training.synthetic import dead_leaves

    pic = (np.moveaxis(dead_leaves(64, np.random.default_rng(0)), 0, -1) * 255).astype(np.uint8)
    viewer.add_image(pic, name="colour", rgb=True)
    _dock, restore = viewer.window.add_plugin_dock_widget("napari-attnrestore", "Restore")
    trainer.set_options(task="demosaic", **FAST)
    assert trainer.request().mode == "synthetic" and not shown(trainer._clean)
    assert "mosaicked" in trainer._mode.value
    train(qtbot, trainer)
    assert trainer.model is not None and trainer._status.value.startswith("done: 3 steps")
    assert restore._task.value == "demosaic" and restore._model.value is trainer.model
    noisy, _ = _noisy(seed=5)
    viewer.add_image(noisy, name="gray")
    trainer.set_options(input=viewer.layers["gray"])
    with pytest.raises(ValueError, match="'gray' is not RGB"):
        trainer.request()
    trainer.set_options(task="inpaint")
    assert "hidden behind random masks" in trainer._mode.value


def test_session_models_are_offered_only_for_their_task(trainer) -> None:
    from standins import Identity

    from napari_attnrestore.gui import session_models

    denoiser = Identity()
    denoiser.card = {"task": "denoise"}
    session_models.add("trained: img (10 steps)", denoiser)

    def offered() -> list[str]:
        return [label for label, _ in trainer._start_choices()]

    trainer.set_options(task="denoise")
    assert "fine-tune trained: img (10 steps)" in offered()
    for task in ("inpaint", "demosaic"):
        trainer.set_options(task=task)
        assert "fine-tune trained: img (10 steps)" not in offered()


def test_stop_acts_after_the_current_step_however_long_the_run(monkeypatch) -> None:
    """A long run's curve gets one averaged point per `steps // MAX_EVENTS` steps, but Stop is
    checked after every step (it waited for the next curve point)."""
    import napari_attnrestore as ar
    from napari_attnrestore.gui import train_widget as tw

    monkeypatch.setattr(tw, "MAX_EVENTS", 2)  # 3 steps per curve point for a 6-step run
    noisy, _ = _noisy(64)
    run = tw.TrainRun(tw.TrainRequest(noisy, start=("new", "hat"), **{**FAST, "steps": 6}))
    real_train, losses = ar.train, []

    def train(*args, **kwargs):
        for ev in real_train(*args, **kwargs):
            losses.append(ev.loss)
            if ev.step == 4:
                run.stop.set()  # Stop pressed while step 4 runs
            yield ev

    monkeypatch.setattr(ar, "train", train)
    events = list(tw.train_job(run))
    assert [ev.step for ev in events] == [3, 4] and run.last.step == 4 and run.final is None
    assert events[0].loss == pytest.approx(sum(losses[:3]) / 3) and events[1].loss == pytest.approx(losses[3])
    assert run.model() is not None and run.model().card["training"]["steps"] == 4


def test_the_same_request_trains_the_same_network(monkeypatch) -> None:
    """The new network was built before ar.train seeded torch: its weights, so the trained
    model, differed from run to run; an early stop's card also lacked batch and seed."""
    import torch

    from napari_attnrestore.gui import train_widget as tw

    noisy, _ = _noisy(64)
    finals = []
    for _ in range(2):
        torch.manual_seed(len(finals) + 7)  # whatever the global generator held before
        run = tw.TrainRun(tw.TrainRequest(noisy, start=("new", "hat"), **{**FAST, "steps": 2}))
        list(tw.train_job(run))
        finals.append(run.final.state_dict())
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    run.final = None  # as if stopped after its last step: the card of the module trained so far
    card = run.model().card["training"]
    assert card["stopped_early"] and card["batch"] == FAST["batch"] and card["seed"] == 0
