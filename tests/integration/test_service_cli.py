"""``corral service install | uninstall | status`` end to end, with fakes where systemd is.

There is no systemd PID 1 here, so systemctl and launchctl are small scripts on PATH
that record their argv (one JSON line per call) and answer like the real ones. The user
unit folder is $XDG_CONFIG_HOME/systemd/user under tmp_path; the --system folder is
``corral.service.SYSTEM_UNIT_DIR``, pointed at tmp_path too: nothing touches a home
or /etc. The units written are checked with ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral import service
from corral.cli import cli, service as cli_service

ANALYZE = shutil.which("systemd-analyze")

FAKE = """#!{python}
import json, os, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:] if a != "--user"]
fail = os.environ.get("FAKE_SERVICE_FAIL", "")
if fail and fail in args:
    print("Failed to connect to bus: No medium found", file=sys.stderr)
    sys.exit(1)
if args[:1] == ["is-active"]:
    print("active")
elif args[:1] == ["is-enabled"]:
    print("enabled")
elif args[:1] == ["print"]:
    print("gui/0/dev.corral.daemon = {{\\n\\tstate = running\\n}}")
"""


class Fakes:
    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "fakebin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        for name in ("systemctl", "launchctl"):
            path = self.bin / name
            path.write_text(FAKE.format(python=sys.executable, log=str(self.log)))
            path.chmod(0o755)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path, monkeypatch, corral_home) -> Fakes:
    fakes = Fakes(tmp_path)
    monkeypatch.setenv("PATH", f"{fakes.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.setattr(service, "SYSTEM_UNIT_DIR", tmp_path / "etc-systemd-system")
    monkeypatch.setattr(service, "SYSTEM_PLIST_DIR", tmp_path / "Library-LaunchDaemons")
    monkeypatch.delenv("FAKE_SERVICE_FAIL", raising=False)
    return fakes


def user_unit(tmp_path: Path) -> Path:
    return tmp_path / "xdg" / "systemd" / "user" / "corral.service"


def run(*args: str):
    return CliRunner().invoke(cli, ["service", *args])


def verified(path: Path, tmp_path: Path, *, user: bool) -> None:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    argv = [ANALYZE, *(["--user"] if user else []), "verify", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_install_writes_a_user_unit_and_enables_it(fakes, tmp_path, corral_home):
    result = run("install")
    assert result.exit_code == 0, result.output
    path = user_unit(tmp_path)
    assert result.stdout == f"installed {path}\n"
    assert "loginctl enable-linger" in result.stderr
    assert fakes.calls() == [
        ["--user", "daemon-reload"],
        ["--user", "enable", "--now", "corral.service"],
    ]
    text = path.read_text()
    assert f'Environment="CORRAL_HOME={corral_home}"' in text
    assert '"serve" "--host" "127.0.0.1" "--port" "9380"' in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    verified(path, tmp_path, user=True)


def test_installing_again_replaces_corrals_unit_and_restarts_it(fakes, tmp_path):
    assert run("install").exit_code == 0
    result = run("install", "--port", "9400")
    assert result.exit_code == 0, result.output
    assert '"--port" "9400"' in user_unit(tmp_path).read_text()
    assert fakes.calls()[2:] == [
        ["--user", "daemon-reload"],
        ["--user", "enable", "corral.service"],
        ["--user", "restart", "corral.service"],
    ]


def test_status_reports_the_file_and_what_systemctl_says(fakes, tmp_path):
    before = run("status", "--json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout)["installed"] is False
    assert run("install").exit_code == 0
    after = json.loads(run("status", "--json").stdout)
    assert after == {
        "manager": "systemd",
        "scope": "user",
        "path": str(user_unit(tmp_path)),
        "installed": True,
        "written_by_corral": True,
        "active": "active",
        "enabled": "enabled",
        "error": None,
    }
    shown = run("status").stdout
    assert "(written by corral)" in shown and "active     active" in shown


def test_uninstall_disables_and_removes_corrals_unit(fakes, tmp_path):
    assert run("install").exit_code == 0
    result = run("uninstall")
    assert result.exit_code == 0, result.output
    assert not user_unit(tmp_path).exists()
    assert fakes.calls()[2:] == [
        ["--user", "disable", "--now", "corral.service"],
        ["--user", "daemon-reload"],
    ]
    again = run("uninstall")
    assert again.exit_code == 3
    assert again.stderr.startswith("error: no corral service installed")


def test_a_foreign_unit_is_never_removed_nor_replaced(fakes, tmp_path):
    path = user_unit(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("[Service]\nExecStart=/usr/bin/someone-elses\n")
    for args in (("uninstall",), ("install",)):
        result = run(*args)
        assert result.exit_code == 4, result.output
        assert result.stderr == f"error: {path} was not written by corral: it is left as it is\n"
    assert path.read_text() == "[Service]\nExecStart=/usr/bin/someone-elses\n"
    assert fakes.calls() == []
    assert json.loads(run("status", "--json").stdout)["written_by_corral"] is False


@pytest.mark.parametrize("host", ["example.com", "localhost.localdomain", "10.0.0"])
def test_a_host_name_is_refused_before_anything_is_written(fakes, tmp_path, host):
    result = run("install", "--host", host)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --host must be an IP address")
    assert len(result.stderr.splitlines()) == 1
    assert not user_unit(tmp_path).exists() and fakes.calls() == []


def test_a_bad_port_is_refused(fakes, tmp_path):
    result = run("install", "--port", "70000")
    assert result.exit_code == 2 and "port number" in result.stderr
    assert not user_unit(tmp_path).exists()


def test_beyond_loopback_needs_a_key_the_service_can_see(fakes, tmp_path, monkeypatch):
    result = run("install", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "without an API key" in result.stderr and "corral keys create" in result.stderr
    monkeypatch.setenv("CORRAL_API_KEY", "k" * 32)  # this shell's only: the unit has none
    result = run("install", "--host", "0.0.0.0")
    assert result.exit_code == 2 and "not seen by the service" in result.stderr
    assert not user_unit(tmp_path).exists() and fakes.calls() == []


def test_beyond_loopback_with_a_key_waits_for_the_network(fakes, tmp_path):
    created = CliRunner().invoke(cli, ["keys", "create", "node"])
    assert created.exit_code == 0, created.output
    result = run("install", "--host", "0.0.0.0", "--port", "9555")
    assert result.exit_code == 0, result.output
    text = user_unit(tmp_path).read_text()
    assert "After=network-online.target" in text.splitlines()
    assert '"--host" "0.0.0.0" "--port" "9555"' in text
    verified(user_unit(tmp_path), tmp_path, user=True)


def test_a_short_config_key_is_refused_as_serve_refuses_it(fakes, tmp_path, corral_home):
    corral_home.mkdir(parents=True, exist_ok=True)
    (corral_home / "config.toml").write_text('api_key = "short"\n')
    result = run("install", "--host", "10.1.2.3")
    assert result.exit_code == 2 and "at least 16" in result.stderr
    (corral_home / "config.toml").write_text(f'api_key = "{"x" * 20}"\n')
    assert run("install", "--host", "10.1.2.3").exit_code == 0


def test_system_needs_root_in_one_line(fakes, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_service, "is_root", lambda: False)
    result = run("install", "--system")
    assert result.exit_code == 10
    assert result.stderr.splitlines() == [
        f"error: --system writes to {service.SYSTEM_UNIT_DIR}: run it as root (sudo), "
        "or drop --system for a user unit"
    ]
    assert fakes.calls() == [] and not service.SYSTEM_UNIT_DIR.exists()


def test_system_unit_runs_as_the_owner_of_corral_home(fakes, tmp_path, corral_home):
    if os.geteuid() != 0:
        pytest.skip("giving CORRAL_HOME to another user needs root")
    corral_home.mkdir(parents=True, exist_ok=True)
    os.chown(corral_home, 1, 1)  # "daemon" on Debian
    result = run("install", "--system")
    assert result.exit_code == 0, result.output
    path = service.SYSTEM_UNIT_DIR / "corral.service"
    text = path.read_text().splitlines()
    assert "WantedBy=multi-user.target" in text
    import pwd

    assert f"User={pwd.getpwuid(1).pw_name}" in text
    assert fakes.calls() == [["daemon-reload"], ["enable", "--now", "corral.service"]]
    verified(path, tmp_path, user=False)
    assert run("uninstall", "--system").exit_code == 0
    assert not path.exists()


def test_a_failing_systemctl_is_one_line_and_the_file_is_named(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "enable")
    result = run("install")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: `systemctl --user enable --now corral.service` failed (exit 1): "
        f"Failed to connect to bus: No medium found; {user_unit(tmp_path)} is written; "
        "`corral service uninstall` removes it"
    ]


def test_no_systemctl_is_an_error_before_anything_is_written(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = run("install")
    assert result.exit_code == 1
    assert result.stderr == "error: systemctl not found on PATH: this system does not run systemd\n"
    assert not user_unit(tmp_path).exists()


def test_a_home_with_a_newline_is_refused(fakes, tmp_path, monkeypatch):
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "a\nb"))
    result = run("install")
    assert result.exit_code == 2 and "control character" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not user_unit(tmp_path).exists() and fakes.calls() == []


def test_launchd_on_macos_writes_and_loads_a_plist(fakes, tmp_path, monkeypatch, corral_home):
    monkeypatch.setattr(cli_service, "manager", lambda: "launchd")
    result = run("install")
    assert result.exit_code == 0, result.output
    path = tmp_path / "user-home" / "Library" / "LaunchAgents" / "dev.corral.daemon.plist"
    assert result.stdout == f"installed {path}\n" and "loginctl" not in result.stderr
    job = plistlib.loads(path.read_bytes())
    assert job["ProgramArguments"][-5:] == ["serve", "--host", "127.0.0.1", "--port", "9380"]
    assert job["EnvironmentVariables"] == {"CORRAL_HOME": str(corral_home)}
    domain = f"gui/{os.getuid()}"
    assert fakes.calls() == [
        ["enable", f"{domain}/dev.corral.daemon"],
        ["bootstrap", domain, str(path)],
    ]
    status = json.loads(run("status", "--json").stdout)
    assert (status["manager"], status["active"], status["enabled"]) == (
        "launchd",
        "running",
        "loaded",
    )
    assert run("uninstall").exit_code == 0
    assert fakes.calls()[-1] == ["bootout", f"{domain}/dev.corral.daemon"]
    assert not path.exists()


def test_the_entry_point_runs_the_script_it_was_started_as(fakes, tmp_path, corral_home):
    """Through the real console script in a fresh process: ExecStart names that script,
    and the exit codes are the CLI's own."""
    script = Path(sys.executable).parent / "corral"
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not installed in this venv)")
    env = dict(os.environ)

    def corral(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(script), "service", *args], capture_output=True, text=True, env=env, timeout=60
        )

    done = corral("install")
    assert done.returncode == 0, done.stderr
    line = next(
        ln for ln in user_unit(tmp_path).read_text().splitlines() if ln.startswith("ExecStart=")
    )
    assert line.startswith(f'ExecStart="{script}" "serve"')
    verified(user_unit(tmp_path), tmp_path, user=True)
    assert corral("install", "--host", "my.host").returncode == 2
    assert corral("uninstall").returncode == 0
    assert corral("uninstall").returncode == 3


def test_install_warns_what_the_service_will_not_see(fakes, monkeypatch):
    quiet = run("install")
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr
    monkeypatch.setenv("CORRAL_HF_TOKEN", "hf_x")
    result = run("install", "--port", "9444")
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "does not see CORRAL_HF_TOKEN" in warnings[0]
    assert "the CLI looks for the daemon at http://127.0.0.1:9380" in warnings[1]


def test_install_warns_when_a_daemon_already_holds_the_home(fakes, corral_home):
    import fcntl

    corral_home.mkdir(parents=True, exist_ok=True)
    with open(corral_home / "daemon.lock", "w") as lock:  # as corral serve holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242")
        lock.flush()
        result = run("install")
    assert result.exit_code == 0, result.output
    assert "a daemon (pid 4242) already runs" in result.stderr
    assert "already runs" not in run("install").stderr  # the lock is free again


def test_uninstall_without_a_manager_disables_offline_and_removes(fakes, tmp_path, monkeypatch):
    """As with the real systemctl here (no bus): `disable --now` fails, `disable` works."""
    assert run("install").exit_code == 0
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "--now")
    result = run("uninstall")
    assert result.exit_code == 0, result.output
    assert "warning: disabled, but not stopped (Failed to connect to bus" in result.stderr
    assert not user_unit(tmp_path).exists()
    assert fakes.calls()[2:] == [
        ["--user", "disable", "--now", "corral.service"],
        ["--user", "disable", "corral.service"],
    ]


def test_uninstall_keeps_the_file_when_it_cannot_even_disable(fakes, tmp_path, monkeypatch):
    assert run("install").exit_code == 0
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "disable")
    result = run("uninstall")
    assert result.exit_code == 1
    assert result.stderr.endswith(f"; {user_unit(tmp_path)} is left in place\n")
    assert user_unit(tmp_path).exists()


def test_status_says_why_systemctl_could_not_answer(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_FAIL", "is-active")
    data = json.loads(run("status", "--json").stdout)
    assert data["active"] is None and data["enabled"] == "enabled"
    assert data["error"] == "Failed to connect to bus: No medium found"


@pytest.mark.parametrize(
    "args",
    [["--host", v] for v in ("", " ", "\n", "127.0.0.1\n", "127.1", "0x7f000001", "[::1]",
                             "a" * 5000, "%n", "$(id)", "::1\x00")]
    + [["--port", v] for v in ("0", "-1", "abc", "65536", "9380 9381", "99999999999999999999")],
)  # fmt: skip
def test_hostile_values_are_one_usage_line_and_write_nothing(fakes, tmp_path, args):
    result = run("install", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ")
    assert not user_unit(tmp_path).exists() and fakes.calls() == []
