"""Streaming speech recognition: 24 kHz pcm in, any chunk size; words with times out.

`ASRSession` is one stream's logic inside a `BatchedEngine` slot: it buffers pcm into
codec frames, reads the model's text tokens back with `TextStreamDecoder` into
`WordEvent` / `EndWordEvent`, echoes markers once the audio before them has produced its
text, and at the end feeds `text_delay + max_delay + 1` frames of silence so that the last
words come out (the flush).

Times: the engine feeds the codes of audio frame `f` at step `f + 1` (the model reads the
first input as its initial token, as in training, where inputs are shifted by one), so
output frame `j` holds text position `j`, which sits alongside audio frame `j - d`
(`d` = text delay in frames); times are those of `dsm.streams.alignment`.

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
from dsm.streams.tokenizer import TextTokenizer


class AudioInputError(ValueError):
    """Pcm that cannot be streamed: wrong rate, shape, type, empty or not finite."""


class TextStreamDecoder:
    """Feed text tokens one position at a time (`push`); get word events back."""

    def __init__(self, tokenizer: TextTokenizer, frame_rate: float, delay: int = 0) -> None:
        self.tokenizer = tokenizer
        self.frame_rate = float(frame_rate)
        self.delay = int(delay)
        self.position = -1  # text position of the last token pushed
        self._boundary: float | None = None
        self._tokens: list[int] = []
        self._start = 0.0
        self._last_token_position = -1
        self._sent = False  # the open word's Word event(s) went out
        self._pending_end: float | None = None  # an emitted word waiting for its EndWord

    def _boundary_time(self, position: int) -> float:
        return (position + 1 - self.delay) / self.frame_rate

    def push(self, token: int) -> list[Event]:
        """Read the token at the next text position."""
        self.position += 1
        p = self.position
        token = int(token)
        events: list[Event] = []
        if token == self.tokenizer.word_start_id:
            time = self._boundary_time(p)
            if self._tokens:
                if not self._sent:
                    events.extend(self._send_words(time))
                events.append(EndWordEvent(stop_time=time))
                self._tokens = []
                self._sent = False
            self._boundary = time
        elif token < 0 or token == self.tokenizer.pad_id:
            if self._tokens and not self._sent:
                events.extend(self._send_words(None))
        else:
            if self._tokens and self._sent:
                # More tokens after the word went out (no 0 between): a new word starts here.
                start = (p - self.delay) / self.frame_rate
                events.append(EndWordEvent(stop_time=start))
                self._tokens = []
                self._sent = False
                self._boundary = start
            if not self._tokens:
                if self._boundary is not None:
                    self._start = self._boundary
                else:
                    self._start = (p - self.delay) / self.frame_rate
            self._tokens.append(token)
            self._last_token_position = p
        return events

    def flush(self) -> list[Event]:
        """End of stream: close the open word, if any."""
        events: list[Event] = []
        if self._tokens:
            end = self._boundary_time(self._last_token_position)
            if not self._sent:
                events.extend(self._send_words(end))
            events.append(EndWordEvent(stop_time=end))
            self._tokens = []
            self._sent = False
        return events

    def _send_words(self, end: float | None) -> list[Event]:
        """Word events of the open segment; intermediate words also get their EndWord."""
        groups: list[list[int]] = []
        for token in self._tokens:
            piece = self.tokenizer.id_to_piece(token)
            if not groups or (
                piece.startswith("\u2581") and self.tokenizer.decode(groups[-1]).strip()
            ):
                groups.append([token])
            else:
                groups[-1].append(token)
        texts = [(g, self.tokenizer.decode(g).strip()) for g in groups]
        kept = [(g, t) for g, t in texts if t]
        self._sent = True
        events: list[Event] = []
        cursor = self._start
        for index, (group, text) in enumerate(kept):
            events.append(WordEvent(text=text, start_time=cursor))
            if index < len(kept) - 1:
                group_end = cursor + len(group) / self.frame_rate
                if end is not None:
                    group_end = min(group_end, end)
                events.append(EndWordEvent(stop_time=group_end))
                cursor = group_end
        return events


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
            self._chunks.append(np.zeros(int(silence_prefix), dtype=np.float32))
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
            self._chunks.append(np.zeros(pad, dtype=np.float32))
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
            frame = np.zeros(self.frame_size, dtype=np.float32)
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
            events.extend(self.decoder.push(int(output.tokens[0])))
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
            events.extend(self.decoder.flush())
            while self._markers:
                events.append(MarkerEvent(id=self._markers.popleft()[1]))
            self.finished = True
        return events


__all__ = [
    "ASRSession",
    "AudioInputError",
    "EndWordEvent",
    "TextStreamDecoder",
    "WordEvent",
    "check_pcm",
]
