"""ASR: the text-stream decoder and ASRSession inside a BatchedEngine.

The model is `ScriptedLMForTests`, a test double whose text output is forced to a stream
built by `dsm.streams.text_stream`; the words and times that come out must be exactly the
ones the alignment reads back from that stream.
"""

from __future__ import annotations

import numpy as np
import pytest

from dsm.streaming.asr import ASRSession, AudioInputError, word_events
from dsm.streaming.engine import BatchedEngine, SessionClosedError
from dsm.streaming.events import EndWordEvent, MarkerEvent, WordEvent
from dsm.streaming.testing import ScriptedLMForTests
from dsm.streams.testing import ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import TextStreamDecoder, Word, stream_to_words, words_to_stream

FR = 12.5
DELAY = 3


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _words_from_events(events: list) -> list[Word]:
    """Pair each WordEvent with the EndWordEvent that follows it."""
    words: list[Word] = []
    open_word: WordEvent | None = None
    for event in events:
        if isinstance(event, WordEvent):
            assert open_word is None, "two Word events without an EndWord between them"
            open_word = event
        elif isinstance(event, EndWordEvent):
            assert open_word is not None, "EndWord without a Word"
            words.append(Word(open_word.text, open_word.start_time, event.stop_time))
            open_word = None
    assert open_word is None
    return words


SPEECHES = [
    [Word("the", 0.30, 0.55), Word("cat", 0.62, 1.10), Word("sat", 1.10, 1.52),
     Word("quickly", 2.0, 2.6)],
    [Word("bonjour", 0.1, 0.7), Word("marie", 0.9, 1.3), Word("antoine", 1.4, 2.1)],
    # crowded: words closer than their tokens need (shifts, late ends)
    [Word("elephant", 0.2, 0.28), Word("beautiful", 0.3, 0.35), Word("question", 0.36, 0.4)],
]


@pytest.mark.parametrize("words", SPEECHES)
def test_decoder_reads_like_stream_to_words(tokenizer, words) -> None:
    stream, _ = words_to_stream(words, tokenizer, FR, delay=DELAY)
    decoder = TextStreamDecoder(tokenizer, FR, DELAY)
    events = []
    for token in stream.tolist():
        events.extend(word_events(decoder.push(token)))
    events.extend(word_events(decoder.flush()))
    assert _words_from_events(events) == stream_to_words(stream, tokenizer, FR, DELAY)


def test_decoder_word_goes_out_as_soon_as_its_text_is_complete(tokenizer) -> None:
    decoder = TextStreamDecoder(tokenizer, FR, 0)
    ids = tokenizer.encode("cat")
    seen = [word_events(decoder.push(t)) for t in [3, 0, *ids, 3, 3, 0]]
    n = len(ids)
    assert seen[2 + n] == [WordEvent("cat", 2 / FR)]  # first pad after the tokens
    assert seen[-1] == [EndWordEvent((n + 4 + 1) / FR)]  # the 0 at position n + 4


def test_decoder_splits_segments_holding_several_words(tokenizer) -> None:
    stream = [0, *tokenizer.encode("cat"), *tokenizer.encode("dogs"), 3, 3, 0]
    decoder = TextStreamDecoder(tokenizer, FR, 0)
    events = [e for t in stream for e in word_events(decoder.push(t))] + word_events(
        decoder.flush())
    assert _words_from_events(events) == stream_to_words(stream, tokenizer, FR, 0)
    assert [w.word for w in _words_from_events(events)] == ["cat", "dogs"]


def _engine(tokenizer, scripts, slots):
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR)
    lm = ScriptedLMForTests(scripts, n_q=2, text_card=tokenizer.vocab_size)
    engine = BatchedEngine(lm, codec, slots, temp=0.0, temp_text=0.0)
    return engine, codec


def _session(tokenizer, codec) -> ASRSession:
    return ASRSession(
        tokenizer, sample_rate=codec.sample_rate, frame_size=codec.frame_size,
        frame_rate=FR, text_delay=DELAY,
    )


def _audio_seconds(words: list[Word]) -> float:
    return max(w.end for w in words) + 0.3


def test_sessions_in_an_engine_give_the_aligned_words(tokenizer) -> None:
    streams = [words_to_stream(w, tokenizer, FR, delay=DELAY)[0].tolist() for w in SPEECHES]
    engine, codec = _engine(tokenizer, streams, slots=3)
    rng = np.random.default_rng(0)
    sessions = [_session(tokenizer, codec) for _ in SPEECHES]
    events: dict[ASRSession, list] = {s: [] for s in sessions}
    for session, words in zip(sessions, SPEECHES):
        engine.attach(session)
        pcm = rng.uniform(-0.1, 0.1, int(_audio_seconds(words) * codec.sample_rate))
        pcm = pcm.astype(np.float32)
        # odd chunk sizes: the session buffers into frames
        for start in range(0, pcm.size, 777):
            session.push_pcm(pcm[start:start + 777], sample_rate=codec.sample_rate)
        session.marker(42)
        session.end()
    while engine.ready():
        for session, evs in engine.step().items():
            events[session].extend(evs)
    for session, stream in zip(sessions, streams):
        assert session.finished and session.slot is None  # released its slot
        got = _words_from_events(events[session])
        assert got == stream_to_words(stream, tokenizer, FR, DELAY)
        assert [w.word for w in got] == [w.word for w in SPEECHES[sessions.index(session)]]
        markers = [e for e in events[session] if isinstance(e, MarkerEvent)]
        assert markers == [MarkerEvent(42)]
        assert events[session].index(markers[0]) > max(
            i for i, e in enumerate(events[session]) if isinstance(e, WordEvent)
        )
    assert engine.free_slots == 3
    engine.close()


def test_bad_audio_is_refused_and_other_slots_go_on(tokenizer) -> None:
    words = SPEECHES[0]
    stream = words_to_stream(words, tokenizer, FR, delay=DELAY)[0].tolist()
    engine, codec = _engine(tokenizer, [stream], slots=2)
    good, bad = _session(tokenizer, codec), _session(tokenizer, codec)
    engine.attach(good)
    engine.attach(bad)
    with pytest.raises(AudioInputError, match="24000 Hz.*8000 Hz"):
        bad.push_pcm(np.zeros(1000, np.float32), sample_rate=24000)
    with pytest.raises(AudioInputError, match="empty"):
        bad.push_pcm(np.zeros(0, np.float32))
    with pytest.raises(AudioInputError, match="float"):
        bad.push_pcm(np.zeros(100, np.int16))
    with pytest.raises(AudioInputError, match="non-finite"):
        bad.push_pcm(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioInputError, match="mono"):
        bad.push_pcm(np.zeros((2, 100), np.float32))
    engine.detach(bad)
    with pytest.raises(SessionClosedError, match="detached"):
        bad.push_pcm(np.zeros(100, np.float32))

    pcm = np.zeros(int(_audio_seconds(words) * codec.sample_rate), np.float32)
    good.push_pcm(pcm)
    good.end()
    collected = []
    while engine.ready():
        collected.extend(engine.step().get(good, []))
    assert _words_from_events(collected) == stream_to_words(stream, tokenizer, FR, DELAY)
    engine.close()
