"""Which llama-server binary an instance runs.

Order (first hit wins): ``--binary PATH`` on the command, ``--build ID``,
``CORRAL_LLAMA_SERVER``, the default build registered in the store
(``corral builds add PATH``), then ``llama-server`` on ``PATH``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from corral.errors import BinaryError, NotFound, UsageError
from corral.settings import Settings
from corral.store import builds as builds_table
from corral.store.db import Store

HOW_TO_GET_ONE = (
    "no llama-server found: run `corral update` (or `corral setup`), or pass --binary PATH, "
    "set CORRAL_LLAMA_SERVER, or register one with `corral builds add PATH`"
)


#: Build ids are SQLite INTEGER primary keys: 1 .. 2**63-1. Anything outside is not an
#: id at all (400), not an unknown one (404); SQLite would raise OverflowError on it.
MAX_BUILD_ID = 2**63 - 1


def check_build_id(build_id: object) -> int:
    """``build_id`` as a valid id; UsageError for a non-integer or one out of range."""
    if (
        isinstance(build_id, bool)
        or not isinstance(build_id, int)
        or not 1 <= build_id <= MAX_BUILD_ID
    ):
        raise UsageError(
            f"build must be a build id from 1 to {MAX_BUILD_ID} "
            f"(corral builds ls), got {str(build_id)[:40]}"
        )
    return build_id


@dataclass(frozen=True)
class ResolvedBinary:
    path: Path
    build_id: int | None
    source: str  # "argument", "build", "env", "default-build", "path"


def _checked(path: str | os.PathLike, source: str, build_id: int | None = None) -> ResolvedBinary:
    try:
        p = Path(path).expanduser()
    except RuntimeError as exc:  # "~nosuchuser/..."
        raise BinaryError(f"llama-server path {str(path)!r}: {exc}")
    try:
        found = p.is_file()
    except OSError as exc:  # e.g. a name too long for the filesystem
        raise BinaryError(f"llama-server path {str(path)[:200]!r}: {exc.strerror}") from None
    if not found:
        raise BinaryError(f"llama-server not found at {p} (from {source})")
    if not os.access(p, os.X_OK):
        raise BinaryError(f"{p} is not executable (from {source})")
    return ResolvedBinary(p.resolve(), build_id, source)


def resolve_binary(
    settings: Settings, store: Store | None, binary: str | None = None, build_id: int | None = None
) -> ResolvedBinary:
    """Find the binary to run, raising BinaryError with how to get one."""
    if binary:
        return _checked(binary, "argument")
    if build_id is not None:
        check_build_id(build_id)
        if store is None:
            raise NotFound(f"no build with id {build_id}")
        rec = builds_table.get(store, build_id)
        return _checked(rec.path, "build", rec.id)
    if settings.llama_server:
        return _checked(settings.llama_server, "env")
    if store is not None:
        rec = builds_table.default(store)
        if rec is not None:
            return _checked(rec.path, "default-build", rec.id)
    import shutil

    found = shutil.which("llama-server")
    if found:
        return _checked(found, "path")
    raise BinaryError(HOW_TO_GET_ONE)


def binary_env(binary: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment to run ``binary`` in: its directory first on LD_LIBRARY_PATH."""
    env = dict(os.environ if base is None else base)
    libdir = str(binary.parent)
    current = env.get("LD_LIBRARY_PATH", "")
    env["LD_LIBRARY_PATH"] = libdir + (os.pathsep + current if current else "")
    return env


def binary_version(binary: Path, timeout: float = 30) -> str:
    """The first lines of ``binary --version`` (llama-server prints them on stderr)."""
    import subprocess

    try:
        out = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=binary_env(binary),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BinaryError(f"{binary} --version failed: {exc}")
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or not text:
        raise BinaryError(f"{binary} --version exited {out.returncode}: {text[-200:]}")
    return text
