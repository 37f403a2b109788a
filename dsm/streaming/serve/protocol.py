"""Kyutai's websocket protocol: msgpack maps with a "type" key, validated strictly.

Every frame is one binary msgpack map. What a client may send:

- `/api/asr-streaming`: `Audio{pcm: [f32]}` (24 kHz mono), `Marker{id: int}`, and the
  no-op `Init` / `Ping` that Kyutai's server also accepts.
- `/api/tts_streaming`: `Text{text: str}`, `Eos`.

What the server sends: `Ready`, `Word{text, start_time}`, `EndWord{stop_time}`,
`Step{step_idx, prs, buffered_pcm}`, `Marker{id}`, `Audio{pcm}`, `Text{text, start_s,
stop_s}`, `Error{message}`. Sample arrays go out as single-precision floats, times as double, as Kyutai's
server does.

Decoding never trusts the peer: a frame that is not a msgpack map, has an unknown type, a
missing or mistyped field, too many samples or a non-finite sample raises `ProtocolError`
whose message says exactly what is wrong (the server sends it back as `Error`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from dsm.streaming.events import (
    AudioEvent,
    EndWordEvent,
    Event,
    MarkerEvent,
    ReadyEvent,
    StepEvent,
    TextEvent,
    WordEvent,
)

SAMPLE_RATE = 24_000
FRAME_SIZE = 1920  # samples per 80 ms model step
MAX_MESSAGE_BYTES = 1 << 20  # one websocket message
MAX_PCM_SAMPLES = 10 * SAMPLE_RATE  # one Audio message: at most 10 s
MAX_TEXT_CHARS = 64 * 1024  # one Text message
# Samples louder than this are not audio (float pcm lives in [-1, 1]; some headroom for
# clipping clients): refused before they reach the codec, where they overflow.
MAX_ABS_SAMPLE = 16.0


class ProtocolError(ValueError):
    """A message broke the protocol; `str(error)` is meant for the peer."""


# --- client -> server messages ---------------------------------------------------------


@dataclass(frozen=True)
class AudioIn:
    pcm: np.ndarray  # float32 [N], finite


@dataclass(frozen=True)
class MarkerIn:
    id: int


@dataclass(frozen=True)
class TextIn:
    text: str


@dataclass(frozen=True)
class EosIn:
    pass


@dataclass(frozen=True)
class NoOpIn:
    """Kyutai's `Ping` (and an empty TTS `Text`): accepted and ignored."""

    type: str


@dataclass(frozen=True)
class InitIn:
    """Kyutai's `Init` on the ASR endpoint: start the stream afresh (the server answers
    `Ready` once it has)."""


@dataclass(frozen=True)
class OpusIn:
    """Kyutai's `OggOpus{data}`: a piece of an Ogg Opus stream (24 kHz mono)."""

    data: bytes


AsrInput = AudioIn | MarkerIn | NoOpIn | OpusIn | InitIn
TtsInput = TextIn | EosIn | NoOpIn


def unpack_map(data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """One frame -> a msgpack map with a string "type" (no other checks)."""
    if isinstance(data, str):
        raise ProtocolError("expected a binary msgpack frame, got a text frame")
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types
        raise ProtocolError(f"malformed msgpack: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a msgpack map, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError('message has no string "type" field')
    return message


def _field(message: dict[str, Any], name: str) -> Any:
    if name not in message:
        raise ProtocolError(f'{message["type"]} message lacks the "{name}" field')
    return message[name]


def _int_field(message: dict[str, Any], name: str) -> int:
    value = _field(message, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f'{message["type"]}.{name} must be an integer')
    return value


def _number_field(message: dict[str, Any], name: str) -> float:
    value = _field(message, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f'{message["type"]}.{name} must be a number')
    return float(value)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(text: str, where: str = "Text.text") -> str:
    """Text to speak: control characters (other than tab and line breaks) are refused,
    they are no part of a sentence and no tokenizer piece."""
    bad = _CONTROL.search(text)
    if bad is not None:
        raise ProtocolError(f"{where} holds the control character U+{ord(bad.group()):04X} at "
                            f"index {bad.start()}")
    return text


def _str_field(message: dict[str, Any], name: str, max_chars: int) -> str:
    value = _field(message, name)
    if not isinstance(value, str):
        raise ProtocolError(f'{message["type"]}.{name} must be a string')
    if len(value) > max_chars:
        raise ProtocolError(
            f'{message["type"]}.{name} has {len(value)} characters, the limit is {max_chars}'
        )
    return value


def _pcm_field(message: dict[str, Any], max_samples: int) -> np.ndarray:
    value = _field(message, "pcm")
    if not isinstance(value, list):
        raise ProtocolError("Audio.pcm must be an array of numbers")
    if len(value) > max_samples:
        raise ProtocolError(f"Audio.pcm has {len(value)} samples, the limit is {max_samples}")
    pcm = np.asarray(value) if value else np.zeros(0, dtype=np.float32)
    if pcm.ndim != 1 or pcm.dtype.kind not in "fiu":
        raise ProtocolError("Audio.pcm must be a flat array of numbers")
    with np.errstate(over="ignore"):  # out of float32 range: inf, refused below
        pcm = pcm.astype(np.float32)
    if not np.isfinite(pcm).all():
        bad = int(np.flatnonzero(~np.isfinite(pcm))[0])
        raise ProtocolError(f"Audio.pcm has a non-finite sample (first at index {bad})")
    if pcm.size and float(np.abs(pcm).max()) > MAX_ABS_SAMPLE:
        bad = int(np.flatnonzero(np.abs(pcm) > MAX_ABS_SAMPLE)[0])
        raise ProtocolError(f"Audio.pcm sample {pcm[bad]:g} at index {bad} is not audio: "
                            f"float samples lie in [-1, 1] (at most {MAX_ABS_SAMPLE:g} accepted)")
    return pcm


def decode_asr_input(
    data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES, max_samples: int = MAX_PCM_SAMPLES
) -> AsrInput:
    """A client frame on `/api/asr-streaming` -> `AudioIn` / `MarkerIn` / `NoOpIn`."""
    message = unpack_map(data, max_bytes)
    kind = message["type"]
    if kind == "Audio":
        return AudioIn(_pcm_field(message, max_samples))
    if kind == "Marker":
        return MarkerIn(_int_field(message, "id"))
    if kind == "Init":
        return InitIn()
    if kind == "Ping":
        return NoOpIn(kind)
    if kind == "OggOpus":
        data = _field(message, "data")
        if not isinstance(data, bytes):
            raise ProtocolError("OggOpus.data must be binary (msgpack bin)")
        return OpusIn(data)
    raise ProtocolError(f"unknown message type {kind!r} on the ASR endpoint "
                        "(expected Audio or Marker)")


def decode_tts_input(
    data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES, max_chars: int = MAX_TEXT_CHARS
) -> TtsInput:
    """A client frame on `/api/tts_streaming` -> `TextIn` / `EosIn` / `NoOpIn`.

    As Kyutai's server: a websocket text frame is text, a binary frame of one zero byte is
    the end of the text, an empty `Text` is nothing.
    """
    if isinstance(data, str):
        if len(data) > max_chars:
            raise ProtocolError(f"text frame of {len(data)} characters; the limit is {max_chars}")
        return TextIn(check_text(data, "the text frame")) if data else NoOpIn("Text")
    if data == b"\0":
        return EosIn()
    message = unpack_map(data, max_bytes)
    kind = message["type"]
    if kind == "Text":
        text = check_text(_str_field(message, "text", max_chars))
        return TextIn(text) if text else NoOpIn("Text")
    if kind == "Eos":
        return EosIn()
    raise ProtocolError(f"unknown message type {kind!r} on the TTS endpoint "
                        "(expected Text or Eos)")


# --- server -> client messages ---------------------------------------------------------


def _pack(message: dict[str, Any]) -> bytes:
    """Floats as double precision (times), except `pcm` / `prs` arrays (single, as Kyutai)."""
    arrays = {k: v for k, v in message.items() if k in ("pcm", "prs")}
    if not arrays:
        return msgpack.packb(message)
    parts = [_MAP_PACKER.pack_map_header(len(message))]
    for key, value in message.items():
        parts.append(msgpack.packb(key))
        parts.append(_pack_f32_array(value) if key in arrays else msgpack.packb(value))
    return b"".join(parts)


_MAP_PACKER = msgpack.Packer()
_F32_ITEM = np.dtype([("tag", "u1"), ("value", ">f4")])  # msgpack float 32: 0xca + 4 bytes


def _pack_f32_array(values: Any) -> bytes:
    """A msgpack array of float32, built in one numpy pass (1920 samples per frame)."""
    samples = np.asarray(values, dtype=np.float32).reshape(-1)
    items = np.empty(samples.shape[0], dtype=_F32_ITEM)
    items["tag"] = 0xCA
    items["value"] = samples
    return _MAP_PACKER.pack_array_header(samples.shape[0]) + items.tobytes()


def encode_ready() -> bytes:
    return _pack({"type": "Ready"})


def encode_error(message: str) -> bytes:
    return _pack({"type": "Error", "message": message})


def encode_event(event: Event) -> bytes:
    """A session event -> its Kyutai message, one to one."""
    if isinstance(event, WordEvent):
        return _pack({"type": "Word", "text": event.text, "start_time": event.start_time})
    if isinstance(event, EndWordEvent):
        return _pack({"type": "EndWord", "stop_time": event.stop_time})
    if isinstance(event, StepEvent):
        return _pack({"type": "Step", "step_idx": event.step_idx,
                      "prs": event.prs, "buffered_pcm": event.buffered_pcm})
    if isinstance(event, MarkerEvent):
        return _pack({"type": "Marker", "id": event.id})
    if isinstance(event, AudioEvent):
        pcm = np.asarray(event.pcm, dtype=np.float32).reshape(-1)
        return _pack({"type": "Audio", "pcm": pcm})
    if isinstance(event, ReadyEvent):
        return encode_ready()
    if isinstance(event, TextEvent):
        return _pack({"type": "Text", "text": event.text, "start_s": event.start_s,
                      "stop_s": event.stop_s})
    raise TypeError(f"not a session event: {event!r}")


def encode_audio_in(pcm: np.ndarray) -> bytes:
    """Client side: `Audio{pcm}` as Kyutai's clients send it (single-precision floats)."""
    return _pack({"type": "Audio", "pcm": pcm})


def encode_marker_in(marker_id: int) -> bytes:
    return _pack({"type": "Marker", "id": int(marker_id)})


def encode_text_in(text: str) -> bytes:
    return _pack({"type": "Text", "text": text})


def encode_eos_in() -> bytes:
    return _pack({"type": "Eos"})


@dataclass(frozen=True)
class ReadyOut:
    pass


@dataclass(frozen=True)
class ErrorOut:
    message: str


ServerMessage = Event | ReadyOut | ErrorOut


def decode_server_message(data: bytes | str, max_bytes: int = MAX_MESSAGE_BYTES) -> ServerMessage:
    """Client side: a server frame -> a session event, `ReadyOut` or `ErrorOut`."""
    message = unpack_map(data, max_bytes)
    kind = message["type"]
    if kind == "Ready":
        return ReadyOut()
    if kind == "Error":
        return ErrorOut(_str_field(message, "message", MAX_TEXT_CHARS))
    if kind == "Word":
        return WordEvent(_str_field(message, "text", MAX_TEXT_CHARS),
                         _number_field(message, "start_time"))
    if kind == "EndWord":
        return EndWordEvent(_number_field(message, "stop_time"))
    if kind == "Step":
        prs = _field(message, "prs")
        if not isinstance(prs, list) or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) for p in prs
        ):
            raise ProtocolError("Step.prs must be an array of numbers")
        return StepEvent(_int_field(message, "step_idx"), [float(p) for p in prs],
                         _int_field(message, "buffered_pcm"))
    if kind == "Marker":
        return MarkerEvent(_int_field(message, "id"))
    if kind == "Audio":
        return AudioEvent(_pcm_field(message, MAX_PCM_SAMPLES))
    if kind == "Text":
        start_s = _number_field(message, "start_s")
        stop_s = _number_field(message, "stop_s")
        if not (math.isfinite(start_s) and math.isfinite(stop_s)):
            raise ProtocolError("Text.start_s and Text.stop_s must be finite")
        return TextEvent(_str_field(message, "text", MAX_TEXT_CHARS), start_s, stop_s)
    raise ProtocolError(f"unknown server message type {kind!r}")
