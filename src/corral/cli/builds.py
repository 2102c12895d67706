"""corral builds add | ls | use"""

from __future__ import annotations

import click

from corral.cli.common import print_json, settings, table


@click.group()
def builds() -> None:
    """Register and choose llama-server builds."""


def _store():
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    return s, Store(s.db_path)


@builds.command("add")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--default", "make_default", is_flag=True, help="Make it the default build.")
def add(path: str, make_default: bool) -> None:
    """Register an existing llama-server binary (records its --version)."""
    from corral.builds.catalog import load_catalog
    from corral.builds.resolve import binary_version, resolve_binary
    from corral.store import builds as table_

    s, store = _store()
    try:
        resolved = resolve_binary(s, None, path)
        version = binary_version(resolved.path)
        catalog = load_catalog(resolved.path, s.cache_dir)
        rec = table_.add(store, str(resolved.path), version)
        if make_default:
            table_.set_default(store, rec.id)
            rec = table_.get(store, rec.id)
    finally:
        store.close()
    first = version.splitlines()[0] if version else "?"
    click.echo(f"build {rec.id}: {rec.path} ({first}; {len(catalog.flags)} flags)"
               + (" [default]" if rec.is_default else ""))


@builds.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List registered builds."""
    from corral.store import builds as table_

    _, store = _store()
    try:
        recs = table_.list_all(store)
    finally:
        store.close()
    if as_json:
        print_json([r.to_dict() for r in recs])
        return
    if not recs:
        click.echo("no builds registered (corral builds add PATH)", err=True)
        return
    rows = [[r.id, "*" if r.is_default else "", r.build or "-", r.backend,
             (r.version or "?").splitlines()[0], r.path] for r in recs]
    click.echo(table(rows, ["ID", "DEFAULT", "BUILD", "BACKEND", "VERSION", "PATH"]))


@builds.command("use")
@click.argument("build_id", type=int)
def use(build_id: int) -> None:
    """Make a registered build the default."""
    from corral.store import builds as table_

    _, store = _store()
    try:
        table_.set_default(store, build_id)
    finally:
        store.close()
    click.echo(f"build {build_id} is now the default")


@builds.command("rm")
@click.argument("build_id", type=int)
def rm(build_id: int) -> None:
    """Forget a build; delete its files only if corral installed them (CORRAL_HOME/bin)."""
    import shutil
    from pathlib import Path

    from corral.errors import Conflict
    from corral.store import builds as table_
    from corral.store import instances as inst_table

    s, store = _store()
    try:
        rec = table_.get(store, build_id)
        users = [i.name for i in inst_table.list_all(store)
                 if i.binary == rec.path and i.state not in ("stopped", "exited", "failed")]
        if users:
            raise Conflict(f"build {build_id} is used by running instance(s): {', '.join(users)}")
        table_.remove(store, build_id)
    finally:
        store.close()
    folder = Path(rec.path).parent
    try:
        owned = folder.resolve().is_relative_to(s.bin_dir.resolve()) and folder != s.bin_dir
    except OSError:
        owned = False
    if owned:
        shutil.rmtree(folder, ignore_errors=True)
        click.echo(f"removed build {build_id} and its files ({folder})")
    else:
        click.echo(f"forgot build {build_id}; its files were not installed by corral and stay "
                   f"({rec.path})")


COMMANDS = [builds]
