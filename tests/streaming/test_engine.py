"""BatchedEngine: slots joining and leaving, isolation of bad streams, the asyncio loop,
translation sessions, and CUDA graphs (GPU only; the CPU path is covered everywhere else)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from dsm.models import build_lm, preset
from dsm.streaming import LMStreamer
from dsm.streaming.asr import ASRSession
from dsm.streaming.engine import BatchedEngine, EngineFullError, Session, SlotOutput
from dsm.streaming.events import AudioEvent, EndWordEvent, WordEvent
from dsm.streaming.testing import ScriptedLMForTests
from dsm.streaming.translation import TranslationSession
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import Word, stream_to_words, words_to_stream

FR = 12.5


class RecordingSession(Session):
    """Feeds given pcm frame by frame and records the tokens its slot gets back."""

    needs_audio_input = True

    def __init__(self, pcm: np.ndarray, frame_size: int, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.frames = [pcm[i : i + frame_size] for i in range(0, pcm.size, frame_size)]
        self.tokens: list[list[int]] = []
        self.steps = 0

    def ready(self) -> bool:
        return not self.finished and self.steps < len(self.frames)

    def take_frame(self) -> np.ndarray:
        frame = self.frames[self.steps]
        self.steps += 1
        return frame

    def on_output(self, output: SlotOutput) -> list:
        if output.tokens is not None:
            self.tokens.append([int(t) for t in output.tokens])
        if self.steps == len(self.frames):
            self.finished = True
        return []


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _tiny_lm():
    torch.manual_seed(0)
    config = preset("tiny-tts", num_layers=2, dim=64, card=64, n_q=8, dep_q=4,
                    delays=[0, 0, 1, 1, 1, 0, 1, 1, 1], depformer_dim=32, text_card=100)
    return build_lm(config).eval()


def _pcm(seed: int, frames: int, frame_size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, frames * frame_size).astype(np.float32)


def test_a_stream_is_the_same_alone_or_among_others_joining_and_leaving() -> None:
    lm = _tiny_lm()
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR, num_codebooks=4, cardinality=64)
    size = codec.frame_size
    sampling = dict(temp=0.9, temp_text=0.8, top_k=30, top_k_text=20)

    with BatchedEngine(lm, codec, 1, **sampling) as engine:
        alone = RecordingSession(_pcm(1, 20, size), size, seed=7)
        engine.attach(alone)
        while engine.ready():
            engine.step()

    with BatchedEngine(lm, codec, 3, **sampling) as engine:
        first = RecordingSession(_pcm(2, 6, size), size, seed=1)  # leaves after 6 steps
        engine.attach(first)
        for _ in range(3):
            engine.step()
        target = RecordingSession(_pcm(1, 20, size), size, seed=7)
        assert engine.attach(target) == 1
        later = []
        for step in range(40):
            if step == 4:  # first has left: its slot is free again
                assert first.finished and engine.free_slots == 2
                later.append(RecordingSession(_pcm(3, 30, size), size, seed=3))
                assert engine.attach(later[-1]) == 0
            if not target.finished:
                engine.step()
    assert len(alone.tokens) == 20 - max(lm.config.delays)
    assert target.tokens == alone.tokens
    assert later[0].tokens[:5] != target.tokens[:5]


def test_full_engine_and_detach() -> None:
    lm = ScriptedLMForTests([[3] * 50], n_q=2)
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR)
    with BatchedEngine(lm, codec, 2, temp=0.0, temp_text=0.0) as engine:
        sessions = [RecordingSession(_pcm(i, 5, codec.frame_size), codec.frame_size) for i in range(3)]
        engine.attach(sessions[0])
        engine.attach(sessions[1])
        with pytest.raises(EngineFullError, match="all 2 slots"):
            engine.attach(sessions[2])
        engine.detach(sessions[0])
        assert sessions[0].finished and sessions[0].slot is None
        assert engine.attach(sessions[2]) == 0
        with pytest.raises(ValueError, match="already attached or finished"):
            engine.attach(sessions[0])


class BrokenSession(RecordingSession):
    def on_output(self, output: SlotOutput) -> list:
        raise RuntimeError("boom")


def test_a_failing_session_is_dropped_and_the_others_go_on() -> None:
    lm = _tiny_lm()
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR, num_codebooks=4, cardinality=64)
    size = codec.frame_size
    with BatchedEngine(lm, codec, 1, temp=0.0, temp_text=0.0) as engine:
        alone = RecordingSession(_pcm(1, 10, size), size)
        engine.attach(alone)
        while engine.ready():
            engine.step()
    with BatchedEngine(lm, codec, 2, temp=0.0, temp_text=0.0) as engine:
        good = RecordingSession(_pcm(1, 10, size), size)
        bad = BrokenSession(_pcm(2, 10, size), size)
        engine.attach(good)
        engine.attach(bad)
        while engine.ready():
            engine.step()
        assert bad.error == "RuntimeError: boom" and bad.slot is None
        assert good.tokens == alone.tokens


def test_asyncio_loop_streams_words_to_each_session(tokenizer) -> None:
    speeches = [
        [Word("the", 0.3, 0.6), Word("cat", 0.7, 1.1)],
        [Word("bonjour", 0.2, 0.8), Word("marie", 1.0, 1.4), Word("paris", 1.5, 1.9)],
    ]
    streams = [words_to_stream(w, tokenizer, FR, delay=2)[0].tolist() for w in speeches]
    lm = ScriptedLMForTests(streams, n_q=2, text_card=tokenizer.vocab_size)
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR)

    async def client(engine: BatchedEngine, seconds: float, seed: int) -> list:
        session = ASRSession(tokenizer, sample_rate=8000, frame_size=codec.frame_size,
                             frame_rate=FR, text_delay=2)
        engine.attach(session)

        async def send() -> None:
            pcm = _pcm(seed, int(seconds * FR) + 1, codec.frame_size)
            for start in range(0, pcm.size, 1000):
                session.push_pcm(pcm[start : start + 1000])
                await asyncio.sleep(0)
            session.end()

        sender = asyncio.create_task(send())
        events = [event async for event in session.events()]
        await sender
        return events

    async def main() -> list[list]:
        with BatchedEngine(lm, codec, 2, temp=0.0, temp_text=0.0) as engine:
            stop = asyncio.Event()
            loop_task = asyncio.create_task(engine.run(stop))
            results = await asyncio.wait_for(
                asyncio.gather(client(engine, 2.2, 0), client(engine, 2.2, 1)), timeout=60
            )
            stop.set()
            await loop_task
            assert engine.free_slots == 2
        return list(results)

    results = asyncio.run(main())
    for events, stream in zip(results, streams):
        words = []
        for event in events:
            if isinstance(event, WordEvent):
                words.append([event.text, event.start_time])
            elif isinstance(event, EndWordEvent):
                words[-1].append(event.stop_time)
        expected = stream_to_words(stream, tokenizer, FR, 2)
        assert [Word(*w) for w in words] == expected


def test_translation_session_gives_target_words_and_audio(tokenizer) -> None:
    words = [Word("bonjour", 0.2, 0.7), Word("le", 0.8, 1.0), Word("chat", 1.1, 1.5)]
    stream = words_to_stream(words, tokenizer, FR, delay=3)[0].tolist()
    lm = ScriptedLMForTests([stream], n_q=4, dep_q=2, text_card=tokenizer.vocab_size,
                            delays=[0, 0, 1, 0, 0])
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR, num_codebooks=2)
    with BatchedEngine(lm, codec, 1, temp=0.0, temp_text=0.0) as engine:
        session = TranslationSession(tokenizer, sample_rate=8000, frame_size=codec.frame_size,
                                     frame_rate=FR, text_delay=3, max_delay=1)
        engine.attach(session)
        session.push_pcm(_pcm(0, 22, codec.frame_size))
        session.end()
        events = []
        while engine.ready():
            events.extend(engine.step().get(session, []))
    assert [e.text for e in events if isinstance(e, WordEvent)] == ["bonjour", "le", "chat"]
    audio = [e for e in events if isinstance(e, AudioEvent)]
    assert len(audio) == session.audio_frames > 20
    assert all(e.pcm.shape == (codec.frame_size,) for e in audio)


@pytest.mark.gpu
def test_cuda_graph_replay_equals_eager_on_gpu() -> None:
    lm = _tiny_lm().cuda()
    inputs = torch.randint(0, 64, (30, 3, 4, 1), device="cuda")
    runs = []
    for graphs in (False, True):
        with LMStreamer(lm, 3, temp=0.9, temp_text=0.8, cuda_graph=graphs) as streamer:
            out = []
            for t in range(30):
                if t == 12:
                    streamer.reset_slots(torch.tensor([False, True, False]))
                out.append(streamer.step(inputs[t]))
            assert streamer.graphs_captured == graphs
            runs.append([o for o in out if o is not None])
    assert all(torch.equal(a, b) for a, b in zip(*runs))
