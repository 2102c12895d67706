"""A fake llama.cpp rpc-server that speaks the start of its protocol, and its faults.

It answers ``HELLO`` (14), ``DEVICE_COUNT`` (15) and ``GET_DEVICE_MEMORY`` (11) as
``ggml-rpc.cpp`` (protocol 7) does, one client at a time, in a thread on 127.0.0.1 (the
other fake, ``fake_rpc_server.py``, is a process that only listens). ``behaviour``:

* ``"ok"``: the devices given as ``(free, total)`` pairs;
* ``"silent"``: accepts and never answers (a server busy with another client);
* ``"close"``: closes each connection at once;
* ``"garbage"``: answers HELLO with a wrong size and bytes that mean nothing;
* ``"version"``: answers HELLO as protocol 3.0.0;
* ``"many"``: reports 100000 devices;
* ``"trickle"``: answers HELLO one byte every 0.3 s (a deadline must cut it).

``requests`` records the commands each connection sent (a list per connection).
"""

from __future__ import annotations

import socket
import struct
import threading
import time


class FakeRpcProtocolServer:
    """``with FakeRpcProtocolServer(devices=[(free, total)]) as srv: srv.endpoint``."""

    def __init__(self, behaviour: str = "ok", devices=((8 << 30, 16 << 30),)) -> None:
        self.behaviour = behaviour
        self.devices = list(devices)
        self.requests: list[list[int]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.endpoint = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeRpcProtocolServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            socket.create_connection(self._sock.getsockname(), timeout=1).close()
        except OSError:
            pass
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            conn, _ = self._sock.accept()
            if self._stop.is_set():
                conn.close()
                return
            seen: list[int] = []
            self.requests.append(seen)
            with conn:
                try:
                    self._client(conn, seen)
                except OSError:
                    pass

    def _recv(self, conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(struct.pack("<Q", len(data)) + data)

    def _client(self, conn: socket.socket, seen: list[int]) -> None:
        if self.behaviour == "close":
            return
        if self.behaviour == "silent":
            self._stop.wait(30)
            return
        while True:
            head = self._recv(conn, 9)
            if head is None:
                return
            cmd, size = struct.unpack("<BQ", head)
            seen.append(cmd)
            payload = self._recv(conn, size) if size else b""
            if payload is None:
                return
            if not self._reply(conn, cmd, payload):
                return

    def _reply(self, conn: socket.socket, cmd: int, payload: bytes) -> bool:
        b = self.behaviour
        if cmd == 14:  # HELLO
            if b == "garbage":
                conn.sendall(struct.pack("<Q", 5) + b"\xde\xad\xbe\xef\x00")
                return False
            major = 3 if b == "version" else 7
            hello = bytes([major, 0, 0, 0]) + bytes(24)
            if b == "trickle":
                for byte in struct.pack("<Q", len(hello)) + hello:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.3)
                return True
            self._answer(conn, hello)
        elif cmd == 15:  # DEVICE_COUNT
            self._answer(conn, struct.pack("<I", 100000 if b == "many" else len(self.devices)))
        elif cmd == 11:  # GET_DEVICE_MEMORY
            (dev,) = struct.unpack("<I", payload)
            if dev >= len(self.devices):
                return False  # the real server hangs up on a device it does not have
            self._answer(conn, struct.pack("<QQ", *self.devices[dev]))
        else:
            return False
        return True
