"""Perturbed copies of a word-aligned corpus's rows (speed, tempo, pitch, treble, formant
warp, random EQ), their word timings carried over."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsm.recipes.data.manifest import ManifestRow
from dsm.streams.text_stream import Word

TREBLE_HZ = 3000          # the shelf's corner frequency


MAX_TREBLE_DB = 20.0


MAX_EQ_RANGE_DB = 24.0


PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dBFS


SOX_PROGRAM = "sox"


class PerturbError(RuntimeError):
    """A perturbation could not be made (the message names the file or program)."""


def perturb_row(row: ManifestRow, speed: float, path: Path) -> ManifestRow:
    """Write `row`'s audio `speed` times faster to `path`; the row that describes it."""
    import soundfile
    import soxr

    mono, rate = _read(row)
    # resampled to rate / speed and played at `rate`: `speed` times faster, pitch too
    faster = np.clip(soxr.resample(mono, rate, rate / speed), -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), faster, rate, subtype="PCM_16")
    words = [Word(w.word, w.start / speed, w.end / speed) for w in row.words]
    ident = f"{row.id}-sp{speed:g}" if row.id is not None else None
    return ManifestRow(audio=str(path), duration=faster.size / rate, text=row.text,
                       lang=row.lang, speaker=row.speaker, words=words, id=ident,
                       extra={**row.extra, "speed": speed})


def sox_row(row: ManifestRow, effect: list[str], path: Path, tag: str, key: str,
            factor: float) -> ManifestRow:
    """Write `row`'s audio through the sox `effect` to `path`; the row that describes it,
    word times scaled by the measured length ratio."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    # sox reads the file itself (any format soundfile wrote); remix to mono, 16-bit out
    command = [SOX_PROGRAM, "-q", row.audio, "-b", "16", str(path), "remix", "-", *effect]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise PerturbError(f"sox failed on {row.audio}: {result.stderr.strip()}")
    before, after = soundfile.info(row.audio), soundfile.info(str(path))
    if after.samplerate != before.samplerate or after.frames == 0:
        raise PerturbError(f"sox wrote unusable audio for {row.audio}")
    duration = after.frames / after.samplerate
    ratio = after.frames / before.frames  # measured, not the nominal one
    words = [Word(w.word, min(w.start * ratio, duration), min(w.end * ratio, duration))
             for w in row.words]
    ident = f"{row.id}-{tag}{factor:g}" if row.id is not None else None
    return ManifestRow(audio=str(path), duration=duration, text=row.text, lang=row.lang,
                       speaker=row.speaker, words=words, id=ident,
                       extra={**row.extra, key: factor})


def tempo_row(row: ManifestRow, tempo: float, path: Path) -> ManifestRow:
    """Write `row`'s audio `tempo` times faster, pitch kept, to `path` (sox); its row."""
    return sox_row(row, ["tempo", "-s", f"{tempo:g}"], path, "t", "tempo", tempo)


def pitch_row(row: ManifestRow, pitch: float, path: Path) -> ManifestRow:
    """Write `row`'s audio with pitch and formants times `pitch`, duration kept, to `path`
    (sox); its row."""
    cents = 1200.0 * math.log2(pitch)
    return sox_row(row, ["pitch", f"{cents:.1f}"], path, "p", "pitch", pitch)


def treble_row(row: ManifestRow, gain_db: float, path: Path) -> ManifestRow:
    """Write `row`'s audio with a `gain_db` high shelf above 3 kHz to `path` (sox), at the
    input's RMS level unless that would clip (then its peak is at -1 dBFS); its row."""
    import soundfile

    effect = ["treble", f"{gain_db:g}", str(TREBLE_HZ)]
    if gain_db > 0:  # sox attenuates first by what the shelf can add: no clipping inside
        effect = ["gain", "-h", *effect]
    perturbed = sox_row(row, effect, path, "eq", "treble_db", gain_db)
    before, _ = _read(row)
    after, rate = soundfile.read(str(path), dtype="float32")
    soundfile.write(str(path), at_level_of(before, after), rate, subtype="PCM_16")
    return perturbed


def at_level_of(reference: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """`audio` scaled to `reference`'s RMS level, or less where that would put its peak
    above -1 dBFS; float32."""
    level = float(np.sqrt(np.mean(reference ** 2)))
    scale = level / max(float(np.sqrt(np.mean(audio ** 2))), 1e-9)
    scale = min(scale, PEAK_LIMIT / max(float(np.abs(audio).max()), 1e-9))
    return (audio * scale).astype(np.float32)


def warp_row(row: ManifestRow, factor: float, path: Path) -> ManifestRow:
    """Write `row`'s audio with its spectral envelope stretched by `factor` (pitch, timing
    and loudness kept) to `path`; its row, word times unchanged."""
    from dsm.recipes.data.envelope_warp import warp_envelope

    return _filtered_row(row, lambda mono, rate: warp_envelope(mono, rate, factor), path,
                         f"w{factor:g}", {"warp": factor})


def random_eq_row(row: ManifestRow, gains_db: list[float], copy: int, path: Path
                  ) -> ManifestRow:
    """Write `row`'s audio through the gain curve `gains_db` (dsm.recipes.data.random_eq) to
    `path`, at the input's loudness unless that would clip; its row, word times unchanged."""
    from dsm.recipes.data.random_eq import equalize

    return _filtered_row(row, lambda mono, rate: equalize(mono, rate, gains_db), path,
                         f"req{copy}", {"eq_gains_db": list(gains_db)})


def _filtered_row(row: ManifestRow, process: Callable[[np.ndarray, int], np.ndarray],
                  path: Path, tag: str, extra: dict[str, object]) -> ManifestRow:
    """Write `process(mono, rate)` of `row`'s audio to `path` at the input's loudness (or
    less, not to clip), timing kept; the row that describes it (id "<id>-<tag>")."""
    import soundfile

    mono, rate = _read(row)
    if not mono.any():
        raise PerturbError(f"{row.audio} is silent: nothing to filter")
    processed = at_level_of(mono, process(mono, rate))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), processed, rate, subtype="PCM_16")
    ident = f"{row.id}-{tag}" if row.id is not None else None
    return ManifestRow(audio=str(path), duration=processed.size / rate, text=row.text,
                       lang=row.lang, speaker=row.speaker, words=list(row.words), id=ident,
                       extra={**row.extra, **extra})


def _read(row: ManifestRow) -> tuple[np.ndarray, int]:
    """`row`'s audio, mono at its own rate; an unreadable file is a PerturbError."""
    from dsm.audio_io import AudioFileError, read_audio_with_rate

    try:
        return read_audio_with_rate(row.audio)
    except AudioFileError as error:
        raise PerturbError(f"cannot read {row.audio}: {error}") from None
