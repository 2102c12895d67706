"""Instance log files: rotation (copy-truncate), tail, follow.

The instance writes to its log through an ``O_APPEND`` descriptor it inherited, so the
file cannot be renamed under it; rotation copies the file to ``.1`` and truncates it in
place, and the next write lands at the new end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import AsyncIterator, Iterator


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` when larger than ``max_bytes``; keep ``backups`` old files."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    if backups > 0:
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as fh:
        fh.truncate(0)
    return True


def tail(path: Path, lines: int = 20, chunk: int = 65536) -> list[str]:
    """The last ``lines`` lines of a text file, reading from the end only."""
    if lines <= 0:
        return []
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return []
    with fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        data = b""
        while end > 0 and data.count(b"\n") <= lines:
            step = min(chunk, end)
            end -= step
            fh.seek(end)
            data = fh.read(step) + data
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


async def follow(path: Path, start_lines: int = 20, poll: float = 0.2) -> AsyncIterator[str]:
    """Yield the last ``start_lines`` lines, then every new line as it is written.

    Survives rotation (the file shrinking) by starting again from its beginning.
    """
    try:
        pos = path.stat().st_size
    except FileNotFoundError:
        pos = 0
    for line in tail(path, start_lines):  # taken before yielding: nothing written later is lost
        yield line
    pending = b""
    while True:
        pos, data = _read_new(path, pos)
        if data:
            pending += data
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", errors="replace")
        else:
            await asyncio.sleep(poll)


def _read_new(path: Path, pos: int) -> tuple[int, bytes]:
    """Bytes appended since ``pos`` (from 0 again if the file shrank: rotation)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0, b""
    if size < pos:
        pos = 0
    if size == pos:
        return pos, b""
    with open(path, "rb") as fh:
        fh.seek(pos)
        data = fh.read(size - pos)
    return pos + len(data), data


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def follow_sync(path: Path, pos: int | None = None, poll: float = 0.2) -> Iterator[str]:
    """Blocking follow for the CLI: yield text appended after ``pos`` (default: now)."""
    if pos is None:
        pos = size_of(path)
    while True:
        pos, data = _read_new(path, pos)
        if data:
            yield data.decode("utf-8", errors="replace")
        else:
            time.sleep(poll)
