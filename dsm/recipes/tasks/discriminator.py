"""Multi-scale STFT discriminator and the GAN losses of the codec recipe.

Each sub-discriminator looks at the complex STFT of the audio at one resolution (real and
imaginary parts as two input channels, laid out `[B, 2, frames, freqs]`) through a stack of
2-D convolutions that dilate along time and stride along frequency. It returns its logits
and every intermediate feature map; the generator is trained with the hinge adversarial
loss on the logits and an L1 feature-matching loss on the feature maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from dsm.modules.dsp import stft

Logits = list[torch.Tensor]  # one [B, 1, frames', freqs'] per sub-discriminator
Features = list[list[torch.Tensor]]  # per sub-discriminator, its feature maps


class STFTDiscriminator(nn.Module):
    """One discriminator on the STFT at a single (n_fft, hop, win) resolution."""

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        win_length: int,
        filters: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4),
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.negative_slope = negative_slope
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        kernel, padding = (3, 9), (1, 4)
        layers = [weight_norm(nn.Conv2d(2, filters, kernel, padding=padding))]
        for dilation in dilations:
            layers.append(weight_norm(nn.Conv2d(
                filters, filters, kernel, stride=(1, 2), dilation=(dilation, 1),
                padding=(dilation, 4),
            )))
        layers.append(weight_norm(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(layers)
        self.conv_out = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`[B, 1, N]` audio -> (logits `[B, 1, frames, freqs']`, feature maps)."""
        spec = stft(
            wav, self.n_fft, self.hop_length, self.win_length,
            window=self.window, normalized=True,
        )  # [B, F, frames] complex
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, F]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            features.append(x)
        logits = self.conv_out(x)
        return logits, features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Several `STFTDiscriminator`s at different resolutions, run on the same audio."""

    def __init__(
        self,
        resolutions: tuple[tuple[int, int, int], ...] = (
            (2048, 512, 2048), (1024, 256, 1024), (512, 128, 512),
            (256, 64, 256), (128, 32, 128),
        ),
        filters: int = 32,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n_fft, hop, win, filters=filters)
            for n_fft, hop, win in resolutions
        )

    def forward(self, wav: torch.Tensor) -> tuple[Logits, Features]:
        logits, features = [], []
        for discriminator in self.discriminators:
            one_logits, one_features = discriminator(wav)
            logits.append(one_logits)
            features.append(one_features)
        return logits, features


def discriminator_hinge_loss(real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
    """Hinge loss of the discriminator: push real logits above 1 and fake ones below -1."""
    total = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits, strict=True):
        total = total + F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return total / len(real_logits)


def generator_hinge_loss(fake_logits: Logits) -> torch.Tensor:
    """Adversarial loss of the generator: push the discriminator's logits on fakes above 1."""
    total = fake_logits[0].new_zeros(())
    for fake in fake_logits:
        total = total + F.relu(1.0 - fake).mean()
    return total / len(fake_logits)


def feature_matching_loss(real_features: Features, fake_features: Features) -> torch.Tensor:
    """L1 between the discriminator's feature maps on real and generated audio.

    Each layer's L1 is divided by the mean magnitude of its real features so that every
    layer counts alike; the real features are treated as constants. Zero when equal.
    """
    total, count = None, 0
    for real_maps, fake_maps in zip(real_features, fake_features, strict=True):
        for real, fake in zip(real_maps, fake_maps, strict=True):
            real = real.detach()
            term = F.l1_loss(fake, real) / real.abs().mean().clamp(min=1e-8)
            total = term if total is None else total + term
            count += 1
    if total is None:
        raise ValueError("feature_matching_loss needs at least one feature map")
    return total / count
