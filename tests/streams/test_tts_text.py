"""The TTS text rules (`dsm.streams.tts_text`): text splitting, pauses, the end marker,
and the agreement of the training row with what a `TTSSession` feeds for the same words."""

from __future__ import annotations

import pytest
import torch

from dsm.streaming.tts import TTSSession
from dsm.streams.testing import train_tiny_tokenizer
from dsm.streams.text_stream import Word, words_to_stream
from dsm.streams.tokenizer import TextTokenizer, train_tokenizer
from dsm.streams.tts_text import (
    INITIAL_PADDING,
    MAX_BREAK_S,
    TextInputError,
    break_tokens,
    end_marker_position,
    end_markers,
    session_text_inputs,
    split_text,
    word_tokens,
)

FR = 12.5


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


def test_split_text_holds_back_what_the_next_chunk_may_continue() -> None:
    assert split_text("the cat sa", complete=False) == (["the", "cat"], "sa")
    assert split_text("the cat sa", complete=True) == (["the", "cat", "sa"], "")
    assert split_text("the cat ", complete=False) == (["the", "cat"], "")
    assert split_text('one <break time="0.5s"/> two', complete=True) == (["one", 0.5, "two"], "")
    assert split_text('one <break time="0.5', complete=False) == (["one"], '<break time="0.5')
    assert split_text('a <break time="1.2.3s"/> b', complete=True) == (["a", "b"], "")


def test_break_tokens_are_pads_one_per_frame_capped() -> None:
    assert break_tokens(0.4, FR, 3) == [3] * 5
    assert break_tokens(0.01, FR, 3) == [3]  # at least one
    assert len(break_tokens(99.0, FR, 3)) == int(MAX_BREAK_S * FR)


def test_word_tokens_refuses_what_it_cannot_encode(tmp_path) -> None:
    strict = train_tokenizer(["the cat sat on the mat"] * 50, tmp_path / "strict",
                             vocab_size=30, byte_fallback=False)
    assert word_tokens(strict, "cat") == strict.encode("cat")
    with pytest.raises(TextInputError, match="caf☃"):
        word_tokens(strict, "caf☃")


def test_end_marker_goes_at_the_last_words_end_or_after_its_tokens() -> None:
    text = torch.tensor([3, 0, 17, 42, 3, 3, 3, 3])
    assert end_marker_position(text, last_word_end=0.48, frame_rate=FR, pad_id=3) == 5
    assert end_marker_position(text, last_word_end=0.1, frame_rate=FR, pad_id=3) == 4
    masked = torch.tensor([0, 17, 42, -1])
    assert end_marker_position(masked, last_word_end=0.0, frame_rate=FR, pad_id=3) == 3


@pytest.mark.parametrize("words", [
    [Word("the", 0.3, 0.5), Word("cat", 0.5, 0.9), Word("sat", 1.1, 1.6)],
    [Word("bonjour", 0.0, 0.3), Word("le", 0.3, 0.35), Word("chat", 0.36, 2.0)],
    [Word("elephant", 0.2, 0.3)],
])
def test_training_row_is_what_the_session_feeds(tokenizer: TextTokenizer, words) -> None:
    """The training text row (start markers, none in the session's initial padding, then
    the end marker) proposed to a session as the model's decisions: the session feeds
    exactly the row's inputs (the second case starts at 0 s: its first word moves)."""
    pad, start = tokenizer.pad_id, tokenizer.word_start_id
    row, stats = words_to_stream(words, tokenizer, FR, mark_ends=False,
                                 first_marker=INITIAL_PADDING)
    assert int((row == start).nonzero()[0]) >= INITIAL_PADDING
    row = torch.cat([row, torch.full((30,), pad)])  # room for the end and trailing pads
    row[end_marker_position(row, words[-1].end, FR, pad)] = start
    assert int(end_markers(row, pad, start).sum()) == 1
    session = TTSSession(tokenizer, frame_rate=FR, audio_delay=4)
    session.push_text(" ".join(word.word for word in words))
    session.end_text()
    fed = [session.force_text(int(token)) for token in row]
    inputs = session_text_inputs(row[None, None], pad, start)[0, 0].tolist()
    assert fed == inputs
    assert session.feeder.ended and [w for w, _ in session.feeder.consumed] == [
        word.word for word in words]


def test_first_marker_moves_an_early_first_word_and_counts_it(tokenizer: TextTokenizer) -> None:
    words = [Word("cat", 0.05, 0.4), Word("sat", 0.5, 0.9)]  # natural 0 at position 0
    plain, plain_stats = words_to_stream(words, tokenizer, FR, mark_ends=False)
    moved, stats = words_to_stream(words, tokenizer, FR, mark_ends=False, first_marker=2)
    assert int(plain[0]) == tokenizer.word_start_id and plain_stats.shifted_words == 0
    assert moved[:2].tolist() == [tokenizer.pad_id] * 2
    assert int(moved[2]) == tokenizer.word_start_id
    assert stats.shifted_words == 1 and stats.shift_frames == 2
