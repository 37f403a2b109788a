"""Helpers shared by several test files: chunked streaming with a slot reset, random LMs
whose text head says something, a server for the length of a block, and the local run a
protocol client is compared with. Import explicitly: `from helpers import ...`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from dsm.streaming.asr import ASRSession
    from dsm.streaming.engine import BatchedEngine
    from dsm.streaming.events import Event
    from dsm.streaming.server import StreamingServer
    from dsm.streaming.service import ModelService


def feed_in_chunks(step: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module,
                   x: torch.Tensor, chunk: int, reset_at: int | None = None,
                   reset_slot: int = 1) -> torch.Tensor:
    """`step` on `x` `[B, ..., T]` in chunks of `chunk` along T, outputs joined on the last
    dim; before chunk number `reset_at`, `module.reset_slots` resets slot `reset_slot`.
    The caller holds `module`'s streaming context."""
    outputs = []
    for index, start in enumerate(range(0, x.shape[-1], chunk)):
        if index == reset_at:
            mask = torch.zeros(x.shape[0], dtype=torch.bool)
            mask[reset_slot] = True
            module.reset_slots(mask)
        outputs.append(step(x[..., start:start + chunk]))
    return torch.cat(outputs, dim=-1)


def stream_in_chunks(module: torch.nn.Module, x: torch.Tensor, chunk: int,
                     reset_at: int | None = None, reset_slot: int = 1) -> torch.Tensor:
    """`module` called on `x` `[B, C, T]` chunk by chunk inside `module.streaming(B)`
    (see `feed_in_chunks`)."""
    with module.streaming(x.shape[0]):
        return feed_in_chunks(module, module, x, chunk, reset_at, reset_slot)


def keep_text_pieces(lm: torch.nn.Module, pieces: Iterable[int]) -> None:
    """Random text heads rarely end a word: keep only pad (3), word start (0) and `pieces`
    in `lm.text_linear`, scaled up so that they win, in place."""
    with torch.no_grad():
        weight = lm.text_linear.weight
        keep = torch.zeros(weight.shape[0], dtype=torch.bool)
        keep[[0, 3, *pieces]] = True
        weight[~keep] = 0.0
        weight[keep] *= 20.0


@asynccontextmanager
async def serving(asr: ModelService | None = None, tts: ModelService | None = None,
                  **config: Any) -> AsyncIterator[StreamingServer]:
    """A started `StreamingServer` (`ServerConfig(**config)`, port 0 unless given) serving
    `asr` / `tts`, shut down when the block ends."""
    from dsm.streaming.server import ServerConfig, StreamingServer

    config.setdefault("port", 0)
    server = StreamingServer(ServerConfig(**config), asr, tts)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


def run_until_marker(engine: BatchedEngine, session: ASRSession, pcm: np.ndarray
                     ) -> list[Event]:
    """What a protocol client gets, run locally: `pcm`, a marker, then silence frames until
    the marker is back; the events before the marker. Closes `engine`."""
    from dsm.streaming.events import MarkerEvent
    from dsm.streaming.protocol import FRAME_SIZE

    engine.attach(session)
    session.push_pcm(pcm)
    session.marker(1)
    events: list[Event] = []
    while not any(isinstance(e, MarkerEvent) for e in events):
        if not engine.ready():
            session.push_pcm(np.zeros(FRAME_SIZE, dtype=np.float32))
        events.extend(engine.step().get(session, []))
    engine.close()
    return events[:-1]


async def kyutai_asr_client(url: str, pcm: np.ndarray, api_key: str = "public_token"
                            ) -> tuple[list[tuple], list[dict]]:
    """A client written to Kyutai's published protocol (msgpack, 1920-sample frames,
    a Marker, then silence until the marker echo)."""
    import asyncio

    import msgpack
    import websockets

    from dsm.streaming.protocol import FRAME_SIZE

    async with websockets.connect(url + "/api/asr-streaming",
                                  additional_headers={"kyutai-api-key": api_key}) as ws:
        async def send() -> None:
            for i in range(0, len(pcm), FRAME_SIZE):
                await ws.send(msgpack.packb({"type": "Audio",
                                             "pcm": [float(x) for x in pcm[i:i + FRAME_SIZE]]},
                                            use_single_float=True))
            await ws.send(msgpack.packb({"type": "Marker", "id": 0}))
            for _ in range(35):
                await ws.send(msgpack.packb({"type": "Audio", "pcm": [0.0] * FRAME_SIZE},
                                            use_single_float=True))
                await asyncio.sleep(0.005)

        sender = asyncio.create_task(send())
        words: list[list[Any]] = []
        steps: list[dict] = []
        async for message in ws:
            data = msgpack.unpackb(message)
            if data["type"] == "Word":
                words.append([data["text"], data["start_time"], None])
            elif data["type"] == "EndWord":
                words[-1][2] = data["stop_time"]
            elif data["type"] == "Step":
                steps.append(data)
            elif data["type"] == "Marker":
                break
            elif data["type"] == "Error":
                raise AssertionError(data["message"])
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return [tuple(w) for w in words], steps


HELD_OUT_SEED = 2026  # the shipped models' corpora were synthesized with seeds 0, 1 and 2


def held_out_utterances(count: int, first: int = 0) -> list[Any]:
    """`count` English utterances (draws `first`, `first + 1`, ...) synthesized by dsm's
    corpus code with the eval split's voices only (espeak variants m4 / f3 / klatt3 and
    flite rms, never in a training set), from a seed no training corpus used, so the texts
    are new draws too. Checks both."""
    from dsm.recipes.synth_corpus import DEFAULT_ENGINES, Job, make_item, speakers

    utterances = []
    for index in range(first, first + count):
        (utterance,) = make_item(Job(seed=HELD_OUT_SEED, index=index, lang="en", parallel=False,
                                     engines=DEFAULT_ENGINES, eval_fraction=1.0, sample_rate=24000))
        utterances.append(utterance)
    held_out = {s.id for s in speakers("en") if s.split == "eval"}
    assert {u.speaker for u in utterances} <= held_out
    assert len({u.speaker for u in utterances}) >= 3
    return utterances
