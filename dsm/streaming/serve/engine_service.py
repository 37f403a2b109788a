"""The real served model: a `BatchedEngine` behind the server's seam (`service`), loaded
from a model directory or a Hugging Face repo id."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Literal

from dsm.streaming.events import (
    ReadyEvent,
)
from dsm.streaming.serve.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.serve.service import DEFAULT_MAX_BUFFERED_S, QueuedStream, SteppedService
from dsm.streaming.serve.stream_options import StreamOptions

log = logging.getLogger("dsm.serve")


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

    from dsm.models.model_dir import resolve_model
    from dsm.streaming.model_dir import load_model_dir

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
