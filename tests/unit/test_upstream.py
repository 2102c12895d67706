"""corral.upstream, the router's HTTP/1.1 client, against real asyncio servers on 127.0.0.1.

Each test serves scripted raw bytes. The client's connections are real; only their
``read`` is counted (``asyncio.open_connection`` is wrapped while a server runs), so a
script can write in lock-step: a piece, then wait until the client has read it. That puts
every split point of a response exactly where the test wants it, without any sleeps.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import socket
import struct
import termios
from contextlib import asynccontextmanager

import httptools
import pytest
from hypothesis import given, settings, strategies as st

from corral.upstream import Pool, UpstreamError, request_head

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


# --- scripted server --------------------------------------------------------------------


class Watched:
    """The client side of one connection: what each ``read()`` returned, and if one waits."""

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.pending = 0
        self.sock: socket.socket | None = None

    @property
    def consumed(self) -> int:
        return sum(map(len, self.reads))


class Request:
    """One request as the server parsed it (httptools, like any real server would)."""

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


class _RequestEvents:
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.current = Request()
        self.done: list[Request] = []

    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        self.current.body += body

    def on_message_complete(self) -> None:
        self.done.append(self.current)


class ServerConn:
    """The server side of one accepted connection, with what a script needs to drive it."""

    def __init__(self, index: int, reader, writer, clients: dict[int, Watched]) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.requests: list[Request] = []
        self.sent = 0
        self.eof = asyncio.Event()  # the client closed (or reset) this connection
        self._clients = clients
        self._events = _RequestEvents()

    @property
    def client(self) -> Watched:
        return self._clients[self.writer.get_extra_info("peername")[1]]

    async def request(self) -> Request | None:
        """The next request, or None once the client has closed the connection."""
        while not self._events.done:
            try:
                data = await self.reader.read(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof.set()
                return None
            self._events.parser.feed_data(data)
        self.requests.append(self._events.done.pop(0))
        return self.requests[-1]

    async def serve(self, response: bytes) -> None:
        """Answer every request on this connection with ``response`` until the client leaves."""
        while await self.request() is not None:
            await self.send(response)

    async def send(self, *pieces: bytes, lockstep: bool = True) -> None:
        """Write each piece; in lock-step, wait until the client has read it before the next."""
        for piece in pieces:
            self.writer.write(piece)
            self.sent += len(piece)
            if lockstep:
                while self.client.consumed < self.sent:
                    await asyncio.sleep(0)

    async def wait_closed_by_client(self) -> None:
        """For a connection that must see no further request: wait until the client closes it."""
        if await self.request() is not None:
            self.close()  # so the client is not left waiting for an answer
            self.eof.set()
            raise AssertionError(f"connection {self.index} was reused, it should not be")

    def close(self) -> None:
        """A normal close: FIN after what was written."""
        self.writer.close()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0), like a peer that vanished with data in flight."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class Served:
    """What the server saw: one ServerConn per accepted connection, script failures."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conns: list[ServerConn] = []
        self.errors: list[BaseException] = []


@asynccontextmanager
async def scripted(script):
    """Serve ``await script(conn)`` on every accepted connection of a 127.0.0.1 server."""
    clients: dict[int, Watched] = {}
    tasks: list[asyncio.Task] = []
    real_open = asyncio.open_connection

    async def watched_open(host, port, **kwargs):
        reader, writer = await real_open(host, port, **kwargs)
        client = clients[writer.get_extra_info("sockname")[1]] = Watched()
        client.sock = writer.get_extra_info("socket")
        read = reader.read

        async def counted(n: int = -1) -> bytes:
            client.pending += 1
            try:
                data = await read(n)
            finally:
                client.pending -= 1
            client.reads.append(data)
            return data

        reader.read = counted
        return reader, writer

    async def accept(reader, writer) -> None:
        tasks.append(asyncio.current_task())
        conn = ServerConn(len(served.conns), reader, writer, clients)
        served.conns.append(conn)
        try:
            await script(conn)
        except asyncio.CancelledError:
            pass  # the test is over; ending quietly keeps asyncio from logging the cancel
        except Exception as exc:  # surfaced after the test body, see below
            served.errors.append(exc)

    server = await asyncio.start_server(accept, HOST, 0)
    served = Served(server.sockets[0].getsockname()[1])
    asyncio.open_connection = watched_open
    try:
        yield served
    finally:
        asyncio.open_connection = real_open
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in served.conns:
            conn.writer.transport.abort()
        await server.wait_closed()
    assert not served.errors, f"the server script failed: {served.errors!r}"


# --- helpers -----------------------------------------------------------------------------


def chunked(*parts: bytes, ext: bytes = b"", trailers: bytes = b"") -> bytes:
    """A chunked body: one chunk per part, then the last chunk and optional trailers."""
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts)
    return body + b"0\r\n" + trailers + b"\r\n"


def with_length(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def ask(pool: Pool, port: int, body: bytes = b'{"model": "m"}', headers=()):
    head = request_head(PATH, HOST, port, list(headers), len(body))
    return await pool.request(HOST, port, head, body)


async def collect(resp) -> tuple[list[bytes], list[bool]]:
    """Every piece ``chunks()`` yields, and ``complete`` as it stood at each piece."""
    pieces, flags = [], []
    async for data in resp.chunks():
        pieces.append(data)
        flags.append(resp.complete)
    return pieces, flags


def respond(*pieces: bytes):
    """A script: read one request, answer it with ``pieces`` in lock-step, then expect no
    other request on the connection (the client closes it, or the test ends)."""

    async def script(conn: ServerConn) -> None:
        assert await conn.request() is not None
        await conn.send(*pieces)
        await conn.wait_closed_by_client()

    return script


def cut(data: bytes, points) -> list[bytes]:
    bounds = [0, *sorted(set(points)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


async def fetch(served: Served, pool: Pool) -> tuple[list[bytes], list[bool], object]:
    resp = await ask(pool, served.port)
    try:
        pieces, flags = await collect(resp)
    finally:
        resp.release()
    return pieces, flags, resp


def assert_read_at(conn: ServerConn, pieces: list[bytes]) -> None:
    """Harness check: the client's reads never spanned two pieces (lock-step held)."""
    reads = conn.client.reads
    wire = b"".join(pieces)
    assert b"".join(reads) == wire
    read_ends = set(itertools.accumulate(map(len, reads)))
    assert set(itertools.accumulate(map(len, pieces))) <= read_ends


# --- chunked bodies, split anywhere ------------------------------------------------------

parts_strategy = st.lists(st.binary(min_size=1, max_size=40), max_size=8)


@settings(max_examples=200, deadline=None)
@given(parts=parts_strategy, ext=st.booleans(), trailers=st.booleans(), data=st.data())
def test_chunked_body_is_reassembled_for_any_split(parts, ext, trailers, data):
    wire = CHUNKED_HEAD + chunked(
        *parts, ext=b';name="v"' if ext else b"", trailers=b"X-Usage: 3\r\n" if trailers else b""
    )
    points = data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=12), label="splits")
    pieces = cut(wire, points)

    async def main():
        async with scripted(respond(*pieces)) as served:
            pool = Pool()
            try:
                got, flags, resp = await fetch(served, pool)
            finally:
                pool.close()
            assert b"".join(got) == b"".join(parts)
            assert resp.complete is True and resp.status == 200
            assert resp.header(b"content-type") == b"text/event-stream"
            assert not any(flags[:-1]), "complete before the last piece"
            assert all(got), "an empty piece was yielded"
            assert_read_at(served.conns[0], pieces)

    asyncio.run(main())


WIRE = CHUNKED_HEAD + chunked(
    b'data: {"a": 1}\n\n', b"x" * 17, b"data: [DONE]\n\n", ext=b";ext=1", trailers=b"X-T: 1\r\n"
)
PAYLOAD = b'data: {"a": 1}\n\n' + b"x" * 17 + b"data: [DONE]\n\n"


def test_chunked_body_split_at_every_single_boundary():
    async def main():
        plans = [[WIRE[:k], WIRE[k:]] for k in range(1, len(WIRE))]
        plans.append([WIRE[i : i + 1] for i in range(len(WIRE))])  # one byte per read
        plan = iter(plans)

        async def script(conn):
            await respond(*next(plan))(conn)

        async with scripted(script) as served:
            for pieces in plans:
                pool = Pool()
                try:
                    got, _, resp = await fetch(served, pool)
                finally:
                    pool.close()
                assert (b"".join(got), resp.complete) == (PAYLOAD, True), pieces
                assert_read_at(served.conns[-1], pieces)
            assert len(served.conns) == len(plans)

    asyncio.run(main())


def test_chunk_extensions_and_trailers_are_consumed_and_the_connection_reused():
    body = chunked(b"hello", b" world", ext=b';a=b;c="d e"', trailers=b"X-A: 1\r\nX-B: 2\r\n")

    async def main():
        async with scripted(lambda conn: conn.serve(CHUNKED_HEAD + body)) as served:
            pool = Pool()
            try:
                for _ in range(2):
                    resp = await ask(pool, served.port)
                    assert await resp.read() == b"hello world" and resp.complete
                    resp.release()
            finally:
                pool.close()
            # the trailers were parsed away: the second answer came on the same connection
            assert len(served.conns) == 1 and len(served.conns[0].requests) == 2

    asyncio.run(main())


# --- a burst is one piece ------------------------------------------------------------------

EVENTS = [b'data: {"choices": [{"delta": {"content": "t%d"}}]}\n\n' % i for i in range(200)]


def test_a_burst_of_chunks_in_one_write_comes_out_as_one_piece():
    async def script(conn):
        assert await conn.request() is not None
        await conn.send(CHUNKED_HEAD)  # the client has the head and waits in read()
        await conn.send(chunked(*EVENTS))
        await conn.wait_closed_by_client()

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                pieces, flags, resp = await fetch(served, pool)
            finally:
                pool.close()
            assert pieces == [b"".join(EVENTS)]
            assert flags == [True] and resp.complete

    asyncio.run(main())


def queued(sock) -> int:
    """Bytes a socket has not handed on yet: unacknowledged (sending) plus unread (receiving)."""
    return sum(
        struct.unpack("i", fcntl.ioctl(sock, req, b"\0" * 4))[0]
        for req in (termios.TIOCOUTQ, termios.FIONREAD)
    )


def test_chunks_written_one_by_one_but_read_at_once_are_one_piece():
    """llama-server writes a chunk per token; those that arrived while the relay was busy
    are all in one read, and come out as one piece."""
    written = asyncio.Event()

    async def script(conn):
        assert await conn.request() is not None
        await conn.send(CHUNKED_HEAD)
        await conn.send(*[chunked(e)[:-5] for e in EVENTS], b"0\r\n\r\n", lockstep=False)
        written.set()
        await conn.wait_closed_by_client()

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                await written.wait()
                server_sock = served.conns[0].writer.get_extra_info("socket")
                client_sock = served.conns[0].client.sock
                while queued(server_sock) or queued(client_sock):  # all in the client's buffer
                    await asyncio.sleep(0)
                pieces, flags = await collect(resp)
                resp.release()
            finally:
                pool.close()
            assert pieces == [b"".join(EVENTS)] and flags == [True]

    asyncio.run(main())


def test_head_and_burst_in_one_write_are_one_piece():
    async def main():
        async with scripted(respond(CHUNKED_HEAD + chunked(*EVENTS[:50]))) as served:
            pool = Pool()
            try:
                pieces, _, resp = await fetch(served, pool)
            finally:
                pool.close()
            assert pieces == [b"".join(EVENTS[:50])] and resp.complete

    asyncio.run(main())


# --- Content-Length and close-delimited bodies ------------------------------------------


def test_content_length_body_in_split_writes():
    body = bytes(range(256)) * 40
    wire = with_length(body, b"Content-Type: application/json\r\n")

    async def main():
        pieces = cut(wire, [5, 40, len(wire) - len(body) + 1, len(wire) - 7, len(wire) - 1])
        async with scripted(respond(*pieces)) as served:
            pool = Pool()
            try:
                got, flags, resp = await fetch(served, pool)
            finally:
                pool.close()
            assert b"".join(got) == body and resp.complete
            assert not any(flags[:-1]) and flags[-1]
            assert resp.header(b"content-length") == str(len(body)).encode()
            assert_read_at(served.conns[0], pieces)

    asyncio.run(main())


def test_close_delimited_body_is_complete_at_eof():
    body = b'{"object": "list"}' * 30

    async def script(conn):
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n", body[:100], body[100:]
            )
            conn.close()
        else:
            await conn.serve(with_length(b"second"))

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                got, _, resp = await fetch(served, pool)
                assert b"".join(got) == body and resp.complete
                again = await ask(pool, served.port)
                assert await again.read() == b"second"
                again.release()
            finally:
                pool.close()
            assert len(served.conns) == 2

    asyncio.run(main())


def test_read_stops_at_its_limit():
    body = b"e" * 10_000

    async def main():
        async with scripted(respond(with_length(body))) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                assert await resp.read(4096) == body[:4096]
                resp.release()
            finally:
                pool.close()

    asyncio.run(main())


# --- keep-alive ----------------------------------------------------------------------------


def test_two_requests_reuse_one_connection():
    async def main():
        async def script(conn):
            while (req := await conn.request()) is not None:
                await conn.send(with_length(b"echo:" + bytes(req.body)))

        async with scripted(script) as served:
            pool = Pool()
            try:
                for body in (b"first", b"second"):
                    resp = await ask(pool, served.port, body)
                    assert await resp.read() == b"echo:" + body
                    resp.release()
            finally:
                pool.close()
            assert len(served.conns) == 1
            assert [bytes(r.body) for r in served.conns[0].requests] == [b"first", b"second"]

    asyncio.run(main())


def test_connection_close_response_is_not_reused():
    async def main():
        # the server would keep the connection: it is the client's header reading that decides
        response = with_length(b"bye", b"Connection: close\r\n")
        async with scripted(lambda conn: conn.serve(response)) as served:
            pool = Pool()
            try:
                for _ in range(2):
                    resp = await ask(pool, served.port)
                    assert await resp.read() == b"bye" and resp.complete
                    resp.release()
            finally:
                pool.close()
            assert len(served.conns) == 2
            assert [len(c.requests) for c in served.conns] == [1, 1]
            await served.conns[0].eof.wait()  # the client closed the first one itself

    asyncio.run(main())


def test_a_response_released_before_its_end_is_not_reused():
    async def script(conn):
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(CHUNKED_HEAD + chunked(b"first")[:-5])  # no last chunk yet
            await conn.wait_closed_by_client()
        else:
            await conn.serve(with_length(b"fresh"))

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                pieces = resp.chunks()
                assert await anext(pieces) == b"first"
                await pieces.aclose()
                assert resp.complete is False
                resp.release()
                again = await ask(pool, served.port)
                assert await again.read() == b"fresh"
                again.release()
            finally:
                pool.close()
            assert len(served.conns) == 2
            await served.conns[0].eof.wait()

    asyncio.run(main())


# --- dead, refused and closed connections -------------------------------------------------


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_pooled_connection_closed_meanwhile_is_replaced(close):
    """The server closes an idle kept-alive connection; the next request still succeeds."""

    async def main():
        gate = asyncio.Event()  # the client released the first answer's connection
        closed = asyncio.Event()

        async def script(conn):
            if conn.index == 0:
                assert await conn.request() is not None
                await conn.send(with_length(b"one"))
                await gate.wait()
                conn.close() if close == "fin" else conn.reset()
                closed.set()
            else:
                await conn.serve(with_length(b"two"))

        async with scripted(script) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                assert await resp.read() == b"one"
                resp.release()
                gate.set()
                await closed.wait()
                again = await ask(pool, served.port)
                assert (again.status, await again.read()) == (200, b"two")
                again.release()
            finally:
                pool.close()
            assert len(served.conns) == 2

    asyncio.run(main())


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_reused_connection_closed_instead_of_answering_is_retried(close):
    """The race proper: the request goes out on a kept-alive connection the server then
    closes without an answer; it is sent again on a new connection, transparently."""

    async def script(conn):
        if conn.index == 0:
            assert await conn.request() is not None
            await conn.send(with_length(b"one"))
            assert await conn.request() is not None  # the second request arrives here...
            conn.close() if close == "fin" else conn.reset()  # ...and is never answered
        else:
            await conn.serve(with_length(b"two"))

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port, b"a")
                assert await resp.read() == b"one"
                resp.release()
                again = await ask(pool, served.port, b"b")
                assert (again.status, await again.read()) == (200, b"two")
                again.release()
            finally:
                pool.close()
            assert len(served.conns) == 2
            assert [bytes(r.body) for r in served.conns[1].requests] == [b"b"]

    asyncio.run(main())


def assert_one_line_502(exc: UpstreamError, port: int) -> None:
    assert exc.status == 502 and exc.code == "upstream_error"
    assert "\n" not in exc.message and f"{HOST}:{port}" in exc.message


@pytest.mark.parametrize("close", ["fin", "rst"])
def test_fresh_connection_closed_before_answering_is_an_upstream_error(close):
    async def script(conn):
        assert await conn.request() is not None
        conn.close() if close == "fin" else conn.reset()

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                with pytest.raises(UpstreamError) as err:
                    await ask(pool, served.port)
            finally:
                pool.close()
            assert_one_line_502(err.value, served.port)
            assert len(served.conns) == 1  # a fresh connection is not retried

    asyncio.run(main())


def test_connection_refused_is_an_upstream_error():
    async def main():
        with socket.socket() as sock:  # bound, never listening: the port refuses
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
            pool = Pool()
            with pytest.raises(UpstreamError) as err:
                await ask(pool, port)
            pool.close()
        assert_one_line_502(err.value, port)
        assert "cannot connect" in err.value.message

    asyncio.run(main())


@pytest.mark.parametrize("close", ["fin", "rst"])
@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_upstream_dying_mid_body_ends_chunks_incomplete(framing, close):
    """A llama-server that dies mid-answer: the pieces so far, then ``complete`` False."""
    if framing == "chunked":
        sent, rest = CHUNKED_HEAD + chunked(b"partial answer")[:-5], b"partial answer"
    else:
        sent = with_length(b"partial answer" + b"z" * 50)[:-50]
        rest = b"partial answer"

    async def script(conn):
        assert await conn.request() is not None
        await conn.send(sent)
        conn.close() if close == "fin" else conn.reset()

    async def main():
        async with scripted(script) as served:
            pool = Pool()
            try:
                pieces, flags, resp = await fetch(served, pool)
            finally:
                pool.close()
            assert b"".join(pieces) == rest
            assert resp.complete is False and not any(flags)

    asyncio.run(main())


# --- protocol errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-x\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        CHUNKED_HEAD + b"zz\r\nhello\r\n",  # a bad chunk size in the same read as the head
    ],
)
def test_garbage_instead_of_http_is_an_upstream_error(garbage):
    async def main():
        async with scripted(respond(garbage)) as served:
            pool = Pool()
            try:
                with pytest.raises(UpstreamError) as err:
                    await ask(pool, served.port)
            finally:
                pool.close()
            assert_one_line_502(err.value, served.port)
            await served.conns[0].eof.wait()  # and the connection was dropped

    asyncio.run(main())


@pytest.mark.parametrize("bad", [b"zz\r\nhello\r\n", b"5\r\nhello!!\r\n", b"-1\r\n\r\n"])
def test_malformed_chunk_in_the_body_raises_from_chunks(bad):
    async def main():
        async with scripted(respond(CHUNKED_HEAD + chunked(b"ok")[:-5], bad)) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                got = []
                with pytest.raises(UpstreamError) as err:
                    async for data in resp.chunks():
                        got.append(data)
                resp.release()
            finally:
                pool.close()
            assert got == [b"ok"] and resp.complete is False
            assert err.value.status == 502 and "\n" not in err.value.message
            await served.conns[0].eof.wait()  # release() dropped the broken connection

    asyncio.run(main())


def test_informational_100_continue_is_skipped():
    """RFC 9110 15.2: a client must parse 1xx responses before the final one. cpp-httplib
    (llama-server) sends ``100 Continue`` when a request carries ``Expect: 100-continue``,
    and the router forwards that header from its own clients."""

    async def main():
        async with scripted(
            respond(b"HTTP/1.1 100 Continue\r\n\r\n", with_length(b"final"))
        ) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port, headers=[(b"expect", b"100-continue")])
                status = resp.status
                body = await resp.read()
                resp.release()
            finally:
                pool.close()
            assert (status, body) == (200, b"final")

    asyncio.run(main())


# --- abort -------------------------------------------------------------------------------


def test_abort_ends_a_pending_read_and_closes_the_upstream_connection():
    async def main():
        async with scripted(respond(CHUNKED_HEAD + chunked(b"token")[:-5])) as served:
            pool = Pool()
            try:
                resp = await ask(pool, served.port)
                got = []
                first = asyncio.Event()

                async def consume():
                    async for data in resp.chunks():
                        got.append(data)
                        first.set()

                reading = asyncio.create_task(consume())
                await first.wait()
                client = served.conns[0].client
                while not client.pending:  # the consumer now waits in read()
                    await asyncio.sleep(0)
                resp.abort()
                await reading  # ends, no exception
                resp.release()
            finally:
                pool.close()
            assert got == [b"token"] and resp.complete is False
            await served.conns[0].eof.wait()  # llama-server sees the client go

    asyncio.run(main())


# --- the request -------------------------------------------------------------------------


def test_request_head_bytes():
    head = request_head("/v1/embeddings", "10.0.0.2", 8081, [(b"x-a", b"1")], 42)
    assert head == (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: 10.0.0.2:8081\r\n"
        b"Content-Length: 42\r\nx-a: 1\r\n\r\n"
    )


@pytest.mark.parametrize("size", [0, 100, 65535, 65536, 300_000])
def test_request_is_parsed_by_the_server_with_its_body_intact(size):
    body = hashlib.sha256(b"seed").digest() * (size // 32) + b"#" * (size % 32)
    forwarded = [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream"),
        (b"x-request-id", b"r-17"),
    ]

    async def main():
        async with scripted(lambda conn: conn.serve(with_length(b"ok"))) as served:
            pool = Pool()
            try:
                for _ in range(2):  # and the connection stays usable after a large body
                    resp = await ask(pool, served.port, body, forwarded)
                    assert await resp.read() == b"ok"
                    resp.release()
            finally:
                pool.close()
            [conn] = served.conns
            for req in conn.requests:
                assert (req.method, req.url) == (b"POST", PATH.encode())
                assert req.header(b"host") == f"{HOST}:{served.port}".encode()
                assert req.header(b"content-length") == str(size).encode()
                assert [h for h in req.headers if h[0] in dict(forwarded)] == forwarded
                assert len(req.body) == size and bytes(req.body) == body

    asyncio.run(main())
