"""Random equalisation: a smooth gain curve over frequency, drawn per utterance.

A recognizer trained on a few synthetic voices learns their spectral balance along with
their speech (the held-out flite voice rms is much stronger above 4 kHz, and weaker from
0.6 to 2.4 kHz, than the training flite voices, and was heard worse for it until its
balance was moved towards theirs). Training copies under random curves teach it that the
balance carries no words.

The curve has one gain per octave point (`OCTAVE_POINTS_HZ`), drawn uniformly within
+-`range_db`, linear in log frequency between them and flat beyond the ends; it is applied
as a zero-phase filter (FFT of the whole utterance), so timing is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OCTAVE_POINTS_HZ = (125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def draw_gains(rng: np.random.Generator, range_db: float) -> list[float]:
    """One gain in dB per octave point, uniform within +-range_db (rounded to 0.1 dB)."""
    return [round(float(g), 1) for g in rng.uniform(-range_db, range_db, len(OCTAVE_POINTS_HZ))]


def gain_curve_db(freqs: np.ndarray, gains_db: Sequence[float],
                  points_hz: Sequence[float] = OCTAVE_POINTS_HZ) -> np.ndarray:
    """The gain in dB at each frequency: `gains_db` at `points_hz`, linear in log
    frequency between them, flat beyond the first and last point."""
    if len(gains_db) != len(points_hz):
        raise ValueError(f"{len(gains_db)} gains for {len(points_hz)} points")
    log_freqs = np.log(np.maximum(freqs, points_hz[0]))
    return np.interp(log_freqs, np.log(points_hz), gains_db)


def equalize(samples: np.ndarray, sample_rate: int, gains_db: Sequence[float]) -> np.ndarray:
    """`samples` [N] through the gain curve of `gains_db` (zero phase, same length);
    float32, level not restored (the caller decides the loudness)."""
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(samples.size, 1.0 / sample_rate)
    gains = 10.0 ** (gain_curve_db(freqs, gains_db) / 20.0)
    return np.fft.irfft(spectrum * gains, samples.size).astype(np.float32)
