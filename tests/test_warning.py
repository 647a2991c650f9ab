"""The package's own warning category, and the line its warnings name."""

import warnings

import numpy as np
import pytest

import napari_attnrestore as ar
from napari_attnrestore.engine.model_handle import warn_compile_failed
from napari_attnrestore.warning import AttnRestoreWarning, CompileFallbackWarning


def _bands() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(100, 300, (48, 48)), rng.integers(20000, 40000, (48, 48))]).astype(np.uint16)


def test_warnings_are_of_the_packages_category_and_name_the_callers_line(tiny_checkpoint):
    """They were plain UserWarnings, some naming an internal line four calls down (plan.py),
    so a script could neither filter them by package nor see which of its calls warned."""
    image = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    with pytest.warns(ar.AttnRestoreWarning, match="nodata 300 cannot occur") as caught:
        ar.restore(image, task="denoise", model=str(tiny_checkpoint), nodata=300)
    assert [w.filename for w in caught if issubclass(w.category, AttnRestoreWarning)] == [__file__]
    with pytest.warns(AttnRestoreWarning, match="differ .*-fold in intensity range") as caught:
        ar.restore(_bands(), task="denoise", model=str(tiny_checkpoint))  # found deep in the engine's planning
    assert {w.filename for w in caught if issubclass(w.category, AttnRestoreWarning)} == {__file__}


def test_a_script_can_silence_them_or_stop_at_them(tiny_checkpoint):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ar.AttnRestoreWarning)
        out = ar.restore(_bands(), task="denoise", model=str(tiny_checkpoint))
    assert out.shape == (2, 48, 48) and not [w for w in caught if "differ" in str(w.message)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ar.AttnRestoreWarning)
        with pytest.raises(AttnRestoreWarning, match="differ"):
            ar.restore(_bands(), task="denoise", model=str(tiny_checkpoint))


def test_a_compile_fallback_is_ours_and_still_a_runtime_warning():
    with pytest.warns(CompileFallbackWarning, match="torch.compile failed for the net") as caught:
        warn_compile_failed(RuntimeError("no compiler"), "running uncompiled", "the net")
    assert issubclass(caught[0].category, RuntimeWarning) and issubclass(caught[0].category, AttnRestoreWarning)


def test_a_script_stops_at_a_warning_while_a_file_is_opened(tmp_path):
    """From a review: the TIFF reader's catch-all turned the caller's warning-as-error into
    'cannot read TIFF (AttnRestoreWarning: ...)', an error that says the file is broken."""
    import tifffile

    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((32, 32), np.uint8))
        tw.write(np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttnRestoreWarning)
        with pytest.raises(AttnRestoreWarning, match="holds 2 images"):
            ar.io.open_image(path)
