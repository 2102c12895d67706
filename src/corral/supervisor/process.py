"""The OS seam: spawn, signal, adopt and inspect llama-server processes.

Everything the supervisor does to a process goes through :class:`ProcessOps`, so tests
can swap it. Instances run in their own session (``start_new_session``) so they outlive
the daemon and can be stopped as a group; their output goes to a log file opened with
``O_APPEND``, never to a pipe that would break when the daemon exits.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from corral.redact import redact_argv

#: Exit "code" of a process that ended while not our child (adopted): unknowable.
UNKNOWN_EXIT = -1000

#: Process start times are compared with this slack (psutil rounds to clock ticks).
CREATE_TIME_SLACK = 0.05

#: Seconds to wait for a process group after SIGKILL.
KILL_WAIT = 5.0


@dataclass
class ProcessHandle:
    """A llama-server process: one we spawned (``popen`` set) or one we adopted."""

    pid: int
    create_time: float
    popen: subprocess.Popen | None = None
    _exit_code: int | None = None
    _gone: bool = False

    def poll(self) -> int | None:
        """Exit code once the process has ended, else None.

        For an adopted process (not our child) the code cannot be read: UNKNOWN_EXIT.
        """
        if self._gone:
            return self._exit_code
        if self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return None
            self._gone, self._exit_code = True, code
            return code
        if not same_process(self.pid, self.create_time):
            self._gone, self._exit_code = True, UNKNOWN_EXIT
            return UNKNOWN_EXIT
        return None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (the instance and anything it forked)."""
        if self.poll() is not None and self.popen is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            # Not a group leader we own (should not happen): fall back to the pid.
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def group_alive(self) -> bool:
        """Whether any process of the group is still around (not counting zombies)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        for proc in psutil.process_iter(["pid", "status"]):
            try:
                if os.getpgid(proc.pid) == self.pid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.Error, OSError):
                continue
        return False


def same_process(pid: int, create_time: float | None) -> bool:
    """True when ``pid`` is alive and started at ``create_time`` (guards pid reuse)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return create_time is None or abs(started - create_time) <= CREATE_TIME_SLACK


def cmdline_matches(cmdline: list[str], argv: list[str]) -> bool:
    """Whether a live process's cmdline is the command we spawned.

    The binary may be a script run through its interpreter (cmdline gains a prefix), so
    the arguments after argv[0] must match the tail and the binary's name must appear.
    """
    if not argv or len(cmdline) < len(argv):
        return False
    tail = argv[1:]
    if tail and cmdline[-len(tail) :] != tail:
        return False
    head = cmdline[: len(cmdline) - len(tail)]
    name = os.path.basename(argv[0])
    return any(os.path.basename(part) == name for part in head)


def describe_exit(code: int | None) -> str:
    """'exited with code 1', 'killed by SIGILL', 'ended (status unknown)'."""
    if code is None or code == UNKNOWN_EXIT:
        return "ended (exit status unknown: the process was adopted)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"ended (status {code})"
    return f"exited with code {code}"


async def wait_gone(handle: ProcessHandle, timeout: float) -> bool:
    """Whether the process and every process of its group end within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if handle.poll() is not None and not handle.group_alive():
            return True
        await asyncio.sleep(0.05)
    return handle.poll() is not None and not handle.group_alive()


class ProcessOps:
    """Real implementation of the OS operations the supervisor needs."""

    def spawn(self, argv: list[str], env: dict[str, str], log_path: Path) -> ProcessHandle:
        """Start ``argv`` (no shell) in a new session with output appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab", buffering=0) as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            try:  # the header shows no secret (--api-key K -> --api-key ***)
                log.write(f"--- corral {stamp}: {' '.join(redact_argv(argv))}\n".encode())
            except OSError:
                pass  # a full disk must not keep the instance from starting
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        try:
            created = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            created = time.time()
        return ProcessHandle(pid=popen.pid, create_time=created, popen=popen)

    def adopt(
        self, pid: int | None, create_time: float | None, argv: list[str]
    ) -> ProcessHandle | None:
        """A handle on a live process we started earlier, or None if it is gone/replaced."""
        if not pid or not same_process(pid, create_time):
            return None
        try:
            cmdline = psutil.Process(pid).cmdline()
        except psutil.Error:
            return None
        if not cmdline_matches(cmdline, argv):
            return None
        return ProcessHandle(pid=pid, create_time=create_time or 0.0)

    def port_free(self, host: str, port: int) -> bool:
        """Whether ``host:port`` can be bound now (a listening socket makes it taken)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # Like llama-server itself: TIME_WAIT leftovers do not block a new listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except socket.gaierror as exc:
                from corral.errors import UsageError

                raise UsageError(f"cannot use host {host!r}: {exc.strerror}")
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                if exc.errno == errno.EADDRNOTAVAIL:
                    from corral.errors import UsageError

                    raise UsageError(
                        f"cannot use host {host!r}: it is not an address of "
                        "this machine (use 127.0.0.1, 0.0.0.0 or a local address)"
                    )
                raise
        return True
