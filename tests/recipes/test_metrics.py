"""Evaluation metrics against hand-counted values and known properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsm.recipes.eval.metrics import (
    TimedWord,
    char_errors,
    corpus_bleu,
    corpus_cer,
    corpus_wer,
    mel_distance,
    normalize_text,
    sentence_bleu,
    si_snr,
    stoi,
    summarize,
    time_to_first_audio,
    word_emission_latencies,
    word_errors,
)

SR = 16000


def _speechlike(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Harmonic 'voice' with a wandering pitch and 4 Hz syllable-rate envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    formant_gain = 1 + 0.8 * np.sin(2 * np.pi * 2.3 * t + rng.uniform(0, 6))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    envelope *= (np.sin(2 * np.pi * 0.5 * t) > -0.6)  # pauses
    return (0.2 * voice * formant_gain * envelope).astype(np.float64)


def test_normalize_text() -> None:
    assert normalize_text("  Hello, World!  It's  'fine'.") == "hello world it's fine"
    assert normalize_text("L\u2019été, déjà?") == "l'été déjà"


def test_wer_hand_counted() -> None:
    refs = ["The cat sat on the mat.", "Hello world"]
    hyps = ["the cat SIT on mat", "hello, there world"]
    first = word_errors(refs[0], hyps[0])  # sat->sit (S), "the" deleted (D)
    assert (first.substitutions, first.deletions, first.insertions) == (1, 1, 0)
    assert first.rate == pytest.approx(2 / 6)
    second = word_errors(refs[1], hyps[1])  # "there" inserted
    assert (second.substitutions, second.deletions, second.insertions) == (0, 0, 1)
    assert second.rate == pytest.approx(1 / 2)
    # Corpus rate pools counts: 3 errors over 8 reference words (not the mean 0.4167).
    assert corpus_wer(refs, hyps) == pytest.approx(3 / 8)
    assert corpus_wer(["a b c"], ["a b c"]) == 0.0
    assert word_errors("a b", "").rate == 1.0
    assert word_errors("", "").rate == 0.0
    assert math.isinf(word_errors("", "extra").rate)
    with pytest.raises(ValueError, match="pair up"):
        corpus_wer(["a"], ["a", "b"])


def test_cer_hand_counted() -> None:
    assert char_errors("abc", "abd").rate == pytest.approx(1 / 3)
    # "hello world" (11 characters with the space) vs "helo world": one deletion.
    counts = char_errors("Hello world", "helo world")
    assert (counts.deletions, counts.reference_length) == (1, 11)
    assert corpus_cer(["abc", "hello world"], ["abd", "helo world"]) == pytest.approx(2 / 14)
    # A missing space is one character error.
    assert char_errors("ab cd", "abcd").errors == 1


def test_word_emission_latency() -> None:
    reference = [TimedWord("The", 0.0, 0.3), TimedWord("cat", 0.3, 0.7),
                 TimedWord("sat", 0.8, 1.2), TimedWord("down.", 1.3, 1.9)]
    # "the" on time, "cat" late, "sat" substituted by "sit", an inserted "uh", "down" lost.
    emitted = [("the", 0.8), ("uh", 1.0), ("cat", 1.5), ("sit", 1.6)]
    latencies = word_emission_latencies(reference, emitted)
    assert latencies == pytest.approx([0.8 - 0.3, 1.5 - 0.7, 1.6 - 1.2])
    assert word_emission_latencies(reference, []) == []
    stats = summarize(latencies)
    assert stats["count"] == 3 and stats["median"] == pytest.approx(0.5)
    assert stats["mean"] == pytest.approx((0.5 + 0.8 + 0.4) / 3)
    assert math.isnan(summarize([])["mean"])


def test_si_snr_properties() -> None:
    rng = np.random.default_rng(1)
    clean = _speechlike()
    assert si_snr(0.3 * clean, clean) > 80  # scale-invariant: a scaled copy is perfect
    assert si_snr(rng.standard_normal(clean.size), clean) < -20
    noise = rng.standard_normal(clean.size)
    noise *= np.linalg.norm(clean - clean.mean()) / np.linalg.norm(noise) / math.sqrt(10)
    assert si_snr(clean + noise, clean) == pytest.approx(10.0, abs=0.3)  # 10 dB SNR
    # Extra samples at the end (frame padding) are ignored.
    assert si_snr(np.concatenate([clean, np.zeros(500)]), clean) > 80
    with pytest.raises(ValueError, match="empty"):
        si_snr(np.zeros(0), clean)


def test_stoi_clean_vs_noise() -> None:
    rng = np.random.default_rng(2)
    clean = _speechlike()
    assert stoi(clean, clean, SR) > 0.99
    noise_only = 0.2 * rng.standard_normal(clean.size)
    assert stoi(noise_only, clean, SR) < 0.4
    # More noise, less intelligibility.
    scores = [stoi(clean + level * rng.standard_normal(clean.size), clean, SR)
              for level in (0.01, 0.1, 0.3)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.4


def test_mel_distance() -> None:
    rng = np.random.default_rng(3)
    clean = _speechlike(1.0)
    assert mel_distance(clean, clean, SR) == pytest.approx(0.0, abs=1e-6)
    near = mel_distance(clean + 0.001 * rng.standard_normal(clean.size), clean, SR)
    far = mel_distance(clean + 0.1 * rng.standard_normal(clean.size), clean, SR)
    assert 0 < near < far


def test_bleu() -> None:
    refs = ["le chat est assis sur le tapis", "il fait beau aujourd'hui"]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert corpus_bleu(refs, ["bonjour", "merci"]) < 1.0
    partial = corpus_bleu(refs, ["le chat est assis sur un tapis", "il fait beau"])
    assert 10.0 < partial < 90.0
    assert sentence_bleu(refs[0], refs[0]) == pytest.approx(100.0)


def test_time_to_first_audio() -> None:
    assert time_to_first_audio(10.0, [10.4, 10.5, 10.25]) == pytest.approx(0.25)
    assert math.isinf(time_to_first_audio(1.0, []))
