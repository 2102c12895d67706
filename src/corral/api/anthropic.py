"""Anthropic's Messages API dialect: the error shapes of ``/v1/messages*``.

llama-server itself speaks the Messages API (``/v1/messages``, streaming and not, and
``/v1/messages/count_tokens``): corral relays those bodies untouched. What corral says
itself there must read as Anthropic's, so the ``anthropic`` SDK and Claude Code raise
the right exception class with corral's message: its refusals (unknown model, a full
queue, the guard's 401/403) are ``{"type": "error", "error": {"type", "message"}}``
with the status's type, and an error after a stream began is an SSE ``event: error``
with that body, as Anthropic sends one.

Pure functions, no I/O.
"""

from __future__ import annotations

import json

#: Anthropic's error type per HTTP status (its documented table); others: see error_type.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for ``status``: its own table, else by class."""
    found = ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def error_body(status: int, message: str) -> dict:
    """The body of an Anthropic error response."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def sse_error(status: int, message: str) -> bytes:
    """An error inside a stream that already began: Anthropic's ``event: error``."""
    data = json.dumps(error_body(status, message)).encode()
    return b"event: error\ndata: " + data + b"\n\n"
