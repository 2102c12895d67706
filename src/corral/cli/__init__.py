"""The ``corral`` command. Thin: parse, call the library or the daemon, print.

Data goes to stdout, progress and errors to stderr. Errors are one line
(``error: ...``) with an exit code per error class (see :mod:`corral.errors`).
"""

from __future__ import annotations

import os
import sys

import click

from corral import __version__
from corral.errors import CorralError


class CorralGroup(click.Group):
    """Maps CorralError to one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CorralError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.detail:
                click.echo(exc.detail, err=True)
            ctx.exit(exc.exit_code)
        except ConnectionRefusedError:
            click.echo("error: the corral daemon is not reachable", err=True)
            ctx.exit(7)


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
def cli() -> None:
    """corral: run, supervise and route llama.cpp llama-server instances.

    \b
    Quick tour:
      corral serve                       start the daemon: API, web UI, /v1 (127.0.0.1:9380)
      corral pull org/repo:Q4_K_M        download a GGUF from HuggingFace (resumable)
      corral import ~/models             register GGUFs you already have, in place
      corral ls                          the local models, with their GGUF metadata
      corral run MODEL -c 4096           launch llama-server with any of its flags
      corral ps                          what runs, on which port, in which state
      corral logs NAME -f                follow an instance's log
      corral stop NAME | --all           stop instances (they survive daemon restarts)
      corral flags ctx                   search the flags of the installed llama-server
      corral preset save chat -c 8192    named flag sets ('*' = defaults for every launch)
      corral keys create laptop          an API key (needed to listen beyond loopback)
      corral down                        stop every instance and the daemon

    State lives in CORRAL_HOME (default ~/.corral). The daemon is found at
    CORRAL_URL (default http://127.0.0.1:9380) and started on demand.
    """


def _register() -> None:
    from corral.cli import builds, daemon, flags, hub, instances, keys, models, presets, system

    for module in (daemon, instances, models, hub, flags, builds, presets, keys, system):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console entry point. Ends with os._exit: interpreter teardown costs ~14 ms a call."""
    try:
        cli.main(prog_name="corral", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
