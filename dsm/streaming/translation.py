"""Streaming speech translation: source pcm in; target text and, when the model has audio
heads, target speech out.

The model reads the source audio and writes the target text stream behind it (the
`text_delay`, like ASR), and its generated audio rows (if any) are the target speech.
`TranslationSession` is an `ASRSession` (same input buffering, flush, markers, and
`WordEvent` / `EndWordEvent` for the target words, timed on the source clock) that also
emits the target audio as `AudioEvent`s, one per output frame from the first one on.

Kyutai's Hibiki (`end_of_input=True`) is told where the source ends: after the last source
frame it reads one frame whose codes are all `card` (`END_OF_INPUT`), then silence, until
it writes its text EOS: the translation is complete. An EOS written before that is read as
padding (the model is not done while the source goes on), as moshi's run_inference does.
"""

from __future__ import annotations

import numpy as np

from dsm.streaming.asr import ASRSession
from dsm.streaming.engine import END_OF_INPUT, SlotOutput
from dsm.streaming.events import AudioEvent, Event
from dsm.streams.silence import silence_pcm

# Hibiki: after the end of the source, how long it may go on before it is stopped (frames of
# the source's own length, at least this many): it normally ends itself with its EOS.
MIN_TAIL_FRAMES = 125
# Other models read silence after the source so that a target running longer than its
# source can finish (dsm's translation recipe trains them so): max(TAIL_MIN_S, TAIL_RATIO x
# the source's duration).
TAIL_MIN_S = 1.0
TAIL_RATIO = 0.5


def push_source(session: TranslationSession, pcm: np.ndarray, sample_rate: int) -> None:
    """The whole source into `session`, then the end of input (and, for models not told
    where the source ends, the silence their target may still need)."""
    session.push_pcm(pcm)
    if not session.end_of_input:
        tail_s = max(TAIL_MIN_S, TAIL_RATIO * pcm.size / sample_rate)
        session.push_pcm(silence_pcm(round(tail_s * sample_rate)))
    session.end()


class TranslationSession(ASRSession):
    """Source audio in (any chunk size), target words and target audio out."""

    def __init__(self, *args: object, audio_out: bool = True, end_of_input: bool = False,
                 eos_id: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if end_of_input and eos_id is None:
            raise ValueError("end_of_input needs the model's text eos_id")
        self.audio_out = audio_out
        self.audio_frames = 0
        self.end_of_input = end_of_input
        self.eos_id = eos_id
        self._end_marker_due = False
        self._end_marker_taken = False  # the engine took it (it reads it the step after)
        self._end_marker_read = False  # the model has read it: its EOS now ends the stream
        self.reached_eos = False

    def end(self) -> None:
        if self._ended or not self.end_of_input:
            super().end()
            return
        super().end()
        source_frames = -(-self._samples_pushed // self.frame_size)
        self._flush_left = max(source_frames, MIN_TAIL_FRAMES) + self.text_delay + self.max_delay
        self._end_marker_due = True

    def take_frame(self) -> np.ndarray | None:
        if self._end_marker_due and self._buffered < self.frame_size:
            self._end_marker_due = False
            self._end_marker_taken = True
            self._flush_left -= 1
            self._frames_in += 1
            return END_OF_INPUT
        return super().take_frame()

    def on_output(self, output: SlotOutput) -> list[Event]:
        events: list[Event] = []
        if self.end_of_input and output.tokens is not None and output.tokens[0] == self.eos_id:
            if self._end_marker_read:
                self.reached_eos = True
                self._flush_left = 0
                self._buffered = 0
                self._chunks.clear()
            tokens = np.array(output.tokens, copy=True)
            tokens[0] = self.decoder.tokenizer.pad_id
            output = SlotOutput(tokens=tokens, pcm=output.pcm, extra_probs=output.extra_probs)
        if self.audio_out and output.pcm is not None and output.tokens is not None:
            events.append(AudioEvent(pcm=np.asarray(output.pcm, dtype=np.float32).copy()))
            self.audio_frames += 1
        events.extend(super().on_output(output))
        self._end_marker_read = self._end_marker_taken
        return events
