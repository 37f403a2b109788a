"""`dsm serve`: Kyutai-compatible streaming ASR and TTS over websockets.

Endpoints (one port):
- `/api/asr-streaming`: Kyutai's ASR protocol (see dsm.streaming.serve.protocol).
- `/api/tts_streaming?format=F`: Kyutai's TTS protocol, F one of Kyutai's formats
  (OggOpus, the default, OggOpusMessagePack, Pcm, PcmMessagePack: see audio_formats).
- `/api/health`: JSON with each service's open streams and capacity.
- `POST /api/asr-streaming` (a sound file in, JSON words out) and `POST /api/tts` (JSON in,
  a WAV out): Kyutai's batch endpoints, one stream each (see post_endpoints).
- `/`: the browser demo (the files of `dsm/demo/`, installed with the package).

Auth: when API keys are configured, a websocket must carry one in the `kyutai-api-key`
header or the `auth_id` query parameter (browsers cannot set headers), else the handshake
is refused with HTTP 401. Faults are contained per connection: a protocol violation gets
an `Error{message}` and close code 1008, an oversized frame close code 1009 (from the
websockets library), a full service an `Error` and close 1013 (try again later), an idle
client an `Error` and 1008; every other stream goes on. On shutdown the server stops
accepting, ends every stream's input so it flushes what it holds (the client gets the
rest of its words or audio), and after a grace period closes what is left with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dsm.streaming.serve.audio_formats import (
    DEFAULT_TTS_FORMAT,
    TTS_FORMATS,
    OpusInputDecoder,
    TtsOutputEncoder,
)
from dsm.streaming.serve.http_post import (
    DEFAULT_MAX_BODY_BYTES,
    PostAwareConnection,
    PostRequest,
    PostResponse,
)
from dsm.streaming.serve.post_endpoints import RequestError, speak_request, transcribe_upload
from dsm.streaming.serve.protocol import (
    MAX_MESSAGE_BYTES,
    AudioIn,
    EosIn,
    InitIn,
    MarkerIn,
    NoOpIn,
    OpusIn,
    ProtocolError,
    TextIn,
    decode_asr_input,
    decode_tts_input,
    encode_error,
    encode_event,
    encode_ready,
)
from dsm.streaming.serve.service import CapacityError, ModelService, ModelStream, StreamError
from dsm.streaming.serve.stream_options import (
    ASR_STREAMING_FIELDS,
    TTS_STREAMING_FIELDS,
    OptionError,
    StreamOptions,
    check_fields,
    parse_options,
)

log = logging.getLogger("dsm.serve")

ASR_PATH = "/api/asr-streaming"
TTS_PATH = "/api/tts_streaming"
TTS_POST_PATH = "/api/tts"
HEALTH_PATH = "/api/health"
DEFAULT_DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"  # shipped in the package

# websocket close codes
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # protocol violation, idle
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # all slots taken


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (tests)
    api_keys: list[str] = field(default_factory=list)  # empty: no auth
    max_message_bytes: int = MAX_MESSAGE_BYTES
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0  # seconds a closing handshake may take before the TCP drop
    idle_timeout: float = 30.0  # seconds without a client message while input is open
    shutdown_grace: float = 10.0  # seconds streams get to finish on shutdown
    demo_dir: Path | None = DEFAULT_DEMO_DIR
    open_timeout: float = 10.0  # seconds for a websocket handshake or a POST's head
    max_post_bytes: int = DEFAULT_MAX_BODY_BYTES  # body of a POST request
    upload_timeout: float = 60.0  # seconds for a POST's body to arrive
    post_slot_wait: float = 30.0  # seconds a POST waits for a free slot before 503


@dataclass(eq=False)
class _Session:
    kind: str
    connection: ServerConnection
    stream: ModelStream
    shutting_down: bool = False
    input_ended: bool = False
    output: TtsOutputEncoder | None = None  # TTS: the client's format
    opus: OpusInputDecoder | None = None  # ASR: made on the first OggOpus message


class StreamingServer:
    """The websocket server over an ASR and/or a TTS `ModelService`."""

    def __init__(self, config: ServerConfig, asr: ModelService | None = None,
                 tts: ModelService | None = None) -> None:
        if asr is None and tts is None:
            raise ValueError("dsm serve needs an ASR or a TTS service (or both)")
        self.config = config
        self.asr = asr
        self.tts = tts
        self.sessions: set[_Session] = set()
        self.shutting_down = False
        self.closed_by_code: dict[int, int] = {}  # close code -> count (observability)
        self._server: Server | None = None
        self._port: int | None = None  # the bound port (config.port may be 0)

    # lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._port is not None, "server not started"
        return self._port

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def start(self) -> None:
        for service in (self.asr, self.tts):
            if service is not None:
                await service.start()
        config = self.config

        def connection(*args: Any, **kwargs: Any) -> PostAwareConnection:
            return PostAwareConnection(*args, post_handler=self._post,
                                       max_body_bytes=config.max_post_bytes,
                                       open_timeout=config.open_timeout,
                                       upload_timeout=config.upload_timeout, **kwargs)

        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            create_connection=connection,  # type: ignore[arg-type]
            open_timeout=None,  # PostAwareConnection applies config.open_timeout itself
            max_size=self.config.max_message_bytes,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            close_timeout=self.config.close_timeout,
            compression=None,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("dsm serve listening on %s", self.url)

    async def shutdown(self) -> None:
        """Stop accepting; let every stream flush for `shutdown_grace` s; close the rest."""
        if self.shutting_down:
            return
        self.shutting_down = True
        assert self._server is not None
        self._server.close(close_connections=False)
        for session in list(self.sessions):
            session.shutting_down = True
            await session.stream.end()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for session in list(self.sessions):
            await session.stream.close()
            with contextlib.suppress(Exception):
                await session.connection.close(CLOSE_GOING_AWAY, "server shutting down")
        await self._server.wait_closed()
        for service in (self.asr, self.tts):
            if service is not None:
                await service.stop()

    async def __aenter__(self) -> StreamingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "shutting_down" if self.shutting_down else "ok"}
        for name, service in (("asr", self.asr), ("tts", self.tts)):
            if service is not None:
                report[name] = {"active": service.active, "capacity": service.capacity}
        report["connections"] = len(self.sessions)
        return report

    # HTTP side of the handshake --------------------------------------------------------
    def _authorized(self, header: str | None, query: dict[str, list[str]]) -> bool:
        if not self.config.api_keys:
            return True
        offered = header or (query.get("auth_id") or [""])[0]
        return any(hmac.compare_digest(offered.encode(), key.encode())
                   for key in self.config.api_keys)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path == HEALTH_PATH:
            return _response(200, json.dumps(self.health()).encode(), "application/json")
        if url.path in (ASR_PATH, TTS_PATH):
            service = self.asr if url.path == ASR_PATH else self.tts
            if service is None:
                what = "ASR" if url.path == ASR_PATH else "TTS"
                return connection.respond(HTTPStatus.NOT_FOUND,
                                          f"this server has no {what} model\n")
            if not self._authorized(request.headers.get("kyutai-api-key"), query):
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED,
                    "missing or wrong API key: send the kyutai-api-key header "
                    "or the auth_id query parameter\n")
            try:
                _stream_options(url.path, query)
            except OptionError as error:
                return connection.respond(HTTPStatus.BAD_REQUEST, f"{error}\n")
            if self.shutting_down:
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                          "the server is shutting down\n")
            return None  # go on with the websocket handshake
        return self._static(connection, url.path)

    def _static(self, connection: ServerConnection, path: str) -> Response:
        demo_dir = self.config.demo_dir
        name = "index.html" if path in ("/", "") else path.lstrip("/")
        if demo_dir is None or not (demo_dir / "index.html").is_file():
            return connection.respond(HTTPStatus.NOT_FOUND, "no demo page is served here\n")
        allowed = {p.name: p for p in demo_dir.iterdir()
                   if p.is_file() and p.suffix in (".html", ".js", ".css")}
        if name not in allowed:
            return connection.respond(HTTPStatus.NOT_FOUND, f"not found: {path}\n")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return _response(200, allowed[name].read_bytes(), kind)

    async def _post(self, request: PostRequest) -> PostResponse:
        """Kyutai's batch endpoints (post_endpoints); every refusal a status and a reason."""
        routes = {ASR_PATH: ("ASR", self.asr, transcribe_upload),
                  TTS_POST_PATH: ("TTS", self.tts, speak_request)}
        if request.path not in routes:
            return PostResponse.text(404, f"no POST endpoint at {request.path}: POST "
                                          f"{ASR_PATH} (a sound file) or {TTS_POST_PATH} (JSON)")
        what, service, handle = routes[request.path]
        if service is None:
            return PostResponse.text(404, f"this server has no {what} model")
        if not self._authorized(request.headers.get("kyutai-api-key"), request.query):
            return PostResponse.text(401, "missing or wrong API key: send the kyutai-api-key "
                                          "header")
        if self.shutting_down:
            return PostResponse.text(503, "the server is shutting down")
        try:
            return await handle(service, request, self.config.post_slot_wait)
        except RequestError as error:
            return error.response()

    # websocket side --------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        path = urlsplit(connection.request.path).path if connection.request else ""
        if path == ASR_PATH and self.asr is not None:
            await self._serve_stream(connection, "asr", self.asr)
        elif path == TTS_PATH and self.tts is not None:
            await self._serve_stream(connection, "tts", self.tts)
        else:  # process_request already refused these
            await connection.close(CLOSE_POLICY, "unknown endpoint")

    async def _close(self, connection: ServerConnection, code: int, reason: str,
                     error: str | None = None) -> None:
        self.closed_by_code[code] = self.closed_by_code.get(code, 0) + 1
        session = next((s for s in self.sessions if s.connection is connection), None)
        with contextlib.suppress(ConnectionClosed):
            if error is not None:
                frame: bytes | None = encode_error(error)
                if session is not None and session.output is not None:
                    frame = session.output.control(frame)  # raw formats carry no messages
                if frame is not None:
                    await connection.send(frame)
        await connection.close(code, reason[:120])

    async def _serve_stream(self, connection: ServerConnection, kind: str,
                            service: ModelService) -> None:
        url = urlsplit(connection.request.path if connection.request else "")
        query = parse_qs(url.query)
        try:
            stream = await service.open(_stream_options(url.path, query))
        except (CapacityError, StreamError) as error:
            await self._close(connection, CLOSE_TRY_AGAIN, "all slots busy", str(error))
            return
        except ValueError as error:  # options this model cannot honour (a voice, a top_k)
            await self._close(connection, CLOSE_POLICY, str(error), str(error))
            return
        session = _Session(kind, connection, stream)
        if kind == "tts":
            session.output = TtsOutputEncoder((query.get("format") or [DEFAULT_TTS_FORMAT])[0])
        self.sessions.add(session)
        reader = asyncio.create_task(self._read(session))
        writer = asyncio.create_task(self._write(session))
        try:
            with contextlib.suppress(ConnectionClosed):
                ready = encode_ready() if session.output is None else session.output.control(
                    encode_ready())
                if ready is not None:
                    await connection.send(ready)
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():
                error = writer.exception()
                if error is None:  # every event sent: a finished stream
                    code = CLOSE_GOING_AWAY if session.shutting_down else CLOSE_NORMAL
                    await self._close(connection, code,
                                      "server shutting down" if session.shutting_down else "done")
                elif isinstance(error, StreamError):
                    code = CLOSE_GOING_AWAY if session.shutting_down else CLOSE_POLICY
                    await self._close(connection, code, str(error), str(error))
                elif not isinstance(error, ConnectionClosed):
                    log.error("stream writer failed", exc_info=error)
                    await self._close(connection, CLOSE_INTERNAL, "internal error",
                                      f"internal server error: {error}")
            else:
                error = reader.exception()
                if isinstance(error, ProtocolError):
                    await self._close(connection, CLOSE_POLICY, str(error), str(error))
                elif isinstance(error, TimeoutError):
                    message = f"no message for {self.config.idle_timeout:g} s: closing"
                    await self._close(connection, CLOSE_POLICY, "idle timeout", message)
                elif isinstance(error, StreamError):
                    await self._close(connection, CLOSE_POLICY, str(error), str(error))
                elif error is not None and not isinstance(error, ConnectionClosed):
                    log.error("stream reader failed", exc_info=error)
                    await self._close(connection, CLOSE_INTERNAL, "internal error",
                                      f"internal server error: {error}")
                # else: the client closed or vanished; nothing more to say
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            await stream.close()
            self.sessions.discard(session)

    async def _read(self, session: _Session) -> None:
        """Client messages -> the stream; returns when the client closes (or raises)."""
        decode: Callable[[bytes | str], object]
        if session.kind == "asr":
            def decode(data: bytes | str) -> object:
                return decode_asr_input(data, self.config.max_message_bytes)
        else:
            def decode(data: bytes | str) -> object:
                return decode_tts_input(data, self.config.max_message_bytes)
        connection, stream = session.connection, session.stream
        while True:
            open_input = not session.input_ended and not session.shutting_down
            if open_input:
                data = await asyncio.wait_for(connection.recv(), self.config.idle_timeout)
            else:
                data = await connection.recv()  # ignored: only to notice the client leaving
            if not open_input:
                continue
            message = decode(data)
            try:
                if isinstance(message, AudioIn):
                    await stream.push_pcm(message.pcm)
                elif isinstance(message, OpusIn):
                    session.opus = session.opus or OpusInputDecoder()
                    pcm = session.opus.decode(message.data)
                    if pcm.size:
                        await stream.push_pcm(pcm)
                elif isinstance(message, MarkerIn):
                    await stream.push_marker(message.id)
                elif isinstance(message, TextIn):
                    await stream.push_text(message.text)
                elif isinstance(message, InitIn):
                    await stream.reset()
                elif isinstance(message, EosIn):
                    session.input_ended = True
                    await stream.end()
                else:
                    assert isinstance(message, NoOpIn)
            except StreamError:
                if session.shutting_down:
                    continue  # input closed by the shutdown: the stream is flushing
                raise

    async def _write(self, session: _Session) -> None:
        """Stream events -> client messages, until the stream ends."""
        async for event in session.stream:
            frame = encode_event(event) if session.output is None else session.output.encode(event)
            if frame is not None:
                await session.connection.send(frame)


def _stream_options(path: str, query: dict[str, list[str]]) -> StreamOptions:
    """A websocket request's query -> its stream's options (OptionError: answer 400)."""
    if path != TTS_PATH:
        check_fields(query, ASR_STREAMING_FIELDS, path)
        return StreamOptions()
    check_fields(query, TTS_STREAMING_FIELDS, path)
    fmt = (query.get("format") or [DEFAULT_TTS_FORMAT])[0]
    if fmt not in TTS_FORMATS:
        raise OptionError(f"unsupported TTS format {fmt!r}: one of {', '.join(TTS_FORMATS)}")
    return parse_options(query)


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    return Response(status, HTTPStatus(status).phrase, headers, body)


async def run_server(config: ServerConfig, asr: ModelService | None,
                     tts: ModelService | None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT / SIGTERM), then shut down gracefully."""
    import signal

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = StreamingServer(config, asr, tts)
    await server.start()
    print(f"dsm serve: listening on {server.url} "
          f"(ASR {'on' if asr else 'off'}, TTS {'on' if tts else 'off'}); Ctrl+C stops",
          flush=True)
    try:
        await stop.wait()
    finally:
        print("dsm serve: shutting down, finishing open streams", flush=True)
        await server.shutdown()
