"""Stream specifications: which streams make up a task's token tensor, in which rows.

A multistream LM sees one token tensor `[B, S, T]` whose rows are, in Kyutai's order,
the text stream (row 0), then the audio streams the model generates, then the audio
streams it only reads. A `StreamSpec` names one stream, says whether it is text or audio,
how many codebook rows it spans and how many frames it lags the shared time axis (`delay`:
the DSM alignment shift, e.g. ASR text 6 frames after the audio, TTS audio 16 frames after
the text). Per-codebook acoustic delays inside an audio stream (Kyutai's `delays`) are a
model matter applied by the LM, not part of the data layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

TASKS = ("asr", "tts", "translation")


@dataclass(frozen=True)
class StreamSpec:
    """One stream: `codebooks` rows of kind text (always 1 row) or audio, lagging `delay`."""

    name: str
    kind: Literal["text", "audio"]
    codebooks: int = 1
    delay: int = 0
    generated: bool = True  # the model predicts it (False: input only)

    def __post_init__(self) -> None:
        if self.kind not in ("text", "audio"):
            raise ValueError(f"stream {self.name!r}: kind must be 'text' or 'audio'")
        if self.kind == "text" and self.codebooks != 1:
            raise ValueError(f"text stream {self.name!r} has exactly one row")
        if self.codebooks < 1:
            raise ValueError(f"stream {self.name!r} needs at least one codebook")
        if self.delay < 0:
            raise ValueError(f"stream {self.name!r}: delay must be >= 0 frames")


def row_slices(streams: Sequence[StreamSpec]) -> dict[str, slice]:
    """Rows of each stream in the token tensor, in the given order."""
    slices: dict[str, slice] = {}
    row = 0
    for spec in streams:
        if spec.name in slices:
            raise ValueError(f"two streams named {spec.name!r}")
        slices[spec.name] = slice(row, row + spec.codebooks)
        row += spec.codebooks
    return slices


def num_rows(streams: Sequence[StreamSpec]) -> int:
    return sum(spec.codebooks for spec in streams)


def task_streams(
    task: str,
    num_codebooks: int,
    text_delay: int = 0,
    audio_delay: int = 0,
) -> list[StreamSpec]:
    """The streams of a DSM task, in token-tensor row order.

    - asr: text (generated, lags by `text_delay`), audio (input).
    - tts: text (input-driven, no lag), audio (generated, lags by `audio_delay`).
    - translation: target text (lags the source by `text_delay`), target audio (generated,
      lags by `audio_delay`), source audio (input).
    """
    if task == "asr":
        return [
            StreamSpec("text", "text", 1, text_delay),
            StreamSpec("audio", "audio", num_codebooks, 0, generated=False),
        ]
    if task == "tts":
        return [
            StreamSpec("text", "text", 1, 0),
            StreamSpec("audio", "audio", num_codebooks, audio_delay),
        ]
    if task == "translation":
        return [
            StreamSpec("text", "text", 1, text_delay),
            StreamSpec("target_audio", "audio", num_codebooks, audio_delay),
            StreamSpec("source_audio", "audio", num_codebooks, 0, generated=False),
        ]
    raise ValueError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
