"""`dsm eval asr --model REF`: transcribe every manifest row's audio, streaming as
`dsm transcribe` does, into the outputs `evaluate_asr` scores."""

from __future__ import annotations

from typing import Any

from dsm.recipes.data.manifest import ManifestRow
from dsm.recipes.eval.outputs import Output, row_key


def asr_outputs(model: Any, rows: list[ManifestRow], *, device: str | None = None,
                batch_size: int = 8) -> list[Output]:
    """{"id"|"audio", "text", "words": [{"word", "time"}]} per row; `model`: a directory, a
    Hugging Face repo id or a loaded model."""
    from dsm.api import load, transcribe
    from dsm.models.model_dir import read_audio

    model = load(model, "asr", device)
    pcms = [read_audio(row.audio, model.codec.sample_rate) for row in rows]
    transcripts = transcribe(pcms, model=model, batch_size=batch_size)
    return [{**row_key(row), "text": transcript.text,
             "words": [{"word": w.text, "time": w.emitted} for w in transcript.words]}
            for row, transcript in zip(rows, transcripts, strict=True)]
