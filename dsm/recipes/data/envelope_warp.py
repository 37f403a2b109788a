"""Spectral-envelope frequency warping: the same voice with a longer or shorter vocal tract.

Each STFT frame's log-magnitude spectrum is split into a smooth envelope and the fine
harmonic structure. The envelope is the "true envelope": cepstral smoothing (quefrencies
under 2.5 ms, below the pitch period of any voice up to 400 Hz) repeated on the running
maximum of spectrum and envelope, so it rides on the harmonic peaks instead of averaging
them with the valleys between. The envelope is stretched along frequency by
`factor` (a formant at f moves to factor * f) and the frame is rescaled by the ratio of the
new envelope to the old. Harmonics stay where they are, so pitch and timing are kept: the
change is timbre only, unlike resampling (pitch and rate move too) or sox's `pitch` effect
(pitch and formants move together). The phase is the input's, so the result has no phase
vocoder smearing. Loudness is left to the caller (`dsm data perturb` keeps the input's).
"""

from __future__ import annotations

import numpy as np
import torch

N_FFT = 1024
LIFTER_S = 0.0025          # envelope = quefrencies below this
TRUE_ENVELOPE_ROUNDS = 6
MAX_GAIN_DB = 35.0         # per-bin gain limit: no blow-up of near-empty bands


def warp_envelope(audio: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """`audio` ([N] float) with its spectral envelope stretched by `factor` along frequency;
    [N] float32, same length."""
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"warp factor must be in [0.5, 2], got {factor}")
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if signal.numel() < N_FFT:
        return signal.numpy().copy()
    hop = N_FFT // 4
    window = torch.hann_window(N_FFT)
    spec = torch.stft(signal, N_FFT, hop, window=window, return_complex=True)  # [F, T]
    log_mag = spec.abs().clamp_min(1e-7).log()
    keep = max(2, round(sample_rate * LIFTER_S))
    lifter = torch.zeros(N_FFT, 1)
    lifter[:keep] = 1.0
    lifter[N_FFT - keep + 1:] = 1.0

    def smooth(log_spectrum: torch.Tensor) -> torch.Tensor:  # [F, T] -> [F, T]
        cepstrum = torch.fft.irfft(log_spectrum, n=N_FFT, dim=0)  # [N_FFT, T]
        return torch.fft.rfft(cepstrum * lifter, dim=0).real

    envelope = smooth(log_mag)  # [F, T] log magnitude
    for _ in range(TRUE_ENVELOPE_ROUNDS):
        envelope = smooth(torch.maximum(log_mag, envelope))
    bins = envelope.shape[0]
    source = torch.arange(bins, dtype=torch.float32) / factor  # new bin k reads old k/factor
    low = source.floor().long().clamp(max=bins - 1)
    high = (low + 1).clamp(max=bins - 1)
    frac = (source - source.floor()).unsqueeze(1)
    warped = envelope[low] * (1 - frac) + envelope[high] * frac
    warped[source > bins - 1] = envelope[-1]  # beyond the top: the top bin's level
    limit = MAX_GAIN_DB / 20 * np.log(10)
    gain = (warped - envelope).clamp(-limit, limit).exp()
    out = torch.istft(spec * gain, N_FFT, hop, window=window, length=signal.numel())
    return out.numpy().astype(np.float32)
