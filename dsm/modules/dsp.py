"""Spectral features of waveforms, in torch only: STFT magnitudes and mel spectrograms.

Used by the codec losses, the STFT discriminator and the evaluation metrics. The mel
filterbank is built here (no torchaudio, no librosa): triangular filters whose corners sit
on equally spaced points of the mel scale, either the HTK scale
(`mel = 2595 log10(1 + f / 700)`) or the Slaney scale (linear below 1 kHz, logarithmic
above), optionally area-normalised ("slaney" norm) so every filter has the same energy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Slaney scale: linear below this frequency, logarithmic above it.
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_LINEAR_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Frequencies in Hz to mels on the `htk` or `slaney` scale."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    if scale == "slaney":
        linear = hz / _SLANEY_LINEAR_HZ_PER_MEL
        break_mel = _SLANEY_BREAK_HZ / _SLANEY_LINEAR_HZ_PER_MEL
        log_part = break_mel + torch.log(hz.clamp(min=1e-10) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
        return torch.where(hz >= _SLANEY_BREAK_HZ, log_part, linear)
    raise ValueError(f"unknown mel scale {scale!r}: expected 'htk' or 'slaney'")


def mel_to_hz(mel: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Mels on the `htk` or `slaney` scale back to Hz (inverse of `hz_to_mel`)."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    if scale == "slaney":
        break_mel = _SLANEY_BREAK_HZ / _SLANEY_LINEAR_HZ_PER_MEL
        linear = mel * _SLANEY_LINEAR_HZ_PER_MEL
        log_part = _SLANEY_BREAK_HZ * torch.exp(_SLANEY_LOG_STEP * (mel - break_mel))
        return torch.where(mel >= break_mel, log_part, linear)
    raise ValueError(f"unknown mel scale {scale!r}: expected 'htk' or 'slaney'")


def mel_filterbank(
    n_mels: int,
    n_fft: int,
    sample_rate: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    scale: str = "slaney",
    norm: str | None = "slaney",
) -> torch.Tensor:
    """Triangular mel filters `[n_mels, n_fft // 2 + 1]` (float32) over the rfft bins.

    Filter m rises linearly from corner m to corner m + 1 and falls to corner m + 2, the
    `n_mels + 2` corners being equally spaced in mels between `f_min` and `f_max`. Without
    normalisation each filter peaks at 1 at its centre; with `norm="slaney"` it is divided
    by its width in Hz / 2 so that all filters have the same area.
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if n_mels <= 0 or n_fft <= 0:
        raise ValueError(f"n_mels and n_fft must be positive, got {n_mels} and {n_fft}")
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, "
            f"sample_rate={sample_rate}"
        )
    if norm not in (None, "slaney"):
        raise ValueError(f"unknown mel norm {norm!r}: expected None or 'slaney'")
    bin_hz = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    mel_lo, mel_hi = hz_to_mel(torch.tensor(f_min), scale), hz_to_mel(torch.tensor(f_max), scale)
    corners_hz = mel_to_hz(torch.linspace(float(mel_lo), float(mel_hi), n_mels + 2), scale)
    left, centre, right = corners_hz[:-2, None], corners_hz[1:-1, None], corners_hz[2:, None]
    rising = (bin_hz[None, :] - left) / (centre - left)  # [n_mels, F]
    falling = (right - bin_hz[None, :]) / (right - centre)
    filters = torch.minimum(rising, falling).clamp(min=0.0)
    if norm == "slaney":
        filters = filters * (2.0 / (right - left))
    return filters.to(torch.float32)


def _as_batch(wav: torch.Tensor) -> torch.Tensor:
    """`[N]`, `[B, N]` or `[B, 1, N]` waveforms to `[B, N]`."""
    if wav.dim() == 3:
        if wav.shape[1] != 1:
            raise ValueError(f"expected mono audio [B, 1, N], got shape {tuple(wav.shape)}")
        return wav[:, 0]
    if wav.dim() == 2:
        return wav
    if wav.dim() == 1:
        return wav[None]
    raise ValueError(f"expected audio [N], [B, N] or [B, 1, N], got shape {tuple(wav.shape)}")


def stft(
    wav: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: torch.Tensor | None = None,
    center: bool = True,
    normalized: bool = False,
) -> torch.Tensor:
    """Complex STFT `[B, n_fft // 2 + 1, frames]` of `[B, 1, N]` (or `[B, N]`) audio.

    Hann window of `win_length` (default `n_fft`), reflect padding when `center`. Half and
    bfloat16 audio is transformed in float32.
    `normalized` divides by sqrt(sum(window^2)) so magnitudes do not grow with the window.
    """
    samples = _as_batch(wav)
    if samples.dtype in (torch.float16, torch.bfloat16):
        samples = samples.float()  # FFTs of low-precision audio are unsupported or inexact
    win_length = n_fft if win_length is None else win_length
    if window is None:
        window = torch.hann_window(win_length, device=samples.device, dtype=samples.dtype)
    window = window.to(samples.dtype)
    if center and samples.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"audio of {samples.shape[-1]} samples is too short for an STFT with n_fft={n_fft}"
        )
    spec = torch.stft(
        samples, n_fft=n_fft, hop_length=hop_length, win_length=win_length, window=window,
        center=center, pad_mode="reflect", normalized=False, return_complex=True,
    )
    if normalized:
        spec = spec / window.pow(2).sum().sqrt()
    return spec


class MelSpectrogram(nn.Module):
    """Mel spectrogram `[B, n_mels, frames]` of `[B, 1, N]` audio, optionally log-compressed.

    `power` 1 gives magnitudes, 2 power. With `log=True` the output is
    `log10(max(mel, floor))`.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int | None = None,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 1.0,
        normalized: bool = False,
        log: bool = False,
        floor: float = 1e-5,
        scale: str = "slaney",
        norm: str | None = "slaney",
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.win_length = n_fft if win_length is None else win_length
        self.power, self.normalized, self.log, self.floor = power, normalized, log, floor
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        fbank = mel_filterbank(n_mels, n_fft, sample_rate, f_min, f_max, scale=scale, norm=norm)
        self.register_buffer("filters", fbank, persistent=False)  # [n_mels, F]

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        # float32 throughout, even under autocast: log-mel losses need the precision
        with torch.autocast(wav.device.type, enabled=False):
            spec = stft(
                wav, self.n_fft, self.hop_length, self.win_length,
                window=self.window, normalized=self.normalized,
            )
            magnitude = spec.abs()
            if self.power != 1.0:
                magnitude = magnitude.pow(self.power)
            mel = torch.einsum("mf,bft->bmt", self.filters.to(magnitude.dtype), magnitude)
            if self.log:
                mel = torch.log10(mel.clamp(min=self.floor))
        return mel
