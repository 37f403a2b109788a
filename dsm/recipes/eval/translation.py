"""`dsm eval translation --model REF`: translate the source side of each target manifest
row (paired by id) into the {"id", "text"} hypotheses BLEU scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsm.recipes.data.manifest import ManifestError, ManifestRow, read_manifest
from dsm.recipes.eval.outputs import EvalError, Output


def source_manifest_for(target_manifest: str) -> Path:
    """The source side of a `dsm data synth --parallel` pair: X.fr.jsonl -> X.en.jsonl."""
    path = Path(target_manifest)
    parts = path.name.split(".")
    if len(parts) >= 3 and parts[-1] == "jsonl" and parts[-2] != "en":
        return path.with_name(".".join([*parts[:-2], "en", "jsonl"]))
    return path


def translation_outputs(model: Any, rows: list[ManifestRow], manifest: str,
                        source_manifest: str | None = None, *,
                        device: str | None = None) -> list[Output]:
    """Hypotheses for the target-language `rows` of `manifest`, translating the rows of the
    same ids in `source_manifest` (default: X.en.jsonl beside X.fr.jsonl)."""
    from dsm.api import load, translate
    from dsm.models.model_dir import read_audio

    source_path = Path(source_manifest or source_manifest_for(manifest))
    if source_path == Path(manifest):
        raise EvalError(f"{manifest}: give --source-manifest (the source-language side of "
                        "these pairs, matched by id)")
    try:
        sources, _ = read_manifest(source_path)
    except ManifestError as error:
        raise EvalError(f"source manifest: {error}") from None
    by_id = {row.id: row for row in sources if row.id is not None}
    missing = [row.id for row in rows if row.id not in by_id]
    if missing:
        raise EvalError(f"{source_path}: no source row for id(s) {', '.join(map(str, missing[:5]))}"
                        + (" ..." if len(missing) > 5 else ""))
    translator = load(model, "translation", device)
    pcms = [read_audio(by_id[row.id].audio, translator.codec.sample_rate) for row in rows]
    translations = translate(pcms, model=translator)
    return [{"id": row.id, "text": t.text} for row, t in zip(rows, translations, strict=True)]
