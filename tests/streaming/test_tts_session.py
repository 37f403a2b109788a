"""TTS: the text feeder state machine and TTSSession inside a BatchedEngine."""

from __future__ import annotations

import random

import numpy as np
import pytest

from dsm.streaming.engine import BatchedEngine, SessionClosedError
from dsm.streaming.events import AudioEvent, TextEvent
from dsm.streaming.testing import ScriptedLMForTests
from dsm.streaming.tts import TTSSession
from dsm.streams.testing import TEST_WORDS, ToyCodecForTests, train_tiny_tokenizer
from dsm.streams.text_stream import stream_to_words
from dsm.streams.tokenizer import train_tokenizer
from dsm.streams.tts_text import TextFeeder, TextInputError

FR = 12.5
PAD, WORD = 3, 0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def _run_feeder(feeder: TextFeeder, proposals, arrivals, words, tokenizer, max_steps=2000):
    """Step the feeder; `arrivals[step]` words are added at that step. Returns the stream."""
    stream = []
    pending = dict(arrivals)
    for step in range(max_steps):
        for index in pending.pop(step, []):
            feeder.add_word(words[index], tokenizer.encode(words[index]))
        if not pending and not feeder.closed:
            feeder.close()
        stream.append(feeder.next_token(proposals(step)))
        if feeder.ended:
            break
    return stream


@pytest.mark.parametrize("model", ["eager", "shy", "random"])
def test_feeder_consumes_every_word_in_order(tokenizer, model) -> None:
    rng = random.Random(1)
    words = [rng.choice(TEST_WORDS) for _ in range(25)]
    proposals = {
        "eager": lambda s: WORD,  # wants a word at every step
        "shy": lambda s: PAD,  # never asks: max_padding must force words in
        "random": lambda s: rng.choice([WORD, PAD, PAD, 57]),  # 57: not a control token
    }[model]
    feeder = TextFeeder(PAD, WORD, max_padding=5, initial_padding=2)
    stream = _run_feeder(feeder, proposals, {0: list(range(len(words)))}, words, tokenizer)
    assert feeder.ended
    assert [w for w, _ in feeder.consumed] == words
    read = stream_to_words(stream, tokenizer, FR, 0)
    assert [w.word for w in read] == words
    assert stream[:2] == [PAD, PAD]  # initial padding


def test_feeder_waits_for_late_text_and_never_skips(tokenizer) -> None:
    words = ["the", "cat", "sat", "on", "mat"]
    # the model wants a word at every step, the text comes one word every 9 steps
    arrivals = {9 * i: [i] for i in range(len(words))}
    feeder = TextFeeder(PAD, WORD, max_padding=3, initial_padding=2)
    stream = _run_feeder(feeder, lambda s: WORD, arrivals, words, tokenizer)
    assert [w for w, _ in feeder.consumed] == words
    assert feeder.late_steps > 0
    positions = [p for _, p in feeder.consumed]
    assert positions == sorted(positions)
    for (_word, position), arrival in zip(feeder.consumed, sorted(arrivals)):
        assert position >= arrival  # never before the text existed
    assert [w.word for w in stream_to_words(stream, tokenizer, FR, 0)] == words


def test_feeder_ignores_proposals_while_feeding_a_word(tokenizer) -> None:
    feeder = TextFeeder(PAD, WORD, initial_padding=0)
    ids = tokenizer.encode("elephant")
    feeder.add_word("elephant", ids)
    out = [feeder.next_token(WORD) for _ in range(1 + len(ids))]
    assert out == [WORD, *ids]


def _engine(tokenizer, scripts, slots, dep_q=2, delays=(0, 1, 1)):
    codec = ToyCodecForTests(sample_rate=8000, frame_rate=FR, num_codebooks=dep_q)
    lm = ScriptedLMForTests(
        scripts, n_q=dep_q, dep_q=dep_q, text_card=tokenizer.vocab_size, delays=list(delays)
    )
    return BatchedEngine(lm, codec, slots, temp=0.0, temp_text=0.0), codec


def _tts(tokenizer, audio_delay=2) -> TTSSession:
    return TTSSession(tokenizer, frame_rate=FR, audio_delay=audio_delay, max_padding=4)


def test_tts_sessions_stream_audio_and_word_times(tokenizer) -> None:
    # slot 0's model is eager, slot 1's asks every third step
    engine, codec = _engine(tokenizer, [[WORD] * 500, [PAD, PAD, WORD] * 200], slots=2)
    texts = ["the cat sat on the mat", "bonjour marie antoine est noir"]
    sessions = [_tts(tokenizer), _tts(tokenizer)]
    for session in sessions:
        engine.attach(session)
    # text arrives in pieces cutting words, while the engine already runs
    sessions[0].push_text("the ca")
    sessions[1].push_text(texts[1])
    sessions[1].end_text()
    events = {s: [] for s in sessions}
    for step in range(400):
        if step == 5:
            sessions[0].push_text("t sat on")
        if step == 30:
            sessions[0].push_text(" the mat")
            sessions[0].end_text()
        if all(s.finished for s in sessions):
            break
        if not engine.ready():  # a stream waiting for its words does not step
            continue
        for session, evs in engine.step().items():
            events[session].extend(evs)
    for session, text in zip(sessions, texts):
        assert session.finished
        timed = [e for e in events[session] if isinstance(e, TextEvent)]
        assert [e.text for e in timed] == text.split()
        assert all(a.stop_s <= b.start_s + 1e-9 for a, b in zip(timed, timed[1:]))
        assert all(e.start_s < e.stop_s for e in timed)
        audio = [e for e in events[session] if isinstance(e, AudioEvent)]
        assert audio and all(e.pcm.shape == (codec.frame_size,) for e in audio)
        # audio covers every word's span
        assert len(audio) / FR >= timed[-1].stop_s
    # it waited for "t sat on" and " the mat" without stepping (its slot skipped the steps
    # its neighbour took): its words and audio are those of the whole text given at once
    assert sessions[0].feeder.late_steps == 0
    assert engine.free_slots == 2
    engine.close()
    alone_engine, _ = _engine(tokenizer, [[WORD] * 500], slots=1)
    alone = _tts(tokenizer)
    alone_engine.attach(alone)
    alone.push_text(texts[0])
    alone.end_text()
    alone_events = []
    while alone_engine.ready():
        alone_events.extend(alone_engine.step().get(alone, []))
    alone_engine.close()

    def spoken(evs: list) -> tuple[list, np.ndarray]:
        timed = [(e.text, e.start_s, e.stop_s) for e in evs if isinstance(e, TextEvent)]
        return timed, np.concatenate([e.pcm for e in evs if isinstance(e, AudioEvent)])

    (timed, audio), (alone_timed, alone_audio) = spoken(events[sessions[0]]), spoken(alone_events)
    assert timed == alone_timed and np.array_equal(audio, alone_audio)


def test_bad_text_is_refused_and_other_slots_go_on(tokenizer, tmp_path) -> None:
    strict = train_tokenizer(
        [" ".join(TEST_WORDS)] * 50, tmp_path / "strict", vocab_size=60, byte_fallback=False
    )
    engine, _ = _engine(strict, [[WORD] * 300], slots=2)
    good, bad = _tts(strict), _tts(strict)
    engine.attach(good)
    engine.attach(bad)
    with pytest.raises(TextInputError, match="empty"):
        bad.push_text("")
    with pytest.raises(TextInputError, match="caf☃"):
        bad.push_text("the caf☃ ")
    assert not bad.feeder.waiting  # all or nothing: "the" was not queued either
    engine.detach(bad)
    with pytest.raises(SessionClosedError, match="detached"):
        bad.push_text("the cat")
    good.push_text("the cat sat")
    good.end_text()
    words = []
    while engine.ready():
        words += [e.text for e in engine.step().get(good, []) if isinstance(e, TextEvent)]
    assert words == ["the", "cat", "sat"]
    empty = _tts(strict)
    with pytest.raises(TextInputError, match="nothing to speak"):
        empty.end_text()
    engine.close()


def test_feeder_pending_tracks_words_not_yet_spoken(tokenizer) -> None:
    feeder = TextFeeder(PAD, WORD, initial_padding=0)
    assert not feeder.pending
    ids = tokenizer.encode("cat")
    feeder.add_word("cat", ids)
    assert feeder.pending
    feeder.next_token(WORD)  # the 0; the tokens follow
    assert feeder.pending
    for _ in ids:
        feeder.next_token(PAD)
    assert not feeder.pending


def test_break_markup_is_a_pause_not_words(tokenizer) -> None:
    """`<break time="0.4s"/>` (Kyutai's TTS preprocessing) is that many frames of padding
    fed as one word, whether the text comes whole or cut anywhere, even inside the tag."""
    text = 'the cat <break time="0.4s"/> sat <break time="x.5s"/>on'
    sessions = [_tts(tokenizer), _tts(tokenizer)]
    sessions[0].push_text(text)
    for i in range(0, len(text), 5):  # cut across words and inside the tags
        sessions[1].push_text(text[i:i + 5])
    for session in sessions:
        session.end_text()
    for session in sessions:
        queued = [(w.text, w.tokens) for w in session.feeder.waiting]
        assert [t for t, _ in queued] == ["the", "cat", '<break time="0.40s">', "sat",
                                          "<break", 'time="x.5s"/>on']  # not a duration: text
        assert queued[2][1] == [tokenizer.pad_id] * 5  # 0.4 s at 12.5 Hz
    whole = _tts(tokenizer)
    whole.push_text('one <break time="99s"/>', whole_words=True)
    assert len(whole.feeder.waiting[1].tokens) == 125  # at most 10 s
