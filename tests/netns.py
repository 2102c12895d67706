"""Test hosts on one machine: Linux network namespaces on a bridge.

:class:`Hosts` makes one namespace per host name, each with a veth pair whose outer end
is on a bridge of its own and whose inner end (``eth0``) holds a private address of
``subnet`` (inside the namespace only: the root namespace gets no address, so nothing
here can reach past the bridge), and ``lo`` up. Names carry this process's id, so two
test runs (or two test files) never share a namespace or a bridge. Everything is
removed in :meth:`Hosts.close`, processes left inside included, however the test ended.

Needs root and ``ip`` (iproute2): :func:`skip_reason` says why not, for a clean skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from itertools import count

_SERIAL = count()


def skip_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); CI runs as root"
    if shutil.which("ip") is None:
        return "no ip command (Debian: apt-get install iproute2)"
    probe = f"crlp{os.getpid() % 100000}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add is refused here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out


class Hosts:
    """Namespaces ``names`` on one bridge; ``ip[name]`` is each host's address."""

    def __init__(self, names: list[str], subnet: str) -> None:
        tag = f"{os.getpid() % 100000}{next(_SERIAL)}"
        self.bridge = f"crb{tag}"[:15]
        self.ns = {n: f"crl{tag}{n}" for n in names}
        self.outer = {n: f"cro{tag}{i}"[:15] for i, n in enumerate(names)}
        self.ip = {n: f"{subnet}.{i + 2}" for i, n in enumerate(names)}
        self._made: list[tuple[str, str]] = []
        try:
            self._make(names)
        except BaseException:
            self.close()
            raise

    def _make(self, names: list[str]) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        sh("ip", "link", "set", self.bridge, "up")
        for i, name in enumerate(names):
            ns, outer, inner = self.ns[name], self.outer[name], f"cri{i}{os.getpid() % 10000}"
            sh("ip", "netns", "add", ns)
            self._made.append(("netns", ns))
            sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            self._made.append(("link", outer))
            sh("ip", "link", "set", outer, "master", self.bridge)
            sh("ip", "link", "set", outer, "up")
            sh("ip", "link", "set", inner, "netns", ns)
            self.run(name, "ip", "link", "set", inner, "name", "eth0")
            self.run(name, "ip", "link", "set", "lo", "up")
            self.run(name, "ip", "addr", "add", f"{self.ip[name]}/24", "dev", "eth0")
            self.run(name, "ip", "link", "set", "eth0", "up")

    def exec_args(self, name: str, *args: str) -> list[str]:
        """The argv that runs ``args`` inside host ``name``."""
        return ["ip", "netns", "exec", self.ns[name], *args]

    def run(self, name: str, *args: str, check: bool = True, timeout: float = 60, **kw):
        """Run ``args`` inside host ``name`` (text output captured)."""
        out = subprocess.run(
            self.exec_args(name, *args), capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"{name}: {' '.join(args)}: {out.stderr.strip()[-2000:]}")
        return out

    def cut(self, name: str) -> None:
        """Pull host ``name``'s cable: its outer veth end goes down."""
        sh("ip", "link", "set", self.outer[name], "down")

    def mend(self, name: str) -> None:
        sh("ip", "link", "set", self.outer[name], "up")

    def close(self) -> None:
        """Kill what still runs inside the namespaces, then remove them and the links."""
        for kind, what in reversed(self._made):
            if kind == "netns":
                for _ in range(3):
                    pids = sh("ip", "netns", "pids", what, check=False).stdout.split()
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(int(pid), 9)
                        except (ProcessLookupError, ValueError):
                            pass
                    time.sleep(0.2)
                sh("ip", "netns", "del", what, check=False)
            else:
                sh("ip", "link", "del", what, check=False)
        self._made.clear()
