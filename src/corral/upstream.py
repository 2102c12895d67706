"""A minimal HTTP/1.1 client for talking to llama-server instances on loopback.

The router's hot path must add well under a millisecond, and a general client (httpx)
costs more than that per request: pool bookkeeping, an h11 event per chunk. This one
does exactly what relaying needs: keep-alive connections per instance, one write of
head and body, the response parsed by httptools (llhttp, in C) and the body handed back
*per socket read* with the chunked framing removed, so a burst of tokens becomes one
message to the client instead of one per token.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import httptools

from corral.errors import UpstreamError

READ_SIZE = 64 * 1024
MAX_IDLE_PER_UPSTREAM = 64
CONNECT_TIMEOUT = 10.0


class _Events:
    """httptools callbacks: headers, body pieces (chunked framing already removed), end."""

    __slots__ = ("headers", "pieces", "head_done", "done", "parser", "_interim")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.pieces: list[bytes] = []
        self.head_done = False
        self.done = False
        self.parser = None  # set right after the parser is made (for the status code)
        self._interim = False  # inside a 1xx response, which a client must skip (RFC 9110)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            self._interim = True
            self.headers = []
            return
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.done = True


class Response:
    """An upstream response whose body is read with :meth:`chunks`."""

    __slots__ = (
        "status",
        "headers",
        "complete",
        "_conn",
        "_pool",
        "_key",
        "_parser",
        "_events",
        "_keep_alive",
        "_until_close",
    )

    def __init__(self, status: int, conn, pool, key, parser, events: _Events) -> None:
        self.status = status
        self.headers = events.headers
        self.complete = False
        self._conn = conn
        self._pool = pool
        self._key = key
        self._parser = parser
        self._events = events
        connection = self.header(b"connection") or b""
        framed = (
            self.header(b"content-length") is not None
            or b"chunked" in (self.header(b"transfer-encoding") or b"").lower()
        )
        self._keep_alive = framed and b"close" not in connection.lower()
        self._until_close = not framed

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    async def chunks(self):
        """Yield payload bytes as they arrive; ``complete`` tells if the body ended well.

        Each ``read`` takes whatever the socket has and everything it completed comes out
        as one piece, so a burst of tokens is one message to the client, not one per token.
        """
        events = self._events
        reader = self._conn[0]
        while True:
            if events.pieces:
                data = b"".join(events.pieces) if len(events.pieces) > 1 else events.pieces[0]
                events.pieces.clear()
                self.complete = events.done  # set before the last piece: callers may end with it
                yield data
            if events.done:
                self.complete = True
                return
            try:
                data = await reader.read(READ_SIZE)
            except OSError:  # reset by the peer: as cut off as an early EOF
                self.complete = False
                return
            if not data:
                self.complete = self._until_close  # else: cut off mid-body
                return
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise UpstreamError(f"upstream broke HTTP: {exc}") from None

    async def read(self, limit: int = 1 << 20) -> bytes:
        out = bytearray()
        async for data in self.chunks():
            out += data
            if len(out) > limit:
                break
        return bytes(out[:limit])

    def abort(self) -> None:
        """Drop the connection now (a client that left: llama-server stops generating)."""
        self._conn[1].transport.abort()

    def release(self) -> None:
        """Back to the pool if the body was read to its end, else closed."""
        if self.complete and self._keep_alive and not self._conn[0].at_eof():
            self._pool._put(self._key, self._conn)
        else:
            self._conn[1].transport.abort()


class Pool:
    """Keep-alive connections per (host, port)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], deque] = {}

    def _put(self, key, conn) -> None:
        idle = self._idle.setdefault(key, deque())
        if len(idle) < MAX_IDLE_PER_UPSTREAM:
            idle.append(conn)
        else:
            conn[1].transport.abort()

    def _take(self, key):
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn[0].at_eof() and not conn[1].transport.is_closing():
                return conn
            conn[1].transport.abort()
        return None

    async def request(
        self, host: str, port: int, head: bytes, body: bytes, tls: ssl.SSLContext | None = None
    ) -> Response:
        """Send one request; a reused connection found dead before any answer is retried
        once on a new one (nothing was processed, so the retry is safe). ``tls``: a
        linked node's ``https://`` daemon (instances on loopback are plain HTTP)."""
        key = (host, port) if tls is None else (host, port, "tls")
        for attempt in (1, 2):
            conn = self._take(key) if attempt == 1 else None
            reused = conn is not None
            if conn is None:
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can lose the
                    # caller's cancellation when the connect completes at that moment.
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        conn = await asyncio.open_connection(
                            host, port, ssl=tls, server_hostname=host if tls else None
                        )
                except (OSError, TimeoutError) as exc:
                    raise UpstreamError(
                        f"cannot connect to {host}:{port}: "
                        f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
                    ) from None
            reader, writer = conn
            events = _Events()
            parser = events.parser = httptools.HttpResponseParser(events)
            try:
                writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    writer.write(body)
                while not events.head_done:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        raise ConnectionResetError("closed before answering")
                    parser.feed_data(data)
            except asyncio.CancelledError:
                writer.transport.abort()  # the client left: llama-server stops generating
                raise
            except OSError as exc:
                writer.transport.abort()
                if reused:
                    continue  # a kept-alive connection the server had closed: try a new one
                raise UpstreamError(f"{host}:{port} did not answer: {type(exc).__name__}") from None
            except httptools.HttpParserError as exc:
                writer.transport.abort()
                raise UpstreamError(
                    f"{host}:{port} answered something that is not HTTP: {exc}"
                ) from None
            return Response(parser.get_status_code(), conn, self, key, parser, events)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for idle in self._idle.values():
            for _, writer in idle:
                writer.transport.abort()
        self._idle.clear()


def request_head(path: str, host: str, port: int, headers, length: int) -> bytes:
    """The request line and headers; ``headers`` are (name, value) bytes already filtered."""
    out = [f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {length}\r\n".encode()]
    for name, value in headers:
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)
