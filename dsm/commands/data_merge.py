"""Merge word-aligned manifests into one: corpora combined, kept by speaker, minus texts.

Examples (the corpora of the default models, see docs/history.md):
  dsm data merge data/en-all/train.jsonl data/en/train.jsonl data/en2/train.jsonl --prefix-ids
  dsm data merge data/tts-slt/train.jsonl data/en-all/train.jsonl data/slt/train.jsonl \\
      --speakers 'flite:slt' --prefix-ids
  dsm data merge data/tts-slt/eval.jsonl data/en/eval.jsonl --exclude-texts data/tts-slt/train.jsonl

Every input is read and checked as training reads it: rows training would skip (missing
audio, bad word times, ...) are left out and counted per reason. No audio is copied: the
output's rows point at the inputs' files, relative to the output's folder (so a data
folder can move as a whole), or absolute with `--absolute`. Rows keep their ids;
`--prefix-ids` puts the name of each input's folder in front ("en2-000123"), which
corpora made by separate `dsm data synth` runs need, since each numbers its rows from
000000. Two rows with the same id are an error, as are an output that is one of the
inputs and an empty result. `--sample N` keeps N of the merged rows, drawn at random
with `--seed` (same inputs and seed, same rows, in their input order): a subset whose
codec codes cache quickly, e.g. to adapt a model to a new text delay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsm.commands.arguments import positive_int
from dsm.recipes.data.manifest import (
    ManifestError,
    write_manifest,
)
from dsm.recipes.data.merge import MergeError, excluded_texts, merge_manifests, sample_rows


def _patterns(text: str) -> list[str]:
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(f"--speakers: no pattern in {text!r}")
    return patterns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("output", type=Path, help="the manifest to write (JSONL)")
    parser.add_argument("inputs", type=Path, nargs="+", help="manifests to merge, in order")
    parser.add_argument("--speakers", type=_patterns, default=None,
                        help="keep only rows whose speaker matches one of these "
                        "comma-separated patterns (fnmatch: 'flite:slt', 'espeak:*+f*')")
    parser.add_argument("--exclude-texts", type=Path, action="append", default=None,
                        metavar="MANIFEST", help="leave out rows whose text is in MANIFEST "
                        "(repeatable), e.g. eval sentences a model was trained on")
    parser.add_argument("--prefix-ids", action="store_true",
                        help="prefix each row's id with its input's folder name")
    parser.add_argument("--absolute", action="store_true",
                        help="write absolute audio paths (default: relative to OUTPUT's folder)")
    parser.add_argument("--sample", type=positive_int, default=None, metavar="N",
                        help="keep N of the merged rows, drawn at random (see --seed)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of --sample (default: 0)")


def main(args: argparse.Namespace) -> int:
    output = args.output.resolve()
    try:
        if any(path.resolve() == output for path in args.inputs):
            raise MergeError(f"the output {args.output} is also an input: it would be "
                             "overwritten while read")
        exclude = excluded_texts(args.exclude_texts) if args.exclude_texts else None
        rows, reports = merge_manifests(args.inputs, args.speakers, exclude, args.prefix_ids)
        for report in reports:
            print(f"{report.path}: {report.kept} kept, {report.other_speakers} other "
                  f"speakers, {report.excluded_texts} excluded texts; {report.skipped}")
        if not rows:
            raise MergeError("no row is left to write")
        if args.sample is not None:
            rows = sample_rows(rows, args.sample, args.seed)
    except (MergeError, ManifestError) as error:
        print(f"dsm data merge: error: {error}", file=sys.stderr)
        return 2
    count = write_manifest(args.output, rows, relative=not args.absolute)
    hours = sum(row.duration for row in rows) / 3600
    print(f"wrote {args.output}: {count} rows, {hours:.2f} h from {len(args.inputs)} manifests")
    return 0
