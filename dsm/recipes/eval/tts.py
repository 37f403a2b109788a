"""TTS intelligibility: speak texts and transcribe the speech with an independent ASR model;
`dsm eval tts --model REF` scores it per manifest row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dsm.recipes.data.manifest import ManifestRow
from dsm.recipes.eval.outputs import Output, row_key


def intelligibility(tts_model: Any, asr_model: Any, texts: Sequence[str], *, seed: int = 0,
                    tts_batch: int = 1, asr_batch: int = 8,
                    **sampling: Any) -> tuple[list[Any], list[str]]:
    """Speak `texts` (`dsm.speak`) and transcribe the speech with an independent ASR model:
    the `Speech`es and their transcripts."""
    from dsm.api import speak, transcribe

    speech = speak(list(texts), model=tts_model, seed=seed, batch_size=tts_batch, **sampling)
    transcripts = transcribe([s.pcm for s in speech], model=asr_model,
                             sample_rate=int(tts_model.codec.sample_rate), batch_size=asr_batch)
    return speech, [t.text for t in transcripts]


def tts_outputs(model: Any, rows: Sequence[ManifestRow], *, asr_model: Any = None, seed: int = 0,
                device: str | None = None) -> list[Output]:
    """{"id"|"audio", "transcript", "first_audio_s", "audio_s"} per row: its text spoken by
    `model` and heard by `asr_model` (default the shipped dsm/assets/asr)."""
    from dsm.api import load
    from dsm.recipes.tasks.tts import check_codec

    tts_model = load(model, "tts", device)
    check_codec(tts_model)
    asr = load(asr_model, "asr", device)
    speech, transcripts = intelligibility(tts_model, asr, [row.text for row in rows], seed=seed)
    rate = tts_model.codec.sample_rate
    return [{**row_key(row), "transcript": transcript,
             "first_audio_s": round(spoken.first_audio_s, 4),
             "audio_s": round(spoken.pcm.size / rate, 3)}
            for row, spoken, transcript in zip(rows, speech, transcripts, strict=True)]
