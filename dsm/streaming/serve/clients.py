"""Clients of Kyutai's streaming protocol: files, text and the microphone.

They work against `dsm serve` and against Kyutai's own server alike:
- `transcribe_remote(url, file, rtf)`: sends a file in 1920-sample `Audio` frames (paced
  at `rtf` times real time, or as fast as the server takes them), then a `Marker`, then
  silence until the marker comes back, so that every word the audio holds is flushed out.
- `speak_remote(url, text, out_wav | play)`: sends the text word by word, then `Eos`, and
  collects (or plays) the audio frames as they arrive.
- `run_mic(url, device)`: live captions from a sounddevice input stream.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import websockets

from dsm.streaming.events import AudioEvent, EndWordEvent, MarkerEvent, TextEvent, WordEvent
from dsm.streaming.serve.protocol import (
    FRAME_SIZE,
    SAMPLE_RATE,
    ErrorOut,
    ReadyOut,
    ServerMessage,
    decode_server_message,
    encode_audio_in,
    encode_eos_in,
    encode_marker_in,
    encode_text_in,
)
from dsm.streams.silence import silence_pcm

ASR_PATH = "/api/asr-streaming"
TTS_PATH = "/api/tts_streaming"


class RemoteError(RuntimeError):
    """The server sent `Error{message}` or closed the stream abnormally."""


@dataclass
class TimedWord:
    text: str
    start_time: float
    stop_time: float | None = None


@dataclass
class SpeechResult:
    pcm: np.ndarray  # float32 [N] at 24 kHz
    words: list[TextEvent] = field(default_factory=list)
    first_audio_s: float | None = None  # seconds from connecting to the first audio frame


def endpoint(url: str, path: str, query: dict[str, str] | None = None) -> str:
    """`ws://host:port` (or an http(s) URL, or the full endpoint) -> the endpoint URL."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    route = parts.path.rstrip("/")
    if not route.endswith(path):
        route = route + path
    params = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
    params.update(query or {})
    return urlunsplit((scheme, parts.netloc, route, urlencode(params), ""))


@asynccontextmanager
async def _connect(url: str, api_key: str | None, **options: Any
                   ) -> AsyncIterator[websockets.ClientConnection]:
    """A websocket to the server; a refused handshake (401, 400 for a bad query, 503) is a
    `RemoteError` carrying the server's reason."""
    try:
        ws = await websockets.connect(url, additional_headers=_headers(api_key),
                                      compression=None, **options)
    except websockets.exceptions.InvalidStatus as error:
        response = error.response
        reason = (response.body or b"").decode("utf-8", "replace").strip() or response.reason_phrase
        raise RemoteError(f"the server refused the stream: HTTP {response.status_code}: "
                          f"{reason}") from None
    async with ws:
        yield ws


def _headers(api_key: str | None) -> dict[str, str]:
    return {"kyutai-api-key": api_key} if api_key else {}


def load_audio(path: str | Path) -> np.ndarray:
    """A sound file -> float32 mono 24 kHz `[N]`."""
    from dsm.audio_io import read_audio

    return read_audio(path, SAMPLE_RATE)


# --- ASR -------------------------------------------------------------------------------


def _take_asr_message(data: bytes | str, words: list[TimedWord],
                      on_word: Callable[[TimedWord], None] | None) -> ServerMessage:
    """Decode one frame from an ASR server: an `Error` raises RemoteError, a `Word` joins
    `words` (and goes to `on_word`), an `EndWord` ends the last word; returns the message."""
    message = decode_server_message(data)
    if isinstance(message, ErrorOut):
        raise RemoteError(f"server error: {message.message}")
    if isinstance(message, WordEvent):
        words.append(TimedWord(message.text, message.start_time))
        if on_word is not None:
            on_word(words[-1])
    elif isinstance(message, EndWordEvent) and words:
        words[-1].stop_time = message.stop_time
    return message


async def stream_pcm_asr(url: str, pcm: np.ndarray, rtf: float | None = None,
                         api_key: str | None = None,
                         on_word: Callable[[TimedWord], None] | None = None,
                         max_flush_s: float = 30.0) -> list[TimedWord]:
    """Transcribe `pcm` (float32 24 kHz) through a Kyutai-protocol server."""
    words: list[TimedWord] = []
    marker_id = 1
    marker_seen = asyncio.Event()
    async with _connect(endpoint(url, ASR_PATH), api_key, max_size=1 << 22) as ws:

        async def send() -> None:
            start = time.monotonic()
            for offset in range(0, len(pcm), FRAME_SIZE):
                await ws.send(encode_audio_in(pcm[offset:offset + FRAME_SIZE]))
                if rtf:
                    due = start + (offset + FRAME_SIZE) / SAMPLE_RATE / rtf
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
            await ws.send(encode_marker_in(marker_id))
            silence = silence_pcm(FRAME_SIZE)
            for _ in range(int(max_flush_s * SAMPLE_RATE / FRAME_SIZE)):
                if marker_seen.is_set():
                    return
                await ws.send(encode_audio_in(silence))
                await asyncio.sleep(FRAME_SIZE / SAMPLE_RATE / (rtf or 8.0))
            raise RemoteError(f"the server did not echo the end marker within {max_flush_s} s "
                              "of silence")

        async def receive() -> None:
            async for data in ws:
                message = _take_asr_message(data, words, on_word)
                if isinstance(message, MarkerEvent) and message.id == marker_id:
                    marker_seen.set()
                    return
            raise RemoteError(f"the server closed the stream (code {ws.close_code}, "
                              f"{ws.close_reason!r}) before the end marker")

        sender = asyncio.create_task(send())
        try:
            await receive()
        finally:
            marker_seen.set()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return words


def transcribe_remote(url: str, file: str | Path, rtf: float | None = None,
                      api_key: str | None = None,
                      on_word: Callable[[TimedWord], None] | None = None) -> list[TimedWord]:
    """`dsm transcribe --server URL FILE [--rtf R]`: the words of `file`, as they stream."""
    return asyncio.run(stream_pcm_asr(url, load_audio(file), rtf, api_key, on_word))


# --- TTS -------------------------------------------------------------------------------


async def stream_text_tts(url: str, text: str, api_key: str | None = None,
                          on_audio: Callable[[np.ndarray], None] | None = None,
                          on_text: Callable[[TextEvent], None] | None = None,
                          word_interval_s: float = 0.0, params: dict[str, str] | None = None
                          ) -> SpeechResult:
    """Speak `text` through a Kyutai-protocol server, sending it word by word; `params`: the
    stream's query (voice, seed, temperature, top_k, cfg_alpha, max_seq_len)."""
    frames: list[np.ndarray] = []
    result = SpeechResult(np.zeros(0, dtype=np.float32))
    started = time.monotonic()
    url = endpoint(url, TTS_PATH, {"format": "PcmMessagePack", **(params or {})})
    async with _connect(url, api_key, max_size=1 << 22) as ws:

        async def send() -> None:
            for word in text.split():
                await ws.send(encode_text_in(word + " "))
                if word_interval_s:
                    await asyncio.sleep(word_interval_s)
            await ws.send(encode_eos_in())

        sender = asyncio.create_task(send())
        try:
            async for data in ws:
                message = decode_server_message(data)
                if isinstance(message, ErrorOut):
                    raise RemoteError(f"server error: {message.message}")
                if isinstance(message, AudioEvent):
                    if result.first_audio_s is None:
                        result.first_audio_s = time.monotonic() - started
                    frames.append(message.pcm)
                    if on_audio is not None:
                        on_audio(message.pcm)
                elif isinstance(message, TextEvent):
                    result.words.append(message)
                    if on_text is not None:
                        on_text(message)
                elif not isinstance(message, ReadyOut):
                    raise RemoteError(f"unexpected message on the TTS stream: {message!r}")
            if ws.close_code not in (1000, None):
                raise RemoteError(f"the server closed the stream with code {ws.close_code} "
                                  f"({ws.close_reason!r})")
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    if frames:
        result.pcm = np.concatenate(frames).astype(np.float32)
    return result


def speak_remote(url: str, text: str, out_wav: str | Path | None = None, play: bool = False,
                 api_key: str | None = None,
                 on_text: Callable[[TextEvent], None] | None = None,
                 params: dict[str, str] | None = None) -> SpeechResult:
    """`dsm speak --server URL TEXT [-o OUT.wav | --play]`: stream text in, audio out."""
    if out_wav is None and not play:
        raise ValueError("speak_remote needs out_wav or play=True")
    player = _Player() if play else None
    try:
        result = asyncio.run(stream_text_tts(
            url, text, api_key, on_audio=player.push if player else None, on_text=on_text,
            params=params))
        if player is not None:
            player.drain()
    finally:
        if player is not None:
            player.close()
    if out_wav is not None:
        import soundfile

        soundfile.write(str(out_wav), result.pcm, SAMPLE_RATE, subtype="PCM_16")
    return result


# --- sound devices ---------------------------------------------------------------------


def import_sounddevice() -> ModuleType:
    """sounddevice, or a clear error when it or the PortAudio library is missing."""
    try:
        import sounddevice
    except ImportError as error:
        raise RuntimeError("the microphone and --play need the `sounddevice` package: "
                           "pip install 'dsm[mic]'") from error
    except OSError as error:  # sounddevice is there, libportaudio is not
        raise RuntimeError("sounddevice could not load the PortAudio library "
                           f"({error}); install it, e.g. apt-get install libportaudio2") from error
    return sounddevice


class _Player:
    """Plays 24 kHz frames as they arrive (a sounddevice output stream fed by a queue).

    When the network is late the device plays silence (an underrun) and resumes with the
    next frame; no received sample is dropped.
    """

    def __init__(self) -> None:
        sd = import_sounddevice()
        self._lock = threading.Lock()
        self._pending: deque[np.ndarray] = deque()
        self._buffer = np.zeros(0, dtype=np.float32)
        self._stream = sd.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                                       blocksize=FRAME_SIZE, callback=self._callback)
        self._stream.start()

    def push(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._pending.append(np.asarray(pcm, dtype=np.float32))

    def _callback(self, outdata: np.ndarray, frames: int, _time: object, _status: object) -> None:
        with self._lock:
            while self._pending and self._buffer.shape[0] < frames:
                self._buffer = np.concatenate([self._buffer, self._pending.popleft()])
            take = min(frames, self._buffer.shape[0])
            outdata[:take, 0] = self._buffer[:take]
            outdata[take:, 0] = 0.0
            self._buffer = self._buffer[take:]

    def drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending and self._buffer.shape[0] == 0:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def list_devices() -> str:
    return str(import_sounddevice().query_devices())


async def _mic_stream(url: str, device: int | str | None, api_key: str | None,
                      seconds: float | None, out: object) -> list[TimedWord]:
    sd = import_sounddevice()
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=200)
    words: list[TimedWord] = []

    def show(word: TimedWord) -> None:
        print(word.text, end=" ", flush=True, file=out)  # type: ignore[call-overload]

    def captured(indata: np.ndarray, _frames: int, _time: object, _status: object) -> None:
        loop.call_soon_threadsafe(_put_nowait, frames, indata[:, 0].copy())

    async with _connect(endpoint(url, ASR_PATH), api_key) as ws:

        async def send() -> None:
            while True:
                await ws.send(encode_audio_in(await frames.get()))

        async def receive() -> None:
            async for data in ws:
                _take_asr_message(data, words, show)

        with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                            blocksize=FRAME_SIZE, device=device, callback=captured):
            tasks = [asyncio.create_task(send()), asyncio.create_task(receive())]
            try:
                await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
                for task in tasks:
                    if task.done() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return words


def _put_nowait(queue: asyncio.Queue[np.ndarray], frame: np.ndarray) -> None:
    if not queue.full():  # drop audio rather than block the audio thread
        queue.put_nowait(frame)


def run_mic(url: str, device: int | str | None = None, api_key: str | None = None,
            seconds: float | None = None) -> list[TimedWord]:
    """`dsm mic --server URL`: live captions from the microphone until Ctrl+C (or `seconds`)."""
    try:
        return asyncio.run(_mic_stream(url, device, api_key, seconds, sys.stdout))
    except KeyboardInterrupt:
        print(file=sys.stdout)
        return []
