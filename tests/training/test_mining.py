"""Hard-patch mining: the difficulty measure, the mined batches, resuming and recipe checks."""

import numpy as np
import pytest
import torch

from napari_attnrestore.training.data import PatchSampler
from napari_attnrestore.training.mining import HardPatches, demosaic_difficulty, with_hard_patches


def test_demosaic_difficulty_is_malvar_error():
    flat = torch.full((1, 3, 16, 16), 0.4)
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16).contiguous()  # grey ramp: Malvar is exact
    edge = torch.zeros(1, 3, 16, 16)
    edge[:, 0, :, 7:] = 1.0  # a sharp red edge: zippers and false colour
    edge[:, 2, :, :7] = 1.0
    scores = demosaic_difficulty(torch.cat([flat, ramp, edge]))
    assert scores[0] < 1e-10 and scores[1] < 1e-10 and scores[2] > 1e-3


def test_hard_patches_keep_the_worst_candidates_and_resume():
    rng = np.random.default_rng(0)
    smooth = np.full((3, 64, 64), 0.5, np.float32)
    busy = rng.random((3, 64, 64)).astype(np.float32)
    sampler = HardPatches(PatchSampler([smooth, busy], 16, seed=1, weights=[0.9, 0.1]), demosaic_difficulty,
                          candidates=8, share=0.5)
    assert len(sampler.images) == 2 and sampler.patch == 16  # the plain sampler's attributes
    state = sampler.state()
    batch = sampler.sample(8)
    assert batch.shape == (8, 3, 16, 16)
    hard = demosaic_difficulty(batch[4:])
    # 32 candidates at 1 in 10 busy: the 4 mined ones are busy although few of the plain ones are
    assert (hard > 1e-3).all()
    sampler.set_state(state)
    assert torch.equal(sampler.sample(8), batch)


def test_hard_patches_config_is_checked(tmp_path):
    plain = PatchSampler([np.zeros((3, 32, 32), np.float32)], 16)
    assert with_hard_patches(plain, "demosaic", None) is plain
    assert isinstance(with_hard_patches(plain, "demosaic", {"candidates": 3}), HardPatches)
    for task, cfg, msg in [("demosaic", {"candidates": 1}, "at least 2"), ("demosaic", {"share": 0}, "share"),
                           ("demosaic", {"top": 2}, "expected candidates and share"),
                           ("denoise", {"candidates": 4}, "no difficulty measure for denoise")]:
        with pytest.raises(ValueError, match=msg):
            with_hard_patches(plain, task, cfg)

