"""What may reach the terminal: text from files and servers, made inert.

GGUF metadata, Hub answers, file names and a binary's ``--version`` are written by
someone else. Printed raw, an ``ESC ]`` or ``ESC [`` sequence in them retitles the
window, rewrites what is on screen or (with some terminals) answers back into the
input. :func:`printable` is the one place that decides what is safe: every CLI line
made of such text goes through it. ``--json`` output needs nothing more: JSON escapes
every control character itself (``\\u001b``).

click's own ANSI stripping is no defence: it only applies when stdout is not a
terminal, and only to colour sequences.
"""

from __future__ import annotations

import re

# C0 and C1 controls (ESC, BEL, CR, the one-byte CSI 0x9b...), DEL, and the Unicode
# line separators and bidirectional overrides that reorder what the eye sees.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``value`` as text with every control character shown as an escape (``\\x1b``)."""
    return _UNSAFE.sub(_escape, str(value))
