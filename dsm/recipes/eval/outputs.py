"""The outputs `dsm eval` scores: JSONL rows, one per utterance, paired with the reference
manifest's rows by "id", else by "audio" path, else by position."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsm.recipes.data.manifest import ManifestRow, jsonl_objects

Output = dict[str, Any]


class EvalError(ValueError):
    """Outputs or references are unusable; the message names the file and the row."""


def row_key(row: ManifestRow) -> dict[str, str]:
    """How a model's output names its manifest row: {"id": ...}, or {"audio": ...} without one."""
    return {"id": row.id} if row.id is not None else {"audio": row.audio}


def read_outputs(path: str | os.PathLike[str]) -> list[Output]:
    """The JSON objects of a JSONL file, with `_line` (line number) and `_base` (folder)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"outputs file not found: {path}")
    outputs = []
    for number, row in jsonl_objects(path, EvalError):
        row["_line"], row["_base"] = number, str(path.parent)
        outputs.append(row)
    return outputs


def pair_outputs(rows: Sequence[ManifestRow], outputs: Sequence[Output], source: str = "outputs"
                 ) -> list[Output | None]:
    """For each manifest row, its output (None when there is none).

    Outputs name their row by "id", else by "audio" (the same file as the manifest's, any
    relative path taken from the outputs' folder); with neither, they pair by position,
    which needs as many outputs as rows. An output naming no row, or a row twice, is an error.
    """
    if not outputs:
        return [None] * len(rows)
    keyed = [o for o in outputs if "id" in o or "audio" in o]
    if not keyed:
        if len(outputs) != len(rows):
            raise EvalError(
                f"{source}: {len(outputs)} outputs without 'id' or 'audio' for {len(rows)} "
                "manifest rows: give each output an 'id' (or 'audio'), or one per row in order"
            )
        return list(outputs)
    if len(keyed) != len(outputs):
        unkeyed = next(o for o in outputs if "id" not in o and "audio" not in o)
        raise EvalError(f"{source}:{unkeyed['_line']}: output has neither 'id' nor 'audio'")
    by_id = {row.id: i for i, row in enumerate(rows) if row.id is not None}
    by_audio = {os.path.realpath(row.audio): i for i, row in enumerate(rows)}
    paired: list[Output | None] = [None] * len(rows)
    for output in outputs:
        if "id" in output:
            index = by_id.get(str(output["id"]))
            what = f"id {output['id']!r}"
        else:
            index = by_audio.get(os.path.realpath(resolve_path(output, str(output["audio"]))))
            what = f"audio {output['audio']!r}"
        if index is None:
            raise EvalError(f"{source}:{output['_line']}: {what} is not in the manifest")
        if paired[index] is not None:
            raise EvalError(f"{source}:{output['_line']}: a second output for {what}")
        paired[index] = output
    return paired


def resolve_path(output: Output, path: str) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        return str(candidate)
    beside = Path(output.get("_base", ".")) / candidate
    return str(beside if beside.exists() or not candidate.exists() else candidate)
