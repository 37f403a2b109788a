"""Streaming speech translation: source pcm in; target text and, when the model has audio
heads, target speech out.

The model reads the source audio and writes the target text stream behind it (the
`text_delay`, like ASR), and its generated audio rows (if any) are the target speech.
`TranslationSession` is an `ASRSession` (same input buffering, flush, markers, and
`WordEvent` / `EndWordEvent` for the target words, timed on the source clock) that also
emits the target audio as `AudioEvent`s, one per output frame from the first one on.
"""

from __future__ import annotations

import numpy as np

from dsm.streaming.asr import ASRSession
from dsm.streaming.engine import SlotOutput
from dsm.streaming.events import AudioEvent, Event


class TranslationSession(ASRSession):
    """Source audio in (any chunk size), target words and target audio out."""

    def __init__(self, *args: object, audio_out: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.audio_out = audio_out
        self.audio_frames = 0

    def on_output(self, output: SlotOutput) -> list[Event]:
        events: list[Event] = []
        if self.audio_out and output.pcm is not None and output.tokens is not None:
            events.append(AudioEvent(pcm=np.asarray(output.pcm, dtype=np.float32).copy()))
            self.audio_frames += 1
        events.extend(super().on_output(output))
        return events
