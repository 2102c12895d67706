"""corral flags"""

from __future__ import annotations

import textwrap

import click

from corral.cli.common import print_json, settings


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
    """
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
    if as_json:
        print_json([f.to_dict() for f in found])
        return
    section = None
    for flag in found:
        if flag.section != section:
            section = flag.section
            click.echo(f"\n[{section}]")
        names = ", ".join(flag.names + tuple(flag.negations))
        hint = f" {flag.value_hint}" if flag.takes_value and flag.value_hint else ""
        click.echo(f"  {names}{hint}")
        for line in textwrap.wrap(flag.help, 76):
            click.echo(f"      {line}")
    click.echo(f"\n{len(found)} flag(s) from {resolved.path}", err=True)


COMMANDS = [flags]
