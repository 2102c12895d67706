"""The devices a llama.cpp ``rpc-server`` lends, and their free memory, asked over its
own protocol, so the planner can place layers on them.

``llama-server --rpc HOST:PORT,...`` registers every device of every rpc-server as a
GPU-type device named ``RPC0``, ``RPC1``... (numbered across the servers, in the order
given; each server's devices in its own order), and llama.cpp (``src/llama.cpp``,
``llama_model_load``'s default device selection) puts the RPC devices *first*, before
the local GPUs: ``--tensor-split`` and ``--device`` count in that order. The buffers on
such a device print as ``RPC<d>[HOST:PORT]`` (``d`` the device's index within its
server, ``ggml_backend_rpc_buffer_type``), which is the id a plan gives the device, so
what llama-server reports maps back to it whatever the ``--rpc`` order.

The exchange (``ggml/src/ggml-rpc/ggml-rpc.cpp``, protocol 7, b11434), little-endian;
a request is ``cmd:u8 | size:u64 | data``, an answer ``size:u64 | data``:

* ``HELLO`` (14) with 24 bytes of connection capabilities (zero: plain TCP) ->
  ``major, minor, patch, pad: u8`` + 24 bytes of the server's capabilities. The server
  hangs up on anything but a HELLO first; corral speaks major 7 only.
* ``DEVICE_COUNT`` (15), no data -> ``count: u32``.
* ``GET_DEVICE_MEMORY`` (11) with ``device: u32`` -> ``free: u64, total: u64``.

Decisions:

* An rpc-server serves **one client at a time**: it is asked right before the launch
  (connect, ask, close), never while an instance uses it. A server busy with another
  client does not answer: that is the timeout's case, and the launch then goes unplanned.
* Every answer is bounded: one deadline for the whole exchange (``timeout``), sizes
  checked against what each command answers, at most :data:`MAX_DEVICES` devices. What
  is not an rpc-server's answer is a ``ConnectionError``; no answer in time a
  ``TimeoutError`` (both ``OSError``, like a refused connection).
* A failed exchange closes with a TCP reset, never a plain close: a server busy with
  another client reads the request later, and answering a client that closed normally
  kills it (SIGPIPE); a reset connection it just drops. Checked on the real rpc-server.
* The free figure is what the server's backend reports (a CPU backend: the host's RAM).
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass
from typing import Callable

from corral.fit.devices import Device, Devices, human_bytes

#: The RPC protocol version corral speaks (ggml-rpc.h RPC_PROTO_MAJOR_VERSION).
PROTOCOL_MAJOR = 7
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
#: Bytes of connection capabilities in HELLO (transport.h RPC_CONN_CAPS_SIZE).
CONN_CAPS_SIZE = 24
#: Seconds one rpc-server may take for the whole exchange.
TIMEOUT = 3.0
#: More devices than this on one server is not an answer corral believes.
MAX_DEVICES = 64

_HELLO_ANSWER = 4 + CONN_CAPS_SIZE


@dataclass(frozen=True)
class RpcMemory:
    """One device of one rpc-server, as it answered."""

    endpoint: str  # HOST:PORT as llama-server is given it
    device: int  # index within its server
    free_bytes: int
    total_bytes: int
    version: str  # the server's protocol version, "7.0.0"

    @property
    def buffer_name(self) -> str:
        """llama.cpp's name of this device's buffers: ``RPC0[10.0.0.2:50052]``."""
        return f"RPC{self.device}[{self.endpoint}]"


def split_endpoints(value: str | None) -> list[str]:
    """``--rpc``'s value as llama.cpp splits it (at commas), empty entries dropped."""
    return [e.strip() for e in (value or "").split(",") if e.strip()]


def _host_port(endpoint: str) -> tuple[str, int]:
    """llama.cpp's ``parse_endpoint``: the host up to the first ``:``, then the port."""
    host, sep, port = endpoint.partition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectionError(f"rpc endpoint {endpoint!r} is not HOST:PORT")
    return host, int(port)


class _Exchange:
    """One connection to one rpc-server under one deadline."""

    def __init__(self, sock: socket.socket, endpoint: str, deadline: float) -> None:
        self.sock, self.endpoint, self.deadline = sock, endpoint, deadline

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"rpc-server {self.endpoint} did not answer in time")
        return left

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            self.sock.settimeout(self._left())
            try:
                chunk = self.sock.recv(n - len(data))
            except socket.timeout:
                raise TimeoutError(f"rpc-server {self.endpoint} did not answer in time") from None
            if not chunk:
                raise ConnectionError(f"rpc-server {self.endpoint} closed the connection")
            data += chunk
        return bytes(data)

    def call(self, cmd: int, payload: bytes, answer_size: int) -> bytes:
        """Send ``cmd`` with ``payload``; the answer's data, which must be ``answer_size``."""
        self.sock.settimeout(self._left())
        self.sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
        (size,) = struct.unpack("<Q", self._recv(8))
        if size != answer_size:
            raise ConnectionError(
                f"{self.endpoint} is not an rpc-server of protocol {PROTOCOL_MAJOR}: "
                f"command {cmd} answered {size} bytes, not {answer_size}"
            )
        return self._recv(size)


def ask(
    endpoint: str,
    timeout: float = TIMEOUT,
    connect: Callable[..., socket.socket] = socket.create_connection,
) -> list[RpcMemory]:
    """Every device of the rpc-server at ``endpoint`` with its free and total memory.

    Raises ``TimeoutError`` (no answer in ``timeout`` seconds, e.g. a server busy with
    another client), ``ConnectionError`` (refused, closed, or not the protocol), or
    another ``OSError`` (the name does not resolve...)."""
    host, port = _host_port(endpoint)
    deadline = time.monotonic() + timeout
    try:
        sock = connect((host, port), timeout=timeout)
    except socket.timeout:
        raise TimeoutError(f"rpc-server {endpoint}: no connection in {timeout:g} s") from None
    except OSError as exc:  # refused, unreachable, a name that does not resolve
        raise type(exc)(exc.errno, f"rpc-server {endpoint}: {exc.strerror or exc}") from None
    try:
        found = _exchange(_Exchange(sock, endpoint, deadline))
    except BaseException:
        _reset(sock)
        raise
    sock.close()
    return found


def _reset(sock: socket.socket) -> None:
    """Close with a reset (``SO_LINGER`` 0), not a FIN: a server still busy with another
    client reads our request later, and answering a peer that closed normally kills it
    (SIGPIPE on its second write, b11434); after a reset it drops the connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _exchange(ex: _Exchange) -> list[RpcMemory]:
    """HELLO, DEVICE_COUNT, then GET_DEVICE_MEMORY per device."""
    endpoint = ex.endpoint
    hello = ex.call(CMD_HELLO, bytes(CONN_CAPS_SIZE), _HELLO_ANSWER)
    major, minor, patch = hello[0], hello[1], hello[2]
    version = f"{major}.{minor}.{patch}"
    if major != PROTOCOL_MAJOR:
        raise ConnectionError(
            f"rpc-server {endpoint} speaks RPC protocol {version}; corral asks in "
            f"{PROTOCOL_MAJOR}.x (a llama.cpp build of another generation)"
        )
    (count,) = struct.unpack("<I", ex.call(CMD_DEVICE_COUNT, b"", 4))
    if not 0 < count <= MAX_DEVICES:
        raise ConnectionError(f"rpc-server {endpoint} reports {count} devices")
    found = []
    for d in range(count):
        free, total = struct.unpack("<QQ", ex.call(CMD_GET_DEVICE_MEMORY, struct.pack("<I", d), 16))
        found.append(RpcMemory(endpoint, d, free, total, version))
    return found


def rpc_devices(
    endpoints: list[str], timeout: float = TIMEOUT, asker: Callable = ask
) -> list[Device]:
    """The devices llama-server will see for ``--rpc`` ``endpoints``, in its order
    (``index`` = the ``N`` of its name ``RPCN``). Any server that cannot be asked raises
    (see :func:`ask`): a plan without one of them would put its layers elsewhere."""
    out: list[Device] = []
    for endpoint in endpoints:
        found = asker(endpoint, timeout)
        for mem in found:
            which = "" if len(found) == 1 else f" device {mem.device}"
            out.append(
                Device(
                    id=mem.buffer_name,  # it names the endpoint already
                    name=f"rpc-server{which} ({human_bytes(mem.total_bytes)})",
                    kind="rpc",
                    total_bytes=mem.total_bytes,
                    free_bytes=mem.free_bytes,
                    vendor="rpc",
                    index=len(out),
                )
            )
    return out


def endpoints_in(pairs, catalog=None) -> list[str]:
    """The endpoints of a launch's ``--rpc`` (normalised flag pairs; the last one wins,
    as llama-server's parser keeps it), empty when there is none."""
    name = "--rpc"
    if catalog is not None:
        flag = catalog.lookup("--rpc")
        name = flag.long if flag is not None else name
    values = [v for n, v in pairs if n == name]
    return split_endpoints(values[-1]) if values else []


def add_rpc(devices: Devices, pairs, catalog=None, timeout: float = TIMEOUT, asker=ask) -> None:
    """Put the devices of the launch's ``--rpc`` servers into ``devices`` (asked now).
    Raises ``OSError`` when one of them cannot be asked (see :func:`ask`)."""
    endpoints = endpoints_in(pairs, catalog)
    if endpoints:
        devices.rpc = rpc_devices(endpoints, timeout, asker)
