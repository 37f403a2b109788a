"""Merge manifests: filter rows by speaker, drop the texts of other manifests, sample rows."""

from __future__ import annotations

import fnmatch
import random
from dataclasses import dataclass
from pathlib import Path

from dsm.recipes.data.manifest import (
    ManifestError,
    ManifestRow,
    jsonl_objects,
    read_manifest,
    summarize_skipped,
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
