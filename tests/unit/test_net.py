"""corral.net.is_loopback: the daemon's and the client's one answer, checked against ipaddress."""

import ipaddress

import pytest
from hypothesis import given, strategies as st

from corral.net import is_loopback


def reference(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.mark.parametrize(
    "host, expected",
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("0:0:0:0:0:0:0:1", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fe80::1", False),
        ("127.0.0.256", False),
        ("0127.0.0.1", False),
        ("127.0.0.01", False),
        ("localhost.example.com", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_known_hosts(host, expected):
    assert is_loopback(host) is expected


@given(st.ip_addresses().map(str))
def test_agrees_with_ipaddress_on_every_address(host):
    assert is_loopback(host) is reference(host)


@given(st.text(alphabet="0123456789.:[]abcdef", max_size=20))
def test_agrees_with_ipaddress_on_near_addresses(host):
    assert is_loopback(host) is reference(host)
