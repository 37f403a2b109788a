"""Codec reconstruction losses: zero on equal audio, larger for worse estimates, gradients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from dsm.recipes.eval.metrics import stoi
from dsm.recipes.tasks.codec_losses import (
    MultiScaleMelLoss,
    MultiScaleSTFTLoss,
    STOILoss,
    waveform_l1_loss,
)

SAMPLE_WAV = Path(__file__).resolve().parents[2] / "dsm" / "assets" / "sample.wav"

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


def _sample_speech(seconds: float = 2.5) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(SAMPLE_WAV, dtype="float32", always_2d=True)
    return np.ascontiguousarray(audio[: int(seconds * rate), 0]), rate


def test_stoi_loss_matches_pystoi_on_speech() -> None:
    clean, rate = _sample_speech()
    loss = STOILoss(rate)
    rng = np.random.default_rng(0)
    length = int(0.6 * rate)  # a reverberant room: noise decaying by 60 dB in 0.6 s
    room = rng.normal(0, 1, length) * np.exp(-6.9 * np.arange(length) / length)
    room[0] = 5.0
    reverberant = np.convolve(clean, room / np.abs(room).sum())[: clean.size]
    estimates = [clean + rng.normal(0, level, clean.size).astype(np.float32)
                 for level in (0.01, 0.05, 0.2)] + [reverberant.astype(np.float32)]
    ours = loss.intelligibility(torch.from_numpy(np.stack(estimates))[:, None],
                                torch.from_numpy(np.stack([clean] * 4))[:, None])
    reference = [stoi(estimate, clean, rate) for estimate in estimates]
    assert ours.numpy() == pytest.approx(reference, abs=0.02)
    assert reference[0] > reference[1] > reference[2]  # the cases span the scale
    assert reference[2] < 0.75 and reference[3] < 0.75
    same = torch.from_numpy(clean)[None, None]
    assert float(loss(same, same)) == pytest.approx(0.0, abs=1e-4)


def test_stoi_loss_gradient_descent_raises_intelligibility() -> None:
    clean, rate = _sample_speech(1.5)
    loss = STOILoss(rate)
    target = torch.from_numpy(clean)[None, None]
    noise = torch.from_numpy(np.random.default_rng(1).normal(0, 0.1, clean.size).astype(np.float32))
    estimate = (target + noise).requires_grad_(True)
    optimizer = torch.optim.Adam([estimate], lr=2e-3)
    first = float(loss(estimate, target).detach())
    for _ in range(25):
        optimizer.zero_grad()
        value = loss(estimate, target)
        value.backward()
        optimizer.step()
    assert float(loss(estimate, target).detach()) < first - 0.05


def test_stoi_loss_without_enough_speech_adds_nothing() -> None:
    loss = STOILoss(16000)
    short = torch.randn(2, 1, 3000, requires_grad=True)   # under 30 frames of 12.8 ms
    value = loss(short, torch.randn(2, 1, 3000))
    assert float(value.detach()) == 0.0
    value.backward()
    assert short.grad is not None and float(short.grad.abs().sum()) == 0.0
    assert loss.intelligibility(short, short).isnan().all()
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(1, 1, 9000), torch.zeros(1, 1, 8000))
