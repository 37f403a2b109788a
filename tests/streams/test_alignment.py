"""DSM text stream: words -> stream -> words round trip, crowding counted, Kyutai reading."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsm.streams.testing import TEST_WORDS, train_tiny_tokenizer
from dsm.streams.text_stream import (
    AlignmentError,
    Word,
    delay_frames,
    frames_needed,
    stream_to_words,
    time_to_frame,
    words_to_stream,
)
from dsm.streams.tokenizer import TextTokenizer

FRAME_RATE = 12.5
FRAME = 1 / FRAME_RATE
HALF = 0.5 * FRAME + 1e-9


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


_TOKENIZER: list[TextTokenizer] = []


def shared_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    if not _TOKENIZER:
        _TOKENIZER.append(train_tiny_tokenizer(tmp_path_factory.mktemp("tok_shared")))
    return _TOKENIZER[0]


def text_tokens(stream: list[int], tokenizer: TextTokenizer) -> list[int]:
    return [t for t in stream if t not in (tokenizer.pad_id, tokenizer.word_start_id)]


def all_tokens(words: list[Word], tokenizer: TextTokenizer) -> list[int]:
    return [t for w in words for t in tokenizer.encode(w.word)]


def assert_words_come_back(stream: torch.Tensor, words: list[Word], tokenizer: TextTokenizer,
                           delay: int) -> None:
    """Reading `stream` gives `words` back, each start and end within half a frame."""
    decoded = stream_to_words(stream, tokenizer, FRAME_RATE, delay=delay)
    assert [w.word for w in decoded] == [w.word for w in words]
    for original, back in zip(words, decoded):
        assert abs(back.start - original.start) <= HALF
        assert abs(back.end - original.end) <= HALF


word_texts = st.lists(st.sampled_from(TEST_WORDS), min_size=1, max_size=25)
HYPOTHESIS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@HYPOTHESIS
@given(word_texts, st.data(), st.integers(0, 8))
def test_sparse_speech_round_trip_within_half_a_frame(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], data: st.DataObject, delay: int
) -> None:
    """Words with room for their tokens and pauses between them: exact up to quantisation."""
    tokenizer = shared_tokenizer(tmp_path_factory)
    words, time = [], data.draw(st.floats(0.05, 2.0))  # a word at frame 0 needs delay >= 1
    for text in texts:
        n = len(tokenizer.encode(text))
        duration = (n + 2) * FRAME + data.draw(st.floats(0.0, 0.6))
        words.append(Word(text, time, time + duration))
        time += duration + data.draw(st.floats(0.0, 1.5))  # silence, possibly none
    stream, stats = words_to_stream(words, tokenizer, FRAME_RATE, delay=delay)
    assert stats.shifted_words == 0 and stats.late_ends == 0
    assert stats.num_tokens == len(all_tokens(words, tokenizer))
    assert text_tokens(stream.tolist(), tokenizer) == all_tokens(words, tokenizer)
    assert_words_come_back(stream, words, tokenizer, delay)


@HYPOTHESIS
@given(word_texts, st.data(), st.integers(0, 6))
def test_crowded_speech_back_to_back_words_round_trip(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], data: st.DataObject, delay: int
) -> None:
    """Words touching each other with exactly the frames their tokens need: no pad left."""
    tokenizer = shared_tokenizer(tmp_path_factory)
    words, frame = [], data.draw(st.integers(1, 5))
    for text in texts:
        n = len(tokenizer.encode(text))
        jitter_start = data.draw(st.floats(-0.45, 0.45)) * FRAME
        words.append(Word(text, frame * FRAME + jitter_start, (frame + n + 1) * FRAME))
        frame += n + 1
    # make ends equal the next start (touching), keep the jittered starts
    words = [
        Word(w.word, w.start, words[i + 1].start if i + 1 < len(words) else w.end)
        for i, w in enumerate(words)
    ]
    stream, stats = words_to_stream(words, tokenizer, FRAME_RATE, delay=delay)
    assert stats.shifted_words == 0 and stats.late_ends == 0
    body = stream.tolist()[time_to_frame(words[0].start, FRAME_RATE) - 1 + delay:]
    assert tokenizer.pad_id not in body  # fully crowded: every frame carries a token
    assert_words_come_back(stream, words, tokenizer, delay)


@HYPOTHESIS
@given(word_texts, st.data(), st.integers(0, 6))
def test_overcrowded_speech_shifts_are_counted_never_dropped(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], data: st.DataObject, delay: int
) -> None:
    """Words too short for their tokens: later words move, each move is counted exactly."""
    tokenizer = shared_tokenizer(tmp_path_factory)
    words, time = [], data.draw(st.floats(0.0, 0.3))
    for text in texts:
        duration = data.draw(st.floats(0.0, 0.2))
        words.append(Word(text, time, time + duration))
        time += duration + data.draw(st.sampled_from([0.0, 0.0, 0.03, 0.3]))
    stream, stats = words_to_stream(words, tokenizer, FRAME_RATE, delay=delay)
    # never dropped: every token, in order, and every word back with its text
    assert text_tokens(stream.tolist(), tokenizer) == all_tokens(words, tokenizer)
    decoded = stream_to_words(stream, tokenizer, FRAME_RATE, delay=delay)
    assert [w.word for w in decoded] == texts
    # counted: each word's start moved by exactly what the stats report for it
    shift_total, late_total, late_count = 0, 0, 0
    for index, (original, back) in enumerate(zip(words, decoded)):
        start_move = round((back.start - original.start) * FRAME_RATE)
        natural = time_to_frame(original.start, FRAME_RATE)
        moved = round(back.start * FRAME_RATE) - natural
        assert moved >= 0
        assert (moved > 0) == (index in stats.shifted_indices)
        assert abs(start_move - moved) <= 1
        shift_total += moved
        end_moved = round(back.end * FRAME_RATE) - time_to_frame(original.end, FRAME_RATE)
        assert end_moved >= 0
        late_total += end_moved
        late_count += end_moved > 0
        if moved == 0:
            assert abs(back.start - original.start) <= HALF
        if end_moved == 0:
            assert abs(back.end - original.end) <= HALF
    assert stats.shift_frames == shift_total
    assert stats.shifted_words == len(stats.shifted_indices)
    assert stats.late_end_frames == late_total and stats.late_ends == late_count
    assert len(stream) == frames_needed(words, tokenizer, FRAME_RATE, delay=delay)


def test_layout_is_the_documented_one(tokenizer: TextTokenizer) -> None:
    [cat] = tokenizer.encode("cat")
    dog = tokenizer.encode("dogs")
    words = [Word("cat", 0.32, 0.56), Word("dogs", 0.56, 1.2), Word("cat", 2.0, 2.24)]
    stream, stats = words_to_stream(words, tokenizer, FRAME_RATE, delay=2)
    expected = [3] * 30  # the last 0 (end of the second "cat", frame 28) is position 29
    expected[4 - 1 + 2] = 0  # "cat" starts at frame 4: its 0 one frame before, +2 delay
    expected[6] = cat
    expected[7 - 1 + 2] = 0  # ends at frame 7 = where "dogs" starts: one shared 0
    for i, token in enumerate(dog):
        expected[9 + i] = token
    expected[15 - 1 + 2] = 0  # "dogs" ends at frame 15
    expected[25 - 1 + 2] = 0  # second "cat" from frame 25
    expected[27] = cat
    expected[28 - 1 + 2] = 0
    assert stream.tolist() == expected
    assert stats.shifted_words == 0


def test_word_at_time_zero_without_delay_is_shifted_and_counted(tokenizer: TextTokenizer) -> None:
    stream, stats = words_to_stream([Word("cat", 0.0, 0.5)], tokenizer, FRAME_RATE)
    assert stream[0] == 0 and stats.shifted_words == 1 and stats.shift_frames == 1
    [word] = stream_to_words(stream, tokenizer, FRAME_RATE)
    assert word.start == pytest.approx(FRAME)


def test_start_markers_only_for_tts(tokenizer: TextTokenizer) -> None:
    words = [Word("cat", 0.4, 0.6), Word("river", 1.0, 1.6)]
    stream, _ = words_to_stream(words, tokenizer, FRAME_RATE, mark_ends=False)
    assert stream.tolist().count(0) == 2
    decoded = stream_to_words(stream, tokenizer, FRAME_RATE)
    assert [w.word for w in decoded] == ["cat", "river"]
    assert decoded[0].start == pytest.approx(0.4) and decoded[1].start == pytest.approx(1.04)
    assert decoded[0].end == pytest.approx(decoded[1].start)  # ends read as the next boundary


def test_segment_with_several_words_is_split(tokenizer: TextTokenizer) -> None:
    tokens = tokenizer.encode("cat") + tokenizer.encode("river")
    stream = [3, 0] + tokens + [3, 3, 0, 3]
    decoded = stream_to_words(stream, tokenizer, FRAME_RATE)
    assert [w.word for w in decoded] == ["cat", "river"]
    assert decoded[0].start == pytest.approx(2 * FRAME)
    assert decoded[1].start == pytest.approx(decoded[0].end)
    assert decoded[1].end == pytest.approx(7 * FRAME)


def test_masked_and_unterminated_streams(tokenizer: TextTokenizer) -> None:
    [cat] = tokenizer.encode("cat")
    decoded = stream_to_words([-1, -1, cat, 3, 3], tokenizer, FRAME_RATE, delay=1)
    assert decoded == [Word("cat", 1 * FRAME, 2 * FRAME)]


def kyutai_server_reader(stream: list[int], delay: int) -> list[tuple[str, list[int], float]]:
    """Events as moshi-server's asr.rs derives them (Word at a pad/0 after tokens with the
    previous 0's time; EndWord at the next 0), re-stated here to check compatibility."""
    events: list[tuple[str, list[int], float]] = []
    word: list[int] = []
    unended, last_stop = False, 0.0
    for position, token in enumerate(stream):
        if token in (0, 3):
            if word:
                events.append(("word", word, last_stop))
                word, unended = [], True
        else:
            word.append(token)
        if token == 0:
            stop = (position + 1 - delay) / FRAME_RATE
            if unended:
                events.append(("end", [], stop))
                unended = False
            last_stop = stop
    return events


def test_kyutai_server_reading_gives_the_same_times(tokenizer: TextTokenizer) -> None:
    words = [Word("cat", 0.4, 0.72), Word("river", 0.72, 1.3), Word("station", 2.0, 2.8)]
    stream, _ = words_to_stream(words, tokenizer, FRAME_RATE, delay=6)
    events = kyutai_server_reader(stream.tolist(), delay=6)
    starts = [time for kind, _, time in events if kind == "word"]
    ends = [time for kind, _, time in events if kind == "end"]
    ours = stream_to_words(stream, tokenizer, FRAME_RATE, delay=6)
    assert starts == pytest.approx([w.start for w in ours])
    assert ends == pytest.approx([w.end for w in ours])
    assert [tokenizer.decode(t) for kind, t, _ in events if kind == "word"] == [
        "cat", "river", "station"]


def test_bad_words_raise_clear_errors(tokenizer: TextTokenizer) -> None:
    with pytest.raises(AlignmentError, match="overlaps"):
        words_to_stream([Word("cat", 0.0, 1.0), Word("river", 0.5, 1.5)], tokenizer, FRAME_RATE)
    with pytest.raises(AlignmentError, match="unsorted"):
        words_to_stream([Word("cat", 1.0, 1.0), Word("river", 0.5, 0.6)], tokenizer, FRAME_RATE)
    with pytest.raises(AlignmentError, match="empty"):
        words_to_stream([Word(" ", 0.0, 1.0)], tokenizer, FRAME_RATE)
    with pytest.raises(AlignmentError, match="ends before"):
        words_to_stream([Word("cat", 1.0, 0.5)], tokenizer, FRAME_RATE)
    with pytest.raises(AlignmentError, match="only 3 given"):
        words_to_stream([Word("cat", 1.0, 1.5)], tokenizer, FRAME_RATE, num_frames=3)
    with pytest.raises(AlignmentError, match="delay"):
        words_to_stream([Word("cat", 1.0, 1.5)], tokenizer, FRAME_RATE, delay=-1)


def test_delay_frames() -> None:
    assert delay_frames(0.5, 12.5) == 6
    assert delay_frames(2.5, 12.5) == 31
    assert delay_frames(1.28, 12.5) == 16


def test_known_overcrowding_counts(tokenizer: TextTokenizer) -> None:
    # three one-token words of 80 ms back to back from frame 5: each needs 2 frames
    words = [Word("cat", 0.4, 0.48), Word("cat", 0.48, 0.56), Word("cat", 0.56, 0.64)]
    stream, stats = words_to_stream(words, tokenizer, FRAME_RATE, delay=0)
    [cat] = tokenizer.encode("cat")
    assert stream.tolist() == [3, 3, 3, 3, 0, cat, 0, cat, 0, cat, 0]
    assert stats.shifted_words == 2 and stats.shift_frames == 1 + 2
    assert stats.late_ends == 3 and stats.late_end_frames == 1 + 2 + 3
    decoded = stream_to_words(stream, tokenizer, FRAME_RATE)
    assert [round(w.start * FRAME_RATE) for w in decoded] == [5, 7, 9]
    assert [round(w.end * FRAME_RATE) for w in decoded] == [7, 9, 11]
