"""Speed perturbation of a word-aligned corpus: more voices from the same recordings.

Each utterance is resampled so that it plays `speed` times faster at the same sample rate:
tempo, pitch and formants all move together (a shorter or longer vocal tract), the usual
way to make a speech recognizer hear past the few voices it was trained on. Word times
and durations are divided by the speed, so the alignment stays exact. Resampling is
done with soxr.

Output folder:
  audio/NNN/*.wav       mono 16-bit PCM at the input's sample rate
  MANIFEST's name       the input rows (unless --no-original), then one row per
                        utterance and speed: id "<id>-sp<speed>", "speed": speed

Example (the corpus of the default ASR model):
  dsm data perturb data/en-all/train.jsonl --out data/en-sp --speeds 0.9,1.1
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from dsm.recipes.manifest import ManifestError, ManifestRow, read_manifest, write_manifest
from dsm.streams.alignment import Word

HELP = "speed-perturbed copies of a word-aligned corpus (tempo and pitch, exact word times)"


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


def parse_speeds(text: str) -> list[float]:
    try:
        speeds = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speeds: not a list of numbers: {text!r}") from None
    if not speeds or any(not (math.isfinite(s) and 0.5 <= s <= 2.0) for s in speeds):
        raise argparse.ArgumentTypeError(f"--speeds must be numbers in [0.5, 2], got {text!r}")
    return speeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("manifest", type=Path, help="input JSONL manifest (dsm data synth)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--speeds", type=parse_speeds, default=[0.9, 1.1],
                        help="comma-separated speed factors (default: 0.9,1.1)")
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
    out_rows = [] if args.no_original else list(rows)
    jobs = [(index, row, speed) for speed in args.speeds for index, row in enumerate(rows)]
    for index, row, speed in tqdm(jobs, desc="perturb", unit="utt", disable=args.no_progress):
        path = args.out / "audio" / f"{index // 1000:03d}" / f"{index:06d}_sp{speed:g}.wav"
        out_rows.append(perturb_row(row, speed, path))
    target = args.out / args.manifest.name
    count = write_manifest(target, out_rows)
    print(f"wrote {target}: {count} rows ({len(jobs)} perturbed, speeds {args.speeds})")
    return 0
