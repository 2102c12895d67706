"""Secrets in llama-server command lines, written once: which flags hold one, and how to hide it.

An instance launched with ``--api-key K`` keeps ``K`` in its record (the router needs it
to call the instance), but nothing corral shows — ``ps``, ``GET /api/v1/instances``, the
first line of the instance's log, events, the web UI — prints it: it becomes ``***``.
``--api-key-file`` and ``--ssl-key-file`` name files; their paths are not secret and
their contents are never read for display.

Stdlib only: imported by the supervisor, the store's views, the API and the CLI.
"""

from __future__ import annotations

from typing import Iterable

#: Flags whose value is itself a secret (long and short spellings llama-server knows).
SECRET_FLAGS = frozenset({"--api-key", "--hf-token", "-hft"})

MASK = "***"


def is_secret_flag(flag: str) -> bool:
    """Whether ``flag`` (``--api-key`` or ``--api-key=...``) carries a secret value."""
    return flag.split("=", 1)[0] in SECRET_FLAGS


def redact_argv(argv: Iterable[str]) -> list[str]:
    """``argv`` with every secret value replaced by ``***`` (``--api-key=K`` too)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_FLAGS:
            if eq:
                out.append(f"{name}={MASK}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out


def redact_pairs(pairs: Iterable[Iterable[str | None]]) -> list[list[str | None]]:
    """Normalised ``[[flag, value], ...]`` with secret values replaced by ``***``."""
    out = []
    for flag, value in pairs:
        out.append([flag, MASK if value is not None and is_secret_flag(flag) else value])
    return out


def secret_value(pairs: Iterable[Iterable[str | None]], flag: str = "--api-key") -> str | None:
    """The last value given to ``flag`` in normalised pairs (llama-server takes the last)."""
    found = None
    for name, value in pairs:
        if name == flag and value is not None:
            found = value
    return found
