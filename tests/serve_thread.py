"""A real uvicorn server for an ASGI app, in a thread of the test process (as httpx's
``serve_in_thread``): tests talk to it over loopback sockets, nothing is mocked."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn

from tests.conftest import free_port


@contextmanager
def serve_in_thread(app, **config) -> Iterator[int]:
    """Serve ``app`` on 127.0.0.1 (extra uvicorn ``config``, e.g. ``ssl_certfile``); yield
    its port once it listens, and stop it on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join()
