"""Addresses: the one test of "is this host this machine only" (a leaf: imports nothing of corral).

The daemon (what needs a key, which Host headers name it) and the CLI client (whether the
local token may be sent) ask the same question and must get the same answer.
"""

from __future__ import annotations


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ``::1`` and its other
    spellings). Names are not resolved (a DNS answer could change under us): any other name
    is not loopback."""
    if host == "localhost":
        return True
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and p == str(int(p)) and int(p) <= 255 for p in parts):
        return parts[0] == "127"
    if ":" not in host:
        return False
    # IPv6 only: the ipaddress import costs more than the rest of a CLI call's check, so it
    # is paid only for an address that needs it.
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
