"""Test doubles of served models (no model): `ScriptedASRService` paces audio exactly
like a 12.5 Hz model with a fixed delay and emits a given script of words;
`ScriptedTTSService` speaks each word as a short tone. Tests and `dsm bench serve
--scripted` use them to measure what the server itself costs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from dsm.streaming.events import (
    AudioEvent,
    EndWordEvent,
    MarkerEvent,
    ReadyEvent,
    StepEvent,
    TextEvent,
    WordEvent,
)
from dsm.streaming.serve.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.serve.service import QueuedStream, SteppedService


@dataclass(frozen=True)
class ScriptWord:
    text: str
    start: float  # seconds
    end: float


@dataclass
class _ScriptedASRState:
    pcm: deque[np.ndarray]
    held: int = 0  # samples held in `pcm`
    received: int = 0  # samples pushed so far
    step_idx: int = 0
    next_word: int = 0
    open_word_end: float | None = None
    markers: deque[tuple[int, int]] | None = None  # (sample position, id)
    ending: bool = False
    flush_steps: int = 0


class ScriptedASRService(SteppedService):
    """Test double of an ASR model (no model): emits `script` as if it heard it.

    One step per 1920 samples (80 ms), like a 12.5 Hz model whose text lags the audio by
    `delay_s`: `Word` for a scripted word comes at the step where `start + delay_s` is
    reached, its `EndWord` where `end + delay_s` is, a `Step` event every step, and a
    `Marker` once the audio before it plus the delay has been stepped. `end()` pads the
    last partial frame and steps the delay out, like the real session's flush.
    """

    kind = "asr"

    def __init__(self, script: list[ScriptWord], capacity: int = 8, delay_s: float = 0.5,
                 **limits: int) -> None:
        super().__init__(capacity, **limits)
        self.script = list(script)
        self.delay_s = delay_s
        self.state: dict[int, _ScriptedASRState] = {}

    def attach(self, stream: QueuedStream) -> None:
        self.state[stream.slot] = _ScriptedASRState(pcm=deque(), markers=deque())

    def detach(self, stream: QueuedStream) -> None:
        self.state.pop(stream.slot, None)

    def _drain(self, stream: QueuedStream, state: _ScriptedASRState) -> None:
        while stream.inputs:
            kind, value = stream.inputs.popleft()
            if kind == "init":  # afresh: this state is the slot's (run_once holds it)
                fresh = _ScriptedASRState(pcm=deque(), markers=deque())
                for name in fresh.__dataclass_fields__:
                    setattr(state, name, getattr(fresh, name))
                stream.set_buffered(0)
                stream.emit(ReadyEvent())
            elif kind == "pcm":
                assert isinstance(value, np.ndarray)
                state.pcm.append(value)
                state.held += value.shape[0]
                state.received += value.shape[0]
            elif kind == "marker":
                assert state.markers is not None
                state.markers.append((state.received, int(value)))  # type: ignore[arg-type]
            elif kind == "end":
                state.ending = True
                pad = (-state.held) % FRAME_SIZE
                if pad:
                    state.pcm.append(np.zeros(pad, dtype=np.float32))
                    state.held += pad
                    stream.buffered_samples += pad
                state.flush_steps = math.ceil(self.delay_s * SAMPLE_RATE / FRAME_SIZE) + 1
            else:
                stream._finish(f"an ASR stream cannot take {kind} input")
                return

    def _take_frame(self, state: _ScriptedASRState) -> int:
        need = FRAME_SIZE
        while need > 0:
            chunk = state.pcm[0]
            if chunk.shape[0] <= need:
                state.pcm.popleft()
                need -= chunk.shape[0]
            else:
                state.pcm[0] = chunk[need:]
                need = 0
        state.held -= FRAME_SIZE
        return FRAME_SIZE

    def _step(self, stream: QueuedStream, state: _ScriptedASRState) -> None:
        if state.held >= FRAME_SIZE:
            stream.consumed(self._take_frame(state))
        else:
            state.flush_steps -= 1
        state.step_idx += 1
        now = state.step_idx * FRAME_SIZE / SAMPLE_RATE  # seconds of input stepped
        while state.next_word < len(self.script):
            word = self.script[state.next_word]
            if word.start + self.delay_s > now + 1e-9:
                break
            if state.open_word_end is not None:
                stream.emit(EndWordEvent(state.open_word_end))
            stream.emit(WordEvent(word.text, word.start))
            state.open_word_end = word.end
            state.next_word += 1
        if state.open_word_end is not None and state.open_word_end + self.delay_s <= now + 1e-9:
            stream.emit(EndWordEvent(state.open_word_end))
            state.open_word_end = None
        stream.emit(StepEvent(state.step_idx, [0.0, 0.0, 0.0, 0.0], state.held))
        assert state.markers is not None
        while state.markers:
            position, marker_id = state.markers[0]
            if position / SAMPLE_RATE + self.delay_s > now + 1e-9 and not (
                state.ending and state.flush_steps <= 0
            ):
                break
            state.markers.popleft()
            stream.emit(MarkerEvent(marker_id))

    async def run_once(self) -> bool:
        did_work = False
        for stream in list(self.streams.values()):
            state = self.state[stream.slot]
            self._drain(stream, state)
            if stream.closed:
                continue
            if state.held >= FRAME_SIZE or (state.ending and state.flush_steps > 0):
                self._step(stream, state)
                did_work = True
            if state.ending and state.held == 0 and state.flush_steps <= 0 and not stream.closed:
                if state.open_word_end is not None:
                    stream.emit(EndWordEvent(state.open_word_end))
                    state.open_word_end = None
                stream._finish(None)
        return did_work


@dataclass
class _ScriptedTTSState:
    text: str = ""
    time_s: float = 0.0
    ending: bool = False


class ScriptedTTSService(SteppedService):
    """Test double of a TTS model (no model): each complete word becomes a short tone.

    A word is complete when whitespace follows it or the input ends; one word is spoken per
    stream and step loop round, so output is paced like a model's. Per word it emits
    `Text{word, start_s, stop_s}` and `frames_per_word` audio frames of 1920 samples (a
    sine whose pitch depends on the word), so a client can check order and timing.
    """

    kind = "tts"

    def __init__(self, capacity: int = 8, frames_per_word: int = 3, **limits: int) -> None:
        super().__init__(capacity, **limits)
        self.frames_per_word = frames_per_word
        self.state: dict[int, _ScriptedTTSState] = {}

    def attach(self, stream: QueuedStream) -> None:
        self.state[stream.slot] = _ScriptedTTSState()

    def detach(self, stream: QueuedStream) -> None:
        self.state.pop(stream.slot, None)

    def _speak(self, stream: QueuedStream, state: _ScriptedTTSState, word: str) -> None:
        duration = self.frames_per_word * FRAME_SIZE / SAMPLE_RATE
        stream.emit(TextEvent(word, state.time_s, state.time_s + duration))
        frequency = 200.0 + 40.0 * (sum(map(ord, word)) % 20)
        for frame in range(self.frames_per_word):
            t = (np.arange(FRAME_SIZE) + frame * FRAME_SIZE) / SAMPLE_RATE
            stream.emit(AudioEvent((0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)))
        state.time_s += duration

    async def run_once(self) -> bool:
        did_work = False
        for stream in list(self.streams.values()):
            state = self.state[stream.slot]
            while stream.inputs and not stream.closed:
                kind, value = stream.inputs.popleft()
                if kind == "text":  # each message is whole words, as Kyutai's protocol
                    state.text += str(value) + " "
                elif kind == "end":
                    state.ending = True
                else:
                    stream._finish(f"a TTS stream cannot take {kind} input")
            if stream.closed:
                continue
            # one word per stream per round, as a model speaks it over several steps
            words = state.text.split(maxsplit=1)
            complete = bool(words) and (state.ending or len(words) > 1
                                        or state.text[-1:].isspace())
            if complete:
                did_work = True
                state.text = words[1] if len(words) > 1 else ""
                self._speak(stream, state, words[0])
            elif state.ending:
                stream._finish(None)
        return did_work
