import subprocess
import sys


def test_import_does_not_load_qt():
    code = (
        "import sys, napari_attnrestore as ar; ar.restore; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6') "
        "or m.startswith('napari.qt') or m.startswith('napari._qt')]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_napari_file_hooks_open_a_file_without_torch(tmp_path):
    """napari's reader imported torch and every network (seconds) through the package's
    __init__ before it opened a TIFF; the API names now load on first use."""
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    code = (
        "import sys; from napari_attnrestore.io import napari_hooks as h; "
        f"layers = h.napari_get_reader({str(tmp_path / 'a.tif')!r})({str(tmp_path / 'a.tif')!r}); "
        "print(len(layers), 'torch' in sys.modules); import napari_attnrestore as ar; "
        "print(ar.restore.__module__, ar.Cancelled.__name__, 'torch' in sys.modules, 'restore' in dir(ar))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "False", "napari_attnrestore.api", "Cancelled", "True", "True"]


def test_public_api():
    import napari_attnrestore as ar

    for name in ("restore", "restore_to_zarr", "load_model", "build_model", "list_architectures", "list_models"):
        assert callable(getattr(ar, name))
    assert "hat" in ar.list_architectures()


def test_the_errors_of_the_api_are_exported_and_bad_channel_counts_refused(tmp_path):
    """Cancelled, CheckpointError and OutputError were raised by ar.* but reachable only
    through private modules; build_model(in_channels=0) built a 1-channel network."""
    import numpy as np
    import pytest

    import napari_attnrestore as ar

    assert issubclass(ar.Cancelled, RuntimeError) and issubclass(ar.CheckpointError, ValueError)
    assert issubclass(ar.OutputError, OSError)
    with pytest.raises(ValueError, match="in_channels must be a whole number of at least 1, not 0"):
        ar.build_model("hat", in_channels=0)
    ar.io.write_ome_zarr(np.zeros((64, 64), np.uint8), tmp_path / "a.ome.zarr", axes="yx", pyramid=False)
    with pytest.raises(ar.io.ImageWriteError, match="levels must be a whole number of at least 0"):
        ar.io.write_pyramid(tmp_path / "a.ome.zarr", levels=-1)
