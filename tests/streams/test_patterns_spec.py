"""Stream specs: task row layouts and checks."""

from __future__ import annotations

import pytest

from dsm.streams.spec import StreamSpec, num_rows, row_slices, task_streams


def test_task_rows_follow_kyutai_order() -> None:
    asr = task_streams("asr", 8, text_delay=6)
    assert [(s.name, s.codebooks, s.delay, s.generated) for s in asr] == [
        ("text", 1, 6, True), ("audio", 8, 0, False)]
    tts = task_streams("tts", 8, audio_delay=16)
    assert [(s.name, s.delay, s.generated) for s in tts] == [
        ("text", 0, True), ("audio", 16, True)]
    translation = task_streams("translation", 4, text_delay=10, audio_delay=12)
    assert row_slices(translation) == {
        "text": slice(0, 1), "target_audio": slice(1, 5), "source_audio": slice(5, 9)}
    assert num_rows(translation) == 9


def test_bad_specs_are_named() -> None:
    with pytest.raises(ValueError, match="unknown task 'music'"):
        task_streams("music", 8)
    with pytest.raises(ValueError, match="exactly one row"):
        StreamSpec("text", "text", codebooks=2)
    with pytest.raises(ValueError, match="delay must be >= 0"):
        StreamSpec("audio", "audio", 8, delay=-1)
    with pytest.raises(ValueError, match="kind"):
        StreamSpec("x", "video")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two streams named"):
        row_slices([StreamSpec("a", "text"), StreamSpec("a", "audio", 2)])
