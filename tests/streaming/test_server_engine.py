"""`dsm serve` over the real `BatchedEngine` (through `EngineService`).

Models, all on CPU and small:
- ASR with `ScriptedLMForTests` (a forced-text test double of the LM output, built by the
  alignment from known words) and the toy codec: a client written to Kyutai's protocol
  gets exactly the aligned words and times, the same as a local session run.
- ASR with a tiny *random* `MultistreamLM` (greedy): several server clients, joining
  while the others are mid-stream, each get the same words as a local solo run of the
  engine on the same audio (slot independence through the server).
- TTS with the forced-text double: Kyutai `format=PcmMessagePack` clients trickling text
  word by word get every word in order, as a local session run does, with 1920-sample
  audio frames covering the words' spans, and a normal close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
import websockets
from helpers import keep_text_pieces, kyutai_asr_client, run_until_marker, serving

from dsm.models import build_lm, preset
from dsm.streaming.asr import ASRSession
from dsm.streaming.engine import BatchedEngine, Session
from dsm.streaming.events import AudioEvent, EndWordEvent, TextEvent, WordEvent
from dsm.streaming.serve import clients
from dsm.streaming.serve.engine_service import EngineService
from dsm.streaming.serve.protocol import FRAME_SIZE, SAMPLE_RATE
from dsm.streaming.serve.server import ServerConfig, StreamingServer
from dsm.streaming.testing import ScriptedLMForTests
from dsm.streaming.tts import TTSSession
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import Word, stream_to_words, words_to_stream

FR = 12.5
DELAY = 3
WORDS = [Word("the", 0.30, 0.55), Word("cat", 0.62, 1.10), Word("sat", 1.10, 1.52),
         Word("quickly", 2.0, 2.6)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def run(coro: Any, timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def local_run(engine: BatchedEngine, session: Session, feed: Callable[[Session], None]) -> list:
    """What `dsm transcribe` / `dsm speak` do: one session, stepped until it finishes."""
    engine.attach(session)
    feed(session)
    events: list = []
    while engine.ready():
        events.extend(engine.step().get(session, []))
    assert session.finished
    engine.close()
    return events


def asr_session_factory(tokenizer: Any, step_events: bool) -> Callable[..., ASRSession]:
    """An `EngineService`'s session maker (the stream's options are not used here)."""
    return lambda options=None: ASRSession(tokenizer, sample_rate=SAMPLE_RATE,
                                           frame_size=FRAME_SIZE, frame_rate=FR,
                                           text_delay=DELAY, step_events=step_events)


def words_of(events: list) -> list[tuple[str, float, float | None]]:
    words: list[list[Any]] = []
    for event in events:
        if isinstance(event, WordEvent):
            words.append([event.text, event.start_time, None])
        elif isinstance(event, EndWordEvent) and words:
            words[-1][2] = event.stop_time
    return [tuple(w) for w in words]  # type: ignore[misc]


def test_kyutai_client_gets_the_aligned_words_through_the_engine(tokenizer) -> None:
    stream = words_to_stream(WORDS, tokenizer, FR, delay=DELAY)[0].tolist()
    aligned = [(w.word, w.start, w.end) for w in stream_to_words(stream, tokenizer, FR, DELAY)]

    def engine(slots: int) -> BatchedEngine:
        lm = ScriptedLMForTests([stream], n_q=2, text_card=tokenizer.vocab_size)
        codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=2)
        return BatchedEngine(lm, codec, slots, temp=0.0, temp_text=0.0)

    pcm = (0.1 * np.random.default_rng(0).standard_normal(3 * SAMPLE_RATE)).astype(np.float32)

    def feed(session: Session) -> None:
        session.push_pcm(pcm)  # type: ignore[attr-defined]
        session.end()  # type: ignore[attr-defined]

    local = words_of(local_run(engine(1), asr_session_factory(tokenizer, False)(), feed))

    async def main() -> list[tuple[list[tuple], list[dict]]]:
        service = EngineService("asr", engine(3), asr_session_factory(tokenizer, True))
        async with serving(asr=service) as server:
            return await asyncio.gather(*[kyutai_asr_client(server.url, pcm) for _ in range(2)])

    for words, steps in run(main()):
        assert words == local == aligned
        assert [s["step_idx"] for s in steps] == list(range(1, len(steps) + 1))


def tiny_random_lm(tokenizer: Any) -> torch.nn.Module:
    torch.manual_seed(3)
    # two VAD heads: their end-of-turn probabilities travel in Step.prs
    config = preset("tiny-stt", num_layers=2, dim=64, text_card=tokenizer.vocab_size, card=64,
                    n_q=4, delays=[0] * 5, extra_heads_num_heads=2, extra_heads_dim=2)
    return build_lm(config).eval()


def test_random_model_words_through_the_server_equal_local_runs(tokenizer) -> None:
    lm = tiny_random_lm(tokenizer)

    def engine(slots: int) -> BatchedEngine:
        codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=4)
        return BatchedEngine(lm, codec, slots, cuda_graph=False, temp=0.0, temp_text=0.0)

    rng = np.random.default_rng(1)
    audios = [(0.3 * rng.standard_normal(int(1.6 * SAMPLE_RATE))).astype(np.float32)
              for _ in range(3)]
    expected = [words_of(run_until_marker(engine(1), asr_session_factory(tokenizer, False)(),
                                                pcm)) for pcm in audios]
    assert sum(len(words) for words in expected) > 0, "the random model said nothing"

    async def main() -> list[list[clients.TimedWord]]:
        service = EngineService("asr", engine(4), asr_session_factory(tokenizer, True))
        async with serving(asr=service) as server:
            async def client(i: int, pcm: np.ndarray) -> list[clients.TimedWord]:
                await asyncio.sleep(0.15 * i)  # join while the others are mid-stream
                return await clients.stream_pcm_asr(server.url, pcm, rtf=4.0)

            results = await asyncio.gather(*[client(i, pcm) for i, pcm in enumerate(audios)])
            _, steps = await kyutai_asr_client(server.url, audios[0])
            assert steps and all(len(s["prs"]) == 2 for s in steps)
            assert all(0.0 <= p <= 1.0 for s in steps for p in s["prs"])
            assert len({tuple(s["prs"]) for s in steps}) > 1  # they vary with the input
            return results

    for got, want in zip(run(main()), expected):
        assert [w.text for w in got] == [w[0] for w in want]
        assert [w.start_time for w in got] == pytest.approx([w[1] for w in want])


def test_kyutai_tts_client_gets_every_word_and_the_local_audio(tokenizer) -> None:
    text = "the cat sat on the mat"

    def engine(slots: int) -> BatchedEngine:
        lm = ScriptedLMForTests([[0, 3, 3] * 300], n_q=2, dep_q=2,
                                text_card=tokenizer.vocab_size, delays=[0, 1, 1])
        codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=2)
        return BatchedEngine(lm, codec, slots, temp=0.0, temp_text=0.0)

    def make(options: object = None) -> TTSSession:
        return TTSSession(tokenizer, frame_rate=FR, audio_delay=2, max_padding=4)

    def feed(session: Session) -> None:
        for word in text.split():
            session.push_text(word + " ")  # type: ignore[attr-defined]
        session.end_text()  # type: ignore[attr-defined]

    local = local_run(engine(1), make(), feed)
    local_words = [(e.text, e.start_s, e.stop_s) for e in local if isinstance(e, TextEvent)]
    local_pcm = np.concatenate([e.pcm for e in local if isinstance(e, AudioEvent)])

    async def kyutai_tts(url: str) -> tuple[list[dict], int | None]:
        async with websockets.connect(url + "/api/tts_streaming?format=PcmMessagePack",
                                      additional_headers={"kyutai-api-key": "k"}) as ws:
            for word in text.split():
                await ws.send(msgpack.packb({"type": "Text", "text": word + " "}))
                await asyncio.sleep(0.01)  # text trickles in, as from an LLM
            await ws.send(msgpack.packb({"type": "Eos"}))
            return [msgpack.unpackb(m) async for m in ws], ws.close_code

    async def main() -> list[tuple[list[dict], int | None]]:
        service = EngineService("tts", engine(2), make)
        async with serving(tts=service) as server:
            return await asyncio.gather(kyutai_tts(server.url), kyutai_tts(server.url))

    for messages, code in run(main()):
        assert code == 1000 and messages[0] == {"type": "Ready"}
        words = [(m["text"], m["start_s"], m["stop_s"]) for m in messages if m["type"] == "Text"]
        assert [w[0] for w in words] == text.split() == [w[0] for w in local_words]
        frames = [m["pcm"] for m in messages if m["type"] == "Audio"]
        assert all(len(f) == FRAME_SIZE for f in frames)
        # word trickling may add pads (the voice waits): at least the local audio, and
        # enough to cover every word's span
        assert len(frames) >= len(local_pcm) // FRAME_SIZE
        assert len(frames) / FR >= words[-1][2]
        assert all(a[2] <= b[1] + 1e-9 for a, b in zip(words, words[1:]))


def test_engine_service_frees_slots_when_clients_vanish(tokenizer) -> None:
    stream = words_to_stream(WORDS, tokenizer, FR, delay=DELAY)[0].tolist()
    lm = ScriptedLMForTests([stream], n_q=2, text_card=tokenizer.vocab_size)
    codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=2)
    engine = BatchedEngine(lm, codec, 2, temp=0.0, temp_text=0.0)
    pcm = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)

    async def main() -> tuple[list[str], int, int]:
        service = EngineService("asr", engine, asr_session_factory(tokenizer, True))
        async with serving(asr=service) as server:
            gone = await websockets.connect(server.url + "/api/asr-streaming")
            await gone.recv()
            await gone.send(msgpack.packb({"type": "Audio", "pcm": [0.0] * FRAME_SIZE}))
            # the vanished client leaves its slot: the witness is not stalled by it
            witness = asyncio.create_task(clients.stream_pcm_asr(server.url, pcm, rtf=None))
            await asyncio.sleep(1.0)  # meanwhile the silent client waits: nothing is added
            session = next(iter(service.sessions.values()))
            waiting = session.buffered_samples  # its one frame, taken; nothing made up
            gone.transport.abort()
            words = [w.text for w in await witness]
            await service.until_active(0)
            return words, engine.free_slots, waiting

    words, free, waiting = run(main())
    assert words == [w.word for w in WORDS]
    assert free == 2
    assert waiting == 0


def test_shutdown_flushes_engine_streams(tokenizer) -> None:
    stream = words_to_stream(WORDS, tokenizer, FR, delay=DELAY)[0].tolist()
    aligned = [w.word for w in stream_to_words(stream, tokenizer, FR, DELAY)]
    lm = ScriptedLMForTests([stream], n_q=2, text_card=tokenizer.vocab_size)
    codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=2)
    engine = BatchedEngine(lm, codec, 2, temp=0.0, temp_text=0.0)

    async def main() -> tuple[list[str], int | None, int]:
        service = EngineService("asr", engine, asr_session_factory(tokenizer, True))
        server = StreamingServer(ServerConfig(port=0), service)
        await server.start()
        ws = await websockets.connect(server.url + "/api/asr-streaming")
        await ws.recv()
        await ws.send(msgpack.packb({"type": "Audio", "pcm": [0.0] * int(2.7 * SAMPLE_RATE)},
                                    use_single_float=True))
        await asyncio.sleep(0.2)

        async def read_all() -> list[dict]:
            return [msgpack.unpackb(m) async for m in ws]

        reader = asyncio.create_task(read_all())
        await server.shutdown()  # ends the input: the session flushes its delay
        messages = await reader
        ends = [m for m in messages if m["type"] == "EndWord"]
        assert len(ends) == len(aligned)  # the last word was closed by the flush
        return ([m["text"] for m in messages if m["type"] == "Word"], ws.close_code,
                service.active)

    words, code, active = run(main())
    assert words == aligned and code == 1001 and active == 0


async def _paced_client(url: str, pcm: np.ndarray, chunk: int, pacing: str, seed: int
                        ) -> list[tuple]:
    """A Kyutai-protocol client sending `pcm` in `chunk`-sample messages, "fast" (no
    waiting), at "realtime", or with random "pauses" (up to 0.3 s), then a marker and
    silence until the marker is back; its words (text, start, stop) before the marker."""
    rng = np.random.default_rng(seed)
    async with websockets.connect(url + "/api/asr-streaming", max_size=None) as ws:
        async def send() -> None:
            for i in range(0, len(pcm), chunk):
                piece = pcm[i:i + chunk]
                await ws.send(msgpack.packb({"type": "Audio", "pcm": piece.tolist()},
                                            use_single_float=True))
                if pacing == "realtime":
                    await asyncio.sleep(piece.size / SAMPLE_RATE)
                elif pacing == "pauses" and rng.random() < 0.3:
                    await asyncio.sleep(float(rng.uniform(0.0, 0.3)))
            await ws.send(msgpack.packb({"type": "Marker", "id": 1}))
            while True:
                await ws.send(msgpack.packb({"type": "Audio", "pcm": [0.0] * FRAME_SIZE},
                                            use_single_float=True))
                await asyncio.sleep(0.01)

        sender = asyncio.create_task(send())
        words: list[list[Any]] = []
        async for message in ws:
            data = msgpack.unpackb(message)
            if data["type"] == "Word":
                words.append([data["text"], data["start_time"], None])
            elif data["type"] == "EndWord" and words:
                words[-1][2] = data["stop_time"]
            elif data["type"] == "Marker":
                break
            elif data["type"] == "Error":
                raise AssertionError(data["message"])
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return [tuple(w) for w in words]


def test_served_words_depend_only_on_the_audio_not_its_pacing_or_neighbours(tokenizer) -> None:
    """Nothing is added to what a client sends: a stream that is late waits (its slot skips
    the step), so its words and times are those of the local run on the same audio, for
    any chunk size and pacing, alone or beside 8 other streams joining and leaving."""
    lm = tiny_random_lm(tokenizer)
    keep_text_pieces(lm, range(20, 26))  # it says words

    def engine(slots: int) -> BatchedEngine:
        codec = ToyCodecForTests(sample_rate=SAMPLE_RATE, frame_rate=FR, num_codebooks=4)
        return BatchedEngine(lm, codec, slots, cuda_graph=False, temp=0.0, temp_text=0.0)

    rng = np.random.default_rng(11)
    pcm = (0.3 * rng.standard_normal(int(1.2 * SAMPLE_RATE))).astype(np.float32)
    expected = words_of(run_until_marker(engine(1), asr_session_factory(tokenizer, False)(),
                                         pcm))
    assert len(expected) >= 2, "the random model said too little"
    cases = [(chunk, pacing) for chunk in (240, 1920, 7680, 24000)
             for pacing in ("fast", "realtime", "pauses")]

    async def neighbour(url: str, i: int) -> None:
        await asyncio.sleep(0.1 * i)  # join while the others stream, leave before them
        noise = (0.3 * np.random.default_rng(100 + i).standard_normal(
            int((0.3 + 0.1 * i) * SAMPLE_RATE))).astype(np.float32)
        await _paced_client(url, noise, 1920, "pauses" if i % 2 else "fast", seed=i)

    async def main() -> tuple[list[list[tuple]], list[list[tuple]]]:
        alone_service = EngineService("asr", engine(1), asr_session_factory(tokenizer, True))
        async with serving(asr=alone_service) as server:
            alone = [await _paced_client(server.url, pcm, chunk, pacing, seed=k)
                     for k, (chunk, pacing) in enumerate(cases)]
        crowd_service = EngineService("asr", engine(len(cases) + 8),
                                      asr_session_factory(tokenizer, True))
        async with serving(asr=crowd_service) as server:
            results = await asyncio.gather(
                *[_paced_client(server.url, pcm, chunk, pacing, seed=k)
                  for k, (chunk, pacing) in enumerate(cases)],
                *[neighbour(server.url, i) for i in range(8)])
        return alone, list(results[: len(cases)])

    alone, crowded = run(main())
    for got in alone + crowded:
        assert [w[0] for w in got] == [w[0] for w in expected]
        assert [w[1] for w in got] == pytest.approx([w[1] for w in expected], abs=1e-6)
        assert [w[2] for w in got[:-1]] == pytest.approx([w[2] for w in expected[:-1]],
                                                         abs=1e-6)
