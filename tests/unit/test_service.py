"""corral.service: the systemd unit and the launchd plist, rendered and checked for real.

The unit text goes through ``systemd-analyze verify`` (it parses the file as systemd does
and checks that ExecStart's executable exists: a path with a space that was quoted wrong
fails there), user and system variants; the plist is read back with plistlib. Nothing
here touches a home or /etc: every file is written under tmp_path.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from corral import service
from corral.errors import UsageError
from corral.service import ServiceSpec
from corral.types import check_host

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is missing (Debian package systemd)"
)


def verify(path: Path, tmp_path: Path, *, user: bool) -> subprocess.CompletedProcess:
    """``systemd-analyze [--user] verify PATH``; a user manager needs a runtime dir."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"}
    argv = [ANALYZE, *(["--user"] if user else []), "verify", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


def executable(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "corral"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return script


def spec(tmp_path: Path, **kw) -> ServiceSpec:
    entry = executable(tmp_path / "my bin 100%")
    values = dict(
        argv=service.command([str(entry)], "127.0.0.1", 9380),
        home=tmp_path / "corral home $HOME",
        host="127.0.0.1",
        port=9380,
        version="0.0-test",
    )
    values.update(kw)
    return ServiceSpec(**values)


def write_unit(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "units"
    folder.mkdir(exist_ok=True)
    path = folder / service.UNIT_NAME
    path.write_text(text)
    return path


@needs_analyze
def test_the_user_unit_verifies_with_a_space_a_percent_and_a_dollar(tmp_path):
    unit = service.render_unit(spec(tmp_path))
    done = verify(write_unit(tmp_path, unit), tmp_path, user=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert "WantedBy=default.target" in unit
    assert "User=" not in unit and "network-online" not in unit  # loopback: no wait


@needs_analyze
def test_the_system_unit_verifies_and_runs_as_the_homes_owner(tmp_path):
    s = spec(tmp_path, system=True, user="daemon", group="daemon", host="0.0.0.0")
    unit = service.render_unit(s)
    done = verify(write_unit(tmp_path, unit), tmp_path, user=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    lines = unit.splitlines()
    for line in (
        "User=daemon",
        "Group=daemon",
        "WantedBy=multi-user.target",
        "After=network-online.target",
        "Wants=network-online.target",
        "KillMode=process",
        "Restart=on-failure",
        f"RestartSec={service.RESTART_SEC}",
    ):
        assert line in lines


@needs_analyze
def test_verify_fails_on_the_same_unit_quoted_wrong(tmp_path):
    """The check above can fail: the command line unquoted splits at the space."""
    s = spec(tmp_path)
    unit = service.render_unit(s)
    quoted = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    unquoted = unit.replace(quoted, "ExecStart=" + " ".join(s.argv))
    done = verify(write_unit(tmp_path, unquoted), tmp_path, user=True)
    assert "is not executable" in done.stderr or "Neither a valid" in done.stderr, done.stderr


def test_the_unit_says_why_kill_mode_is_process_and_carries_the_home(tmp_path):
    s = spec(tmp_path)
    unit = service.render_unit(s)
    assert unit.startswith(f"# {service.MARKER} (corral 0.0-test)")
    assert "own session" in unit and "re-adopted" in unit
    home = str(s.home).replace("%", "%%")
    assert f'Environment="CORRAL_HOME={home}"' in unit  # $ is literal in Environment=
    exec_line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_line.endswith('"serve" "--host" "127.0.0.1" "--port" "9380"')
    assert "100%%" in exec_line


def test_systemd_quoting_escapes_what_systemd_would_read():
    assert service.systemd_quote('a b"c\\d%e$f') == '"a b\\"c\\\\d%%e$f"'
    assert service.systemd_quote("$HOME", exec_line=True) == '"$$HOME"'


@pytest.mark.parametrize("bad", ["/a\nb", "/a\rb", "/a\tb", "/a\x00b", "/a\x7fb"])
def test_a_control_character_is_refused_in_one_line(tmp_path, bad):
    with pytest.raises(UsageError, match="control character"):
        service.render_unit(spec(tmp_path, home=Path(bad)))
    with pytest.raises(UsageError, match="control character"):
        service.render_plist(spec(tmp_path, argv=[bad, "serve"]))


def test_an_ipv6_host_is_bracketed_in_the_description(tmp_path):
    unit = service.render_unit(spec(tmp_path, host="::1"))
    assert "Description=corral daemon (llama-server manager) on [::1]:9380" in unit
    assert "network-online" not in unit  # ::1 is loopback


@pytest.mark.parametrize(
    ("given", "expected"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"),
     ("::", "::"), ("0:0::1", "::1"), ("10.0.0.5", "10.0.0.5")],
)  # fmt: skip
def test_host_takes_ip_addresses(given, expected):
    assert check_host(given) == expected


@pytest.mark.parametrize("bad", ["example.com", "my-host", "", "10.0.0", "/tmp/x.sock"])
def test_host_refuses_names(bad):
    with pytest.raises(UsageError, match="must be an IP address"):
        check_host(bad)


def test_the_plist_reads_back_with_its_keys_and_marker(tmp_path):
    s = spec(tmp_path, system=True, user="alice", group="staff", log_path=tmp_path / "d.log")
    data = service.render_plist(s)
    job = plistlib.loads(data)
    assert job["Label"] == service.LABEL == "dev.corral.daemon"
    assert job["ProgramArguments"] == s.argv
    assert job["EnvironmentVariables"] == {"CORRAL_HOME": str(s.home)}
    assert job["KeepAlive"] == {"SuccessfulExit": False}
    assert job["RunAtLoad"] is True and job["AbandonProcessGroup"] is True
    assert job["StandardErrorPath"] == str(tmp_path / "d.log")
    assert (job["UserName"], job["GroupName"]) == ("alice", "staff")
    assert "UserName" not in plistlib.loads(service.render_plist(spec(tmp_path)))
    assert service.written_by_corral(data)


def test_only_corrals_files_are_recognised_as_corrals(tmp_path):
    assert service.written_by_corral(service.render_unit(spec(tmp_path)).encode())
    foreign_unit = b"[Service]\nExecStart=/bin/x\n# " + service.MARKER.encode() + b"\n"
    foreign_plist = plistlib.dumps({"Label": service.LABEL, "Comment": service.MARKER})
    assert not service.written_by_corral(foreign_unit)
    assert not service.written_by_corral(foreign_plist)
    assert not service.written_by_corral(b"")


def test_the_unit_folder_follows_xdg_config_home(tmp_path):
    home = tmp_path / "u"
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    assert service.unit_dir(False, xdg, home) == tmp_path / "cfg" / "systemd" / "user"
    assert service.unit_dir(False, {}, home) == home / ".config" / "systemd" / "user"
    relative = {"XDG_CONFIG_HOME": "cfg"}  # the spec says: ignore a relative one
    assert service.unit_dir(False, relative, home) == home / ".config" / "systemd" / "user"
    assert service.unit_dir(True, xdg, home) == Path("/etc/systemd/system")
    assert service.plist_dir(False, home) == home / "Library" / "LaunchAgents"
    assert service.plist_dir(True, home) == Path("/Library/LaunchDaemons")


def test_command_lines():
    assert service.systemctl("/x/systemctl", False, "daemon-reload") == [
        "/x/systemctl",
        "--user",
        "daemon-reload",
    ]
    assert service.systemctl("/x/systemctl", True, "enable", "--now", "corral.service") == [
        "/x/systemctl",
        "enable",
        "--now",
        "corral.service",
    ]
    assert service.launchd_domain(False, 501) == "gui/501"
    assert service.launchd_domain(True, 501) == "system"


@needs_analyze
def test_an_ipv6_scope_id_keeps_its_percent_escaped(tmp_path):
    host = check_host("fe80::1%eth0")
    s = spec(tmp_path, host=host)
    s = ServiceSpec(**{**s.__dict__, "argv": service.command(s.argv[:1], host, 9380)})
    unit = service.render_unit(s)
    assert "on [fe80::1%%eth0]:9380" in unit and '"fe80::1%%eth0"' in unit
    done = verify(write_unit(tmp_path, unit), tmp_path, user=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
