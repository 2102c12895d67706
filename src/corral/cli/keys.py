"""corral keys create | ls | revoke

These work on the store directly, daemon or not: whoever may write CORRAL_HOME owns the
daemon anyway. A running daemon sees a new or revoked key from its next request on.
"""

from __future__ import annotations

from contextlib import contextmanager

import click

from corral.cli.common import ago, print_json, settings, table
from corral.types import KEY_SCOPES


@click.group()
def keys() -> None:
    """Manage API keys for the daemon's HTTP API.

    \b
    Once a key exists, every API call needs one (Authorization: Bearer KEY), also on
    127.0.0.1; the CLI on this machine keeps working through CORRAL_HOME/daemon.token.
    A daemon bound beyond loopback (serve --host 0.0.0.0) refuses to start without one.

    \b
      KEY=$(corral keys create laptop)            an admin key (everything)
      corral keys create webapp --scope inference  only the OpenAI API (/v1/*)
      corral keys ls
      corral keys revoke key_AbC123xy
    """


@contextmanager
def _store():
    from corral.store.db import Store

    s = settings()
    s.ensure_dirs()
    store = Store(s.db_path)
    try:
        yield store
    finally:
        store.close()


@keys.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice(KEY_SCOPES),
    default="admin",
    show_default=True,
    help="admin: the whole API; inference: only inference (/v1/*, /infill, /completion, "
    "/tokenize..., the Ollama API but pull, delete and copy).",
)
def create(name: str, scope: str) -> None:
    """Create a key; print its secret, shown this once.

    The secret goes to stdout alone, so KEY=$(corral keys create NAME) captures it.
    """
    from corral import keys as library

    with _store() as store:
        key, secret = library.create_key(store, name, scope)
    click.echo(secret)
    click.echo(
        f"created {key.id} ({key.scope}) {key.name!r}: store the secret now, "
        "it cannot be shown again",
        err=True,
    )


@keys.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ls(as_json: bool) -> None:
    """List keys, revoked ones too (never their secrets)."""
    from corral import keys as library

    with _store() as store:
        found = library.list_keys(store)
    if as_json:
        print_json([k.to_dict() for k in found])
        return
    if not found:
        click.echo("no API keys (corral keys create NAME)", err=True)
        return
    rows = [
        [
            k.id,
            k.name,
            k.scope,
            ago(k.created_at),
            ago(k.last_used_at),
            "revoked " + ago(k.revoked_at) if k.revoked_at else "active",
        ]
        for k in found
    ]
    click.echo(table(rows, ["ID", "NAME", "SCOPE", "CREATED", "LAST USED", "STATUS"]))


@keys.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke a key by id; a running daemon refuses it at once."""
    from corral import keys as library

    with _store() as store:
        key = library.revoke_key(store, key_id)
    click.echo(f"revoked {key.id} ({key.name})")


COMMANDS = [keys]
