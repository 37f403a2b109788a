"""Reconstruction losses of the codec recipe: waveform L1, multi-scale mel, multi-scale STFT.

All take `estimate` and `target` audio `[B, 1, N]` of the same shape and return a scalar.
They are zero when the two are equal and grow with the difference, at several time-
frequency resolutions so that neither transients nor tones are favoured.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsm.modules.dsp import MelSpectrogram, stft


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


class STOILoss(nn.Module):
    """One minus a differentiable short-time objective intelligibility (STOI).

    STOI (Taal et al., 2011) correlates the envelopes of clean and processed speech in
    15 third-octave bands (150 Hz to 4.3 kHz) over 384 ms segments, after scaling each
    processed segment to the clean one's energy and clipping it at -15 dB signal-to-
    distortion; frames more than 40 dB below the clean signal's loudest are left out.
    The evaluation measures this (pystoi); a codec trained on mel distances alone leaves
    intelligibility on the table, since mel losses weigh every band and every level, where
    STOI weighs the speech bands' envelopes. Here the same steps run in torch at the audio's
    own rate (windows of 25.6 ms, hop 12.8 ms, as STOI's 256 samples at 10 kHz), with the
    silent frames dropped from the spectrogram rather than from the waveform; the result
    stays within a few hundredths of pystoi (tests/recipes/test_losses.py). An item with fewer
    than one segment of non-silent frames adds nothing.
    """

    def __init__(self, sample_rate: int, bands: int = 15, min_frequency: float = 150.0,
                 segment_frames: int = 30, clip_db: float = -15.0,
                 dynamic_range_db: float = 40.0) -> None:
        super().__init__()
        self.window_length = round(0.0256 * sample_rate)
        self.hop_length = self.window_length // 2
        self.n_fft = 2 * (1 << (self.window_length - 1).bit_length())
        self.segment_frames, self.dynamic_range_db = segment_frames, dynamic_range_db
        self.clip = 1.0 + 10.0 ** (-clip_db / 20.0)
        # a Hann window without its zero end points
        window = torch.hann_window(self.window_length + 2, periodic=False)[1:-1]
        self.register_buffer("window", window, persistent=False)
        frequencies = torch.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        index = torch.arange(bands, dtype=torch.float64)
        low = min_frequency * 2.0 ** ((2 * index - 1) / 6)
        high = min_frequency * 2.0 ** ((2 * index + 1) / 6)
        # each band edge snaps to its nearest FFT bin; a band takes [low bin, high bin)
        low_bins = (frequencies[None] - low[:, None]).abs().argmin(dim=1)
        high_bins = (frequencies[None] - high[:, None]).abs().argmin(dim=1)
        bins = torch.arange(frequencies.numel())
        matrix = (bins[None] >= low_bins[:, None]) & (bins[None] < high_bins[:, None])
        self.register_buffer("band_matrix", matrix.float(), persistent=False)  # [bands, F]

    def _frames(self, audio: torch.Tensor) -> torch.Tensor:
        """`[B, N]` -> windowed frames `[B, frames, window_length]`."""
        return audio.unfold(-1, self.window_length, self.hop_length) * self.window

    def _bands(self, frames: torch.Tensor) -> torch.Tensor:
        """Windowed frames -> third-octave band amplitudes `[B, frames, bands]`."""
        power = torch.fft.rfft(frames, n=self.n_fft).abs().square()
        return (power @ self.band_matrix.T).clamp(min=1e-12).sqrt()

    def intelligibility(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """STOI of each item, `[B]` (NaN for an item with too few non-silent frames)."""
        _check_pair(estimate, target)
        estimate, target = estimate.flatten(1).float(), target.flatten(1).float()
        if estimate.shape[-1] < self.window_length:
            return estimate.new_full((estimate.shape[0],), float("nan"))
        target_frames, estimate_frames = self._frames(target), self._frames(estimate)
        with torch.no_grad():
            level = 20 * torch.log10(target_frames.norm(dim=-1) + 1e-12)   # [B, frames]
            audible = level > level.amax(dim=-1, keepdim=True) - self.dynamic_range_db
        clean_bands, test_bands = self._bands(target_frames), self._bands(estimate_frames)
        scores = []
        for clean, test, keep in zip(clean_bands, test_bands, audible):
            clean, test = clean[keep], test[keep]                            # [frames, bands]
            if clean.shape[0] < self.segment_frames:
                scores.append(estimate.new_tensor(float("nan")))
                continue
            clean = clean.unfold(0, self.segment_frames, 1)                  # [S, bands, N]
            test = test.unfold(0, self.segment_frames, 1)
            scale = clean.norm(dim=-1, keepdim=True) / (test.norm(dim=-1, keepdim=True) + 1e-12)
            test = torch.minimum(test * scale, clean * self.clip)
            clean = clean - clean.mean(dim=-1, keepdim=True)
            test = test - test.mean(dim=-1, keepdim=True)
            correlation = (clean * test).sum(-1) / (
                clean.norm(dim=-1) * test.norm(dim=-1) + 1e-12)
            scores.append(correlation.mean())
        return torch.stack(scores)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        scores = self.intelligibility(estimate, target)
        valid = ~scores.isnan()
        if not valid.any():
            return estimate.sum() * 0.0   # nothing to measure: no gradient, still a graph
        return 1.0 - scores[valid].mean()
