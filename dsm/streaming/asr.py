"""Streaming speech recognition: 24 kHz pcm in, any chunk size; words with times out.

`ASRSession` is one stream's logic inside a `BatchedEngine` slot: it buffers pcm into
codec frames, reads the model's text tokens back with `dsm.streams.text_stream`'s
`TextStreamDecoder` into `WordEvent` / `EndWordEvent`, echoes markers once the audio
before them has produced its text, and at the end feeds `text_delay + max_delay + 1`
frames of silence (`dsm.streams.silence`) so that the last words come out (the flush).

Times: the engine feeds the codes of audio frame `f` at step `f + 1` (the model reads the
first input as its initial token, as in training, where inputs are shifted by one), so
output frame `j` holds text position `j`, which sits alongside audio frame `j - d`
(`d` = text delay in frames); times are those of `dsm.streams.text_stream`.

A model whose stt_config has `audio_silence_prefix_seconds` (stt-2.6b-en: 1 s) hears that
much silence before the stream's first sample, as moshi's run_inference feeds it (1 s is
12.5 frames, so the frame grid shifts by half a frame); word times stay on the clock of the
audio the client sent.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from dsm.streaming.engine import Session, SessionClosedError, SlotOutput
from dsm.streaming.events import EndWordEvent, Event, MarkerEvent, StepEvent, WordEvent
from dsm.streaming.serve.protocol import MAX_ABS_SAMPLE
from dsm.streams.silence import silence_pcm
from dsm.streams.text_stream import DecodedEvent, DecodedWord, TextStreamDecoder
from dsm.streams.tokenizer import TextTokenizer


class AudioInputError(ValueError):
    """Pcm that cannot be streamed: wrong rate, shape, type, empty or not finite."""


def check_pcm(pcm: object, sample_rate: int | None, expected_rate: int) -> np.ndarray:
    """Validate one chunk of mono pcm and return it as float32 `[N]`."""
    if sample_rate is not None and int(sample_rate) != expected_rate:
        raise AudioInputError(
            f"audio at {sample_rate} Hz, the model expects {expected_rate} Hz (resample first)"
        )
    array = np.asarray(pcm)
    if array.dtype.kind != "f":
        raise AudioInputError(f"pcm must be float samples in [-1, 1], got dtype {array.dtype}")
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise AudioInputError(f"pcm must be mono [N] samples, got shape {array.shape}")
    if array.size == 0:
        raise AudioInputError("empty pcm chunk (0 samples)")
    if not np.isfinite(array).all():
        raise AudioInputError("pcm contains non-finite samples (NaN or inf)")
    peak = float(np.abs(array).max())
    if peak > MAX_ABS_SAMPLE:
        hint = " (int16 samples? divide by 32768)" if peak <= 32768 else ""
        raise AudioInputError(
            f"pcm samples must be in [-1, 1]; found a peak of {peak:.3g}{hint}"
        )
    return array.astype(np.float32, copy=False)


def word_events(decoded: list[DecodedEvent]) -> list[Event]:
    """The decoder's words as the session's `WordEvent` / `EndWordEvent`."""
    return [WordEvent(text=item.text, start_time=item.start_time)
            if isinstance(item, DecodedWord) else EndWordEvent(stop_time=item.stop_time)
            for item in decoded]


class ASRSession(Session):
    """One speech-recognition stream. Push pcm, `end()` when done; events per step.

    `step_events=True` also emits a `StepEvent` every model step (the server's `Step`),
    with the VAD heads' probabilities when the model has extra heads.
    """

    needs_audio_input = True

    def __init__(
        self,
        tokenizer: TextTokenizer,
        *,
        sample_rate: int,
        frame_size: int,
        frame_rate: float,
        text_delay: int,
        max_delay: int = 0,
        silence_prefix: int = 0,
        step_events: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.sample_rate = int(sample_rate)
        self.frame_size = int(frame_size)
        self.frame_rate = float(frame_rate)
        self.text_delay = int(text_delay)
        self.max_delay = int(max_delay)
        self.step_events = step_events
        if silence_prefix < 0:
            raise ValueError(f"silence_prefix must not be negative, got {silence_prefix}")
        # Times count from the client's first sample: the prefix's frames join the delay.
        prefix_frames = round(silence_prefix / self.frame_size)
        self.decoder = TextStreamDecoder(tokenizer, frame_rate, self.text_delay + prefix_frames)
        self._chunks: deque[np.ndarray] = deque()
        if silence_prefix:
            self._chunks.append(silence_pcm(silence_prefix))
        self._buffered = int(silence_prefix)
        self._frames_in = 0  # audio frames taken by the engine (real or silence)
        self._real_frames = 0
        self._ended = False
        self._flush_left = 0
        self._markers: deque[tuple[int, int]] = deque()  # (frames before marker, id)
        self._samples_pushed = int(silence_prefix)
        self._steps = 0

    # --- input ----------------------------------------------------------------------------
    def push_pcm(self, pcm: object, sample_rate: int | None = None) -> None:
        """Append mono float pcm at the model's rate (any length)."""
        if self.finished:
            raise SessionClosedError("push_pcm on a finished or detached ASR session")
        if self._ended:
            raise SessionClosedError("push_pcm after end(): this stream is closed")
        array = check_pcm(pcm, sample_rate, self.sample_rate)
        self._chunks.append(array)
        self._buffered += array.size
        self._samples_pushed += array.size
        self._notify()

    def marker(self, marker_id: int) -> None:
        """Echo `MarkerEvent(marker_id)` once the audio pushed so far has given its text."""
        frames = -(-self._samples_pushed // self.frame_size)
        self._markers.append((frames, int(marker_id)))
        self._notify()

    def end(self) -> None:
        """No more audio: pad the last partial frame, then flush the delays with silence."""
        if self._ended:
            return
        self._ended = True
        self._flush_left = self.text_delay + self.max_delay + 1
        if self._buffered % self.frame_size:
            pad = self.frame_size - self._buffered % self.frame_size
            self._chunks.append(silence_pcm(pad))
            self._buffered += pad
        self._notify()

    @property
    def buffered_samples(self) -> int:
        return self._buffered

    # --- engine side ----------------------------------------------------------------------
    def ready(self) -> bool:
        if self.finished:
            return False
        return self._buffered >= self.frame_size or (self._ended and self._flush_left > 0)

    def take_frame(self) -> np.ndarray:
        if self._buffered >= self.frame_size:
            frame = self._pop(self.frame_size)
            self._real_frames += 1
        elif self._ended and self._flush_left > 0:
            frame = silence_pcm(self.frame_size)
            self._flush_left -= 1
        else:
            raise RuntimeError("take_frame on an ASR session that is not ready")
        self._frames_in += 1
        return frame

    def _pop(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        filled = 0
        while filled < n:
            chunk = self._chunks[0]
            take = min(n - filled, chunk.size)
            out[filled : filled + take] = chunk[:take]
            filled += take
            if take == chunk.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[take:]
        self._buffered -= n
        return out

    def on_output(self, output: SlotOutput) -> list[Event]:
        events: list[Event] = []
        self._steps += 1
        if output.tokens is not None:
            events.extend(word_events(self.decoder.push(int(output.tokens[0]))))
        # Output frame j (text position j) has read audio frames < j - d + 1... so the
        # markers whose audio is all in have their text out once position >= frames + d.
        position = self.decoder.position
        while self._markers and position >= self._markers[0][0] + self.text_delay:
            events.append(MarkerEvent(id=self._markers.popleft()[1]))
        if self.step_events and output.extra_probs is not None:
            # As Kyutai's server: a Step per model step, only for a model with VAD heads,
            # counted from 1. prs[h]: head h's probability of its class 0 ("the turn ends
            # within head h's horizon"; clients read e.g. prs[2] > 0.5 as end of turn).
            prs = [float(p[0]) for p in output.extra_probs]
            events.append(StepEvent(step_idx=self._steps, prs=prs, buffered_pcm=self._buffered))
        if self._ended and self._flush_left == 0 and self._buffered == 0:
            events.extend(word_events(self.decoder.flush()))
            while self._markers:
                events.append(MarkerEvent(id=self._markers.popleft()[1]))
            self.finished = True
        return events


__all__ = [
    "ASRSession",
    "AudioInputError",
    "EndWordEvent",
    "WordEvent",
    "check_pcm",
    "word_events",
]
