"""Kyutai's batch endpoints over the same served models as the websockets.

`POST /api/asr-streaming`: the body is a sound file (WAV, FLAC, Ogg, MP3; any rate, any
channels); the answer is the JSON list of Kyutai's messages, `{"type": "Word", "text",
"start_time"}` and `{"type": "EndWord", "stop_time"}`.
`POST /api/tts`: the body is Kyutai's JSON query (`text`: a list of strings, or one, and the
streaming endpoint's options); the answer is a 16-bit WAV, or with `"return_timestamps":
true` the JSON `{"wav": base64, "transcript": [{"text", "start_s", "stop_s"}]}`.
Each request is one stream in a slot of the served model, waiting for a free slot up to a
bound; a request the server cannot take gets a status and a one-line reason.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import numpy as np

from dsm.audio_io import AudioFileError, read_audio
from dsm.streaming.events import AudioEvent, EndWordEvent, TextEvent, WordEvent
from dsm.streaming.serve.http_post import PostRequest, PostResponse
from dsm.streaming.serve.protocol import (
    FRAME_SIZE,
    MAX_TEXT_CHARS,
    SAMPLE_RATE,
    ProtocolError,
    check_text,
)
from dsm.streaming.serve.service import CapacityError, ModelService, ModelStream, StreamError
from dsm.streaming.serve.stream_options import (
    TTS_POST_FIELDS,
    OptionError,
    StreamOptions,
    check_fields,
    parse_options,
)

PUSH_SAMPLES = 25 * FRAME_SIZE  # 2 s of an upload handed to the stream at a time


class RequestError(Exception):
    """A request the server answers with `status` and `message`, not with a result."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> PostResponse:
        return PostResponse.text(self.status, str(self))


async def open_when_free(service: ModelService, options: StreamOptions, wait_s: float,
                         poll_s: float = 0.05) -> ModelStream:
    """A stream in the first slot that frees within `wait_s` (503 when none does)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            return await service.open(options)
        except CapacityError as error:
            if loop.time() >= deadline:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from None
        except StreamError as error:
            raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, str(error)) from None
        except ValueError as error:  # options this model cannot honour
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        await asyncio.sleep(poll_s)


async def _run(stream: ModelStream, feed: Callable[[], Awaitable[None]]) -> list[object]:
    """Feed the stream while collecting its events, until it ends; its error -> 500."""
    events: list[object] = []

    async def collect() -> None:
        async for event in stream:
            events.append(event)

    collector = asyncio.create_task(collect())
    try:
        await feed()
        await collector
    except StreamError as error:
        if getattr(stream, "input_refused", False):
            raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
        raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"the stream failed: {error}") from None
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await stream.close()
    return events


async def transcribe_upload(service: ModelService, request: PostRequest,
                            wait_s: float) -> PostResponse:
    try:
        pcm = read_audio(request.body, SAMPLE_RATE)
    except AudioFileError as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
    stream = await open_when_free(service, StreamOptions(), wait_s)

    async def feed() -> None:
        for start in range(0, pcm.shape[0], PUSH_SAMPLES):
            await stream.push_pcm(pcm[start: start + PUSH_SAMPLES])
        await stream.end()

    messages: list[dict[str, object]] = []
    for event in await _run(stream, feed):
        if isinstance(event, WordEvent):
            messages.append({"type": "Word", "text": event.text, "start_time": event.start_time})
        elif isinstance(event, EndWordEvent):
            messages.append({"type": "EndWord", "stop_time": event.stop_time})
    return PostResponse(200, json.dumps(messages).encode(), "application/json")


def tts_query(body: bytes) -> tuple[list[str], StreamOptions, bool]:
    """Kyutai's POST /api/tts JSON -> (texts, options, return_timestamps); 400 on anything
    else."""
    try:
        query = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {error}") from None
    if not isinstance(query, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object with \"text\"")
    try:
        check_fields(query, TTS_POST_FIELDS, "POST /api/tts")
        options = parse_options(query)
    except OptionError as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
    texts = query.get("text")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise RequestError(HTTPStatus.BAD_REQUEST,
                           "\"text\" must be a list of strings (or one string)")
    if sum(len(t) for t in texts) > MAX_TEXT_CHARS:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"the text is over {MAX_TEXT_CHARS} characters; send it in parts "
                           "or over /api/tts_streaming")
    try:
        for text in texts:
            check_text(text, "text")
    except ProtocolError as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from None
    if not any(t.strip() for t in texts):
        raise RequestError(HTTPStatus.BAD_REQUEST, "the text is empty: nothing to speak")
    timestamps = query.get("return_timestamps", False)
    if not isinstance(timestamps, bool) and timestamps is not None:
        raise RequestError(HTTPStatus.BAD_REQUEST, "\"return_timestamps\" must be true or false")
    return texts, options, bool(timestamps)


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(pcm, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def speak_request(service: ModelService, request: PostRequest,
                        wait_s: float) -> PostResponse:
    texts, options, timestamps = tts_query(request.body)
    stream = await open_when_free(service, options, wait_s)

    async def feed() -> None:
        for text in texts:
            if text.strip():
                await stream.push_text(text)
        await stream.end()

    events = await _run(stream, feed)
    frames = [e.pcm for e in events if isinstance(e, AudioEvent)]
    pcm = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    wav = wav_bytes(pcm, SAMPLE_RATE)
    if not timestamps:
        return PostResponse(200, wav, "audio/wav")
    transcript = [{"text": e.text, "start_s": e.start_s, "stop_s": e.stop_s}
                  for e in events if isinstance(e, TextEvent)]
    body = {"wav": base64.b64encode(wav).decode(), "transcript": transcript}
    return PostResponse(200, json.dumps(body).encode(), "application/json")
