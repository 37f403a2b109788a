"""Merge word-aligned manifests into one: corpora combined, kept by speaker, minus texts.

Examples (the corpora of the default models, see the README):
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
import fnmatch
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from dsm.recipes.data.manifest import (
    ManifestError,
    ManifestRow,
    jsonl_objects,
    read_manifest,
    summarize_skipped,
    write_manifest,
)


class MergeError(ValueError):
    """The merge cannot give a usable manifest; the message says why."""


@dataclass
class InputReport:
    """What became of one input's rows."""

    path: Path
    kept: int
    other_speakers: int
    excluded_texts: int
    skipped: str


def _patterns(text: str) -> list[str]:
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(f"--speakers: no pattern in {text!r}")
    return patterns


def excluded_texts(manifests: list[Path]) -> set[str]:
    """The `text` of every row of these manifests (their audio is not looked at)."""
    texts: set[str] = set()
    for manifest in manifests:
        if not manifest.is_file():
            raise MergeError(f"--exclude-texts: manifest not found: {manifest}")
        for number, raw in jsonl_objects(manifest, ManifestError):
            if not isinstance(raw.get("text"), str):
                raise MergeError(f"--exclude-texts: {manifest}:{number}: no text")
            texts.add(raw["text"])
    return texts


def merge_manifests(inputs: list[Path], speakers: list[str] | None = None,
                    exclude: set[str] | None = None, prefix_ids: bool = False
                    ) -> tuple[list[ManifestRow], list[InputReport]]:
    """The kept rows of `inputs`, in order, and a report per input."""
    prefixes = [path.resolve().parent.name for path in inputs]
    if prefix_ids and len(set(prefixes)) < len(prefixes):
        raise MergeError(f"--prefix-ids: two inputs share a folder name ({prefixes}); "
                         "merge them in steps, or give the corpora distinct folders")
    rows: list[ManifestRow] = []
    reports: list[InputReport] = []
    first_seen: dict[str, Path] = {}
    for path, prefix in zip(inputs, prefixes, strict=True):
        read, skipped = read_manifest(path)
        other = excluded = 0
        start = len(rows)
        for row in read:
            if speakers is not None and not any(
                    fnmatch.fnmatchcase(row.speaker or "", pattern) for pattern in speakers):
                other += 1
                continue
            if exclude is not None and row.text in exclude:
                excluded += 1
                continue
            if prefix_ids and row.id is not None:
                row.id = f"{prefix}-{row.id}"
            if row.id is not None:
                if row.id in first_seen:
                    raise MergeError(
                        f"id {row.id!r} is in {first_seen[row.id]} and {path}:{row.line}"
                        + ("" if prefix_ids else " (--prefix-ids tells the corpora apart)"))
                first_seen[row.id] = path
            rows.append(row)
        reports.append(InputReport(path, len(rows) - start, other, excluded,
                                   summarize_skipped(skipped)))
    return rows, reports


def sample_rows(rows: list[ManifestRow], count: int, seed: int) -> list[ManifestRow]:
    """`count` of `rows` drawn at random with `seed`, kept in their order."""
    if count > len(rows):
        raise MergeError(f"--sample {count}: only {len(rows)} rows are left to sample from")
    chosen = sorted(random.Random(seed).sample(range(len(rows)), count))
    return [rows[index] for index in chosen]


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
