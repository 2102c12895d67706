"""The real ``corral`` CLI (a subprocess) against a real daemon and fake llama-servers.

Data goes to stdout, progress and errors to stderr; an error is one ``error: ...`` line
with the exit code of its class (usage 2, not found 3, conflict 4, launch failed 6).
"""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

from corral.client import Client
from corral.settings import load_settings
from tests.conftest import wait_for
from tests.integration.conftest import (
    api,
    fake_processes,
    get,
    group_gone,
    launch,
    listening_socket,
    pid_alive,
    wait_state,
)

PS_JSON_KEYS = {
    "name",
    "state",
    "pid",
    "port",
    "model",
    "build",
    "version",
    "flags",
    "restarts",
    "started_at",
    "placement",
}


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line of a failed command (and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def env_settings(env: dict[str, str]):
    """Settings pointing where the CLI run with ``env`` looks for its daemon."""
    return load_settings(port=int(env["CORRAL_PORT"]), url=env["CORRAL_URL"])


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --------------------------------------------------------------------------- run


def test_run_waits_and_prints_name_port_url(daemon, model_file, fake_binary):
    proc = ok(daemon.cli("run", str(model_file), "--name", "web", "-c", "1024"))
    inst = get(daemon, "web")
    assert inst["state"] == "ready"
    out = proc.stdout.strip()
    assert out.splitlines() == [out]
    assert "web" in out and "ready" in out
    assert str(inst["port"]) in out and inst["url"] in out
    assert inst["flags"] == ["--ctx-size 1024"]
    assert [p.pid for p in fake_processes(fake_binary)] == [inst["pid"]]


def test_run_options_after_the_model_are_corrals(daemon, model_file):
    low, high = (int(p) for p in daemon.env["CORRAL_PORT_RANGE"].split("-"))
    port = high
    proc = ok(
        daemon.cli(
            "run",
            str(model_file),
            "-c",
            "512",
            "--port",
            str(port),
            "--name=opts",
            "--restart",
            "always",
            "--json",
        )
    )
    inst = json.loads(proc.stdout)
    assert inst["name"] == "opts" and inst["port"] == port
    assert inst["restart_policy"] == "always"
    assert inst["flags"] == ["--ctx-size 512"]
    assert inst["state"] == "ready"


def test_run_detach_returns_before_ready(daemon, make_model):
    model = make_model("slow", load_seconds=2)
    proc = ok(daemon.cli("run", str(model), "--name", "bg", "--detach"))
    assert "bg" in proc.stdout and "starting" in proc.stdout
    assert get(daemon, "bg")["state"] in ("starting", "ready")
    wait_state(daemon, "bg", "ready")


def test_run_relative_model_path_is_resolved(daemon, model_file):
    env = dict(daemon.env)
    proc = subprocess.run(
        [sys.executable, "-m", "corral", "run", model_file.name, "--name", "rel"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=model_file.parent,
    )
    ok(proc)
    assert get(daemon, "rel")["model"] == str(model_file.resolve())


def test_run_unknown_flag_is_one_line_exit_2(daemon, model_file, fake_binary):
    proc = daemon.cli("run", str(model_file), "--ctx-sise", "4096")
    assert proc.returncode == 2, proc.stderr
    line = error_line(proc)
    assert line.startswith("error: unknown flag '--ctx-sise'")
    assert "(did you mean --ctx-size?)" in line
    assert proc.stdout == ""
    assert fake_processes(fake_binary) == []
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])


def test_run_owned_flag_and_flag_value_errors_exit_2(daemon, model_file, fake_binary):
    for args in (["-m", "/x.gguf"], ["--metrics=on"], ["-c"]):
        proc = daemon.cli("run", str(model_file), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        error_line(proc)
    assert fake_processes(fake_binary) == []


def test_run_missing_model_exit_2(daemon, tmp_path):
    proc = daemon.cli("run", str(tmp_path / "missing.gguf"))
    assert proc.returncode == 2
    assert "missing.gguf" in error_line(proc)


def test_run_taken_port_exit_4(daemon, model_file):
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        proc = daemon.cli("run", str(model_file), "--port", str(port))
    assert proc.returncode == 4, proc.stderr
    assert str(port) in error_line(proc)


def test_run_exit_during_load_exit_6_with_log_tail(daemon, make_model):
    model = make_model("broken", exit_during_load=4, load_seconds=0.2)
    proc = daemon.cli("run", str(model), "--name", "broken")
    assert proc.returncode == 6, proc.stderr
    assert "broken" in error_line(proc)
    assert "exit_during_load" in proc.stderr  # the log tail follows the error line
    assert get(daemon, "broken")["state"] == "failed"


# --------------------------------------------------------------------------- ps


def test_ps_table_and_json(daemon, model_file):
    a = launch(daemon, model_file, name="alpha", flags=["-c", "256"])
    launch(daemon, model_file, name="beta")
    api(daemon, "POST", "/api/v1/instances/beta/stop")

    table = ok(daemon.cli("ps")).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "STATE",
        "PID",
        "PORT",
        "MODEL",
        "DEVICES",
        "RESTARTS",
        "UP",
    ]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"alpha", "beta"}
    assert rows["alpha"][1:4] == ["ready", str(a["pid"]), str(a["port"])]
    assert rows["alpha"][4] == model_file.name
    assert rows["alpha"][5] == "-"  # a header the estimator cannot read: not planned
    assert rows["beta"][1:3] == ["stopped", "-"]

    items = json.loads(ok(daemon.cli("ps", "--json")).stdout)
    assert [i["name"] for i in items] == ["alpha", "beta"]
    for item in items:
        assert PS_JSON_KEYS <= set(item), item
    alpha = items[0]
    assert alpha["state"] == "ready" and alpha["pid"] == a["pid"] and alpha["port"] == a["port"]
    assert alpha["model"] == str(model_file.resolve())
    assert alpha["flags"] == ["--ctx-size 256"]
    assert alpha["restarts"] == 0 and alpha["started_at"] > 0
    # the binary's own --version, recorded at launch (the fake prints the real build's)
    assert alpha["version"] and alpha["version"].startswith("0.6.0")
    assert items[1]["state"] == "stopped" and items[1]["pid"] is None


def test_ps_empty(daemon):
    proc = ok(daemon.cli("ps"))
    assert proc.stdout == ""
    assert "no instances" in proc.stderr
    assert json.loads(ok(daemon.cli("ps", "--json")).stdout) == []


def test_ps_without_a_daemon_reads_the_store(daemon, model_file):
    live = launch(daemon, model_file, name="live")
    dead = launch(daemon, model_file, name="dead")
    daemon.kill9()
    psutil.Process(dead["pid"]).kill()
    wait_for(lambda: not pid_alive(dead["pid"]), 10)

    items = {i["name"]: i for i in json.loads(ok(daemon.cli("ps", "--json")).stdout)}
    assert items["live"]["state"] == "ready" and items["live"]["pid"] == live["pid"]
    assert items["dead"]["state"] == "exited" and items["dead"]["pid"] is None
    table = ok(daemon.cli("ps")).stdout
    assert "live" in table and str(live["pid"]) in table
    # ps did not start a daemon
    assert not daemon.client.alive(0.5)


def test_ps_without_daemon_and_without_store(daemon_env):
    proc = ok(cli(daemon_env, "ps", "--json"))
    assert json.loads(proc.stdout) == []
    assert not Client(env_settings(daemon_env)).alive(0.3)


# --------------------------------------------------------------------------- stop / start / rm


def test_stop_by_name_and_by_port(daemon, model_file, fake_binary):
    a = launch(daemon, model_file, name="a")
    b = launch(daemon, model_file, name="b")
    c = launch(daemon, model_file, name="c")

    proc = ok(daemon.cli("stop", "a"))
    assert proc.stdout.split() == ["a", "stopped"]
    assert group_gone(a["pid"])

    proc = ok(daemon.cli("stop", str(b["port"])))
    assert proc.stdout.split() == ["b", "stopped"]
    assert group_gone(b["pid"])
    assert get(daemon, "c")["state"] == "ready"
    assert [p.pid for p in fake_processes(fake_binary)] == [c["pid"]]


def test_stop_all(daemon, model_file, fake_binary):
    pids = [launch(daemon, model_file, name=n)["pid"] for n in ("x", "y", "z")]
    proc = ok(daemon.cli("stop", "--all"))
    assert sorted(line.split()[0] for line in proc.stdout.splitlines()) == ["x", "y", "z"]
    assert all(line.split()[1] == "stopped" for line in proc.stdout.splitlines())
    assert all(group_gone(pid) for pid in pids)
    assert fake_processes(fake_binary) == []
    assert {i["state"] for i in api(daemon, "GET", "/api/v1/instances")[1]} == {"stopped"}


def test_stop_unknown_exit_3_and_stop_without_target_exit_2(daemon):
    proc = daemon.cli("stop", "ghost")
    assert proc.returncode == 3
    assert "ghost" in error_line(proc)
    proc = daemon.cli("stop")
    assert proc.returncode == 2
    error_line(proc)


def test_start_restart_rm(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="cyc")
    ok(daemon.cli("stop", "cyc"))
    proc = ok(daemon.cli("start", "cyc"))
    started = get(daemon, "cyc")
    assert started["state"] == "ready" and "ready" in proc.stdout
    assert started["pid"] != inst["pid"]
    proc = ok(daemon.cli("restart", "cyc"))
    restarted = get(daemon, "cyc")
    assert restarted["state"] == "ready" and restarted["pid"] != started["pid"]
    assert restarted["restarts"] == 1
    proc = ok(daemon.cli("delete", "cyc"))
    assert proc.stdout.strip() == "removed cyc"
    assert fake_processes(fake_binary) == []
    assert api(daemon, "GET", "/api/v1/instances") == (200, [])


# --------------------------------------------------------------------------- logs / flags


def test_logs_last_lines(daemon, model_file):
    launch(daemon, model_file, name="talky")
    path = daemon.settings.logs_dir / "talky.log"
    with open(path, "a") as fh:
        fh.writelines(f"extra line {i}\n" for i in range(12))
    proc = ok(daemon.cli("logs", "talky", "-n", "5"))
    assert proc.stdout.splitlines() == [f"extra line {i}" for i in range(7, 12)]
    everything = ok(daemon.cli("logs", "talky", "-n", "1000")).stdout.splitlines()
    assert everything == path.read_text().splitlines()


def test_logs_unknown_exit_3(daemon):
    proc = daemon.cli("logs", "ghost")
    assert proc.returncode == 3
    assert "ghost" in error_line(proc)


def test_flags_search(daemon):
    proc = ok(daemon.cli("flags", "ctx"))
    assert "--ctx-size" in proc.stdout
    assert any(line.strip().startswith("-c, --ctx-size") for line in proc.stdout.splitlines())
    found = json.loads(ok(daemon.cli("flags", "ctx", "--json")).stdout)
    assert "--ctx-size" in [f["long"] for f in found]
    assert "flag(s) from" in proc.stderr


# --------------------------------------------------------------------------- builds


def test_builds_add_then_ls(daemon_env, fake_binary):
    proc = ok(cli(daemon_env, "builds", "ls"))
    assert "no builds registered" in proc.stderr
    proc = ok(cli(daemon_env, "builds", "add", str(fake_binary)))
    line = proc.stdout.strip()
    assert line.startswith("build 1: ") and str(fake_binary.resolve()) in line
    assert "[default]" in line and "flags" in line
    table = ok(cli(daemon_env, "builds", "ls")).stdout.splitlines()
    assert table[0].split() == ["ID", "DEFAULT", "BUILD", "BACKEND", "VERSION", "TOOLS", "PATH"]
    assert table[1].split()[-2] == "-"  # a lone llama-server: no rpc-server beside it
    assert table[1].split()[:2] == ["1", "*"]
    assert table[1].split()[-1] == str(fake_binary.resolve())
    builds = json.loads(ok(cli(daemon_env, "builds", "ls", "--json")).stdout)
    assert [(b["id"], b["path"], b["is_default"], b["tools"]) for b in builds] == [
        (1, str(fake_binary.resolve()), True, [])
    ]
    # adding the same binary again does not duplicate it
    ok(cli(daemon_env, "builds", "add", str(fake_binary)))
    assert len(json.loads(ok(cli(daemon_env, "builds", "ls", "--json")).stdout)) == 1
    # rm forgets a build it did not install, and keeps the file
    proc = ok(cli(daemon_env, "builds", "rm", "1"))
    assert "were not installed by corral" in proc.stdout and fake_binary.exists()
    assert json.loads(ok(cli(daemon_env, "builds", "ls", "--json")).stdout) == []


def test_run_with_a_registered_build(daemon, model_file, fake_binary):
    ok(daemon.cli("builds", "add", str(fake_binary)))
    ok(daemon.cli("run", str(model_file), "--name", "b1", "--build", "1"))
    items = json.loads(ok(daemon.cli("ps", "--json")).stdout)
    assert [(i["name"], i["build"], i["state"]) for i in items] == [("b1", 1, "ready")]


# --------------------------------------------------------------------------- down / auto-start


def test_down_stops_instances_and_the_daemon(daemon, model_file, fake_binary):
    a = launch(daemon, model_file, name="a")
    b = launch(daemon, model_file, name="b")
    proc = ok(daemon.cli("down"))
    assert "stopped a" in proc.stdout and "stopped b" in proc.stdout
    assert "daemon stopped" in proc.stdout
    daemon.proc.wait(15)
    assert group_gone(a["pid"]) and group_gone(b["pid"])
    assert fake_processes(fake_binary) == []
    items = json.loads(ok(daemon.cli("ps", "--json")).stdout)  # offline now
    assert {i["state"] for i in items} == {"stopped"}
    assert not daemon.client.alive(0.3)


def test_down_without_a_daemon_stops_orphaned_instances(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="orphan")
    daemon.kill9()
    proc = ok(daemon.cli("down"))
    assert "stopped orphan" in proc.stdout and "daemon was not running" in proc.stdout
    assert group_gone(inst["pid"])
    assert fake_processes(fake_binary) == []
    assert not daemon.client.alive(0.3)


def test_cli_auto_starts_a_daemon(daemon_env, model_file, fake_binary):
    settings = env_settings(daemon_env)
    client = Client(settings)
    assert not client.alive(0.3)
    try:
        proc = ok(cli(daemon_env, "run", str(model_file), "--name", "auto"))
        assert "starting the daemon" in proc.stderr
        assert "auto" in proc.stdout and "ready" in proc.stdout
        assert client.alive(2)
        health = client.request("GET", "/healthz")
        assert health["home"] == daemon_env["CORRAL_HOME"]
        assert (settings.logs_dir / "daemon.log").exists()

        # the next command finds the running daemon instead of starting another
        proc = ok(cli(daemon_env, "ps", "--json"))
        assert [i["name"] for i in json.loads(proc.stdout)] == ["auto"]
        proc = ok(cli(daemon_env, "stop", "auto"))
        assert "starting the daemon" not in proc.stderr
        assert client.request("GET", "/healthz")["pid"] == health["pid"]

        proc = ok(cli(daemon_env, "down"))
        assert "daemon stopped" in proc.stdout
        wait_for(lambda: not pid_alive(health["pid"]), 15, message="daemon gone after down")
        assert fake_processes(fake_binary) == []
    finally:
        _cleanup_daemon(client, settings)


def _cleanup_daemon(client: Client, settings) -> None:
    try:
        pid = client.request("GET", "/healthz", timeout=1)["pid"]
    except Exception:
        pid = None
    if pid:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass
    from corral.supervisor.offline import stop_all_offline

    stop_all_offline(settings, timeout=1.0)


def test_version_and_help_are_fast_paths(daemon_env):
    proc = ok(cli(daemon_env, "--help"))
    for command in ("run", "ps", "stop", "logs", "flags", "down", "serve", "builds"):
        assert command in proc.stdout
    assert ok(cli(daemon_env, "--version")).stdout.startswith("corral")


# --------------------------------------------------------------------------- more CLI


def test_run_bad_number_after_the_model_is_a_usage_error(daemon, model_file, fake_binary):
    for args in (["--port", "eighty"], ["--timeout", "soon"], ["--build", "latest"]):
        proc = daemon.cli("run", str(model_file), *args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        error_line(proc)
    assert fake_processes(fake_binary) == []


def test_logs_follow_prints_new_lines(daemon, model_file):
    import select

    launch(daemon, model_file, name="tailme")
    path = daemon.settings.logs_dir / "tailme.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "logs", "tailme", "-f", "-n", "1"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.strip() == path.read_text().splitlines()[-1].strip()
        with open(path, "a") as fh:
            fh.write("a brand new line\n")
        deadline_lines = []
        while "a brand new line" not in "".join(deadline_lines):
            ready, _, _ = select.select([proc.stdout], [], [], 15)
            assert ready, f"no new output; got {deadline_lines}"
            deadline_lines.append(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_stop_without_a_daemon_starts_one_that_adopts_and_stops(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="lonely")
    daemon.kill9()
    settings = env_settings(daemon.env)
    client = Client(settings)
    try:
        proc = ok(daemon.cli("stop", "lonely"))
        assert "starting the daemon" in proc.stderr
        assert proc.stdout.split() == ["lonely", "stopped"]
        assert group_gone(inst["pid"])
        assert fake_processes(fake_binary) == []
    finally:
        _cleanup_daemon(client, settings)


def test_down_kills_an_instance_that_ignores_sigterm(daemon, make_model, fake_binary):
    inst = launch(daemon, make_model("stubborn", ignore_sigterm=True), name="stubborn")
    proc = ok(daemon.cli("down"))
    assert "stopped stubborn" in proc.stdout
    daemon.proc.wait(15)
    assert group_gone(inst["pid"])
    assert fake_processes(fake_binary) == []


def test_serve_on_a_taken_port_exits_with_one_line(daemon_env):
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        env = {**daemon_env, "CORRAL_PORT": str(port), "CORRAL_URL": f"http://127.0.0.1:{port}"}
        proc = cli(env, "serve")
    assert proc.returncode != 0
    assert str(port) in error_line(proc)
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_cli_reports_a_daemon_that_cannot_start_exit_7(daemon_env, model_file, fake_binary):
    with listening_socket() as sock:  # something else (that never answers) holds the port
        port = sock.getsockname()[1]
        env = {**daemon_env, "CORRAL_PORT": str(port), "CORRAL_URL": f"http://127.0.0.1:{port}"}
        proc = cli(env, "run", str(model_file))
    assert proc.returncode == 7, proc.stderr
    assert "daemon" in error_line(proc)
    assert fake_processes(fake_binary) == []


def test_cli_sends_the_api_key(spawn_daemon, model_file):
    d = spawn_daemon(CORRAL_API_KEY="k-123")
    ok(d.cli("run", str(model_file), "--name", "keyed"))
    items = json.loads(ok(d.cli("ps", "--json")).stdout)
    assert [i["name"] for i in items] == ["keyed"]
    wrong_key = {**d.env, "CORRAL_API_KEY": "wrong"}
    proc = cli(wrong_key, "stop", "keyed")
    assert proc.returncode == 2
    assert "API key" in error_line(proc)
    # without the variable the CLI on this machine uses the daemon's local token file...
    no_key = {k: v for k, v in d.env.items() if k != "CORRAL_API_KEY"}
    ok(cli(no_key, "ps"))
    # ...and without that either, it is refused
    (d.settings.home / "daemon.token").unlink()
    proc = cli(no_key, "ps")
    assert proc.returncode == 2 and "API key" in error_line(proc)
    ok(d.cli("stop", "keyed"))
