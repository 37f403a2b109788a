"""`BatchedEngine`: one `LMStreamer` and one codec serving N independent slots.

Sessions (ASR, TTS, translation) attach to a free slot, take input while attached, and
get their events from the engine's steps. One engine step runs, for all N slots at once:
codec `encode_step` of each slot's next pcm frame, one `LMStreamer.step`, codec
`decode_step` of the generated audio codes; then each session turns its slot's output
into events. Only the slots whose session is ready advance (`LMStreamer.step(active=)`,
`set_active` on the codec): the others, and empty slots, keep their state exactly as it
was, so a stream's output depends on its own input only, never on its neighbours or on
how its input is paced.

Input timing: the codes of a slot's audio frame `f` are fed to the model at the slot's step
`f + 1` (step 0 gets a placeholder the model reads as its initial token), which is how the
model saw them in training (inputs shifted by one position).

A step runs when some attached session is ready (an ASR stream has a whole frame or is
flushing; a TTS stream has words to speak or is finishing). `run()` is the
asyncio loop: it waits for work, runs each step in a worker thread so the event loop
stays free, and hands events to each session's queue (`Session.events()`).
"""

from __future__ import annotations

import asyncio
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dsm.streaming.events import Event
from dsm.streaming.streamer import UNGENERATED, LMStreamer

END_OF_INPUT = None
"""What `Session.take_frame` returns for Hibiki's end-of-input frame: every input codebook
reads `card` (the codec's cardinality, as moshi's run_inference feeds it)."""


class EngineFullError(RuntimeError):
    """Every slot is taken."""


class SessionClosedError(RuntimeError):
    """Input pushed to a session that is detached or finished."""


@dataclass
class SlotOutput:
    """One step's result for one slot.

    tokens: [1 + dep_q] (text, audio...) of the output frame, or None while the delays fill.
    pcm: decoded audio `[frame_size]` of those audio tokens (models with audio heads).
    extra_probs: `[H, n]` probabilities of the extra (VAD) heads, when the model has them.
    """

    tokens: np.ndarray | None
    pcm: np.ndarray | None = None
    extra_probs: np.ndarray | None = None


class Session:
    """One stream's logic in a slot. Subclasses say what they need and read their output."""

    needs_audio_input = False  # pcm frames to encode (ASR, translation)
    # Output frame from which the slot's audio is real (TTS: its audio delay); the codec's
    # decoder state of the slot starts afresh there, as if nothing had been decoded before.
    first_audio_frame = 0
    uses_text_hook = False  # forces the text stream (TTS)
    # A conditioned model's conditions for this stream (None: the engine's defaults), and
    # those its guidance pushes away from (None: the engine's).
    conditions: dict[str, Any] | None = None
    null_conditions: dict[str, Any] | None = None
    # Kyutai's TTS: audio forced to "no token" for this many frames (None: never), and audio
    # codes spoken first (`[K, P]`, the voice of its audio-prefix models).
    forced_audio_delay: int | None = None
    audio_prefix: Any = None
    # The stream's own sampling (None: the engine's; needs an engine made with
    # `max_slot_top_k`), and the most steps it may take (None: no limit; then it ends).
    temperature: float | None = None
    top_k: int | None = None
    max_steps: int | None = None

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.slot: int | None = None
        self.finished = False
        self.error: str | None = None
        self._queue: asyncio.Queue[Event | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: threading.Event | None = None
        self._queue_closed = False

    # --- engine side ------------------------------------------------------------------------
    def ready(self) -> bool:
        return not self.finished

    def take_frame(self) -> np.ndarray | None:
        """The next pcm frame `[frame_size]`, or `END_OF_INPUT` (Hibiki's end marker)."""
        raise NotImplementedError

    def force_text(self, sampled: int) -> int:
        raise NotImplementedError

    def on_output(self, output: SlotOutput) -> list[Event]:
        raise NotImplementedError

    # --- asyncio side -----------------------------------------------------------------------
    def _deliver(self, events: list[Event], done: bool) -> None:
        """Queue events for `events()` (from any thread; the queue lives on its loop)."""
        queue, loop = self._queue, self._loop
        if queue is None or loop is None or self._queue_closed:
            return
        items: list[Event | None] = list(events)
        if done:
            items.append(None)
            self._queue_closed = True
        if not items:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            for item in items:
                queue.put_nowait(item)
        else:
            loop.call_soon_threadsafe(lambda: [queue.put_nowait(item) for item in items])

    async def events(self):  # type: ignore[no-untyped-def]
        """Async iterator over this session's events until it finishes (use with `run()`)."""
        if self._queue is None:
            raise RuntimeError("events() needs the session attached to an engine running run()")
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event

    def _notify(self) -> None:
        """Tell the engine there may be input to process (call after pushing input)."""
        if self._wake is not None:
            self._wake.set()


class BatchedEngine:
    """N slots over one streamer and one codec (see the module docstring)."""

    def __init__(
        self,
        lm: Any,
        codec: Any,
        num_slots: int,
        *,
        cuda_graph: bool = True,
        conditions: dict[str, str | None] | None = None,
        null_conditions: dict[str, str | None] | None = None,
        input_fill: int | None = None,
        **sampling: Any,
    ) -> None:
        self.lm = lm
        self.codec = codec
        self.num_slots = num_slots
        self.streamer = LMStreamer(lm, num_slots, cuda_graph=cuda_graph, **sampling)
        # A conditioned model's conditions for sessions that bring none (`Session.conditions`).
        self.conditions = conditions
        self.null_conditions = null_conditions
        self.device = self.streamer.device
        self.frame_size: int = codec.frame_size
        self.sample_rate: int = codec.sample_rate
        self.frame_rate: float = codec.frame_rate
        self.num_inputs = self.streamer.num_inputs
        # Input rows that carry a constant instead of encoded audio (Kyutai's TTS with fewer
        # generated codebooks than the model's: -1, "no token").
        self.input_fill = input_fill
        self._fill_tokens = (None if input_fill is None or self.num_inputs == 0 else torch.full(
            (num_slots, self.num_inputs, 1), input_fill, dtype=torch.long, device=self.device))
        if self.num_inputs > codec.num_codebooks:
            raise ValueError(
                f"the model reads {self.num_inputs} audio codebooks, the codec makes "
                f"{codec.num_codebooks}"
            )
        if self.streamer.dep_q > codec.num_codebooks:
            raise ValueError(
                f"the model generates {self.streamer.dep_q} audio codebooks, the codec decodes "
                f"{codec.num_codebooks}"
            )
        self._exit = ExitStack()
        self._exit.enter_context(codec.streaming(num_slots))
        self.sessions: list[Session | None] = [None] * num_slots
        self._prev_codes = torch.full(
            (num_slots, max(self.num_inputs, 1), 1), self.streamer.card, dtype=torch.long,
            device=self.device,
        )
        self._end_of_input = np.zeros(num_slots, dtype=bool)  # slots whose frame is END_OF_INPUT
        self._active = np.zeros(num_slots, dtype=bool)  # slots that step this time
        self._codec_active = torch.ones(num_slots, dtype=torch.bool)  # the mask the codec has
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.steps = 0
        self._frames_out = [0] * num_slots  # output frames each slot has produced
        self._steps_taken = [0] * num_slots  # steps each slot's session has taken

    def close(self) -> None:
        self.streamer.close()
        self._exit.close()

    def __enter__(self) -> BatchedEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- slots ------------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return sum(s is None for s in self.sessions)

    def attach(self, session: Session) -> int:
        """Put `session` in a free slot, reset that slot's state; returns the slot index."""
        with self._lock:
            if session.slot is not None or session.finished:
                raise ValueError("this session is already attached or finished")
            try:
                slot = self.sessions.index(None)
            except ValueError:
                raise EngineFullError(
                    f"all {self.num_slots} slots are taken; try again later"
                ) from None
            mask = torch.zeros(self.num_slots, dtype=torch.bool)
            mask[slot] = True
            seeds = torch.zeros(self.num_slots, dtype=torch.long)
            seeds[slot] = session.seed
            conditioning = self._conditioning(session) if self.streamer.conditioned else None
            self.streamer.set_slot_sampling(slot, session.temperature, session.top_k)
            self.streamer.reset_slots(mask, seeds)  # (clears the slot's cross source)
            self.codec.reset_slots(mask)
            if conditioning is not None:
                (cond, cross), (null, null_cross) = conditioning
                self.streamer.set_condition(slot, cond, null, cross=cross, null_cross=null_cross)
            self.streamer.set_audio_delay(slot, session.forced_audio_delay)
            if self.streamer.max_prefix or session.audio_prefix is not None:
                self.streamer.set_audio_prefix(slot, session.audio_prefix)
            self._prev_codes[slot] = self.streamer.card
            self._frames_out[slot] = 0
            self._steps_taken[slot] = 0
            self.sessions[slot] = session
            session.slot = slot
            session._wake = self._wake
            try:
                session._loop = asyncio.get_running_loop()
                session._queue = asyncio.Queue()
            except RuntimeError:
                session._loop = None
        self._wake.set()
        return slot

    def _conditioning(self, session: Session) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
        """((sum, cross), (null sum, null cross)) of a session's conditions (or the engine's
        defaults); the null pair only with guidance. Raises before the slot is touched."""
        conditions = session.conditions if session.conditions is not None else self.conditions
        if conditions is None:
            names = self.lm.condition_provider.names
            raise ValueError(f"this model is conditioned on {names}: give the session conditions")
        null = session.null_conditions if session.null_conditions is not None else self.null_conditions
        if self.streamer.use_cfg and null is None:
            raise ValueError("guidance (cfg_coef != 1) on a conditioned model needs null conditions")
        given = self.lm.conditioning([conditions])
        nulled = (self.lm.conditioning([null]) if self.streamer.use_cfg and null is not None
                  else None)
        return ((given.sum, given.cross),
                (None, None) if nulled is None else (nulled.sum, nulled.cross))

    def detach(self, session: Session) -> None:
        """Free the session's slot (its stream stops; other slots go on untouched)."""
        with self._lock:
            slot = session.slot
            if slot is None or self.sessions[slot] is not session:
                return
            self.sessions[slot] = None
            session.slot = None
            session.finished = True
        session._deliver([], done=True)

    def check_sampling(self, temperature: float | None, top_k: int | None) -> None:
        """Raises ValueError when a session may not bring this sampling (before it takes
        a slot)."""
        self.streamer.check_slot_sampling(temperature, top_k)

    # --- stepping ---------------------------------------------------------------------------
    def ready(self) -> bool:
        """True when some attached session can step."""
        return any(s is not None and not s.finished and s.ready() for s in self.sessions)

    def step(self) -> dict[Session, list[Event]]:
        """Run one step for the ready slots; returns their sessions' new events."""
        with self._lock:
            sessions = list(self.sessions)
            frames = self._take_frames(sessions)
        results = self._compute(sessions, frames)
        self._release_finished(results)
        return results

    def _take_frames(self, sessions: list[Session | None]) -> np.ndarray | None:
        """Which slots step (`self._active`) and their pcm frames (None: no audio input)."""
        self._active[:] = False
        self._end_of_input[:] = False
        frames = None
        if self.num_inputs > 0 and self.input_fill is None:
            frames = np.zeros((self.num_slots, self.frame_size), dtype=np.float32)
        for slot, session in enumerate(sessions):
            if session is None or session.finished or not session.ready():
                continue
            self._active[slot] = True
            if frames is not None and session.needs_audio_input:
                frame = session.take_frame()
                if frame is END_OF_INPUT:
                    self._end_of_input[slot] = True  # codes all `card`; the encoder waits
                else:
                    frames[slot] = frame
        return frames

    @torch.no_grad()
    def _compute(
        self, sessions: list[Session | None], frames: np.ndarray | None
    ) -> dict[Session, list[Event]]:
        streamer = self.streamer
        active = torch.from_numpy(self._active.copy())
        input_tokens = None
        if frames is not None:
            wav = torch.from_numpy(frames).to(self.device)[:, None, :]  # [N, 1, frame]
            # End-of-input slots read codes all `card`; their encoder does not advance.
            ends = torch.from_numpy(self._end_of_input.copy())
            self._set_codec_active(active & ~ends)
            codes = self.codec.encode_step(wav)[:, : self.num_inputs]  # [N, n_in, 1]
            if bool(ends.any()):
                ends_dev = ends.to(self.device)[:, None, None]
                codes = torch.where(ends_dev, torch.full_like(codes, self.streamer.card), codes)
            input_tokens = self._prev_codes.clone()
            stepping = active.to(self.device)[:, None, None]
            self._prev_codes.copy_(torch.where(stepping, codes, self._prev_codes))
        if self._fill_tokens is not None:
            input_tokens = self._fill_tokens
        hook = None
        if any(s is not None and s.uses_text_hook for s in sessions):
            hook = _TextHook(sessions, self._active.copy())
        out = streamer.step(input_tokens, text_hook=hook, active=active)
        self.steps += 1
        pcm = None
        tokens_np = None
        if out is not None:
            tokens_np = out[:, :, 0].cpu().numpy()  # [N, 1 + dep_q]
            if streamer.dep_q > 0:
                self._restart_decoders(sessions, tokens_np)
                audio = out[:, 1:].clamp_min(0)  # ungenerated rows decode as code 0
                self._set_codec_active(active)
                pcm = self.codec.decode_step(audio)[:, 0].cpu().numpy()  # [N, frame]
        extra = streamer.extra_probs.cpu().numpy() if streamer.num_extra_heads else None
        results: dict[Session, list[Event]] = {}
        for slot, session in enumerate(sessions):
            if session is None or session.finished or not self._active[slot]:
                continue
            slot_tokens = None
            if tokens_np is not None and tokens_np[slot, 0] != UNGENERATED:
                slot_tokens = tokens_np[slot]
            output = SlotOutput(
                tokens=slot_tokens,
                pcm=None if pcm is None or slot_tokens is None else pcm[slot],
                extra_probs=None if extra is None else extra[slot],
            )
            try:
                events = session.on_output(output)
            except Exception as error:  # one broken stream must not stop the others
                session.error = f"{type(error).__name__}: {error}"
                session.finished = True
                events = []
            self._steps_taken[slot] += 1
            if session.max_steps is not None and self._steps_taken[slot] >= session.max_steps:
                session.finished = True  # its step budget is spent: the stream ends here
            results[session] = events
        return results

    def _set_codec_active(self, mask: torch.Tensor) -> None:
        """The codec's slot mask, set only when it changes (it walks the codec's modules)."""
        if not torch.equal(mask, self._codec_active):
            self.codec.set_active(mask)
            self._codec_active = mask.clone()

    def _release_finished(self, results: dict[Session, list[Event]]) -> None:
        for session in results:
            if session.finished:
                self.detach(session)

    def _restart_decoders(self, sessions: list[Session | None], tokens: np.ndarray) -> None:
        """Reset the codec state of slots reaching their first real audio frame this step."""
        restart = torch.zeros(self.num_slots, dtype=torch.bool)
        for slot, session in enumerate(sessions):
            if session is None or not self._active[slot] or tokens[slot, 0] == UNGENERATED:
                continue
            if self._frames_out[slot] == session.first_audio_frame > 0:
                restart[slot] = True
            self._frames_out[slot] += 1
        if bool(restart.any()):
            self.codec.reset_slots(restart)

    # --- asyncio loop -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None, poll_s: float = 0.005) -> None:
        """Step whenever some attached session is ready, until `stop` is set."""
        while stop is None or not stop.is_set():
            if not self.ready():
                self._wake.clear()
                if not self.ready():
                    await asyncio.to_thread(self._wake.wait, poll_s)
                continue
            with self._lock:
                sessions = list(self.sessions)
                frames = self._take_frames(sessions)
            results = await asyncio.to_thread(self._compute, sessions, frames)
            for session, events in results.items():
                session._deliver(events, done=False)
            self._release_finished(results)


class _TextHook:
    """Per-slot text forcing for TTS sessions; other slots keep the sampled token."""

    def __init__(self, sessions: list[Session | None], active: np.ndarray) -> None:
        self.sessions = sessions
        self.active = active  # [N] slots that step (the others consume no text)

    def __call__(self, sampled: torch.Tensor) -> torch.Tensor:
        values = sampled.cpu().tolist()
        for slot, session in enumerate(self.sessions):
            if (session is not None and session.uses_text_hook and not session.finished
                    and self.active[slot]):
                values[slot] = session.force_text(int(values[slot]))
        return torch.tensor(values, dtype=torch.long, device=sampled.device)
