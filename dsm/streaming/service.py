"""The one seam between the websocket server and whatever model serves the streams.

The server only needs a `ModelService` (open a stream or raise `CapacityError`) and the
`ModelStream`s it opens (push pcm / text / markers, end, iterate events, close). Both are
`typing.Protocol`s, so the server is tested against small scripted services, and serves
the real `BatchedEngine` through `EngineASRService` / `EngineTTSService` (below) without
knowing the difference.

`QueuedStream` and `SteppedService` are the shared machinery: per-stream input queues
with back-pressure (a client sending faster than the model steps waits, it is not
buffered without bound), per-stream output queues with a bound (a client that stops
reading is cut off instead of growing memory), and one asyncio loop task per service that
runs the batched step whenever some stream has input.

`ScriptedASRService` / `ScriptedTTSService` are test doubles (no model): they pace audio
exactly like a 12.5 Hz model with a fixed delay and emit a given script. Tests and
`dsm bench serve --scripted` use them to measure what the server itself costs.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from dsm.streaming.events import (
    AudioEvent,
    EndWordEvent,
    Event,
    MarkerEvent,
    ReadyEvent,
    StepEvent,
    TextEvent,
    WordEvent,
)
from dsm.streaming.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.stream_options import StreamOptions

log = logging.getLogger("dsm.serve")


# Audio a served stream may hold ahead of the model: Kyutai's file client sends 1 s of
# silence, the file, then 40 s of silence around its marker, faster than real time, and
# closes only once all of it is sent (4.6 MB of float32 at 24 kHz per stream).
DEFAULT_MAX_BUFFERED_S = 48.0


class CapacityError(RuntimeError):
    """Every slot of the service is taken; the message says how many there are."""


class StreamError(RuntimeError):
    """The stream cannot go on (bad input for the model, client not reading, shutdown)."""


@runtime_checkable
class ModelStream(Protocol):
    """One client's stream inside a service."""

    async def push_pcm(self, pcm: np.ndarray) -> None:
        """ASR: more float32 24 kHz mono samples `[N]`. Waits while the stream is full."""

    async def push_text(self, text: str) -> None:
        """TTS: more text (words may be split across calls)."""

    async def push_marker(self, marker_id: int) -> None:
        """ASR: echo `MarkerEvent(marker_id)` once everything pushed before is processed."""

    async def end(self) -> None:
        """No more input: process what is pending, then the events end."""

    async def reset(self) -> None:
        """Start afresh (Kyutai's `Init`): earlier input dropped, then a `ReadyEvent`."""

    def __aiter__(self) -> AsyncIterator[Event]:
        """The stream's events until it ends; raises `StreamError` if it failed."""

    async def close(self) -> None:
        """Leave now (client gone): frees the slot at once. Idempotent."""


@runtime_checkable
class ModelService(Protocol):
    kind: Literal["asr", "tts"]
    capacity: int  # slots

    @property
    def active(self) -> int:
        """Streams open right now."""

    async def start(self) -> None: ...

    async def open(self, options: StreamOptions | None = None) -> ModelStream:
        """A new stream in a free slot, or `CapacityError`."""

    async def stop(self) -> None:
        """Stop the step loop; streams still open fail with `StreamError`."""


# --- shared machinery ------------------------------------------------------------------

_END = object()


class QueuedStream:
    """A `ModelStream` whose input is drained by a `SteppedService`'s loop."""

    def __init__(self, service: SteppedService, slot: int, max_buffered_samples: int,
                 max_pending_events: int, options: StreamOptions | None = None) -> None:
        self.service = service
        self.slot = slot
        self.options = options or StreamOptions()
        self.inputs: deque[tuple[str, object]] = deque()  # ("pcm"|"text"|"marker"|"end", x)
        self.buffered_samples = 0  # queued or held by the service, not yet stepped
        self.max_buffered_samples = max_buffered_samples
        self.max_pending_events = max_pending_events
        self.ended = False  # no more input
        self.closed = False  # slot released
        self.error: str | None = None
        self.input_refused = False  # it ended on input its session refused (a client fault)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()

    # client side -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise StreamError(self.error or "stream is closed")
        if self.ended:
            raise StreamError("stream input already ended")

    async def push_pcm(self, pcm: np.ndarray) -> None:
        self._check_open()
        samples = np.asarray(pcm, dtype=np.float32).reshape(-1)
        while self.buffered_samples >= self.max_buffered_samples and not self.closed:
            self._room.clear()
            await self._room.wait()
        self._check_open()
        self.inputs.append(("pcm", samples))
        self.buffered_samples += samples.shape[0]
        self.service.wake()

    async def push_text(self, text: str) -> None:
        self._check_open()
        self.inputs.append(("text", text))
        self.service.wake()

    async def push_marker(self, marker_id: int) -> None:
        self._check_open()
        self.inputs.append(("marker", marker_id))
        self.service.wake()

    async def end(self) -> None:
        if self.closed or self.ended:
            return
        self.ended = True
        self.inputs.append(("end", None))
        self.service.wake()

    async def reset(self) -> None:
        """Kyutai's `Init`: what came before is dropped, the stream starts afresh and says
        `Ready` (a `ReadyEvent`) once it has."""
        self._check_open()
        self.ended = False
        self.inputs.append(("init", None))
        self.service.wake()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            item = await self._events.get()
            if item is _END:
                if self.error is not None:
                    raise StreamError(self.error)
                return
            yield item  # type: ignore[misc]

    async def close(self) -> None:
        self._finish(None)

    # service side ----------------------------------------------------------------------
    def consumed(self, samples: int) -> None:
        """The service stepped `samples` of this stream's buffered audio."""
        self.buffered_samples -= samples
        if self.buffered_samples < self.max_buffered_samples:
            self._room.set()

    def set_buffered(self, samples: int) -> None:
        """The stream's audio not yet stepped is now `samples` (queued + held by a session)."""
        self.buffered_samples = samples
        if samples < self.max_buffered_samples:
            self._room.set()

    def emit(self, event: Event) -> None:
        if self.closed:
            return
        if self._events.qsize() >= self.max_pending_events:
            self._finish(f"client is not reading: {self.max_pending_events} messages pending")
            return
        self._events.put_nowait(event)

    def _finish(self, error: str | None) -> None:
        """Release the slot; the event iteration ends (with `error` if given)."""
        if self.closed:
            return
        self.closed = True
        self.error = error
        self._events.put_nowait(_END)
        self._room.set()
        self.service.release(self)


class SteppedService:
    """Slots, a wake-up event and one loop task; subclasses implement `run_once`."""

    kind: Literal["asr", "tts"]

    def __init__(self, capacity: int, max_buffered_samples: int = 4 * SAMPLE_RATE,
                 max_pending_events: int = 2000) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.max_buffered_samples = max_buffered_samples
        self.max_pending_events = max_pending_events
        self.streams: dict[int, QueuedStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.steps = 0  # batched steps run so far
        self.retry_after: float | None = None  # run_once asks to be called again after this

    @property
    def active(self) -> int:
        return len(self.streams)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"{self.kind}-step-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for stream in list(self.streams.values()):
            stream._finish("the server is shutting down")

    async def open(self, options: StreamOptions | None = None) -> QueuedStream:
        """A stream in a free slot. Raises `CapacityError` when none is free, and
        `ValueError` when this service cannot honour `options` (the slot stays free)."""
        if self._task is None:
            raise StreamError(f"the {self.kind} service is not running")
        free = next((slot for slot in range(self.capacity) if slot not in self.streams), None)
        if free is None:
            raise CapacityError(
                f"all {self.capacity} {self.kind.upper()} streams are busy; try again later"
            )
        stream = QueuedStream(self, free, self.max_buffered_samples, self.max_pending_events,
                              options)
        self.streams[free] = stream
        try:
            self.attach(stream)
        except BaseException:
            del self.streams[free]
            raise
        return stream

    def release(self, stream: QueuedStream) -> None:
        if self.streams.get(stream.slot) is stream:
            del self.streams[stream.slot]
            self.detach(stream)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            if self.retry_after is None:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.retry_after)
                except TimeoutError:
                    pass
            self._wake.clear()
            self.retry_after = None
            try:
                while await self.run_once():
                    self.steps += 1
                    await asyncio.sleep(0)  # let clients push and read between steps
            except Exception as error:  # a broken step fails its streams, not the server
                log.exception("%s step failed", self.kind)
                for stream in list(self.streams.values()):
                    stream._finish(f"internal error in the {self.kind} model step: {error}")

    # to implement ----------------------------------------------------------------------
    def attach(self, stream: QueuedStream) -> None:
        """A stream took `stream.slot`."""

    def detach(self, stream: QueuedStream) -> None:
        """`stream` left its slot (ended, failed or closed)."""

    async def run_once(self) -> bool:
        """Drain inputs, run one batched step if any stream is ready; True if it did work."""
        raise NotImplementedError


# --- scripted test doubles ---------------------------------------------------------------


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


# --- the real thing: a BatchedEngine behind the same seam --------------------------------


class EngineService(SteppedService):
    """A `ModelService` over one `BatchedEngine` (ASR or TTS sessions).

    `make_session(options)` builds a fresh session for a stream's `StreamOptions`
    (`ASRSession` with `step_events=True`, or `TTSSession`), raising `ValueError` for
    options it cannot honour; each stream gets one in an engine slot. Client input reaches the
    sessions only from this loop, between engine steps (a step runs in a worker thread, so
    the event loop keeps serving clients while the model computes).

    When to step (only the ready slots advance; the others keep their state as it was):
    - ASR: when some stream has a whole frame or is flushing. A stream whose audio is late
      simply waits: nothing is ever added to what a client sent, so its words are those of
      `dsm transcribe` on the same audio, whatever the pacing and the neighbours.
    - TTS: when some stream has words to speak or is finishing; a stream waiting for its
      next words keeps its state meanwhile, and nobody steps while all of them wait.
    """

    def __init__(self, kind: Literal["asr", "tts"], engine: object, make_session: object,
                 **limits: int) -> None:
        super().__init__(engine.num_slots, **limits)  # type: ignore[attr-defined]
        self.kind = kind
        self.engine = engine
        self.make_session = make_session
        self.sessions: dict[int, object] = {}  # stream slot -> engine session
        # Joining and leaving the engine happen between steps only (a step may be running
        # in its worker thread when a client connects or vanishes; resetting a slot then
        # would race with the step writing that slot's state).
        self._to_attach: list[object] = []
        self._to_detach: list[object] = []

    def attach(self, stream: QueuedStream) -> None:
        session = self.make_session(stream.options)  # type: ignore[operator]
        self.sessions[stream.slot] = session
        self._to_attach.append(session)
        self.wake()

    def detach(self, stream: QueuedStream) -> None:
        session = self.sessions.pop(stream.slot, None)
        if session is None:
            return
        if any(pending is session for pending in self._to_attach):
            self._to_attach = [p for p in self._to_attach if p is not session]
        else:
            self._to_detach.append(session)
        self.wake()

    def _apply_joins_and_leaves(self) -> None:
        for session in self._to_detach:
            if not session.finished:  # type: ignore[attr-defined]
                self.engine.detach(session)  # type: ignore[attr-defined]
        for session in self._to_attach:
            self.engine.attach(session)  # type: ignore[attr-defined]
        self._to_detach.clear()
        self._to_attach.clear()

    async def stop(self) -> None:
        await super().stop()
        self.engine.close()  # type: ignore[attr-defined]

    def _feed(self, stream: QueuedStream, session: object) -> None:
        """Hand the stream's queued input to its session; bad input fails the stream only."""
        try:
            while stream.inputs:
                kind, value = stream.inputs.popleft()
                if kind == "init":  # a fresh session in the same slot, from the next step on
                    self.detach(stream)
                    self.attach(stream)
                    stream.set_buffered(sum(v.shape[0] for k, v in stream.inputs if k == "pcm"))
                    stream.emit(ReadyEvent())
                    return
                if kind == "pcm":
                    if value.shape[0]:  # type: ignore[union-attr]
                        session.push_pcm(value)  # type: ignore[attr-defined]
                elif kind == "marker":
                    session.marker(value)  # type: ignore[attr-defined]
                elif kind == "text":  # Kyutai's protocol: each message is whole words
                    session.push_text(value, whole_words=True)  # type: ignore[attr-defined]
                elif kind == "end":
                    if self.kind == "asr":
                        session.end()  # type: ignore[attr-defined]
                    elif not session.has_text:  # type: ignore[attr-defined]
                        stream._finish(None)  # nothing to say: a normal close, as Kyutai's
                        return
                    else:
                        session.end_text()  # type: ignore[attr-defined]
        except (ValueError, RuntimeError, AttributeError) as error:
            stream.input_refused = True
            stream._finish(f"{self.kind.upper()} input refused: {error}")

    def _sync_buffered(self, stream: QueuedStream, session: object) -> None:
        queued = sum(v.shape[0] for k, v in stream.inputs if k == "pcm")  # type: ignore[union-attr]
        stream.set_buffered(queued + getattr(session, "buffered_samples", 0))

    def _should_step(self) -> bool:
        return bool(self.sessions) and bool(self.engine.ready())  # type: ignore[attr-defined]

    async def run_once(self) -> bool:
        self._apply_joins_and_leaves()
        for stream in list(self.streams.values()):
            session = self.sessions.get(stream.slot)
            if session is not None:
                self._feed(stream, session)
        if not self._should_step():
            return False
        results = await asyncio.to_thread(self.engine.step)  # type: ignore[attr-defined]
        by_session = {id(s): stream for stream in self.streams.values()
                      if (s := self.sessions.get(stream.slot)) is not None}
        for session, events in results.items():
            stream = by_session.get(id(session))
            if stream is None:
                continue
            for event in events:
                stream.emit(event)
            if session.finished:
                stream._finish(session.error)
            else:
                self._sync_buffered(stream, session)
        return True


DEFAULT_STREAM_TOP_K = 250  # Kyutai's TTS server default top_k: the most a stream may ask


def load_engine_service(kind: Literal["asr", "tts"], directory: str | Path, max_streams: int,
                        device: str | None = None, cuda_graph: bool = True,
                        max_buffered_s: float = DEFAULT_MAX_BUFFERED_S,
                        stream_top_k: int = DEFAULT_STREAM_TOP_K,
                        **sampling: Any) -> EngineService:
    """A served model from a model directory or a Hugging Face repo id (`resolve_model`: the
    same format and loader as `dsm transcribe --model REF` / `dsm speak --model REF`),
    `max_streams` slots, each holding at most `max_buffered_s` of a client's audio ahead of
    the model (past that the server stops reading that client until the model catches up).

    Greedy decoding unless the directory's `lm_gen_config` or `sampling` say otherwise.
    A TTS stream may bring its own seed, temperature and top-k (at most `stream_top_k`;
    0: none may), a step limit, and, for a voice-conditioned model, a voice and cfg_alpha
    (`StreamOptions`).
    """
    import torch

    from dsm.streaming.model_dir import load_model_dir, resolve_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model_dir(resolve_model(directory, kind), device=device)
    if model.task != kind:
        raise ValueError(f"{model.path} is a {model.task} model: it cannot serve {kind.upper()}")
    codec = model.codec
    if codec.sample_rate != SAMPLE_RATE or codec.frame_size != FRAME_SIZE:
        raise ValueError(f"{model.path}: the server speaks 24 kHz in 1920-sample frames; this "
                         f"codec runs at {codec.sample_rate} Hz with {codec.frame_size}-sample "
                         "frames")
    if kind == "tts" and stream_top_k > 0:
        sampling["max_slot_top_k"] = stream_top_k
    engine = model.engine(max_streams, cuda_graph=cuda_graph, **sampling)
    limit = max(FRAME_SIZE, int(max_buffered_s * SAMPLE_RATE))
    if kind == "asr":
        return EngineService("asr", engine, lambda options: model.asr_session(step_events=True),
                             max_buffered_samples=limit)
    return EngineService("tts", engine, lambda options: tts_session(model, engine, options),
                         max_buffered_samples=limit)


def tts_session(model: Any, engine: Any, options: StreamOptions | None) -> Any:
    """A served TTS stream's session with the client's `StreamOptions` (ValueError, before
    the stream takes a slot, for what this model or engine cannot honour)."""
    options = options or StreamOptions()
    engine.check_sampling(options.temperature, options.top_k)
    kwargs: dict[str, Any] = {}
    if options.seed is not None:
        kwargs["seed"] = options.seed
    if getattr(model, "takes_voice", False):
        if options.voice is not None:
            kwargs["voice"] = options.voice
        if options.cfg_alpha is not None:
            kwargs["cfg_alpha"] = options.cfg_alpha
    else:
        ignored = [f"{name}={value!r}" for name, value in
                   (("voice", options.voice), ("cfg_alpha", options.cfg_alpha)) if value is not None]
        if ignored:  # Kyutai's clients always name a voice; this model has one voice only
            log.warning("TTS stream: %s ignored: %s is not voice-conditioned",
                        ", ".join(ignored), getattr(model, "path", "the model"))
    session = model.tts_session(**kwargs)
    session.temperature = options.temperature
    session.top_k = options.top_k
    session.max_steps = options.max_seq_len
    return session
