"""The audio formats of Kyutai's server: what `/api/tts_streaming?format=...` sends and the
Ogg Opus a client may send to `/api/asr-streaming`.

TTS output formats (Kyutai's names; OggOpus is their default):
- `OggOpus`: binary frames of an Ogg Opus stream (its header first), nothing else;
- `OggOpusMessagePack`: msgpack `OggOpus{data}` messages carrying the same bytes, plus
  `Ready`, timed `Text` and `Error` messages;
- `Pcm`: binary frames of little-endian float32 samples, nothing else;
- `PcmMessagePack`: msgpack `Audio{pcm}` messages, plus `Ready`, `Text` and `Error`.

Opus is encoded and decoded by `sphn` (Kyutai's audio package, a wheel with no
dependencies), 24 kHz mono, one 1920-sample frame per page.
"""

from __future__ import annotations

import numpy as np

from dsm.streaming.events import AudioEvent, Event
from dsm.streaming.serve.protocol import ProtocolError, _pack, encode_event

TTS_FORMATS = ("OggOpus", "OggOpusMessagePack", "Pcm", "PcmMessagePack")
DEFAULT_TTS_FORMAT = "OggOpus"
SAMPLE_RATE = 24_000


def _sphn():  # type: ignore[no-untyped-def]
    try:
        import sphn
    except ImportError as error:  # a runtime dependency: only a broken install lacks it
        raise ProtocolError(f"Opus needs the sphn package (pip install sphn): {error}") from None
    return sphn


class TtsOutputEncoder:
    """One TTS stream's outgoing frames in `format` (see the module docstring)."""

    def __init__(self, format: str) -> None:
        if format not in TTS_FORMATS:
            raise ValueError(f"unsupported TTS format {format!r}: one of {', '.join(TTS_FORMATS)}")
        self.format = format
        self.messages = format.endswith("MessagePack")  # control and Text messages too
        self._opus = _sphn().OpusStreamWriter(SAMPLE_RATE) if format.startswith("Ogg") else None

    def control(self, frame: bytes) -> bytes | None:
        """A `Ready` / `Error` message, when this format carries messages."""
        return frame if self.messages else None

    def encode(self, event: Event) -> bytes | None:
        """A session event as this format's frame (None: this format does not send it)."""
        if not isinstance(event, AudioEvent):
            return encode_event(event) if self.messages else None
        pcm = np.ascontiguousarray(np.asarray(event.pcm, dtype=np.float32).reshape(-1))
        if self._opus is not None:
            data = self._opus.append_pcm(pcm)  # the stream's header comes with the first page
            if not data:
                return None
            return _pack({"type": "OggOpus", "data": bytes(data)}) if self.messages else bytes(data)
        if self.messages:
            return encode_event(event)
        return pcm.astype("<f4").tobytes()


class OpusInputDecoder:
    """One ASR stream's Ogg Opus bytes (any split) -> float32 pcm at 24 kHz."""

    def __init__(self) -> None:
        self._reader = _sphn().OpusStreamReader(SAMPLE_RATE)

    def decode(self, data: bytes) -> np.ndarray:
        data = bytes(data)
        pieces = []
        try:  # in small pieces: sphn's reader fails on more than about a second at once
            for start in range(0, len(data), _READ_CHUNK):
                pcm = self._reader.append_bytes(data[start:start + _READ_CHUNK])
                pieces.append(np.asarray(pcm, dtype=np.float32).reshape(-1))
        except Exception as error:  # sphn raises its own error types
            raise ProtocolError(f"OggOpus.data is not an Ogg Opus stream: {error}") from None
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


_READ_CHUNK = 1024  # bytes of Ogg Opus per call of sphn's reader
