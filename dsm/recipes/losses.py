"""Reconstruction losses of the codec recipe: waveform L1, multi-scale mel, multi-scale STFT.

All take `estimate` and `target` audio `[B, 1, N]` of the same shape and return a scalar.
They are zero when the two are equal and grow with the difference, at several time-
frequency resolutions so that neither transients nor tones are favoured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsm.recipes.audio_features import MelSpectrogram, stft


def _check_pair(estimate: torch.Tensor, target: torch.Tensor) -> None:
    if estimate.shape != target.shape:
        raise ValueError(
            f"estimate and target must have the same shape, got {tuple(estimate.shape)} "
            f"and {tuple(target.shape)}"
        )


def waveform_l1_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute sample difference."""
    _check_pair(estimate, target)
    return F.l1_loss(estimate, target)


class MultiScaleMelLoss(nn.Module):
    """Mel reconstruction loss averaged over window sizes `2**i` for i in `log2_windows`.

    At each scale: L1 between mel magnitudes plus L1 between their log10 (floored at
    `floor`), the first weighting loud parts, the second quiet ones. The number of mel
    bands is capped at a quarter of the window's bins so small windows keep non-empty
    filters.
    """

    def __init__(
        self,
        sample_rate: int,
        log2_windows: tuple[int, ...] = (5, 6, 7, 8, 9, 10, 11),
        n_mels: int = 64,
        floor: float = 1e-5,
        log_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.floor, self.log_weight = floor, log_weight
        self.mels = nn.ModuleList()
        for exponent in log2_windows:
            n_fft = 2**exponent
            self.mels.append(MelSpectrogram(
                sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                n_mels=min(n_mels, n_fft // 4), power=1.0,
            ))

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(estimate, target)
        total = estimate.new_zeros(())
        both = torch.cat([estimate, target.to(estimate.dtype)])  # one STFT call per scale
        for mel in self.mels:
            mel_est, mel_ref = mel(both).chunk(2)  # [B, n_mels, frames] each
            total = total + F.l1_loss(mel_est, mel_ref)
            log_est = torch.log10(mel_est.clamp(min=self.floor))
            log_ref = torch.log10(mel_ref.clamp(min=self.floor))
            total = total + self.log_weight * F.l1_loss(log_est, log_ref)
        return total / len(self.mels)


class MultiScaleSTFTLoss(nn.Module):
    """Spectral convergence plus log-magnitude L1, averaged over (n_fft, hop, win) scales.

    Spectral convergence is `||S_ref - S_est||_F / ||S_ref||_F` per utterance, relative to
    the target's energy; the log term compares magnitudes floored at `floor`.
    """

    def __init__(
        self,
        resolutions: tuple[tuple[int, int, int], ...] = (
            (512, 128, 512), (1024, 256, 1024), (2048, 512, 2048),
        ),
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.resolutions, self.floor = resolutions, floor

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_pair(estimate, target)
        total = estimate.new_zeros(())
        both = torch.cat([estimate, target.to(estimate.dtype)])
        for n_fft, hop, win in self.resolutions:
            mag_est, mag_ref = stft(both, n_fft, hop, win).abs().chunk(2)  # [B, F, frames]
            diff = (mag_ref - mag_est).flatten(1).norm(dim=1)
            ref_norm = mag_ref.flatten(1).norm(dim=1).clamp(min=self.floor)
            convergence = (diff / ref_norm).mean()
            log_l1 = F.l1_loss(
                torch.log(mag_est.clamp(min=self.floor)), torch.log(mag_ref.clamp(min=self.floor))
            )
            total = total + convergence + log_l1
        return total / len(self.resolutions)
