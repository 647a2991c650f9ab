"""Fixtures for the napari front door: tiny torch networks and a notification recorder."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn


class TinyDenoiser(nn.Module):
    """A 3x3 convolution initialised close to identity (scale 1, one channel)."""

    in_channels, out_channels, scale = 1, 1, 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9.0)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class TinyUpsampler(nn.Module):
    """Smoothing convolution then nearest-neighbour x2 upsampling."""

    in_channels, out_channels = 1, 1

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.body = TinyDenoiser()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.body(x), scale_factor=self.scale, mode="nearest")


class SlowDenoiser(TinyDenoiser):
    """Sleeps ``delay`` seconds per forward pass, to have time to cancel."""

    def __init__(self, delay: float = 0.2) -> None:
        super().__init__()
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return super().forward(x)


@pytest.fixture
def denoiser() -> nn.Module:
    return TinyDenoiser()


@pytest.fixture
def upsampler() -> nn.Module:
    return TinyUpsampler(2)


@pytest.fixture
def slow_denoiser() -> nn.Module:
    return SlowDenoiser(0.2)


@pytest.fixture
def notifications():
    """Notifications shown while the test runs (napari's notification manager)."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)
