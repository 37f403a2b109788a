"""`make demo`'s job: `dsm demo` on the bundled sample and whatever default models ship."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dsm.cli import main
from dsm.commands.demo import ASSETS, SAMPLE, SAMPLE_WORDS, TTS_TEXT


def test_bundled_sample_matches_its_reference_words() -> None:
    audio, rate = soundfile.read(SAMPLE, dtype="float32")
    words = json.loads(SAMPLE_WORDS.read_text())
    assert rate == 24_000 and audio.ndim == 1
    assert [w["word"] for w in words["words"]] == words["text"].split()
    duration = audio.size / rate
    assert 0 < words["words"][0]["start"] < words["words"][-1]["end"] <= duration
    # the sample is spoken by a voice held out of training (the corpus' eval split)
    from dsm.recipes.synth.corpus import speakers

    held_out = {s.id for s in speakers("en") if s.split == "eval"}
    assert words["speaker"] in held_out


def test_demo_streams_the_sample_through_the_codec(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    roundtrip, rate = soundfile.read(tmp_path / "codec_roundtrip.wav", dtype="float32")
    original, _ = soundfile.read(SAMPLE, dtype="float32")
    assert rate == 24_000 and roundtrip.size == original.size
    assert np.abs(roundtrip).max() > 0
    assert "summary: codec ok" in printed
    for task in ("asr", "tts"):
        installed = (ASSETS / task / "config.json").is_file()
        assert (f"{task} ok" in printed) == installed
        assert (f"{task} not installed" in printed) == (not installed)
    if (ASSETS / "asr" / "config.json").is_file():
        # the default ASR model hears the held-out voice's sentence right, word for word
        assert "WER 0.0%" in printed, printed
    if (ASSETS / "tts" / "config.json").is_file():
        speech, _ = soundfile.read(tmp_path / "speech.wav", dtype="float32")
        assert speech.size > 0
        # the ASR model hears the default TTS model's sentence (seed 0) word for word
        heard = [line for line in printed.splitlines() if line.startswith("heard by the ASR")]
        assert heard == [f"heard by the ASR model: {TTS_TEXT}"], printed
