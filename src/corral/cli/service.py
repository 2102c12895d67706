"""corral service install | uninstall | status

The daemon as a systemd unit (Linux) or a launchd job (macOS); the texts come from
:mod:`corral.service`. Everything is checked before anything is written: the address (an
IP), the port, an API key the service will see when it binds beyond loopback, root for
``--system``, the service manager's tool on PATH, and that the file in the way (if any)
is corral's own. systemctl and launchctl are found on PATH and run with argument lists,
never through a shell.

``--system`` units run as the owner of CORRAL_HOME (root only when root owns it): the
store's files are private to their owner, and a root daemon would leave root-owned files
in another user's home.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from corral import __version__
from corral.cli.common import print_json

#: CORRAL_* variables the unit carries itself (the home) or bakes into its command line.
_CARRIED = {"CORRAL_HOME", "CORRAL_HOST", "CORRAL_PORT", "CORRAL_URL"}


def manager() -> str:
    """``launchd`` on macOS, ``systemd`` elsewhere."""
    return "launchd" if sys.platform == "darwin" else "systemd"


def is_root() -> bool:
    return os.geteuid() == 0


def entry_point() -> list[str]:
    """The running corral: its script when started as ``corral``, else ``python -m corral``."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "corral" and os.access(script, os.X_OK):
        return [os.path.abspath(script)]
    return [sys.executable, "-m", "corral"]


@click.group()
def service() -> None:
    """Run the daemon as a service: systemd (Linux) or launchd (macOS).

    \b
    The service runs `corral serve --host H --port P` with this CORRAL_HOME, restarts it
    when it fails, and leaves the instances running when it stops: the next daemon
    re-adopts them. `corral down` stops the instances and the daemon.

    \b
      corral service install                     a user unit on 127.0.0.1:9380
      corral service install --host 0.0.0.0      beyond loopback (needs an API key)
      sudo corral service install --system       /etc/systemd/system/corral.service
      corral service status --json
      corral service uninstall

    \b
    A --system unit runs as the owner of CORRAL_HOME. sudo resets the environment: name
    the home and the corral you mean, e.g.
      sudo CORRAL_HOME="$HOME/.corral" "$(command -v corral)" service install --system
    """


def _system_option(fn):
    return click.option(
        "--system",
        is_flag=True,
        help="The system-wide unit (/etc/systemd/system, /Library/LaunchDaemons; needs root).",
    )(fn)


@service.command("install")
@_system_option
@click.option("--host", default=None, help="Address to bind, an IP (default: setting host).")
@click.option("--port", default=None, help="Port of the daemon (default: setting port, 9380).")
def install(system: bool, host: str | None, port: str | None) -> None:
    """Write the unit (or plist) and enable and start it.

    Run it again to change --host/--port: corral's own file is replaced and the
    service restarted (its instances keep running).
    """
    spec = _spec(system, host, port)
    path = _install_systemd(spec) if manager() == "systemd" else _install_launchd(spec)
    click.echo(f"installed {path}")
    runs_as = f" as {spec.user}" if spec.user else " as root" if system else ""
    click.echo(
        f"corral serve on {spec.host}:{spec.port}{runs_as}, CORRAL_HOME={spec.home}", err=True
    )
    _warn_not_carried()
    _warn_elsewhere(spec)
    if manager() == "systemd" and not system:
        _linger_hint()


@service.command("uninstall")
@_system_option
def uninstall(system: bool) -> None:
    """Stop, disable and remove the service: a file corral wrote, no other.

    The instances keep running; `corral down` stops them (and a daemon, if one runs).
    """
    path = _uninstall_systemd(system) if manager() == "systemd" else _uninstall_launchd(system)
    click.echo(f"removed {path}")
    click.echo("instances keep running: `corral down` stops them", err=True)


@service.command("status")
@_system_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(system: bool, as_json: bool) -> None:
    """Show the service's file and state.

    The state is what systemctl is-active/is-enabled (or launchctl print) say.
    """
    data = _status_systemd(system) if manager() == "systemd" else _status_launchd(system)
    if as_json:
        print_json(data)
        return
    owner = " (written by corral)" if data["written_by_corral"] else ""
    if data["installed"] and not owner:
        owner = " (not written by corral)"
    rows = [
        ("manager", f"{data['manager']} ({data['scope']})"),
        ("file", f"{data['path']}{owner}"),
        ("installed", "yes" if data["installed"] else "no"),
        ("active", data["active"] or "-"),
        ("enabled", data["enabled"] or "-"),
    ]
    if data.get("error"):
        rows.append(("error", data["error"]))
    for name, value in rows:
        click.echo(f"{name:<10} {value}")


# -- what to install ----------------------------------------------------------------------


def _spec(system: bool, host: str | None, port: str | None):
    """The ServiceSpec to install, every check made (nothing is written yet)."""
    from corral.service import ServiceSpec, check_text, command
    from corral.settings import load_settings
    from corral.types import check_host, check_port

    s = load_settings()
    host = check_host(s.host if host is None else host)
    number = check_port(s.port if port is None else port, "--port")
    home = Path(os.path.abspath(s.home))
    check_text(str(home), "CORRAL_HOME")
    _check_key(s, host)
    if system and not is_root():
        from corral.errors import Forbidden
        from corral.service import SYSTEM_PLIST_DIR, SYSTEM_UNIT_DIR

        where = SYSTEM_UNIT_DIR if manager() == "systemd" else SYSTEM_PLIST_DIR
        raise Forbidden(
            f"--system writes to {where}: run it as root (sudo), or drop --system for a user unit"
        )
    user, group = _owner(home) if system else (None, None)
    return ServiceSpec(
        argv=command(entry_point(), host, number),
        home=home,
        host=host,
        port=number,
        system=system,
        user=user,
        group=group,
        log_path=home / "logs" / "daemon.log",
        version=__version__,
    )


def _check_key(s, host: str) -> None:
    """Refuse, as `corral serve` would, a non-loopback bind without an API key, and one
    whose only key is CORRAL_API_KEY in this shell (the service does not see it)."""
    from corral.errors import UsageError
    from corral.keys import keys_exist
    from corral.net import is_loopback
    from corral.settings import MIN_API_KEY_LENGTH, read_config

    if is_loopback(host) or keys_exist(s.db_path):
        return
    key = str(read_config(s.config_path).get("api_key") or "")  # what the service reads
    if key and len(key) >= MIN_API_KEY_LENGTH:
        return
    if key:
        raise UsageError(
            f"refusing to install a service on {host}: api_key in {s.config_path} has "
            f"{len(key)} characters, at least {MIN_API_KEY_LENGTH} are needed "
            "(or use `corral keys create NAME`)"
        )
    shell_only = " (CORRAL_API_KEY in this shell is not seen by the service)" if s.api_key else ""
    raise UsageError(
        f"refusing to install a service on {host} without an API key{shell_only}: "
        "run `corral keys create NAME` first"
    )


def _owner(home: Path) -> tuple[str | None, str | None]:
    """User and group a system unit runs as: the owner of CORRAL_HOME (or of its nearest
    existing parent); (None, None) for root."""
    import grp
    import pwd

    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    uid = probe.stat().st_uid
    if uid == 0:
        return None, None
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return str(uid), None
    try:
        return entry.pw_name, grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        return entry.pw_name, str(entry.pw_gid)


def _warn_not_carried() -> None:
    names = sorted(
        k
        for k, v in os.environ.items()
        if k.startswith("CORRAL_") and v and k not in _CARRIED and not k.startswith("CORRAL_TEST_")
    )
    if names:
        click.echo(
            f"warning: the service does not see {', '.join(names)} from this shell: "
            "put those settings in CORRAL_HOME/config.toml",
            err=True,
        )


def _warn_elsewhere(spec) -> None:
    """Say when the CLI will not find the service's daemon, or another daemon holds the home
    (the service's would exit 4 and be retried every few seconds until that one exits)."""
    from urllib.parse import urlsplit

    from corral.settings import load_settings

    s = load_settings()
    wildcard = spec.host in ("0.0.0.0", "::")
    hosts = {spec.host, *(("127.0.0.1", "localhost", "::1") if wildcard else ())}
    try:
        target = urlsplit(s.daemon_url)
        default = 443 if target.scheme == "https" else 80
        found = target.hostname in hosts and (target.port or default) == spec.port
    except ValueError:
        found = False
    if not found:
        click.echo(
            f"warning: the CLI looks for the daemon at {s.daemon_url}, not the service's: "
            f"set host/port in {s.config_path} (or CORRAL_URL)",
            err=True,
        )
    pid = _daemon_pid(spec.home)
    if pid:
        click.echo(
            f"warning: a daemon (pid {pid}) already runs for {spec.home}: the service starts "
            "when it exits (`corral down` stops it and its instances)",
            err=True,
        )


def _daemon_pid(home: Path) -> str:
    """The pid in CORRAL_HOME/daemon.lock when a daemon holds that lock, else ""."""
    import fcntl

    try:
        fh = open(home / "daemon.lock")  # read only: nothing is created
    except OSError:
        return ""
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "?"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return ""


def _linger_hint() -> None:
    import getpass

    user = getpass.getuser()
    if not Path("/var/lib/systemd/linger", user).exists():
        click.echo(
            f"hint: the user unit stops when you log out; to run it without a login: "
            f"loginctl enable-linger {user}",
            err=True,
        )


# -- files and tools ----------------------------------------------------------------------


def _tool(name: str) -> str:
    import shutil

    from corral.errors import CorralError

    found = shutil.which(name)
    if not found:
        raise CorralError(f"{name} not found on PATH: this system does not run {manager()}")
    return found


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def _call(argv: list[str], what: str = "") -> None:
    """Run ``argv``; a one-line CorralError with its last stderr line when it fails."""
    done = _run(argv)
    if done.returncode != 0:
        raise _failed(argv, done, what)


def _failed(argv: list[str], done: subprocess.CompletedProcess, what: str = ""):
    from corral.errors import CorralError

    said = (done.stderr or done.stdout).strip().splitlines()
    shown = " ".join([os.path.basename(argv[0]), *argv[1:]])
    return CorralError(
        f"`{shown}` failed (exit {done.returncode}): {said[-1] if said else 'no output'}"
        + (f"; {what}" if what else "")
    )


def _ours(path: Path) -> bool:
    """Whether ``path`` exists and corral wrote it; a Conflict if someone else did."""
    from corral.errors import Conflict
    from corral.service import written_by_corral

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    if not written_by_corral(data):
        raise Conflict(f"{path} was not written by corral: it is left as it is")
    return True


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0644, as service files are) in one rename."""
    from corral.errors import CorralError

    tmp = path.with_name(f".{path.name}.corral-tmp")
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CorralError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- systemd ------------------------------------------------------------------------------


def _unit_path(system: bool) -> Path:
    from corral.service import UNIT_NAME, unit_dir

    return unit_dir(system) / UNIT_NAME


def _install_systemd(spec) -> Path:
    from corral.service import UNIT_NAME, render_unit, systemctl

    tool = _tool("systemctl")
    path = _unit_path(spec.system)
    text = render_unit(spec)
    replacing = _ours(path)
    _write(path, text.encode())
    left = f"{path} is written; `corral service uninstall` removes it"
    _call(systemctl(tool, spec.system, "daemon-reload"), left)
    if replacing:  # a running daemon picks up the new command line on restart
        _call(systemctl(tool, spec.system, "enable", UNIT_NAME), left)
        _call(systemctl(tool, spec.system, "restart", UNIT_NAME), left)
    else:
        _call(systemctl(tool, spec.system, "enable", "--now", UNIT_NAME), left)
    return path


def _uninstall_systemd(system: bool) -> Path:
    from corral.errors import NotFound
    from corral.service import UNIT_NAME, systemctl

    path = _unit_path(system)
    if not _ours(path):
        raise NotFound(f"no corral service installed: {path} does not exist")
    tool = _tool("systemctl")
    stop = _run(systemctl(tool, system, "disable", "--now", UNIT_NAME))
    if stop.returncode != 0:  # no manager to talk to (no bus, no PID 1): disable offline
        _call(systemctl(tool, system, "disable", UNIT_NAME), f"{path} is left in place")
        said = (stop.stderr or stop.stdout).strip().splitlines()
        reason = said[-1] if said else f"exit {stop.returncode}"
        click.echo(f"warning: disabled, but not stopped ({reason})", err=True)
    path.unlink()
    if stop.returncode == 0:
        _call(systemctl(tool, system, "daemon-reload"), f"{path} is removed")
    return path


def _status_systemd(system: bool) -> dict:
    import shutil

    from corral.service import UNIT_NAME, systemctl

    path = _unit_path(system)
    data = _file_status("systemd", system, path)
    tool = shutil.which("systemctl")
    if tool is None:
        data["error"] = "systemctl not found on PATH"
        return data
    for key in ("active", "enabled"):
        done = _run(systemctl(tool, system, f"is-{key}", UNIT_NAME))
        data[key] = done.stdout.strip() or None
        if data[key] is None and done.stderr.strip():
            data["error"] = done.stderr.strip().splitlines()[-1]
    return data


def _file_status(name: str, system: bool, path: Path) -> dict:
    from corral.service import written_by_corral

    try:
        ours = written_by_corral(path.read_bytes())
        installed = True
    except FileNotFoundError:
        ours = installed = False
    return {
        "manager": name,
        "scope": "system" if system else "user",
        "path": str(path),
        "installed": installed,
        "written_by_corral": ours,
        "active": None,
        "enabled": None,
        "error": None,
    }


# -- launchd ------------------------------------------------------------------------------


def _plist_path(system: bool) -> Path:
    from corral.service import PLIST_NAME, plist_dir

    return plist_dir(system) / PLIST_NAME


def _install_launchd(spec) -> Path:
    from corral.service import LABEL, launchd_domain, render_plist

    tool = _tool("launchctl")
    path = _plist_path(spec.system)
    data = render_plist(spec)
    replacing = _ours(path)
    _write(path, data)
    domain = launchd_domain(spec.system, os.getuid())
    if replacing:  # bootstrap refuses a job that is loaded: unload the old one first
        _run([tool, "bootout", f"{domain}/{LABEL}"])
    left = f"{path} is written; `corral service uninstall` removes it"
    _call([tool, "enable", f"{domain}/{LABEL}"], left)
    _call([tool, "bootstrap", domain, str(path)], left)
    return path


def _uninstall_launchd(system: bool) -> Path:
    from corral.errors import NotFound
    from corral.service import LABEL, launchd_domain

    path = _plist_path(system)
    if not _ours(path):
        raise NotFound(f"no corral service installed: {path} does not exist")
    tool = _tool("launchctl")
    domain = launchd_domain(system, os.getuid())
    argv = [tool, "bootout", f"{domain}/{LABEL}"]
    done = _run(argv)
    if done.returncode not in (0, 3, 113):  # 3, 113: the job was not loaded, nothing to stop
        raise _failed(argv, done, f"{path} is left in place")
    path.unlink()
    return path


def _status_launchd(system: bool) -> dict:
    import shutil

    from corral.service import LABEL, launchd_domain

    path = _plist_path(system)
    data = _file_status("launchd", system, path)
    tool = shutil.which("launchctl")
    if tool is None:
        data["error"] = "launchctl not found on PATH"
        return data
    done = _run([tool, "print", f"{launchd_domain(system, os.getuid())}/{LABEL}"])
    data["enabled"] = "loaded" if done.returncode == 0 else "not loaded"
    state = [ln.split("=", 1)[1].strip() for ln in done.stdout.splitlines() if "state =" in ln]
    data["active"] = state[0] if state else ("inactive" if done.returncode == 0 else None)
    return data


COMMANDS = [service]
