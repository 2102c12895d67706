"""The rpc-server memory client (corral.fit.rpc_devices) against a fake server that
speaks the start of llama.cpp's RPC protocol (tests/fakes/fake_rpc_protocol.py), and
its faults: no answer, garbage, another protocol, too many devices, a slow trickle."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from corral.fit import rpc_devices
from corral.fit.devices import GiB
from corral.fit.rpc_devices import ask, rpc_devices as devices_of, split_endpoints
from tests.fakes.fake_rpc_protocol import FakeRpcProtocolServer


def test_ask_reads_every_device_of_a_server_after_the_handshake():
    devs = [(3 * GiB, 8 * GiB), (5 * GiB, 24 * GiB)]
    with FakeRpcProtocolServer(devices=devs) as srv:
        found = ask(srv.endpoint, timeout=2)
    assert [(m.free_bytes, m.total_bytes) for m in found] == devs
    assert [m.buffer_name for m in found] == [f"RPC0[{srv.endpoint}]", f"RPC1[{srv.endpoint}]"]
    assert found[0].version == "7.0.0"
    # HELLO first (the server hangs up otherwise), then the count, then one memory per device
    assert srv.requests == [[14, 15, 11, 11]]


def test_devices_are_numbered_across_servers_in_the_order_given():
    with (
        FakeRpcProtocolServer(devices=[(1 * GiB, 2 * GiB)]) as a,
        FakeRpcProtocolServer(devices=[(3 * GiB, 4 * GiB), (5 * GiB, 6 * GiB)]) as b,
    ):
        found = devices_of([b.endpoint, a.endpoint], timeout=2)
    assert [d.id for d in found] == [
        f"RPC0[{b.endpoint}]",
        f"RPC1[{b.endpoint}]",
        f"RPC0[{a.endpoint}]",
    ]
    # llama.cpp's device names (what --device takes) count across the servers
    assert [d.backend_name(i) for i, d in enumerate(found)] == ["RPC0", "RPC1", "RPC2"]
    assert [d.free_bytes for d in found] == [3 * GiB, 5 * GiB, 1 * GiB]
    assert {d.kind for d in found} == {"rpc"}
    assert found[1].name == "rpc-server device 1 (6.0 GiB)"
    assert found[2].name == "rpc-server (2.0 GiB)"


def test_a_server_that_never_answers_times_out_within_the_deadline():
    with FakeRpcProtocolServer("silent") as srv:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer"):
            ask(srv.endpoint, timeout=0.5)
        assert time.monotonic() - start < 2


def test_a_trickling_server_is_cut_by_the_one_deadline():
    with FakeRpcProtocolServer("trickle") as srv:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            ask(srv.endpoint, timeout=1.0)  # each byte comes in time, the whole does not
        assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    "behaviour,message",
    [
        ("garbage", "not an rpc-server of protocol 7"),
        ("version", "speaks RPC protocol 3.0.0"),
        ("many", "reports 100000 devices"),
        ("close", "closed the connection|reset by peer"),
    ],
)
def test_what_is_not_an_answer_is_a_connection_error(behaviour, message):
    with FakeRpcProtocolServer(behaviour) as srv:
        with pytest.raises(ConnectionError, match=message):
            ask(srv.endpoint, timeout=2)


def test_a_refused_connection_and_a_bad_endpoint_are_os_errors():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError, match=f"rpc-server 127.0.0.1:{port}: "):
        ask(f"127.0.0.1:{port}", timeout=2)
    for bad in ("127.0.0.1", "127.0.0.1:x", ":50052", "127.0.0.1:70000"):
        with pytest.raises(ConnectionError, match="not HOST:PORT"):
            ask(bad, timeout=1)


def test_a_failed_exchange_resets_the_connection_rather_than_closing_it():
    """A busy rpc-server reads a request later; answering a client that closed normally
    kills it (SIGPIPE), a reset one it drops. So a timeout closes with SO_LINGER 0."""
    closed: list[bytes] = []

    class Sock:
        def __init__(self):
            self.linger = None

        def settimeout(self, t):
            pass

        def sendall(self, data):
            pass

        def recv(self, n):
            raise socket.timeout

        def setsockopt(self, level, opt, value):
            if opt == socket.SO_LINGER:
                self.linger = value

        def close(self):
            closed.append(self.linger)

    with pytest.raises(TimeoutError):
        ask("10.0.0.2:50052", timeout=1, connect=lambda addr, timeout: Sock())
    assert closed == [struct.pack("ii", 1, 0)]


def test_one_server_that_cannot_be_asked_fails_the_whole_list():
    with FakeRpcProtocolServer() as good, FakeRpcProtocolServer("garbage") as bad:
        with pytest.raises(ConnectionError):
            devices_of([good.endpoint, bad.endpoint], timeout=2)


def test_split_endpoints_as_llama_cpp_splits_them():
    assert split_endpoints("a:1, b:2,,") == ["a:1", "b:2"]
    assert split_endpoints(None) == []
    assert rpc_devices.PROTOCOL_MAJOR == 7
