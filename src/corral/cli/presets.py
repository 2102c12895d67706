"""corral preset save | ls | show | rm | export | import — named flag sets.

Everything goes through the daemon (started on demand): it owns the flag catalogs that
check a preset's flags and read llama.cpp's INI keys.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import click

from corral.cli.common import print_json, settings, split_own_options, table
from corral.cli.instances import env_pairs
from corral.cli.terminal import printable
from corral.errors import UsageError
from corral.types import check_restart, to_int, to_seconds

# corral's own options of `preset save`; the other tokens are llama-server flags.
# After `--` every token is a llama-server flag (e.g. llama-server's own `-- --alias X`).
SAVE_VALUED = {"--model", "--build", "--env", "--restart", "--idle-ttl", "--alias", "--description"}
SAVE_REPEATED = {"--env", "--alias"}
SAVE_SWITCHES = {"--pin"}


def _client():
    from corral.client import ensure_daemon

    return ensure_daemon(settings())


def _path(name: str, suffix: str = "") -> str:
    return f"/api/v1/presets/{quote(name, safe='')}{suffix}"


def _warn(warnings: list[str]) -> None:
    for line in warnings:
        click.echo(f"warning: {line}", err=True)


def _split_save_args(args: tuple[str, ...]) -> tuple[dict, list[str]]:
    """corral's options (anywhere before ``--``) and the llama-server flags."""
    return split_own_options(args, SAVE_VALUED, SAVE_SWITCHES, SAVE_REPEATED, dashdash=True)


def _save_body(own: dict, flags: list[str]) -> dict:
    restart = own.get("--restart")
    body: dict = {
        "flags": flags,
        "env": env_pairs(own.get("--env", [])),
        "aliases": own.get("--alias", []),
        "pinned": bool(own.get("--pin")),
        "restart": None if restart is None else check_restart(restart, "--restart"),
        "description": own.get("--description", ""),
    }
    for key, field, check in (
        ("--model", "model", None),
        ("--build", "build", to_int),
        ("--idle-ttl", "idle_ttl", to_seconds),
    ):
        if key in own:
            body[field] = check(own[key], key) if check else own[key]
    return body


@click.group("preset")
def preset() -> None:
    """Named flag sets to launch from: `corral run --preset NAME [MORE FLAGS]`.

    The preset '*' holds defaults applied to every launch. Order: '*' < the preset <
    what you type; for each flag the later value wins (repeatable flags accumulate,
    --no-X cancels --X).
    """


@preset.command(
    "save",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    },
)
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def save(name: str, args: tuple[str, ...]) -> None:
    """Create or replace preset NAME ('*' = defaults for every launch).

    \b
    Options (anywhere after NAME; every other token is a llama-server flag):
      --model M          model of the index, or a GGUF path
      --build ID         registered build (corral builds ls)
      --env K=V          environment variable (repeatable)
      --restart P        on-failure | always | never
      --idle-ttl S       stop after S seconds unused (0 = never)
      --alias A          another name requests may use (repeatable)
      --pin              never stopped when idle nor evicted
      --description D    free text
    After `--`, every token is a llama-server flag.

    \b
    Examples:
      corral preset save chat --model gemma-3-270m -c 8192 -ngl 99 --alias gpt-4o-mini
      corral preset save '*' -fa on --env CUDA_VISIBLE_DEVICES=0
      corral preset save big --model big.gguf -- --alias served-name
    """
    own, flags = _split_save_args(args)
    answer = _client().request("PUT", _path(name), _save_body(own, flags), timeout=None)
    _warn(answer["warnings"])
    click.echo(f"{'saved' if answer['created'] else 'replaced'} preset {answer['preset']['name']}")


@preset.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List presets: name, model, flags, aliases."""
    items = _client().request("GET", "/api/v1/presets")
    if as_json:
        print_json(items)
        return
    if not items:
        click.echo("no presets (corral preset save NAME --model M FLAGS...)", err=True)
        return
    rows = [
        [
            p["name"],
            p["model"] or "-",
            _short(" ".join(p["flags"])) or "-",
            ",".join(p["aliases"]) or "-",
            _short(p["description"]) or "-",
        ]
        for p in items
    ]
    rows = [[printable(c) for c in row] for row in rows]  # Hub/file text: inert
    click.echo(table(rows, ["NAME", "MODEL", "FLAGS", "ALIASES", "DESCRIPTION"]))


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@preset.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(name: str, as_json: bool) -> None:
    """Show preset NAME as YAML (the format `corral preset import` reads)."""
    client = _client()
    if as_json:
        print_json(client.request("GET", _path(name)))
        return
    answer = client.request("GET", _path(name, "/export"), params={"format": "yaml"})
    click.echo(answer["text"], nl=False)


@preset.command("rm")
@click.argument("names", nargs=-1, required=True)
def rm(names: tuple[str, ...]) -> None:
    """Remove presets (instances launched from them keep running)."""
    client = _client()
    for name in names:
        client.request("DELETE", _path(name))
        click.echo(f"removed preset {name}")


@preset.command("export")
@click.argument("names", nargs=-1)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "ini"]),
    default="yaml",
    show_default=True,
    help="ini: llama-server --models-preset format.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
def export(names: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Write presets (all, or NAMES) as YAML or as a llama-server --models-preset INI."""
    answer = _client().request(
        "POST", "/api/v1/presets/export", {"names": list(names), "format": fmt}
    )
    _warn(answer["warnings"])
    if output:
        Path(output).write_text(answer["text"], encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(answer["text"], nl=False)


@preset.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "ini"]),
    help="Default: from the extension (.ini -> ini), else yaml.",
)
@click.option("--replace", is_flag=True, help="Overwrite presets that exist.")
def import_(file: str, fmt: str | None, replace: bool) -> None:
    """Read presets from a YAML file or a llama-server --models-preset INI ('-' = stdin)."""
    text = sys.stdin.read() if file == "-" else _read(file)
    fmt = fmt or ("ini" if file.lower().endswith((".ini", ".cfg")) else "yaml")
    answer = _client().request(
        "POST",
        "/api/v1/presets/import",
        {"text": text, "format": fmt, "replace": replace},
        timeout=None,
    )
    _warn(answer["warnings"])
    click.echo(f"imported {len(answer['imported'])} preset(s): {', '.join(answer['imported'])}")


def _read(file: str) -> str:
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}") from None


COMMANDS = [preset]
