"""`dsm data perturb`: speed-perturbed corpus copies with exact word times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dsm.cli import main as dsm_main
from dsm.recipes.manifest import read_manifest

RATE = 16_000


def _corpus(root: Path) -> Path:
    t = np.arange(RATE) / RATE  # 1 s: a 200 Hz tone between 0.25 s and 0.75 s
    tone = np.where((t >= 0.25) & (t < 0.75), 0.5 * np.sin(2 * np.pi * 200 * t), 0.0)
    soundfile.write(root / "a.wav", tone.astype(np.float32), RATE, subtype="PCM_16")
    row = {"audio": "a.wav", "duration": 1.0, "text": "hello there", "speaker": "x", "id": "a",
           "words": [{"word": "hello", "start": 0.25, "end": 0.5},
                     {"word": "there", "start": 0.5, "end": 0.75}]}
    manifest = root / "train.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    return manifest


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * RATE / samples.size)


def test_speeds_move_tempo_and_pitch_and_keep_word_times_exact(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path)
    out = tmp_path / "sp"
    assert dsm_main(["data", "perturb", str(manifest), "--out", str(out),
                     "--speeds", "0.8,1.25", "--no-progress"]) == 0
    assert "3 rows" in capsys.readouterr().out
    rows, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a", "a-sp0.8", "a-sp1.25"]
    for row, speed in zip(rows, (1.0, 0.8, 1.25)):
        audio, rate = soundfile.read(row.audio, dtype="float32")
        assert rate == RATE
        assert row.duration == pytest.approx(1.0 / speed, abs=2e-3)
        assert audio.size / RATE == pytest.approx(row.duration, abs=1e-6)
        times = [t for w in row.words for t in (w.start, w.end)]
        assert times == pytest.approx([0.25 / speed, 0.5 / speed, 0.5 / speed, 0.75 / speed])
        assert _peak_hz(audio) == pytest.approx(200 * speed, rel=0.03)  # pitch moved
        loud = np.flatnonzero(np.abs(audio) > 0.1)
        # the tone still spans the words' times
        assert loud[0] / RATE == pytest.approx(row.words[0].start, abs=0.01)
        assert loud[-1] / RATE == pytest.approx(row.words[-1].end, abs=0.01)
        assert row.text == "hello there" and row.speaker == "x"
    assert rows[1].extra["speed"] == 0.8


def test_bad_input_is_named(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path)
    with pytest.raises(SystemExit):
        dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                  "--speeds", "0.1"])
    assert "--speeds must be numbers in [0.5, 2]" in capsys.readouterr().err
    assert dsm_main(["data", "perturb", str(tmp_path / "none.jsonl"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
