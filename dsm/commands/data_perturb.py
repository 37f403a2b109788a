"""Speed, tempo, pitch, treble, formant and random-EQ perturbation of a word-aligned corpus.

--speeds: each utterance is resampled so that it plays `speed` times faster at the same
sample rate: tempo, pitch and formants all move together (a shorter or longer vocal
tract), the usual way to make a speech recognizer hear past the few voices it was
trained on. Word times and durations are divided by the speed, so the alignment stays
exact. Resampling is done with soxr. Factors below 1 give slower voices with a longer
vocal tract (what each perturbation did for the default ASR model: docs/history.md).

--tempos: each utterance is made `tempo` times faster with its pitch and formants kept
(sox's WSOLA `tempo -s` effect; needs the `sox` program): the same voice speaking faster
or slower. A recognizer that heard each synthetic voice at one speaking rate fails on a
new voice that speaks more slowly (flite's rms, 2.5 words/s, against 3.2 to 3.4 for the
training flite voices). Word times are scaled by the measured length ratio; WSOLA moves a sound by at
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
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dsm.recipes.data import perturb
from dsm.recipes.data.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from dsm.recipes.data.perturb import (
    MAX_EQ_RANGE_DB,
    MAX_TREBLE_DB,
    PerturbError,
    perturb_row,
    pitch_row,
    random_eq_row,
    tempo_row,
    treble_row,
    warp_row,
)


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
    if sox_options and shutil.which(perturb.SOX_PROGRAM) is None:
        option = f"--{sox_options[0]}"
        print(f"dsm data perturb: error: {option} needs the {perturb.SOX_PROGRAM} program (Debian "
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
