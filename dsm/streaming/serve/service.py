"""The one seam between the websocket server and whatever model serves the streams.

The server only needs a `ModelService` (open a stream or raise `CapacityError`) and the
`ModelStream`s it opens (push pcm / text / markers, end, iterate events, close). Both are
`typing.Protocol`s, so the server is tested against scripted services (`scripted_service`)
and serves the real `BatchedEngine` through `EngineService` (`engine_service`) without
knowing the difference.

`QueuedStream` and `SteppedService` are the shared machinery: per-stream input queues
with back-pressure (a client sending faster than the model steps waits, it is not
buffered without bound), per-stream output queues with a bound (a client that stops
reading is cut off instead of growing memory), and one asyncio loop task per service that
runs the batched step whenever some stream has input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from dsm.streaming.events import (
    Event,
)
from dsm.streaming.serve.protocol import SAMPLE_RATE
from dsm.streaming.serve.stream_options import StreamOptions

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
        self._count_changed = asyncio.Condition()  # `until_active` waits on it
        self._task: asyncio.Task[None] | None = None
        self.steps = 0  # batched steps run so far
        self.retry_after: float | None = None  # run_once asks to be called again after this

    @property
    def active(self) -> int:
        return len(self.streams)

    async def until_active(self, count: int) -> None:
        """Return once exactly `count` streams are open (shutdown and tests await this)."""
        async with self._count_changed:
            await self._count_changed.wait_for(lambda: self.active == count)

    def _notify_count(self) -> None:
        async def notify() -> None:
            async with self._count_changed:
                self._count_changed.notify_all()

        with contextlib.suppress(RuntimeError):  # no running loop: nobody can be waiting
            asyncio.get_running_loop().create_task(notify())

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
        self._notify_count()
        return stream

    def release(self, stream: QueuedStream) -> None:
        if self.streams.get(stream.slot) is stream:
            del self.streams[stream.slot]
            self.detach(stream)
            self._notify_count()

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
