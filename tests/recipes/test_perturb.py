"""`dsm data perturb`: speed-, tempo-, pitch-, treble- and formant-perturbed corpus copies with their word times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from dsm.cli import main as dsm_main
from dsm.recipes.data.manifest import read_manifest
from dsm.recipes.data.perturb import PerturbError, pitch_row, tempo_row, treble_row, warp_row
from dsm.recipes.data.random_eq import OCTAVE_POINTS_HZ

RATE = 16_000


def _corpus(root: Path, audio: np.ndarray | None = None) -> Path:
    """One 1 s utterance, two words; by default a 200 Hz tone between 0.25 s and 0.75 s."""
    if audio is None:
        t = np.arange(RATE) / RATE
        audio = np.where((t >= 0.25) & (t < 0.75), 0.5 * np.sin(2 * np.pi * 200 * t), 0.0)
    soundfile.write(root / "a.wav", audio.astype(np.float32), RATE, subtype="PCM_16")
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


def test_tempos_change_the_rate_and_keep_the_pitch(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path)
    out = tmp_path / "tempo"
    assert dsm_main(["data", "perturb", str(manifest), "--out", str(out),
                     "--tempos", "0.8,1.25", "--no-original", "--no-progress"]) == 0
    assert "2 rows" in capsys.readouterr().out  # --tempos alone: no default speeds
    rows, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a-t0.8", "a-t1.25"]
    for row, tempo in zip(rows, (0.8, 1.25)):
        audio, rate = soundfile.read(row.audio, dtype="float32")
        assert rate == RATE and row.extra["tempo"] == tempo
        assert row.duration == pytest.approx(1.0 / tempo, rel=0.02)
        assert audio.size / RATE == pytest.approx(row.duration, abs=1e-6)
        assert _peak_hz(audio) == pytest.approx(200, rel=0.03)  # pitch kept
        times = [t for w in row.words for t in (w.start, w.end)]
        assert times == pytest.approx([t * row.duration for t in (0.25, 0.5, 0.5, 0.75)])
        loud = np.flatnonzero(np.abs(audio) > 0.1)
        # the tone still spans the words' times, within a WSOLA segment
        assert loud[0] / RATE == pytest.approx(row.words[0].start, abs=0.04)
        assert loud[-1] / RATE == pytest.approx(row.words[-1].end, abs=0.04)


def test_pitches_move_pitch_and_keep_the_rate(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path)
    out = tmp_path / "pitch"
    assert dsm_main(["data", "perturb", str(manifest), "--out", str(out),
                     "--pitches", "0.84,1.12", "--no-progress"]) == 0
    assert "3 rows" in capsys.readouterr().out  # --pitches alone: no default speeds
    rows, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a", "a-p0.84", "a-p1.12"]
    for row, pitch in zip(rows[1:], (0.84, 1.12)):
        audio, rate = soundfile.read(row.audio, dtype="float32")
        assert rate == RATE and row.extra["pitch"] == pitch
        assert row.duration == pytest.approx(1.0, abs=0.01)  # rate kept
        assert audio.size / RATE == pytest.approx(row.duration, abs=1e-6)
        assert _peak_hz(audio) == pytest.approx(200 * pitch, rel=0.03)  # pitch moved
        times = [t for w in row.words for t in (w.start, w.end)]
        assert times == pytest.approx([t * row.duration for t in (0.25, 0.5, 0.5, 0.75)])
        loud = np.flatnonzero(np.abs(audio) > 0.1)
        assert loud[0] / RATE == pytest.approx(row.words[0].start, abs=0.04)
        assert loud[-1] / RATE == pytest.approx(row.words[-1].end, abs=0.04)
    with pytest.raises(SystemExit):
        dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                  "--pitches", "0.3"])
    assert "--pitches must be numbers in [0.5, 2]" in capsys.readouterr().err


def _band_level_db(samples: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    index = round(hz * samples.size / RATE)
    return float(20 * np.log10(spectrum[index - 3: index + 4].max()))


def test_trebles_tilt_the_spectrum_keep_the_timing_and_never_clip(tmp_path: Path, capsys) -> None:
    t = np.arange(RATE) / RATE  # a 200 Hz and a 5 kHz tone, together near full scale
    both = 0.45 * np.sin(2 * np.pi * 200 * t) + 0.45 * np.sin(2 * np.pi * 5000 * t)
    manifest = _corpus(tmp_path, both)
    out = tmp_path / "eq"
    assert dsm_main(["data", "perturb", str(manifest), "--out", str(out),
                     "--trebles", "12,-12", "--no-original", "--no-progress"]) == 0
    assert "2 rows" in capsys.readouterr().out
    rows, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a-eq12", "a-eq-12"]
    for perturbed, gain in zip(rows, (12, -12)):
        audio, rate = soundfile.read(perturbed.audio, dtype="float32")
        assert rate == RATE and perturbed.extra["treble_db"] == gain
        assert audio.size == RATE and perturbed.duration == 1.0  # timing untouched
        assert [(w.start, w.end) for w in perturbed.words] == [(0.25, 0.5), (0.5, 0.75)]
        assert np.abs(audio).max() < 0.95  # the boost did not clip: peak at -1 dBFS at most
        if gain < 0:  # no clipping risk: the input's loudness is kept
            assert np.sqrt(np.mean(audio ** 2)) == pytest.approx(np.sqrt(np.mean(both ** 2)), rel=0.02)
        tilt = _band_level_db(audio, 5000) - _band_level_db(audio, 200)
        assert tilt == pytest.approx(gain, abs=2.5)  # the shelf's gain, high over low
    for bad in ("0", "25", "x"):
        with pytest.raises(SystemExit):
            dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                      "--trebles", bad])
        assert "--trebles" in capsys.readouterr().err


def test_tempo_without_sox_or_on_bad_audio_is_an_error(tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _corpus(tmp_path)
    with pytest.raises(SystemExit):
        dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                  "--tempos", "3"])
    assert "--tempos must be numbers in [0.5, 2]" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        patch.setattr("dsm.recipes.data.perturb.SOX_PROGRAM", "no-such-sox")
        assert dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                         "--tempos", "0.9", "--no-progress"]) == 2
        assert "--tempos needs the no-such-sox program" in capsys.readouterr().err
        assert dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                         "--pitches", "0.9", "--no-progress"]) == 2
        assert "--pitches needs the no-such-sox program" in capsys.readouterr().err
        assert dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                         "--trebles", "6", "--no-progress"]) == 2
        assert "--trebles needs the no-such-sox program" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    [row], _ = read_manifest(manifest)
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVEnot audio at all")  # broken since read
    with pytest.raises(PerturbError, match="sox failed on .*a.wav"):
        tempo_row(row, 0.9, tmp_path / "o" / "x.wav")
    with pytest.raises(PerturbError, match="sox failed on .*a.wav"):
        pitch_row(row, 0.9, tmp_path / "o" / "y.wav")
    with pytest.raises(PerturbError, match="sox failed on .*a.wav"):
        treble_row(row, 6.0, tmp_path / "o" / "z.wav")


def _vowel(formant_hz: float, f0: float = 150.0) -> np.ndarray:
    """1 s of harmonics of `f0` under one resonance at `formant_hz` (a crude vowel), the
    loud part between 0.25 s and 0.75 s."""
    t = np.arange(RATE) / RATE
    harmonics = np.arange(1, int(4000 // f0))
    levels_db = -30 * ((harmonics * f0 - formant_hz) / 400.0) ** 2 / 2
    voice = sum(10 ** (db / 20) * np.sin(2 * np.pi * k * f0 * t + k)
                for k, db in zip(harmonics, levels_db))
    voice = voice / np.abs(voice).max() * 0.5
    return np.where((t >= 0.25) & (t < 0.75), voice, 0.0) + 1e-4 * np.sin(2 * np.pi * 40 * t)


def _harmonic_levels(samples: np.ndarray, f0: float = 150.0) -> np.ndarray:
    middle = samples[int(0.35 * RATE): int(0.65 * RATE)]
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
    bin_hz = RATE / middle.size
    return np.array([spectrum[round(k * f0 / bin_hz)] for k in range(1, int(4000 // f0))])


def test_warps_move_formants_and_keep_pitch_timing_and_loudness(tmp_path: Path, capsys) -> None:
    vowel = _vowel(800.0)
    manifest = _corpus(tmp_path, vowel)
    out = tmp_path / "w"
    assert dsm_main(["data", "perturb", str(manifest), "--out", str(out),
                     "--warps", "0.8,1.25", "--no-original", "--no-progress"]) == 0
    assert "2 rows" in capsys.readouterr().out
    rows, skipped = read_manifest(out / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a-w0.8", "a-w1.25"]
    for row, factor in zip(rows, (0.8, 1.25)):
        audio, rate = soundfile.read(row.audio, dtype="float32")
        assert rate == RATE and audio.size == RATE and row.extra["warp"] == factor
        assert [(w.start, w.end) for w in row.words] == [(0.25, 0.5), (0.5, 0.75)]
        assert np.sqrt(np.mean(audio ** 2)) == pytest.approx(np.sqrt(np.mean(vowel ** 2)), rel=0.05)
        # the loudest harmonic follows the formant: 800 Hz * factor, to one harmonic (150 Hz)
        strongest_hz = 150.0 * (1 + int(np.argmax(_harmonic_levels(audio))))
        assert abs(strongest_hz - 800.0 * factor) <= 150.0
        # pitch kept: the energy is still on the 150 Hz harmonics, not between them
        middle = audio[int(0.35 * RATE): int(0.65 * RATE)]
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size))) ** 2
        on_harmonics = sum(spectrum[round(k * 150 * middle.size / RATE) - 2:
                                    round(k * 150 * middle.size / RATE) + 3].sum()
                           for k in range(1, 26))
        assert on_harmonics / spectrum.sum() > 0.9
        loud = np.flatnonzero(np.abs(audio) > 0.05)  # and the sound stays where the words are
        assert loud[0] / RATE == pytest.approx(0.25, abs=0.03)
        assert loud[-1] / RATE == pytest.approx(0.75, abs=0.03)
    for bad in ("0.3", "x", ""):
        with pytest.raises(SystemExit):
            dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                      "--warps", bad])
        assert "--warps" in capsys.readouterr().err
    [row], _ = read_manifest(manifest)
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVEnot audio at all")
    with pytest.raises(PerturbError, match="cannot read .*a.wav"):
        warp_row(row, 1.1, tmp_path / "o" / "w.wav")


def test_random_eq_copies_follow_their_drawn_curves_and_keep_timing_and_loudness(
        tmp_path: Path, capsys) -> None:
    points = OCTAVE_POINTS_HZ[:-1]  # 8 kHz is this corpus's Nyquist frequency
    t = np.arange(RATE) / RATE  # one tone at each octave point, each well apart
    tones = sum(0.1 * np.sin(2 * np.pi * hz * t) for hz in points)
    manifest = _corpus(tmp_path, tones)
    command = ["data", "perturb", str(manifest), "--random-eq", "2", "--eq-range", "10",
               "--no-original", "--no-progress"]
    assert dsm_main([*command, "--out", str(tmp_path / "eq")]) == 0
    assert "2 rows" in capsys.readouterr().out
    rows, skipped = read_manifest(tmp_path / "eq" / "train.jsonl", require_words=True)
    assert not skipped and [r.id for r in rows] == ["a-req0", "a-req1"]
    before = np.array([_band_level_db(tones, hz) for hz in points])
    curves = []
    for row in rows:
        gains = row.extra["eq_gains_db"]
        assert len(gains) == len(OCTAVE_POINTS_HZ) and all(abs(g) <= 10 for g in gains)
        audio, rate = soundfile.read(row.audio, dtype="float32")
        assert rate == RATE and audio.size == RATE and row.duration == 1.0
        assert [(w.start, w.end) for w in row.words] == [(0.25, 0.5), (0.5, 0.75)]
        assert np.sqrt(np.mean(audio ** 2)) == pytest.approx(np.sqrt(np.mean(tones ** 2)),
                                                             rel=0.02)  # loudness kept
        change = np.array([_band_level_db(audio, hz) for hz in points]) - before
        # each tone moves by its point's gain, up to the common level correction
        expected = np.array(gains[:-1])
        assert change - change.mean() == pytest.approx(expected - expected.mean(), abs=0.5)
        curves.append(gains)
    assert curves[0] != curves[1]  # each copy has its own curve
    # the same seed makes the same corpus; another seed, other curves
    assert dsm_main([*command, "--out", str(tmp_path / "again")]) == 0
    again, _ = read_manifest(tmp_path / "again" / "train.jsonl")
    assert [r.extra["eq_gains_db"] for r in again] == curves
    assert (Path(again[0].audio).read_bytes() == Path(rows[0].audio).read_bytes())
    assert dsm_main([*command, "--out", str(tmp_path / "other"), "--seed", "1"]) == 0
    other, _ = read_manifest(tmp_path / "other" / "train.jsonl")
    assert other[0].extra["eq_gains_db"] != curves[0]
    capsys.readouterr()


def test_random_eq_refuses_bad_options_and_silent_audio(tmp_path: Path, capsys) -> None:
    manifest = _corpus(tmp_path)
    for option, bad in (("--random-eq", "0"), ("--random-eq", "17"), ("--random-eq", "x"),
                        ("--eq-range", "0"), ("--eq-range", "30"), ("--eq-range", "nan")):
        with pytest.raises(SystemExit):
            dsm_main(["data", "perturb", str(manifest), "--out", str(tmp_path / "o"),
                      "--random-eq", "1", option, bad])
        assert option in capsys.readouterr().err
    silent = _corpus(tmp_path, np.zeros(RATE))
    assert dsm_main(["data", "perturb", str(silent), "--out", str(tmp_path / "o"),
                     "--random-eq", "1", "--no-progress"]) == 2
    assert "is silent" in capsys.readouterr().err
    assert not (tmp_path / "o" / "train.jsonl").exists()
