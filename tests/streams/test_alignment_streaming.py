"""The incremental text-stream reader (`TextStreamDecoder`) agrees with `stream_to_words`.

`dsm.streams.text_stream` defines the convention and both readers; the ASR session runs
the incremental one, one position at a time. Both must give the same words and times on
any token sequence, including model outputs our layout never writes (missing 0s, masked
cells).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsm.streams.testing import TEST_WORDS, train_tiny_tokenizer
from dsm.streams.text_stream import (
    DecodedWord,
    DecodedWordEnd,
    TextStreamDecoder,
    Word,
    stream_to_words,
    words_to_stream,
)
from dsm.streams.tokenizer import TextTokenizer

_TOKENIZER: list[TextTokenizer] = []


def tokenizer_for(tmp_path_factory: pytest.TempPathFactory) -> TextTokenizer:
    if not _TOKENIZER:
        _TOKENIZER.append(train_tiny_tokenizer(tmp_path_factory.mktemp("tok")))
    return _TOKENIZER[0]


def streamed_words(stream: list[int], tokenizer: TextTokenizer, delay: int) -> list[Word]:
    decoder = TextStreamDecoder(tokenizer, 12.5, delay)
    events = [event for token in stream for event in decoder.push(token)] + decoder.flush()
    words: list[Word] = []
    pending: tuple[str, float] | None = None
    for event in events:
        if isinstance(event, DecodedWord):
            assert pending is None, "two Word events without an EndWord between them"
            pending = (event.text, event.start_time)
        elif isinstance(event, DecodedWordEnd):
            assert pending is not None, "EndWord without a word"
            words.append(Word(pending[0], pending[1], event.stop_time))
            pending = None
    assert pending is None
    return words


def assert_same(a: list[Word], b: list[Word]) -> None:
    assert [w.word for w in a] == [w.word for w in b]
    for x, y in zip(a, b):
        assert x.start == pytest.approx(y.start) and x.end == pytest.approx(y.end)


SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.data(), st.integers(0, 7))
def test_streaming_reader_matches_on_any_sequence(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, delay: int
) -> None:
    tokenizer = tokenizer_for(tmp_path_factory)
    text_ids = sorted({t for w in TEST_WORDS for t in tokenizer.encode(w)})
    stream = data.draw(st.lists(st.one_of(st.sampled_from([0, 3, 3, 3, -1]),
                                          st.sampled_from(text_ids)), max_size=60))
    assert_same(streamed_words(stream, tokenizer, delay),
                stream_to_words(stream, tokenizer, 12.5, delay=delay))


@SETTINGS
@given(st.lists(st.sampled_from(TEST_WORDS), min_size=1, max_size=15), st.data(),
       st.integers(1, 7))
def test_streaming_reader_recovers_written_words(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], data: st.DataObject, delay: int
) -> None:
    tokenizer = tokenizer_for(tmp_path_factory)
    words, time = [], 0.0
    for text in texts:
        duration = data.draw(st.floats(0.0, 0.6))
        words.append(Word(text, time, time + duration))
        time += duration + data.draw(st.sampled_from([0.0, 0.1, 0.5]))
    stream, _ = words_to_stream(words, tokenizer, 12.5, delay=delay)
    offline = stream_to_words(stream, tokenizer, 12.5, delay=delay)
    assert [w.word for w in offline] == texts
    assert_same(streamed_words(stream.tolist(), tokenizer, delay), offline)
