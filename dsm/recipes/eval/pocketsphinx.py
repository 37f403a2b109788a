"""CMU PocketSphinx as an independent recognizer for `dsm eval tts`.

Why: the TTS intelligibility figure is what a recognizer heard; when that recognizer is a
dsm ASR model trained on the same synthetic corpus, it may share the TTS model's habits.
PocketSphinx is an HMM recognizer from CMU trained on real speech, and its `pocketsphinx`
wheel carries its US-English acoustic model, language model and dictionary, so it runs
without a download. Its WER is high even on clean human speech, so read its figure on TTS
speech beside the same recognizer's figure on the reference audio (`--reference-audio`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SAMPLE_RATE = 16000  # the rate of PocketSphinx's default en-us acoustic model
NAME = "pocketsphinx"  # the reserved --asr-model value


class RecognizerUnavailable(RuntimeError):
    """The `pocketsphinx` package is not installed."""


def _module() -> Any:
    try:
        import pocketsphinx
    except ImportError:
        raise RecognizerUnavailable(
            "the PocketSphinx recognizer needs the pocketsphinx package: "
            "pip install pocketsphinx (or `make setup`, which installs dsm's eval extra)"
        ) from None
    return pocketsphinx


def check_installed() -> None:
    """Raise `RecognizerUnavailable` unless the pocketsphinx package imports."""
    _module()


def _decoder() -> Any:
    """A decoder with the wheel's default en-us model (acoustic model, language model and
    dictionary). Dither (seeded, so transcripts repeat) adds half a bit of noise: on digital
    silence, without it, the decoder hears a word ("dog")."""
    return _module().Decoder(samprate=SAMPLE_RATE, dither=True, seed=1, loglevel="FATAL")


def _words(segments: Any) -> list[str]:
    """Spoken words of a segmentation: fillers (<s>, </s>, <sil>, [NOISE]) dropped, and a
    dictionary variant's "(2)" suffix removed."""
    words = []
    for segment in segments:
        word = segment.word
        if word.startswith(("<", "[")):
            continue
        words.append(word.split("(", 1)[0].lower())
    return words


def _int16_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    import soxr

    mono = np.asarray(pcm, dtype=np.float32).reshape(-1)
    if sample_rate != SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE)
    return (np.clip(mono, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def transcribe_pocketsphinx(pcms: Sequence[np.ndarray], sample_rate: int) -> list[str]:
    """Lower-case transcripts of mono float signals at `sample_rate` (empty audio: "").

    Each signal is resampled to 16 kHz and decoded as one whole utterance by one decoder
    reused for all of them. Raises `RecognizerUnavailable` without the package.
    """
    decoder = _decoder()
    transcripts = []
    for pcm in pcms:
        audio = _int16_bytes(pcm, sample_rate)
        if not audio:
            transcripts.append("")
            continue
        decoder.start_utt()
        decoder.process_raw(audio, full_utt=True)
        decoder.end_utt()
        transcripts.append(" ".join(_words(decoder.seg())) if decoder.hyp() else "")
    return transcripts
