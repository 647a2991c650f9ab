"""Stein's unbiased risk estimate as a training loss, and the noise levels it needs."""

import numpy as np
import pytest
import torch
from torch import nn

from napari_attnrestore.tasks.denoise import estimate_noise_sigma
from napari_attnrestore.training.selfsupervised import (
    SureLoss,
    denoise_objective,
    patch_noise_sigma,
    with_sigma_plane,
)


def _smooth_pair(sigma=0.1, n=4, size=64):
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    clean = torch.stack([0.5 + 0.3 * torch.sin(6 * xx + k) * torch.cos(4 * yy) for k in range(n)])[:, None]
    return clean, clean + sigma * torch.randn_like(clean)


class _RandomOutput(nn.Module):
    """Identity plus fresh random numbers at every call, as ACLA's Gumbel choice while training."""

    def forward(self, z):
        return z + 0.1 * torch.randn_like(z)


def test_sure_matches_the_supervised_error_without_the_clean_image():
    clean, noisy = _smooth_pair()
    sigma = torch.full((noisy.shape[0], 1, 1, 1), 0.1)
    blur = nn.Conv2d(1, 1, 5, padding=2, padding_mode="replicate", bias=False)
    blur.weight.data.fill_(1 / 25)
    for model in (nn.Identity(), blur):
        with torch.no_grad():
            truth = (model(noisy) - clean).square().mean().item()
            # SURE's own spread here is about 2 sigma^2 / sqrt(N) = 1.6e-4
            assert SureLoss()(model, noisy, sigma).item() == pytest.approx(truth, abs=2e-4)
    # the network's own random numbers repeat in both passes, so they do not swamp the divergence
    assert SureLoss()(_RandomOutput(), noisy, sigma).item() == pytest.approx(0.01 + 0.01, abs=1e-3)


def test_sure_under_bfloat16_training_estimates_as_in_float32():
    """bf16 rounding of the two passes would swamp the eps-sized response of the divergence."""
    _, noisy = _smooth_pair()
    sigma = torch.full((noisy.shape[0], 1, 1, 1), 0.1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    with torch.no_grad():
        fp32 = SureLoss()(net, noisy, sigma).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = SureLoss()(net, noisy, sigma).item()
    assert bf16 == pytest.approx(fp32, rel=1e-6)


def test_sure_trains_a_denoiser():
    clean, noisy = _smooth_pair(n=8)
    loss_fn, make_pair = denoise_objective("sure")
    net = nn.Conv2d(1, 1, 5, padding=2, padding_mode="replicate")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss_fn(net, *make_pair(with_sigma_as_channel(noisy), None)).backward()
        opt.step()
    with torch.no_grad():
        # the plain loss |f(y) - y|^2 would keep the identity and its error of sigma^2
        assert (net(noisy) - clean).square().mean() < 0.5 * (noisy - clean).square().mean()


def with_sigma_as_channel(noisy):
    return torch.stack([torch.from_numpy(with_sigma_plane(im[0].numpy(), 0.1)) for im in noisy])


def test_noise_levels_are_estimated_from_the_noisy_data():
    _, noisy = _smooth_pair(sigma=0.05)
    assert patch_noise_sigma(noisy).flatten().tolist() == pytest.approx([0.05] * 4, rel=0.1)
    assert estimate_noise_sigma(noisy[0, 0].numpy()) == pytest.approx(0.05, rel=0.1)
    plane = with_sigma_plane(noisy[0, 0].numpy(), 0.05)
    assert plane.shape == (2, 64, 64) and np.all(plane[1] == np.float32(0.05))
    _, make_pair = denoise_objective("sure")
    one, sig = make_pair(noisy, None)  # one channel: the level comes from each patch
    assert one.shape == noisy.shape and sig.shape == (4, 1, 1, 1)
