"""corral flags

The catalog comes from the binary itself (its ``--help``, cached per build). With
``--node NAME`` it is the node's, through its ``GET /api/v1/flags`` (relayed by the daemon):
the node's default build or ``--build ID`` of the node's builds. ``--binary PATH`` is not
taken then, as the API never runs a file a caller names on a GET.
"""

from __future__ import annotations

import textwrap

import click

from corral.cli.common import node_client, print_json, settings


@click.command()
@click.argument("text", required=False)
@click.option("--binary", help="llama-server binary (default: the one `run` would use).")
@click.option("--build", type=int, help="Registered build id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def flags(text: str | None, binary: str | None, build: int | None, as_json: bool) -> None:
    """List or search the flags of the installed llama-server (from its own --help).

    \b
    Examples:
      corral flags              every flag, by section
      corral flags ctx          flags whose name or help mentions "ctx"
      corral flags ctx --node gpu-box   the flags of that node's default build
    """
    found, source = _found(text, binary, build)
    if as_json:
        print_json(found)
        return
    section = None
    for flag in found:
        if flag["section"] != section:
            section = flag["section"]
            click.echo(f"\n[{section}]")
        names = ", ".join([*flag["names"], *flag["negations"]])
        hint = f" {flag['value_hint']}" if flag["takes_value"] and flag["value_hint"] else ""
        click.echo(f"  {names}{hint}")
        for line in textwrap.wrap(flag["help"], 76):
            click.echo(f"      {line}")
    click.echo(f"\n{len(found)} flag(s) from {source}", err=True)


def _found(text: str | None, binary: str | None, build: int | None) -> tuple[list[dict], str]:
    """(the flags matching ``text`` as JSON, where they come from): this machine's
    binary, or (``--node``) the node's build, asked of its API."""
    remote = node_client()
    if remote is not None:
        from corral.cli.terminal import printable
        from corral.errors import UsageError

        if binary:
            raise UsageError(
                "--binary cannot be used with --node: the node lists the flags of its own "
                f"builds only; give --build ID (corral builds ls --node {remote.node})"
            )
        answer = remote.request("GET", "/api/v1/flags", params={"q": text, "build": build})
        where = printable(answer.get("binary") or "its default build")
        return answer["flags"], f"{where} on node {remote.node}"
    from corral.builds.catalog import load_catalog
    from corral.builds.resolve import resolve_binary
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    store = Store(s.db_path)
    try:
        resolved = resolve_binary(s, store, binary, build)
    finally:
        store.close()
    catalog = load_catalog(resolved.path, s.cache_dir)
    found = catalog.search(text) if text else catalog.flags
    return [f.to_dict() for f in found], str(resolved.path)


COMMANDS = [flags]
