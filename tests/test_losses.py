"""Codec reconstruction losses: zero on equal audio, larger for worse estimates, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dsm.recipes.losses import MultiScaleMelLoss, MultiScaleSTFTLoss, waveform_l1_loss

SR = 16000


def _speechlike(batch: int = 2, n: int = 8000) -> torch.Tensor:
    t = torch.arange(n) / SR
    tones = sum(torch.sin(2 * math.pi * f * t + p) / (i + 1)
                for i, (f, p) in enumerate([(220, 0.0), (440, 1.0), (1330, 2.0), (3100, 0.5)]))
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t)
    return (0.3 * tones * envelope).expand(batch, 1, n).clone()


def test_waveform_l1() -> None:
    target = torch.zeros(2, 1, 100)
    estimate = torch.full((2, 1, 100), 0.25)
    assert float(waveform_l1_loss(estimate, target)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same shape"):
        waveform_l1_loss(estimate, torch.zeros(2, 1, 99))


@pytest.mark.parametrize("loss_cls", [
    lambda: MultiScaleMelLoss(SR, log2_windows=(6, 8, 10)),
    lambda: MultiScaleSTFTLoss(resolutions=((256, 64, 256), (1024, 256, 1024))),
])
def test_spectral_losses_order_estimates(loss_cls) -> None:
    loss = loss_cls()
    target = _speechlike()
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-6)
    slightly = target + 0.003 * torch.randn_like(target)
    badly = target + 0.1 * torch.randn_like(target)
    lowpassed = torch.nn.functional.avg_pool1d(target, 9, stride=1, padding=4)
    small, large = float(loss(slightly, target)), float(loss(badly, target))
    assert 0 < small < large
    assert float(loss(lowpassed, target)) > 0.02  # losing the highs costs
    assert float(loss(0.9 * target, target)) < float(loss(0.5 * target, target))
    estimate = slightly.clone().requires_grad_(True)
    value = loss(estimate, target)
    value.backward()
    assert estimate.grad is not None and torch.isfinite(estimate.grad).all()
    assert estimate.grad.abs().sum() > 0


def test_mel_loss_gradient_descent_reduces_it() -> None:
    loss = MultiScaleMelLoss(SR, log2_windows=(6, 8))
    target = _speechlike(batch=1, n=4000)
    estimate = (0.5 * target + 0.05 * torch.randn_like(target)).requires_grad_(True)
    optimizer = torch.optim.Adam([estimate], lr=3e-3)
    first = float(loss(estimate, target).detach())
    for _ in range(30):
        optimizer.zero_grad()
        loss(estimate, target).backward()
        optimizer.step()
    assert float(loss(estimate, target).detach()) < 0.7 * first
