"""Speed, tempo, pitch, treble, formant and random-EQ perturbation of a word-aligned corpus.

--speeds: each utterance is resampled so that it plays `speed` times faster at the same
sample rate: tempo, pitch and formants all move together (a shorter or longer vocal
tract), the usual way to make a speech recognizer hear past the few voices it was
trained on. Word times and durations are divided by the speed, so the alignment stays
exact. Resampling is done with soxr. Factors below 1 give slower voices with a longer
vocal tract: four draws of 8000 rows of the default ASR model's mix, copied at 0.8x and
0.88x, then down to 0.7x and 0.78x, took its held-out flite voice rms from WER 0.295 to
0.168, and its eval split from 0.138 to 0.082.

--tempos: each utterance is made `tempo` times faster with its pitch and formants kept
(sox's WSOLA `tempo -s` effect; needs the `sox` program): the same voice speaking faster
or slower. A recognizer that heard each synthetic voice at one speaking rate fails on a
new voice that speaks more slowly (the default model on flite's rms, 2.5 words/s against
3.2 to 3.4 for the training flite voices, had WER 0.60; the same audio made 1.3x faster,
0.35). Word times are scaled by the measured length ratio; WSOLA moves a sound by at
most about one of its 80 ms segments from that line.

--pitches: pitch and formants are multiplied by the factor with the duration kept (sox's
`pitch` effect: WSOLA, then resampling): a voice with a longer or shorter vocal tract
speaking at the same rate, i.e. a new timbre for every training voice without the rate
change that --speeds brings along. Word times are scaled by the measured length ratio
(within a few ms of 1).

--trebles: a high shelf of that many dB above 3 kHz (sox `treble`), the input's loudness
(RMS) kept unless that would clip, timing untouched: a brighter or duller voice. The
flite and Festival training voices are dull above 4.5 kHz (awb 30 dB below its peak band,
slt 24 dB), where the held-out flite voice rms is only 13 to 17 dB below it; a recognizer
that heard only dull synthetic voices has not learned to ignore the spectral tilt.

--warps: the spectral envelope is stretched along frequency by the factor (formants at f
move to factor * f) with pitch, timing and loudness kept (dsm.recipes.data.envelope_warp; torch
only, no sox): the same voice with a shorter (factor > 1) or longer vocal tract. It
separates timbre from the pitch that --pitches and --speeds move along with it. Word times
are unchanged.

--random-eq N: N copies of each utterance, each through its own random smooth gain curve
(dsm.recipes.data.random_eq: one gain per octave from 125 Hz to 8 kHz, uniform within
+-`--eq-range` dB, linear in log frequency between them; zero phase, no sox), loudness and
timing kept. The draws follow `--seed` and the row's position, so a command makes the
same corpus again. The spectral balance of a voice then varies as much across the copies
as it does across voices.

Output folder:
  audio/NNN/*.wav       mono 16-bit PCM at the input's sample rate
  MANIFEST's name       the input rows (unless --no-original), then one row per
                        utterance and factor: id "<id>-sp<speed>", "speed": speed,
                        id "<id>-t<tempo>", "tempo": tempo, id "<id>-p<pitch>",
                        "pitch": pitch, id "<id>-eq<dB>", "treble_db": dB, or
                        id "<id>-w<factor>", "warp": factor

Examples (the corpora of the default ASR model):
  dsm data perturb data/en-all/train.jsonl --out data/en-sp --speeds 0.9,1.1
  dsm data perturb data/asr-mix/flite.jsonl --out data/flite-tempo --tempos 0.75,0.85 --no-original
  dsm data perturb data/fest/train.jsonl --out data/fest-pitch --pitches 0.84,1.12 --no-original
  dsm data perturb data/asr-mix/dull.jsonl --out data/treble --trebles 12 --no-original
  dsm data perturb data/asr-mix/dull.jsonl --out data/warp --warps 0.88,1.12 --no-original
  dsm data perturb data/asr-mix/eq-sample.jsonl --out data/eq --random-eq 1 --no-original
  dsm data perturb data/asr-mix/sp-sample.jsonl --out data/slow --speeds 0.8,0.88 --no-original
"""

from __future__ import annotations

import argparse
import functools
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsm.recipes.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from dsm.streams.alignment import Word

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

    samples, rate = soundfile.read(row.audio, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
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
    before, _ = soundfile.read(row.audio, dtype="float32", always_2d=True)
    after, rate = soundfile.read(str(path), dtype="float32")
    soundfile.write(str(path), at_level_of(before.mean(axis=1), after), rate, subtype="PCM_16")
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

    try:
        samples, rate = soundfile.read(row.audio, dtype="float32", always_2d=True)
    except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
        raise PerturbError(f"cannot read {row.audio}: {error}") from error
    mono = samples.mean(axis=1)
    if not mono.any():
        raise PerturbError(f"{row.audio} is silent: nothing to filter")
    processed = at_level_of(mono, process(mono, rate))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), processed, rate, subtype="PCM_16")
    ident = f"{row.id}-{tag}" if row.id is not None else None
    return ManifestRow(audio=str(path), duration=processed.size / rate, text=row.text,
                       lang=row.lang, speaker=row.speaker, words=list(row.words), id=ident,
                       extra={**row.extra, **extra})


def _numbers(text: str, option: str) -> list[float]:
    """The comma-separated numbers of an option's value."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{option}: not a list of numbers: {text!r}") from None


def parse_trebles(text: str) -> list[float]:
    gains = _numbers(text, "--trebles")
    if not gains or any(not (math.isfinite(g) and g != 0 and abs(g) <= MAX_TREBLE_DB)
                        for g in gains):
        raise argparse.ArgumentTypeError(
            f"--trebles must be non-zero gains in dB within +-{MAX_TREBLE_DB:g}, got {text!r}")
    return gains


def parse_eq_range(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_EQ_RANGE_DB):
        raise argparse.ArgumentTypeError(
            f"--eq-range must be a gain in dB in (0, {MAX_EQ_RANGE_DB:g}], got {text!r}")
    return value


def parse_copies(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError(f"--random-eq must be a count from 1 to 16, got {text!r}")
    return int(text)


def parse_factors(text: str, option: str = "--speeds") -> list[float]:
    factors = _numbers(text, option)
    if not factors or any(not (math.isfinite(f) and 0.5 <= f <= 2.0) for f in factors):
        raise argparse.ArgumentTypeError(f"{option} must be numbers in [0.5, 2], got {text!r}")
    return factors


def parse_speeds(text: str) -> list[float]:
    return parse_factors(text, "--speeds")


def parse_tempos(text: str) -> list[float]:
    return parse_factors(text, "--tempos")


def parse_pitches(text: str) -> list[float]:
    return parse_factors(text, "--pitches")


def parse_warps(text: str) -> list[float]:
    return parse_factors(text, "--warps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("manifest", type=Path, help="input JSONL manifest (dsm data synth)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--speeds", type=parse_speeds, default=None,
                        help="comma-separated speed factors (pitch moves too; default: "
                        "0.9,1.1 unless another perturbation is given)")
    parser.add_argument("--tempos", type=parse_tempos, default=[],
                        help="comma-separated tempo factors, pitch kept (sox), e.g. 0.75,0.85")
    parser.add_argument("--pitches", type=parse_pitches, default=[],
                        help="comma-separated pitch-and-formant factors, duration kept (sox), "
                        "e.g. 0.84,1.12")
    parser.add_argument("--trebles", type=parse_trebles, default=[],
                        help="comma-separated high-shelf gains in dB above 3 kHz, timing "
                        "kept (sox), e.g. 12 for a brighter voice, -12 for a duller one")
    parser.add_argument("--warps", type=parse_warps, default=[],
                        help="comma-separated spectral-envelope (formant) factors, pitch and "
                        "timing kept (no sox), e.g. 0.88,1.12")
    parser.add_argument("--random-eq", type=parse_copies, default=0, metavar="N",
                        help="N copies of each utterance, each through its own random smooth "
                        "gain curve (no sox), e.g. 1")
    parser.add_argument("--eq-range", type=parse_eq_range, default=12.0, metavar="DB",
                        help="--random-eq: each octave's gain is drawn within +-DB "
                        "(default: 12)")
    parser.add_argument("--seed", type=int, default=0,
                        help="--random-eq: the seed of the draws (default: 0)")
    parser.add_argument("--no-original", action="store_true",
                        help="leave the input rows out of the output manifest")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    try:
        rows, skipped = read_manifest(args.manifest)
    except ManifestError as error:
        print(f"dsm data perturb: error: {error}", file=sys.stderr)
        return 2
    if not rows:
        print(f"dsm data perturb: error: no usable rows in {args.manifest}", file=sys.stderr)
        return 2
    if skipped:
        print(f"dsm data perturb: {len(skipped)} rows of {args.manifest} skipped "
              f"(first: {skipped[0]})", file=sys.stderr)
    sox_options = [name for name in ("tempos", "pitches", "trebles") if getattr(args, name)]
    chosen = sox_options or args.warps or args.random_eq
    speeds = args.speeds if args.speeds is not None else ([] if chosen else [0.9, 1.1])
    if sox_options and shutil.which(SOX_PROGRAM) is None:
        option = f"--{sox_options[0]}"
        print(f"dsm data perturb: error: {option} needs the {SOX_PROGRAM} program (Debian "
              f"package sox; `make system-deps` installs it)", file=sys.stderr)
        return 2
    makers = {"sp": perturb_row, "t": tempo_row, "p": pitch_row, "eq": treble_row,
              "w": warp_row}
    out_rows = [] if args.no_original else list(rows)
    # (row index, file-name tag, path -> the perturbed row)
    jobs: list[tuple[int, str, Callable[[Path], ManifestRow]]] = [
        (index, f"{tag}{factor:g}", functools.partial(makers[tag], row, factor))
        for tag, factors in (("sp", speeds), ("t", args.tempos), ("p", args.pitches),
                             ("eq", args.trebles), ("w", args.warps))
        for factor in factors for index, row in enumerate(rows)]
    jobs += [(index, f"req{copy}",
              functools.partial(random_eq_row, row, _eq_gains(args, index, copy), copy))
             for copy in range(args.random_eq) for index, row in enumerate(rows)]
    for index, tag, make in tqdm(jobs, desc="perturb", unit="utt", disable=args.no_progress):
        path = args.out / "audio" / f"{index // 1000:03d}" / f"{index:06d}_{tag}.wav"
        try:
            out_rows.append(make(path))
        except PerturbError as error:
            print(f"dsm data perturb: error: {error}", file=sys.stderr)
            return 2
    target = args.out / args.manifest.name
    count = write_manifest(target, out_rows)
    print(f"wrote {target}: {count} rows ({len(jobs)} perturbed, speeds {speeds}, "
          f"tempos {args.tempos}, pitches {args.pitches}, trebles {args.trebles}, "
          f"warps {args.warps}, random-eq copies {args.random_eq})")
    return 0


def _eq_gains(args: argparse.Namespace, index: int, copy: int) -> list[float]:
    """The gain curve of copy `copy` of row `index`: a function of (seed, index, copy)."""
    from dsm.recipes.data.random_eq import draw_gains

    rng = np.random.default_rng([args.seed, index, copy])
    return draw_gains(rng, args.eq_range)
