"""corral completion"""

from __future__ import annotations

import click

from corral.errors import UsageError

#: The shells click's completion supports (click.shell_completion ships these three).
SHELLS = ("bash", "zsh", "fish")


def completion_script(root: click.Command, shell: str) -> str:
    """The script that makes ``shell`` complete ``corral``: click's own, the same text
    ``_CORRAL_COMPLETE=bash_source corral`` prints. UsageError for a shell click lacks.

    The program name is fixed: the script calls the ``corral`` executable back with
    ``_CORRAL_COMPLETE`` set, whatever name the group was invoked under (``cli`` in tests)."""
    from click.shell_completion import get_completion_class

    complete_class = get_completion_class(shell) if shell in SHELLS else None
    if complete_class is None:
        raise UsageError(f"no completion for shell {shell!r}: give one of {', '.join(SHELLS)}")
    return complete_class(root, {}, "corral", "_CORRAL_COMPLETE").source()


def _complete_shell(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return [shell for shell in SHELLS if shell.startswith(incomplete)]


@click.command()
@click.argument("shell", metavar="{bash|zsh|fish}", shell_complete=_complete_shell)
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for corral (commands, options, arguments).

    \b
    Install it once:
      bash   add to ~/.bashrc:   eval "$(corral completion bash)"
      zsh    add to ~/.zshrc:    eval "$(corral completion zsh)"
      fish   corral completion fish > ~/.config/fish/completions/corral.fish
    Open a new shell afterwards. The script calls corral at each TAB, so it
    follows the installed version by itself.
    """
    # nl=False: the script ends with its own newline, as click's bash_source prints it
    click.echo(completion_script(ctx.find_root().command, shell), nl=False)


COMMANDS = [completion]
