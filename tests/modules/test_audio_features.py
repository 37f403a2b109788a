"""Mel filterbank and STFT against independent numpy computations and known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsm.modules.dsp import (
    MelSpectrogram,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    stft,
)


def _reference_htk_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """Plain-loop HTK filterbank, unnormalised, written from the textbook definition."""
    def to_mel(f: float) -> float:
        return 2595.0 * math.log10(1.0 + f / 700.0)

    def to_hz(m: float) -> float:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    top = to_mel(sample_rate / 2)
    corners = [to_hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    bins = [k * sample_rate / n_fft for k in range(n_fft // 2 + 1)]
    out = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, mid, hi = corners[m], corners[m + 1], corners[m + 2]
        for k, f in enumerate(bins):
            if lo < f <= mid:
                out[m, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[m, k] = (hi - f) / (hi - mid)
    return out


def test_mel_scales_known_values() -> None:
    assert float(hz_to_mel(torch.tensor(700.0), "htk")) == pytest.approx(2595 * math.log10(2))
    assert float(hz_to_mel(torch.tensor(1000.0), "htk")) == pytest.approx(1000.0, abs=0.05)
    # Slaney: 3 mels per 200 Hz below 1 kHz, 27 mels per factor 6.4 above.
    assert float(hz_to_mel(torch.tensor(1000.0), "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(torch.tensor(400.0), "slaney")) == pytest.approx(6.0)
    assert float(hz_to_mel(torch.tensor(6400.0), "slaney")) == pytest.approx(42.0)
    freqs = torch.tensor([0.0, 123.0, 999.0, 1000.0, 4321.0, 12000.0])
    for scale in ("htk", "slaney"):
        back = mel_to_hz(hz_to_mel(freqs, scale), scale)
        assert torch.allclose(back, freqs.double(), atol=1e-6)
    with pytest.raises(ValueError, match="mel scale"):
        hz_to_mel(torch.tensor(1.0), "bark")


def test_filterbank_matches_loop_reference() -> None:
    ours = mel_filterbank(40, 512, 16000, scale="htk", norm=None).numpy()
    reference = _reference_htk_filterbank(40, 512, 16000)
    assert ours.shape == (40, 257)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_filterbank_rows_peak_and_sum() -> None:
    n_mels, n_fft, sr = 64, 2048, 24000
    fbank = mel_filterbank(n_mels, n_fft, sr, norm=None)
    assert (fbank >= 0).all() and (fbank <= 1 + 1e-6).all()
    assert (fbank.sum(dim=1) > 0).all(), "every filter covers at least one bin"
    # Peaks move up in frequency with the filter index.
    peaks = fbank.argmax(dim=1)
    assert (peaks[1:] >= peaks[:-1]).all()
    # Between the first and last centres the triangles tile: they sum to one.
    corners = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(sr / 2.0), "slaney")),
                                       n_mels + 2), "slaney")
    bin_hz = torch.arange(n_fft // 2 + 1) * sr / n_fft
    inside = (bin_hz >= corners[1]) & (bin_hz <= corners[-2])
    torch.testing.assert_close(fbank.sum(dim=0)[inside], torch.ones(int(inside.sum())),
                               atol=1e-5, rtol=0)
    # Slaney normalisation: every (wide enough) filter has unit area in Hz.
    normed = mel_filterbank(n_mels, n_fft, sr, norm="slaney")
    area = normed.sum(dim=1) * sr / n_fft
    torch.testing.assert_close(area[10:], torch.ones(n_mels - 10), atol=0.02, rtol=0)


def test_filterbank_bad_arguments() -> None:
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(10, 256, 16000, f_max=9000)
    with pytest.raises(ValueError, match="norm"):
        mel_filterbank(10, 256, 16000, norm="area")


def test_stft_frame_matches_numpy_rfft() -> None:
    rng = np.random.default_rng(0)
    wav = rng.standard_normal(4000).astype(np.float32)
    n_fft, hop = 512, 128
    spec = stft(torch.from_numpy(wav)[None, None], n_fft, hop, center=False)
    assert spec.shape == (1, n_fft // 2 + 1, 1 + (4000 - n_fft) // hop)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    for frame in (0, 7, spec.shape[-1] - 1):
        expected = np.fft.rfft(wav[frame * hop:frame * hop + n_fft] * window)
        np.testing.assert_allclose(spec[0, :, frame].numpy(), expected, rtol=1e-4, atol=1e-3)


def test_pure_tone_peaks_in_its_mel_band() -> None:
    sr, n_mels = 24000, 80
    mel = MelSpectrogram(sr, n_fft=1024, hop_length=256, n_mels=n_mels)
    corners = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(sr / 2.0), "slaney")),
                                       n_mels + 2), "slaney")
    centres = corners[1:-1]
    t = torch.arange(sr) / sr
    for freq in (300.0, 1000.0, 3500.0, 8000.0):
        tone = torch.sin(2 * math.pi * freq * t)[None, None]
        spectrum = mel(tone)  # [1, n_mels, frames]
        assert spectrum.shape[:2] == (1, n_mels)
        band = int(spectrum[0, :, 10:-10].mean(dim=1).argmax())
        nearest = int((centres - freq).abs().argmin())
        assert abs(band - nearest) <= 1, (freq, band, nearest)


def test_mel_log_and_shapes() -> None:
    mel = MelSpectrogram(16000, n_fft=256, hop_length=64, n_mels=32, log=True, floor=1e-5)
    out = mel(torch.zeros(2, 1, 1600))
    assert out.shape == (2, 32, 1600 // 64 + 1)
    assert torch.allclose(out, torch.full_like(out, -5.0))
    with pytest.raises(ValueError, match="mono"):
        mel(torch.zeros(2, 2, 1600))
    with pytest.raises(ValueError, match="too short"):
        mel(torch.zeros(1, 1, 100))
