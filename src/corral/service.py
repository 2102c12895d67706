"""The daemon as a service: a systemd unit or a launchd plist, rendered (pure, stdlib only).

``corral service install`` (:mod:`corral.cli.service`) writes what this module renders
and asks systemctl/launchctl to load it; here are only the texts, the paths and the
command lines, so each can be checked without a service manager.

- **What runs**: ``corral serve --host H --port P`` with ``CORRAL_HOME`` set to the home
  resolved at install time: the service finds the same store, keys and config.toml as the
  shell that installed it. Other ``CORRAL_*`` variables of that shell are not copied (a
  unit file is no place for ``CORRAL_API_KEY``): config.toml is read by the service.
- **Restart**: on failure, after :data:`RESTART_SEC` seconds; never after exit 2 (a
  usage error, such as a non-loopback bind with no API key: retrying cannot fix it).
- **Instances survive it**: stopping or restarting the service signals the daemon only
  (systemd ``KillMode=process``, launchd ``AbandonProcessGroup``); the next daemon
  re-adopts the instances, as after any daemon restart. The unit's comment says why.
- **Whose file it is**: every file written carries :data:`MARKER`; uninstall removes a
  file only when it does (:func:`written_by_corral`).
- **Quoting**: every word of ``ExecStart=`` and the ``Environment=`` assignment is
  double-quoted with systemd's C-style escapes, ``%`` doubled (specifiers) and, in
  ``ExecStart=``, ``$`` doubled (variable expansion). A newline or other control character
  cannot be written safely in either file: :func:`check_text` refuses it.
"""

from __future__ import annotations

import os
import plistlib
from dataclasses import dataclass
from pathlib import Path

from corral.errors import UsageError
from corral.net import is_loopback

UNIT_NAME = "corral.service"
LABEL = "dev.corral.daemon"
PLIST_NAME = f"{LABEL}.plist"
MARKER = "Written by `corral service install`"
_REMOVED_BY = "`corral service uninstall` removes it."
RESTART_SEC = 5
#: Where ``--system`` puts the file (a module attribute, so tests can point it elsewhere).
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_PLIST_DIR = Path("/Library/LaunchDaemons")

_KILL_MODE_WHY = """\
# KillMode=process: stopping or restarting this unit signals the daemon only. The
# llama-server instances it started run in their own session (start_new_session), but a
# session does not leave the unit's cgroup, and systemd's default KillMode=control-group
# would kill them with the daemon. Left running, they are re-adopted by the next daemon
# (pid, start time, port, command line, /health), as after any daemon restart.
# `corral down` stops the instances, then the daemon (a clean exit: no restart).
"""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: ``argv`` (``corral serve --host H --port P``) with
    ``CORRAL_HOME=home``; ``system`` for a system-wide unit, run as ``user`` (None: root)."""

    argv: list[str]
    home: Path
    host: str
    port: int
    system: bool = False
    user: str | None = None
    group: str | None = None
    log_path: Path | None = None  # launchd only: systemd sends output to the journal
    version: str = ""


def check_text(value: str, what: str) -> str:
    """``value`` if it holds no control character (a newline would end the unit's line)."""
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise UsageError(
            f"{what} {value[:100]!r} holds a control character ({bad!r}): "
            "a service file cannot carry it; use a path without one"
        )
    return value


def command(entry: list[str], host: str, port: int) -> list[str]:
    """``corral serve --host H --port P`` behind the entry point (``[/path/corral]`` or
    ``[python, -m, corral]``)."""
    return [*entry, "serve", "--host", host, "--port", str(port)]


def systemd_quote(word: str, *, exec_line: bool = False) -> str:
    """``word`` as one double-quoted systemd word (``ExecStart=`` when ``exec_line``)."""
    check_text(word, "the value")
    out = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if exec_line:
        out = out.replace("$", "$$")
    return f'"{out}"'


def render_unit(spec: ServiceSpec) -> str:
    """The systemd unit text for ``spec``."""
    check_text(str(spec.home), "CORRAL_HOME")
    for word in spec.argv:
        check_text(word, "the command")
    exec_start = " ".join(systemd_quote(w, exec_line=True) for w in spec.argv)
    shown = (f"[{spec.host}]" if ":" in spec.host else spec.host).replace("%", "%%")
    unit = [f"Description=corral daemon (llama-server manager) on {shown}:{spec.port}"]
    if not is_loopback(spec.host):  # the address must exist before the bind
        unit += ["After=network-online.target", "Wants=network-online.target"]
    service = [
        "Type=exec",
        f"ExecStart={exec_start}",
        f"Environment={systemd_quote(f'CORRAL_HOME={spec.home}')}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        "RestartPreventExitStatus=2",
        "KillMode=process",
    ]
    if spec.system and spec.user:
        service.append(f"User={spec.user}")
        if spec.group:
            service.append(f"Group={spec.group}")
    wanted = "multi-user.target" if spec.system else "default.target"
    return (
        f"# {_marker_line(spec)}\n{_KILL_MODE_WHY}\n"
        + "[Unit]\n"
        + "".join(f"{line}\n" for line in unit)
        + "\n[Service]\n"
        + "".join(f"{line}\n" for line in service)
        + f"\n[Install]\nWantedBy={wanted}\n"
    )


def render_plist(spec: ServiceSpec) -> bytes:
    """The launchd property list for ``spec`` (the marker is an XML comment)."""
    check_text(str(spec.home), "CORRAL_HOME")
    for word in spec.argv:
        check_text(word, "the command")
    job: dict = {
        "Label": LABEL,
        "ProgramArguments": list(spec.argv),
        "EnvironmentVariables": {"CORRAL_HOME": str(spec.home)},
        "RunAtLoad": True,
        # restart when it did not exit cleanly (systemd's Restart=on-failure)
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SEC,
        # do not kill what is left in the job's process group when it stops: the
        # instances (their own sessions anyway) are re-adopted by the next daemon
        "AbandonProcessGroup": True,
        "ProcessType": "Background",
    }
    if spec.log_path is not None:
        job["StandardOutPath"] = job["StandardErrorPath"] = str(spec.log_path)
    if spec.system and spec.user:
        job["UserName"] = spec.user
        if spec.group:
            job["GroupName"] = spec.group
    data = plistlib.dumps(job, sort_keys=False)
    return data.replace(b"<plist ", f"<!-- {_marker_line(spec)} -->\n<plist ".encode(), 1)


def _marker_line(spec: ServiceSpec) -> str:
    version = f" (corral {spec.version})" if spec.version else ""
    return f"{MARKER}{version}; {_REMOVED_BY}"


def written_by_corral(data: bytes) -> bool:
    """Whether a unit's first line, or a plist's comment before ``<plist``, is the marker."""
    head = data[:1024]
    return head.startswith(f"# {MARKER}".encode()) or (
        head.startswith(b"<?xml") and f"\n<!-- {MARKER}".encode() in head.split(b"<plist", 1)[0]
    )


def unit_dir(system: bool, env: dict[str, str] | None = None, home: Path | None = None) -> Path:
    """Where the systemd unit goes: /etc/systemd/system, or $XDG_CONFIG_HOME/systemd/user
    (default ~/.config/systemd/user)."""
    if system:
        return SYSTEM_UNIT_DIR
    env = os.environ if env is None else env
    config = env.get("XDG_CONFIG_HOME") or ""
    base = Path(config) if os.path.isabs(config) else (home or Path.home()) / ".config"
    return base / "systemd" / "user"


def plist_dir(system: bool, home: Path | None = None) -> Path:
    """Where the launchd plist goes: /Library/LaunchDaemons or ~/Library/LaunchAgents."""
    return SYSTEM_PLIST_DIR if system else (home or Path.home()) / "Library" / "LaunchAgents"


def systemctl(executable: str, system: bool, *args: str) -> list[str]:
    """A systemctl command line (``--user`` unless ``system``)."""
    return [executable, *([] if system else ["--user"]), *args]


def launchd_domain(system: bool, uid: int) -> str:
    """The launchctl domain: ``system``, or ``gui/UID`` (the user's login session)."""
    return "system" if system else f"gui/{uid}"
