"""Multi-scale STFT discriminator: shapes, GAN losses, feature matching, a training step."""

from __future__ import annotations

import pytest
import torch

from dsm.recipes.tasks.discriminator import (
    MultiScaleSTFTDiscriminator,
    STFTDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
)

RESOLUTIONS = ((256, 64, 256), (128, 32, 128))


def test_outputs_shapes_and_features() -> None:
    disc = MultiScaleSTFTDiscriminator(RESOLUTIONS, filters=8)
    logits, features = disc(torch.randn(3, 1, 2000))
    assert len(logits) == len(features) == 2
    for (_n_fft, hop, _), one_logits, maps in zip(RESOLUTIONS, logits, features):
        frames = 2000 // hop + 1
        assert one_logits.shape[:3] == (3, 1, frames)
        assert len(maps) == 5
        assert all(m.shape[0] == 3 and m.shape[1] == 8 for m in maps)
    # Frequency axis halves at each strided layer.
    one = STFTDiscriminator(256, 64, 256, filters=4)
    _, maps = one(torch.randn(1, 1, 1000))
    assert [m.shape[-1] for m in maps] == [129, 65, 33, 17, 17]


def test_hinge_losses_known_values() -> None:
    real = [torch.full((1, 1, 2, 2), 2.0)]
    fake = [torch.full((1, 1, 2, 2), -2.0)]
    # A perfect discriminator pays nothing; the generator pays 1 - (-2) = 3.
    assert float(discriminator_hinge_loss(real, fake)) == 0.0
    assert float(generator_hinge_loss(fake)) == pytest.approx(3.0)
    confused = [torch.zeros(1, 1, 2, 2)]
    assert float(discriminator_hinge_loss(confused, confused)) == pytest.approx(2.0)
    assert float(generator_hinge_loss([torch.full((1, 1, 3, 3), 5.0)])) == 0.0


def test_feature_matching_zero_for_identical_and_positive_otherwise() -> None:
    disc = MultiScaleSTFTDiscriminator(RESOLUTIONS, filters=8)
    wav = torch.randn(2, 1, 1500)
    _, real = disc(wav)
    _, same = disc(wav.clone())
    assert float(feature_matching_loss(real, same).detach()) == pytest.approx(0.0, abs=1e-7)
    _, other = disc(wav + 0.3 * torch.randn_like(wav))
    assert float(feature_matching_loss(real, other).detach()) > 0.01
    # Gradient flows to the fake side only.
    fake_wav = (wav + 0.3 * torch.randn_like(wav)).requires_grad_(True)
    real_wav = wav.clone().requires_grad_(True)
    _, fake_maps = disc(fake_wav)
    _, real_maps = disc(real_wav)
    feature_matching_loss(real_maps, fake_maps).backward()
    assert fake_wav.grad is not None and fake_wav.grad.abs().sum() > 0
    assert real_wav.grad is None


def test_discriminator_learns_to_separate() -> None:
    disc = MultiScaleSTFTDiscriminator(((128, 32, 128),), filters=8)
    optimizer = torch.optim.Adam(disc.parameters(), lr=3e-3)
    t = torch.arange(1600) / 16000
    real = torch.sin(2 * torch.pi * 440 * t).expand(4, 1, -1).clone()
    fake = 0.3 * torch.randn(4, 1, 1600)
    first = None
    for _ in range(25):
        real_logits, _ = disc(real)
        fake_logits, _ = disc(fake)
        loss = discriminator_hinge_loss(real_logits, fake_logits)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first
