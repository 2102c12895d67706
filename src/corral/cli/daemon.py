"""corral serve | down"""

from __future__ import annotations

import os
import time

import click

from corral.cli.common import settings


@click.command()
@click.option(
    "--host",
    default=None,
    help="Address to bind (default 127.0.0.1; others need an API key: "
    "corral keys create, or CORRAL_API_KEY).",
)
@click.option("--port", type=int, default=None, help="Port of the daemon (default 9380).")
@click.option(
    "--ollama-port",
    type=int,
    default=None,
    help="Also answer the Ollama API (and /v1/*) on this port, e.g. 11434 "
    "(setting ollama_port; default 0 = off).",
)
def serve(host: str | None, port: int | None, ollama_port: int | None) -> None:
    """Run the daemon (REST API, supervisor) in the foreground.

    Instances it starts keep running when it exits; the next daemon re-adopts them.

    \b
    Examples:
      corral serve                       on 127.0.0.1:9380
      corral serve --ollama-port 11434   tools made for Ollama work unchanged too
    """
    from corral.api.server import serve as run
    from corral.settings import load_settings
    from corral.types import check_host

    if host is not None:  # an IP, as for instances and the service: no DNS at start
        host = check_host(host)
    overrides = {"host": host, "port": port, "ollama_port": ollama_port}
    s = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    if host is not None or port is not None:
        s.url = ""  # the daemon's own address follows --host/--port
    run(s)


@click.command()
def down() -> None:
    """Stop every instance, then the daemon."""
    from corral.client import Client

    s = settings()
    client = Client(s)
    health = _health(client)
    if health is not None:
        result = client.request(
            "POST",
            "/api/v1/shutdown",
            {"stop_instances": True},
            timeout=max(60.0, s.stop_timeout * 3),
        )
        for name in result.get("stopped_instances", []):
            click.echo(f"stopped {name}")
        pid = health.get("pid")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (_pid_alive(pid) or client.alive(0.2)):
            time.sleep(0.02)
        click.echo("daemon stopped")
        return
    from corral.supervisor.offline import stop_all_offline

    for name in stop_all_offline(s):
        click.echo(f"stopped {name}")
    click.echo("daemon was not running")


def _health(client) -> dict | None:
    try:
        return client.request("GET", "/healthz", timeout=0.5)
    except Exception:  # noqa: BLE001 - any failure means "no daemon to talk to"
        return None


def _pid_alive(pid: int | None) -> bool:
    """Whether the daemon process still exists (it may outlive its API by a few ms)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


COMMANDS = [serve, down]
