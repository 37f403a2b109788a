"""Kyutai msgpack protocol: exact wire format, round trips and strict validation."""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsm.streaming.events import (
    AudioEvent,
    EndWordEvent,
    MarkerEvent,
    StepEvent,
    TextEvent,
    WordEvent,
)
from dsm.streaming.serve import protocol as P


def test_audio_in_is_byte_identical_to_kyutai_clients() -> None:
    # Kyutai's scripts: msgpack.packb({"type": "Audio", "pcm": [float(x) ...]},
    # use_single_float=True)
    pcm = np.random.default_rng(0).standard_normal(1920).astype(np.float32)
    reference = msgpack.packb({"type": "Audio", "pcm": [float(x) for x in pcm]},
                              use_single_float=True)
    assert P.encode_audio_in(pcm) == reference
    decoded = P.decode_asr_input(reference)
    assert isinstance(decoded, P.AudioIn)
    np.testing.assert_array_equal(decoded.pcm, pcm)
    assert P.encode_marker_in(3) == msgpack.packb({"type": "Marker", "id": 3})
    assert P.encode_text_in("hi") == msgpack.packb({"type": "Text", "text": "hi"})
    assert P.encode_eos_in() == msgpack.packb({"type": "Eos"})


def test_server_messages_have_kyutai_field_names_and_types() -> None:
    pcm = np.linspace(-1, 1, 1920, dtype=np.float32)
    cases = {
        "Word": (WordEvent("hello", 0.48), {"type": "Word", "text": "hello", "start_time": 0.48}),
        "EndWord": (EndWordEvent(0.96), {"type": "EndWord", "stop_time": 0.96}),
        "Step": (StepEvent(7, [0.25, 0.5], 1920),
                 {"type": "Step", "step_idx": 7, "prs": [0.25, 0.5], "buffered_pcm": 1920}),
        "Marker": (MarkerEvent(42), {"type": "Marker", "id": 42}),
        "Text": (TextEvent("hi", 0.08, 0.4),
                 {"type": "Text", "text": "hi", "start_s": 0.08, "stop_s": 0.4}),
    }
    for name, (event, expected) in cases.items():
        wire = msgpack.unpackb(P.encode_event(event))
        assert wire == expected, name
        assert P.decode_server_message(P.encode_event(event)) == event
    audio = msgpack.unpackb(P.encode_event(AudioEvent(pcm)))
    assert set(audio) == {"type", "pcm"} and len(audio["pcm"]) == 1920
    np.testing.assert_array_equal(np.asarray(audio["pcm"], dtype=np.float32), pcm)
    assert msgpack.unpackb(P.encode_ready()) == {"type": "Ready"}
    assert msgpack.unpackb(P.encode_error("bad")) == {"type": "Error", "message": "bad"}
    assert P.decode_server_message(P.encode_error("bad")) == P.ErrorOut("bad")


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b"\xc1\x00", "malformed msgpack"),
        (b"\x92\x01", "malformed msgpack"),  # truncated array
        (msgpack.packb([1, 2]), "expected a msgpack map"),
        (msgpack.packb({"pcm": [0.0]}), 'no string "type"'),
        (msgpack.packb({"type": 3}), 'no string "type"'),
        (msgpack.packb({"type": "Transcribe"}), "unknown message type 'Transcribe'"),
        (msgpack.packb({"type": "Audio"}), 'lacks the "pcm" field'),
        (msgpack.packb({"type": "Audio", "pcm": "0.1,0.2"}), "array of numbers"),
        (msgpack.packb({"type": "Audio", "pcm": [0.1, "x"]}), "flat array of numbers"),
        (msgpack.packb({"type": "Audio", "pcm": [[0.1], [0.2]]}), "flat array of numbers"),
        (msgpack.packb({"type": "Audio", "pcm": [0.0, float("nan")]}),
         "non-finite sample (first at index 1)"),
        (msgpack.packb({"type": "Audio", "pcm": [float("inf")]}), "non-finite"),
        (msgpack.packb({"type": "Marker", "id": "a"}), "Marker.id must be an integer"),
        (msgpack.packb({"type": "Marker", "id": True}), "Marker.id must be an integer"),
        (msgpack.packb({"type": "OggOpus", "data": "not bytes"}), "OggOpus.data must be binary"),
        (msgpack.packb({"type": "OggOpus"}), 'lacks the "data" field'),
        ("a text frame", "text frame"),
    ],
)
def test_bad_asr_frames_raise_clear_errors(frame: bytes | str, needle: str) -> None:
    with pytest.raises(P.ProtocolError, match=None) as info:
        P.decode_asr_input(frame)
    assert needle in str(info.value)


def test_limits_on_samples_bytes_and_text() -> None:
    with pytest.raises(P.ProtocolError, match="limit is 100"):
        P.decode_asr_input(P.encode_audio_in(np.zeros(101)), max_samples=100)
    assert P.decode_asr_input(P.encode_audio_in(np.zeros(100)), max_samples=100).pcm.shape == (100,)
    with pytest.raises(P.ProtocolError, match="exceeds the limit of 64"):
        P.decode_asr_input(P.encode_audio_in(np.zeros(100)), max_bytes=64)
    with pytest.raises(P.ProtocolError, match="limit is 5"):
        P.decode_tts_input(P.encode_text_in("abcdef"), max_chars=5)
    with pytest.raises(P.ProtocolError, match="Text.text must be a string"):
        P.decode_tts_input(msgpack.packb({"type": "Text", "text": 5}))
    with pytest.raises(P.ProtocolError, match="expected Text or Eos"):
        P.decode_tts_input(P.encode_audio_in(np.zeros(4)))


def test_noop_and_empty_inputs() -> None:
    assert P.decode_asr_input(msgpack.packb({"type": "Init"})) == P.InitIn()
    assert P.decode_asr_input(msgpack.packb({"type": "Ping"})) == P.NoOpIn("Ping")
    empty = P.decode_asr_input(msgpack.packb({"type": "Audio", "pcm": []}))
    assert isinstance(empty, P.AudioIn) and empty.pcm.shape == (0,)
    ints = P.decode_asr_input(msgpack.packb({"type": "Audio", "pcm": [0, 1, -1]}))
    assert ints.pcm.dtype == np.float32 and ints.pcm.tolist() == [0.0, 1.0, -1.0]
    assert isinstance(P.decode_tts_input(msgpack.packb({"type": "Eos"})), P.EosIn)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_escape_as_anything_but_protocol_error(data: bytes) -> None:
    for decode in (P.decode_asr_input, P.decode_tts_input, P.decode_server_message):
        try:
            decode(data)
        except P.ProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=-P.MAX_ABS_SAMPLE, max_value=P.MAX_ABS_SAMPLE, width=32),
                max_size=50))
def test_audio_round_trip_is_exact(samples: list[float]) -> None:
    """Every accepted sample (finite, |x| <= 16) comes through bit for bit."""
    pcm = np.asarray(samples, dtype=np.float32)
    decoded = P.decode_asr_input(P.encode_audio_in(pcm))
    np.testing.assert_array_equal(decoded.pcm, pcm)
    event = P.decode_server_message(P.encode_event(AudioEvent(pcm)))
    assert isinstance(event, AudioEvent)
    np.testing.assert_array_equal(event.pcm, pcm)


def test_times_keep_double_precision() -> None:
    event = WordEvent("x", 1234.56789012345)
    decoded = P.decode_server_message(P.encode_event(event))
    assert isinstance(decoded, WordEvent) and decoded.start_time == event.start_time
    assert not math.isnan(decoded.start_time)


def test_tts_input_as_kyutai_servers_read_it() -> None:
    assert P.decode_tts_input("hello") == P.TextIn("hello")  # a text frame is text
    assert P.decode_tts_input(b"\0") == P.EosIn()  # one zero byte ends the text
    assert P.decode_tts_input(msgpack.packb({"type": "Text", "text": ""})) == P.NoOpIn("Text")
    assert P.decode_tts_input("") == P.NoOpIn("Text")
    with pytest.raises(P.ProtocolError, match="limit is 3"):
        P.decode_tts_input("abcd", max_chars=3)
    with pytest.raises(P.ProtocolError, match="text frame"):  # the ASR endpoint: still refused
        P.decode_asr_input("hello")
