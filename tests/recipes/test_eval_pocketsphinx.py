"""CMU PocketSphinx as `dsm eval tts`'s independent recognizer: it hears real speech (flite's
slt voice), silence is "", a missing package is a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsm.audio_io import read_audio
from dsm.recipes.eval.metrics import corpus_wer
from dsm.recipes.eval.pocketsphinx import RecognizerUnavailable, transcribe_pocketsphinx

# flite's slt voice (an HTS voice of a US-English speaker) saying these, heard by
# PocketSphinx 5.1.1's default en-us model at 24 kHz (resampled to its 16 kHz): 2 word
# errors in 27 (WER 0.074; "stella and" is heard as "stallion"). Not resampled (its 24 kHz
# samples taken for 16 kHz ones) the same audio scores 0.59, so the bound of 0.2 catches a
# broken resampling or sample conversion while leaving room for another release's model.
SENTENCES = ("the weather is nice today", "i would like a cup of coffee",
             "please call stella and ask her to bring these things with her from the store")
WER_BOUND = 0.2
RATE = 24000  # the codec rate of dsm's models: the recognizer must resample


def _flite(text: str, path: Path) -> Path:
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True,
                   capture_output=True)
    return path


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """flite's wav file of each text of SENTENCES."""
    folder = tmp_path_factory.mktemp("flite")
    return {text: _flite(text, folder / f"s{index}.wav")
            for index, text in enumerate(SENTENCES)}


def test_pocketsphinx_hears_flite_speech(spoken: dict[str, Path]) -> None:
    transcripts = transcribe_pocketsphinx([read_audio(spoken[t], RATE) for t in SENTENCES], RATE)
    assert all(t == t.lower() and "<" not in t and "[" not in t for t in transcripts)
    assert transcripts[0] == "the weather is nice today"
    assert corpus_wer(SENTENCES, transcripts) <= WER_BOUND, transcripts


def test_silence_and_empty_audio_give_empty_transcripts() -> None:
    # Digital silence: without dither PocketSphinx hears "dog" in it.
    silences = [np.zeros(0, np.float32), np.zeros(RATE, np.float32),
                np.zeros(3 * RATE, np.float32)]
    assert transcribe_pocketsphinx(silences, RATE) == ["", "", ""]


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with pytest.raises(RecognizerUnavailable, match="pip install pocketsphinx"):
        transcribe_pocketsphinx([np.zeros(RATE, np.float32)], RATE)
