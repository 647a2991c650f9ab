"""The denoise and sr task modules: registry, degradations, baselines, training pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_attnrestore.tasks import denoise, get_task, list_tasks, psnr, sr, ssim


def _smooth(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / 64.0
    return (0.5 + 0.3 * np.sin(2 * np.pi * xx / 1.1) * np.cos(2 * np.pi * yy / 1.4)).astype(np.float32)


def test_registry():
    assert list_tasks() == ["demosaic", "denoise", "inpaint", "sr"]
    assert get_task("Denoising") is denoise.TASK and get_task("super-resolve") is sr.TASK
    assert sr.TASK.check_scale(None) == 2 and sr.TASK.check_scale(4) == 4
    with pytest.raises(ValueError, match="supports scale"):
        sr.TASK.check_scale(3)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("deblur")


def test_metrics():
    a = _smooth()
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    b = a.copy()
    b[:2] += 1.0
    assert psnr(a, b, border=2) == float("inf")


def test_add_noise_sigma():
    clean = np.full((128, 128), 0.5, np.float32)
    noisy = denoise.add_noise(clean, np.random.default_rng(0), sigma=25.0)
    assert noisy.dtype == np.float32 and noisy.std() == pytest.approx(25 / 255, rel=0.05)
    np.testing.assert_array_equal(noisy, denoise.add_noise(clean, np.random.default_rng(0), sigma=25.0))


def test_denoise_training_pair():
    gen = torch.Generator().manual_seed(0)
    clean = torch.full((4, 1, 32, 32), 0.5)
    noisy, y = denoise.make_training_pair(clean, gen, sigma=(25.0, 25.0))
    assert noisy.shape == clean.shape and y is clean
    assert float((noisy - clean).std()) == pytest.approx(25 / 255, rel=0.1)


def test_bm3d_baseline_denoises():
    pytest.importorskip("bm3d")
    clean = _smooth()
    noisy = denoise.add_noise(clean, np.random.default_rng(0), sigma=25.0)
    out = denoise.bm3d_baseline(noisy, sigma=25.0)
    assert out.shape == clean.shape and psnr(clean, out) > psnr(clean, noisy) + 5


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_downsample_and_bicubic(scale):
    clean = _smooth()
    low = sr.downsample(clean, scale=scale)
    assert low.shape == (64 // scale, 64 // scale)
    up = sr.bicubic_baseline(low, scale=scale)
    assert up.shape == clean.shape and psnr(clean, up, border=scale) > 30


def test_bicubic_baseline_is_imresize_kernel_exact_on_quadratics():
    # Keys' a = -0.5 kernel (MATLAB imresize, the published bicubic figures) reproduces
    # quadratics; PyTorch's default a = -0.75 misses them by 0.025 here
    x = np.arange(16, dtype=np.float32)
    up = sr.bicubic_baseline(np.tile(x**2 / 50, (4, 1)), scale=2)[0]
    u = (np.arange(32) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[4:-4], (u**2 / 50)[4:-4], atol=1e-5)


def test_sr_downsample_of_a_size_not_divisible_by_the_scale_stays_on_the_grid():
    ramp = np.tile(np.arange(17, dtype=np.float32), (8, 1))
    low = sr.downsample(ramp, scale=2)
    assert low.shape == (4, 8)
    np.testing.assert_allclose(low[0, 2:6], [4.5, 6.5, 8.5, 10.5], atol=1e-3)  # centres of 2x2 cells


def test_noise_range_may_be_a_list():
    out = denoise.add_noise(np.zeros((8, 8), np.float32), np.random.default_rng(0), sigma=[10, 20])
    assert 5 / 255 < out.std() < 25 / 255


def test_numpy_and_torch_noise_draw_the_photon_peak_alike():
    """Both draw the Poisson peak log-uniformly: the median peak of 5-100 is about 22, not 52."""
    import torch

    ones = np.ones((64, 64), np.float32)
    rng = np.random.default_rng(0)
    peaks = [1 / denoise.add_noise(ones, rng, sigma=0.0, poisson_peak=(5, 100), poisson_prob=1).var()
             for _ in range(300)]
    gen = torch.Generator().manual_seed(0)
    noisy, _ = denoise.make_training_pair(torch.ones(300, 1, 64, 64), gen, sigma=(0, 0), poisson_prob=1)
    torch_peaks = 1 / noisy.var(dim=(1, 2, 3)).numpy()
    for p in (peaks, torch_peaks):
        assert 17 < np.median(p) < 28


def test_gat_bm3d_poisson_gaussian():
    pytest.importorskip("bm3d")
    clean = _smooth(96, 96)
    peak, sigma = 20.0, 5.0
    rng = np.random.default_rng(3)
    noisy = (rng.poisson(clean * peak) / peak + rng.standard_normal(clean.shape) * sigma / 255).astype(np.float32)
    out = denoise.gat_bm3d_baseline(noisy, peak, sigma)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert abs(float(out.mean() - clean.mean())) < 0.01  # the unbiased inverse keeps the mean
    assert psnr(clean, np.clip(out, 0, 1)) > psnr(clean, np.clip(noisy, 0, 1)) + 8


def test_dimmed_patches_are_dark_low_contrast_targets():
    """dim_prob: a share of the clean patches is dimmed (a background at a few percent of
    the range, which the photos rarely hold); the rest and the noise are as before."""
    clean = torch.full((400, 1, 8, 8), 0.8)
    noisy, target = denoise.make_training_pair(clean, torch.Generator().manual_seed(0), sigma=(0.0, 0.0),
                                               dim_prob=0.5, dim_range=(0.03, 0.5))
    means = target.mean(dim=(1, 2, 3))
    dimmed = means < 0.8
    assert 0.4 < dimmed.float().mean() < 0.6 and torch.equal(noisy, target)
    assert means[dimmed].min() >= 0.8 * 0.03 - 1e-6 and means[dimmed].max() <= 0.8 * 0.5 + 1e-6
    same, _ = denoise.make_training_pair(clean, torch.Generator().manual_seed(0), sigma=(0.0, 0.0))
    assert torch.equal(same, clean)
