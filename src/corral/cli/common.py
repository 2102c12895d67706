"""Helpers shared by the CLI command modules."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from corral.settings import Settings, load_settings, secure_home
from corral.types import RESTART_POLICIES, check_port, to_int, to_seconds


def settings() -> Settings:
    """The resolved settings; an existing CORRAL_HOME open to others is made private first
    (every command that opens the store gets here)."""
    s = load_settings()
    secure_home(s.home)
    return s


def node_client():
    """The daemon client for ``--node NAME`` (its calls go to that node, relayed), or None
    when the command is for this machine."""
    import corral.client as client_mod

    if not client_mod.NODE:
        return None
    return client_mod.ensure_daemon(settings())


def local_model(model: str | None) -> str | None:
    """An existing path made absolute (the daemon has another cwd); anything else as is."""
    if model is None:
        return None
    try:
        local = Path(model).expanduser()
        return str(local.resolve()) if local.exists() else model
    except RuntimeError:
        return model


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def ago(ts: float | None) -> str:
    """'3m', '2h', ... since ``ts`` (for tables)."""
    if not ts:
        return "-"
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())
    return "\n".join(lines)


def split_own_options(
    args,
    valued: set[str],
    switches: set[str],
    repeated: set[str] = frozenset(),
    *,
    dashdash: bool = False,
) -> tuple[dict, list[str]]:
    """corral's own options out of the tokens after MODEL; the rest are llama flags.

    ``--opt V`` and ``--opt=V`` for ``valued``; options in ``repeated`` collect a list.
    With ``dashdash``, every token after ``--`` is a llama flag (``preset save``:
    llama-server's own ``-- --alias X``).
    """
    from corral.errors import UsageError

    own: dict = {}
    llama: list[str] = []
    it = iter(args)
    for token in it:
        if dashdash and token == "--":
            llama.extend(it)
            break
        key, eq, value = token.partition("=")
        if key in valued:
            if not eq:
                value = next(it, None)
                if value is None:
                    raise UsageError(f"{key} needs a value")
            if key in repeated:
                own.setdefault(key, []).append(value)
            else:
                own[key] = value
        elif token in switches:
            own[token] = True
        else:
            llama.append(token)
    return own, llama


def print_log(path: Path, follow: bool, lines: int) -> None:
    """The last ``lines`` lines of a log on this machine, then (``follow``) what is
    written to it until Ctrl-C: ``logs`` of an instance and of an rpc-server."""
    from corral.supervisor import logs as logmod

    start = logmod.size_of(path)  # before the tail: nothing written meanwhile is missed
    for line in logmod.tail(path, lines):
        click.echo(line)
    if not follow:
        return
    try:
        for chunk in logmod.follow_sync(path, start):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def print_remote_log(client, path: str, follow: bool, lines: int) -> None:
    """``logs`` through a daemon's REST API (``--node``): the tail at ``path``, then
    (``follow``) its SSE stream until Ctrl-C."""
    if not follow:
        for line in client.request("GET", path, params={"tail": lines})["lines"]:
            click.echo(line)
        return
    try:
        for line in client.stream_lines(path, {"tail": lines, "follow": "true"}):
            click.echo(str(line).rstrip("\n"))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


class Checked(click.ParamType):
    """A click type made of a :mod:`corral.types` check: an option typed before MODEL
    (parsed by click) and after it (by :func:`split_own_options`) is checked by the same
    function, and a bad value is the same one-line usage error (exit 2)."""

    def __init__(self, name: str, check) -> None:
        self.name, self.check = name, check

    def convert(self, value, param, ctx):
        if not isinstance(value, str):  # a default, or already converted
            return value
        return self.check(value, param.opts[0] if param is not None else self.name)


PORT = Checked("port", check_port)
WHOLE = Checked("integer", to_int)
SECONDS = Checked("seconds", to_seconds)
#: ``--restart`` before MODEL: click lists the choices in --help and completes them.
RESTART = click.Choice(RESTART_POLICIES)
