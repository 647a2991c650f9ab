"""npe2 contributions through napari: manifest, sample data, reader and writers."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

SAMPLES = [
    "noisy_camera", "noisy_astronaut", "noisy_cell", "noisy_timelapse", "lowres_coins", "lowres_moon",
    "mosaicked_astronaut", "gapped_camera",
]


def test_manifest_is_valid() -> None:
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-attnrestore")
    assert pm.display_name == "AttnRestore"
    assert {s.key for s in pm.contributions.sample_data} == set(SAMPLES)
    assert [w.display_name for w in pm.contributions.widgets] == ["Restore", "Train"]
    exts = {e for w in pm.contributions.writers for e in w.filename_extensions}
    assert {".zarr", ".ome.zarr", ".tif", ".tiff"} <= exts
    assert pm.contributions.readers[0].accepts_directories


def test_samples_are_deterministic_and_qt_free() -> None:
    import subprocess
    import sys

    from napari_attnrestore.io import samples

    a, b = samples.noisy_camera()[0][0], samples.noisy_camera()[0][0]
    assert a.shape == (512, 512) and a.dtype == np.uint8 and np.array_equal(a, b)
    code = "import sys, napari_attnrestore.io.samples as s; s.lowres_moon(); print(any(m.split('.')[0] in ('qtpy', 'PyQt5', 'napari') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_gui_package_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, napari_attnrestore, napari_attnrestore.gui; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'qtpy', 'PyQt5', 'PySide6', 'napari', 'magicgui'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gui
@pytest.mark.parametrize("key", SAMPLES)
def test_sample_data_loads(make_napari_viewer, key: str) -> None:
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-attnrestore", key)
    assert len(layers) == (2 if key == "gapped_camera" else 1)
    layer = layers[0]
    assert layer.data.ndim in (2, 3) and max(layer.data.shape) <= 660
    if key == "noisy_astronaut":
        assert layer.rgb
    if key == "noisy_timelapse":
        assert layer.data.shape == (5, 256, 256) and layer.data.dtype == np.uint16
    if key == "gapped_camera":
        gaps = np.isnan(layer.data)
        assert 0.1 < gaps.mean() < 0.4 and np.array_equal(gaps, layers[1].data.astype(bool))


@pytest.mark.gui
@pytest.mark.parametrize("ext", [".ome.zarr", ".tif"])
def test_writer_reader_round_trip(make_napari_viewer, tmp_path, ext: str) -> None:
    pytest.importorskip("napari_attnrestore.io.napari_hooks")
    viewer = make_napari_viewer()
    img = np.random.default_rng(0).integers(0, 4000, (2, 48, 64), dtype=np.uint16)
    layer = viewer.add_image(img, name="stack", scale=(1.0, 0.5, 0.5))
    path = str(tmp_path / f"stack{ext}")
    written = layer.save(path, plugin="napari-attnrestore")
    assert written
    opened = viewer.open(path, plugin="napari-attnrestore")
    assert len(opened) == 1
    back = opened[0]
    data = back.data[0] if back.multiscale else back.data
    np.testing.assert_array_equal(np.asarray(data), img)
    np.testing.assert_allclose(back.scale[-2:], (0.5, 0.5))
