"""Plain HTTP POST requests on the websocket port (Kyutai's batch endpoints).

Kyutai's server answers `POST /api/asr-streaming` (a sound file in, timed words out) and
`POST /api/tts` (JSON in, a WAV out) on the same port as its websockets. The websockets
library refuses requests with a body, so `PostAwareConnection` looks at the first bytes of
each connection: a POST is read here (head, then a body of `Content-Length` bytes, at most
`max_body_bytes`) and answered by a handler; anything else goes to websockets unchanged.
One request per connection (`Connection: close`), no chunked uploads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection

log = logging.getLogger("dsm.serve")

MAX_HEAD_BYTES = 16 * 1024  # request line and headers of a POST
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024  # Kyutai's limit on a POST body


@dataclass(frozen=True)
class PostRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass(frozen=True)
class PostResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def text(cls, status: int, message: str) -> PostResponse:
        return cls(status, (message.rstrip("\n") + "\n").encode())


PostHandler = Callable[[PostRequest], Awaitable[PostResponse]]


class _BadHead(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, dict[str, list[str]], dict[str, str]]:
    """`POST /path?query HTTP/1.1` and its header lines -> (path, query, headers)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise _BadHead(400, "malformed request line") from None
    if method != "POST" or not version.startswith("HTTP/1."):
        raise _BadHead(400, f"unsupported request: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadHead(400, f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    return url.path, parse_qs(url.query), headers


def body_length(headers: dict[str, str], max_body_bytes: int) -> int:
    if "transfer-encoding" in headers:
        raise _BadHead(411, "chunked uploads are not supported: send a Content-Length")
    raw = headers.get("content-length")
    if raw is None:
        raise _BadHead(411, "a POST needs a Content-Length header")
    if not raw.isdigit():
        raise _BadHead(400, f"bad Content-Length {raw[:40]!r}")
    length = int(raw)
    if length > max_body_bytes:
        raise _BadHead(413, f"the body is {length} bytes; this server takes at most "
                            f"{max_body_bytes} (dsm serve --max-post-bytes)")
    return length


def encode_response(response: PostResponse) -> bytes:
    phrase = HTTPStatus(response.status).phrase
    head = (f"HTTP/1.1 {response.status} {phrase}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + response.body


class PostAwareConnection(ServerConnection):
    """A websocket connection that answers a plain HTTP POST itself (module docstring).

    `open_timeout` bounds the websocket handshake (or a POST's head), `upload_timeout` the
    upload of a POST's body; the handler's own work is not bounded here.
    """

    def __init__(self, *args: Any, post_handler: PostHandler, max_body_bytes: int,
                 open_timeout: float | None, upload_timeout: float | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._post_handler = post_handler
        self._max_body_bytes = max_body_bytes
        self._open_timeout = open_timeout
        self._upload_timeout = upload_timeout
        self._head_read: asyncio.Future[None] = self.loop.create_future()
        self._sniffing = True
        self._buffer = bytearray()
        self._head: tuple[str, dict[str, list[str]], dict[str, str]] | None = None
        self._length = 0
        self._early: PostResponse | None = None  # refused from the head alone
        self._uploaded: asyncio.Future[None] = self.loop.create_future()

    def data_received(self, data: bytes) -> None:
        if not self._sniffing:
            super().data_received(data)
            return
        if self._uploaded.done():
            return  # past the body (or refused): nothing more is read
        self._buffer += data
        if self._head is None:
            if not self._buffer.startswith(b"POST "[: len(self._buffer)]):
                self._hand_to_websockets()
                return
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._refuse(PostResponse.text(431, "request head too large"))
                return
            try:
                self._head = parse_head(bytes(self._buffer[:end]))
                self._length = body_length(self._head[2], self._max_body_bytes)
            except _BadHead as error:
                self._refuse(PostResponse.text(error.status, str(error)))
                return
            del self._buffer[: end + 4]
            self._head_read.set_result(None)
            if self._head[2].get("expect", "").lower() == "100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self._buffer) >= self._length and not self._uploaded.done():
            self._uploaded.set_result(None)

    def _hand_to_websockets(self) -> None:
        self._sniffing = False
        data, self._buffer = bytes(self._buffer), bytearray()
        super().data_received(data)

    def _refuse(self, response: PostResponse) -> None:
        self._early = response
        for future in (self._head_read, self._uploaded):
            if not future.done():
                future.set_result(None)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        async with asyncio.timeout(self._open_timeout):
            await asyncio.wait([self.request_rcvd, self._head_read, self.connection_lost_waiter],
                               return_when=asyncio.FIRST_COMPLETED)
            if not self._head_read.done():
                await super().handshake(*args, **kwargs)
                return
        try:
            async with asyncio.timeout(self._upload_timeout):
                await asyncio.wait([self._uploaded, self.connection_lost_waiter],
                                   return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self._early = PostResponse.text(408, "the body took too long to arrive")
        if self._uploaded.done() or self._early is not None:
            await self._answer_post()

    async def _answer_post(self) -> None:
        response = self._early
        if response is None:
            assert self._head is not None
            path, query, headers = self._head
            request = PostRequest(path, query, headers, bytes(self._buffer[: self._length]))
            self._buffer = bytearray()
            try:
                response = await self._post_handler(request)
            except Exception as error:  # the server goes on; the client is told
                log.error("POST %s failed", path, exc_info=error)
                response = PostResponse.text(500, f"internal server error: {error}")
        self.transport.write(encode_response(response))
        self.transport.close()  # flushes what is written, then drops the connection
        timeout = self.close_timeout or 5.0
        await asyncio.wait([self.connection_lost_waiter], timeout=timeout)
