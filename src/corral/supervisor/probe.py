"""A minimal async ``GET /health`` probe over a raw socket.

No HTTP library on this path: the probe runs for every instance every few seconds
and during loading every few milliseconds, so it stays a single small request.
"""

from __future__ import annotations

import asyncio


async def http_health(host: str, port: int, timeout: float, path: str = "/health") -> int | None:
    """The HTTP status of ``GET path``, or None when nothing answered within ``timeout``."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return None
    finally:
        # Close without awaiting: an await here (it was wait_for(wait_closed(), 0.5)) could
        # swallow this task's cancellation on Python 3.11, and a supervisor waiting on
        # the probe then waited forever (issue 10). The transport closes on its own.
        if writer is not None:
            writer.close()
    parts = status_line.split()
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None
