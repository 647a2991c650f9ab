"""Published checkpoints (HAT, GRL, ... via spandrel) load safely and run through the engine.

Needs the optional ``thirdparty`` extra (spandrel); skipped where it is not installed.
"""

import numpy as np
import pytest
import torch

import napari_attnrestore as ar
from napari_attnrestore.training import CheckpointError

spandrel = pytest.importorskip("spandrel")


def _hat_state(scale: int = 2) -> dict:
    from spandrel.architectures.HAT import HAT

    torch.manual_seed(0)
    # HAT-S's block layout (compress 24, squeeze 24, window 16), narrowed so a CPU test runs
    net = HAT(in_chans=3, embed_dim=24, depths=(2,), num_heads=(2,), window_size=16, compress_ratio=24,
              squeeze_factor=24, mlp_ratio=2.0, upscale=scale, upsampler="pixelshuffle", img_size=64)
    return net.state_dict()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_hat_checkpoint_loads_and_restores_tiled(tmp_path, suffix):
    state = _hat_state()
    path = tmp_path / f"hat{suffix}"
    if suffix == ".pth":
        torch.save({"params_ema": state}, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = ar.load_model(str(path))
    assert model.scale == 2 and model.in_channels == 3 and "HAT" in model.arch
    img = (np.random.default_rng(0).random((200, 170, 3)) * 255).astype(np.uint8)
    tiled = ar.restore(img, task="sr", scale=2, model=model, tile=64, chunks=128).compute()
    assert tiled.shape == (400, 340, 3) and tiled.dtype == np.uint8


def test_wrong_scale_is_refused(tmp_path):
    torch.save(_hat_state(2), tmp_path / "x2.pth")
    with pytest.raises(CheckpointError, match="scale 2, not 4"):
        ar.load_model(str(tmp_path / "x2.pth"), task="sr", scale=4)
