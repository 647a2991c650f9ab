"""Planning's messages when a model's input channels do not fit the task and the image."""

from __future__ import annotations

import numpy as np
import pytest

import napari_attnrestore as ar
from napari_attnrestore.engine.model_handle import ModelInfo
from napari_attnrestore.engine.plan import choose_mode


def _info(cin: int) -> ModelInfo:
    return ModelInfo(in_channels=cin, out_channels=1, scale=1, multiple_of=1, halo=8, half_safe=False, name="hat")


def test_a_denoising_model_for_inpainting_is_not_called_one_that_expects_what_it_gets(tiny_checkpoint):
    """It said "expects 1 input channels (1 of them for the task); the input is single-channel planes"."""
    with pytest.raises(ValueError) as e:
        ar.restore(np.ones((40, 40), np.float32), model=ar.load_model(tiny_checkpoint), task="inpaint", nodata=0)
    msg = str(e.value)  # its card names its task
    assert "is for task 'denoise', not 'inpaint'" in msg and "needs an inpainting model" in msg
    model = ar.load_model(tiny_checkpoint)
    model.card = None  # a module with no card: the channels are said as they are
    with pytest.raises(ValueError) as e:
        ar.restore(np.ones((40, 40), np.float32), model=model, task="inpaint", nodata=0)
    msg = str(e.value)
    assert "expects 1 input channel;" in msg and "task 'inpaint' feeds 2" in msg
    assert "plus 1 for the mask" in msg and "use an inpainting model" in msg
    assert "1 of them for the task" not in msg


def test_the_model_task_is_named_when_known():
    with pytest.raises(ValueError, match="model 'hat' is for task 'denoise', not 'inpaint'; this is a denoising model, "
                                         "and task 'inpaint' needs an inpainting model"):
        choose_mode(False, _info(1), 1, aux=1, task="inpaint", model_task="denoise")


def test_channel_counts_that_do_not_fit_are_said_as_they_are():
    with pytest.raises(ValueError, match=r"expects 3 input channels; task 'denoise' feeds 1: the image's 1"):
        choose_mode(False, _info(3), 1, task="denoise")
    with pytest.raises(ValueError, match=r"expects 2 input channels; task 'denoise' feeds 3 or 1: the RGB\(A\) "
                                         r"image's 3 \(or 1, plane by plane\)"):
        choose_mode(True, _info(2), 3, task="denoise")
    with pytest.raises(ValueError, match=r"expects 1 input channel; task 'demosaic' feeds 4: .* plus 3 for the "
                                         "mosaic's colour masks; use a demosaicing model"):
        choose_mode(False, _info(1), 1, aux=3, task="demosaic")
    assert choose_mode(False, _info(2), 1, aux=1, task="inpaint") == "plane"

