"""Secrets in llama-server command lines, written once: which flags hold one, and how to hide it.

An instance launched with ``--api-key K`` keeps ``K`` in its record (the router needs it
to call the instance), but nothing corral shows — ``ps``, ``GET /api/v1/instances``, the
first line of the instance's log, events, the web UI — prints it: it becomes ``***``.
``--api-key-file`` and ``--ssl-key-file`` name files; their paths are not secret and
their contents are never read for display. Environment variables llama-server reads a
secret from (``LLAMA_API_KEY``, ``HF_TOKEN``) are masked the same way in an instance's env.

Stdlib only: imported by the supervisor, the store's views, the API and the CLI.
"""

from __future__ import annotations

from typing import Iterable

#: Flags whose value is itself a secret (long and short spellings llama-server knows).
SECRET_FLAGS = frozenset({"--api-key", "--hf-token", "-hft"})

#: Environment variables whose value is a secret (llama-server's ``(env: ...)`` of those flags).
SECRET_ENV = frozenset({"LLAMA_API_KEY", "HF_TOKEN"})

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


def redact_env(env: dict[str, str] | None) -> dict[str, str]:
    """``env`` with the value of every secret variable replaced by ``***``."""
    return {k: MASK if k in SECRET_ENV and v else v for k, v in (env or {}).items()}


def first_api_key(value: str) -> str | None:
    """The first key of an ``--api-key`` value, split as llama-server splits it.

    llama-server reads the value as one CSV row (``parse_csv_row`` in common/arg.cpp):
    fields split on commas, a field that starts with ``"`` is quoted (``""`` is a quote,
    commas inside are kept); empty fields are skipped; nothing is trimmed.
    """
    fields, field, quoted, i = [], [], False, 0
    while i < len(value):
        ch = value[i]
        if ch == '"' and not quoted and not field:
            quoted = True
        elif ch == '"' and not quoted:
            field.append(ch)  # a quote inside an unquoted field is literal
        elif ch == '"':
            if value[i + 1 : i + 2] == '"':
                field.append('"')
                i += 1
            else:
                quoted = False
        elif ch == "," and not quoted:
            fields.append("".join(field))
            field = []
        else:
            field.append(ch)
        i += 1
    fields.append("".join(field))
    return next((f for f in fields if f), None)


def first_key_line(text: str) -> str | None:
    """The first key of an ``--api-key-file``'s text: llama-server takes every line that
    is not empty and does not start with ``#`` (a line's ``\r`` stays part of it there;
    here it is dropped, since it cannot go into a header)."""
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line and not line.startswith("#"):
            return line
    return None
