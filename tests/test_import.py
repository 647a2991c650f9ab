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


def test_public_api():
    import napari_attnrestore as ar

    for name in ("restore", "restore_to_zarr", "load_model", "build_model", "list_architectures", "list_models"):
        assert callable(getattr(ar, name))
    assert "hat" in ar.list_architectures()
