"""Opening the widgets and starting their jobs leaves torch to the worker thread.

Importing torch and the networks takes seconds, and on napari's GUI thread the viewer would
freeze for as long.  Each case runs in a fresh interpreter, where nothing imported torch yet.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys, threading, time

    first = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and not first:
                first.append(threading.current_thread() is threading.main_thread())
            return None

    sys.meta_path.insert(0, Watch())

    import numpy as np
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    rng = np.random.default_rng(0)
    viewer.add_image((rng.random((64, 64)) * 4000).astype(np.uint16), name="noisy")
    _, widget = viewer.window.add_plugin_dock_widget("napari-attnrestore", sys.argv[1])
    print("opened without torch:", "torch" not in sys.modules)
    if sys.argv[1] == "Restore":
        widget.run()
    else:
        widget.set_options(steps=2, batch=1, patch=32, device="cpu")
        widget.train()
    deadline = time.monotonic() + 240
    while widget.busy and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    print("finished:", not widget.busy)
    print("layers:", [layer.name for layer in viewer.layers])
    print("torch first imported on the GUI thread:", first)
""")


@pytest.mark.parametrize("widget", ["Restore", "Train"])
def test_torch_is_imported_by_the_worker_not_the_gui_thread(widget, tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, widget], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "opened without torch: True" in out, out
    assert "finished: True" in out, out
    if widget == "Restore":
        assert "'noisy (denoised)'" in out, out  # the result layer
    assert "torch first imported on the GUI thread: [False]" in out, out
