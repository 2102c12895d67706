"""Supervision with real processes: crashes, backoff, crash loops, hangs, stubborn
processes, daemon restarts and re-adoption.

Each test runs a real ``corral serve`` (fast probe/backoff knobs, see tests/conftest.py)
spawning fake llama-servers on 127.0.0.1; faults come from the fake's sidecar knobs and
its ``/_fake/*`` control endpoints. Assertions are on states, pids, counts and ordering,
never on wall-clock thresholds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import (
    Watch,
    api,
    assert_error,
    fake_get,
    fake_post,
    fake_processes,
    get,
    group_gone,
    kill_group,
    launch,
    pid_alive,
    wait_state,
)

# --------------------------------------------------------------------------- crashes


def test_crash_is_restarted_with_new_pid_and_becomes_ready(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="crashy")
    assert inst["state"] == "ready" and inst["restarts"] == 0
    old_pid, port = inst["pid"], inst["port"]

    fake_post(port, "/_fake/crash?code=1")
    w = Watch(daemon, "crashy")
    ready = w.until(
        lambda i: i["state"] == "ready" and i["restarts"] == 1,
        message="ready again after the crash",
    )

    assert ready["pid"] != old_pid
    assert not pid_alive(old_pid)
    assert ready["port"] == port  # same command line, same port
    assert fake_get(port, "/_fake/state")[1]["pid"] == ready["pid"]
    assert [p.pid for p in fake_processes(fake_binary, port=port)] == [ready["pid"]]
    # The previous crash is remembered until the instance is healthy again; the exit
    # code of the crash was recorded on the way.
    assert w.states()[-1] == "ready"


@pytest.mark.slow
def test_crash_loop_backs_off_longer_each_time_then_fails(spawn_daemon, make_model, fake_binary):
    # Longer backoff than the shared FAST knobs so the gaps are far apart: 0.4, 0.8, 1.6, 1.6 s.
    d = spawn_daemon(CORRAL_BACKOFF_INITIAL="0.4", CORRAL_BACKOFF_MAX="1.6")
    model = make_model("crashloop", crash_after=0.3, crash_code=3, load_seconds=0.1)

    inst = launch(d, model, name="loop")
    w = Watch(d, "loop")
    w.poll()
    final = w.until(lambda i: i["state"] == "failed", timeout=60, message="failed after 5 crashes")

    assert final["exit_code"] == 3
    assert final["pid"] is None
    assert "exited with code 3" in final["last_error"]
    assert "5" in final["last_error"]  # "crashed 5 times in 300 s; last exited with code 3 ..."
    assert final["restarts"] == 4  # 5 crashes: 4 restarts, then it gave up

    # every restart ran a new process
    pids = [pid for _, state, pid, _ in w.seen if pid is not None]
    assert inst["pid"] in pids
    assert len(set(pids)) == 5, w.seen
    # restarts count only goes up
    counts = [r for _, _, _, r in w.seen]
    assert counts == sorted(counts) and counts[-1] == 4

    # Time spent in backoff before restart number k (seen by polling): it grows.
    gaps = []
    for i, (t, state, _, restarts) in enumerate(w.seen):
        if state != "backoff":
            continue
        nxt = next((s for s in w.seen[i + 1 :] if s[3] > restarts), None)
        if nxt is not None:
            gaps.append(nxt[0] - t)
    assert len(gaps) >= 3, w.seen
    assert gaps[0] < gaps[1] < gaps[2], gaps

    assert fake_processes(fake_binary, model=model) == []
    # It stays failed: not restarted in a loop.
    time.sleep(1.0)
    again = get(d, "loop")
    assert again["state"] == "failed" and again["restarts"] == 4


def test_restart_policy_never_leaves_a_crashed_instance_exited(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="once", restart="never")
    assert inst["restart_policy"] == "never"
    fake_post(inst["port"], "/_fake/crash?code=1")
    exited = wait_state(daemon, "once", "exited", "failed", "backoff")
    assert exited["state"] == "exited"
    assert exited["exit_code"] == 1
    assert exited["pid"] is None and exited["restarts"] == 0
    assert "exited with code 1" in exited["last_error"]
    assert fake_processes(fake_binary, port=inst["port"]) == []


def test_restart_policy_on_failure_leaves_a_clean_exit_exited(daemon, model_file):
    inst = launch(daemon, model_file, name="clean")
    fake_post(inst["port"], "/_fake/crash?code=0")
    exited = wait_state(daemon, "clean", "exited", "failed", "backoff")
    assert exited["state"] == "exited" and exited["exit_code"] == 0
    assert exited["restarts"] == 0


def test_restart_policy_always_restarts_even_after_exit_0(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="always", restart="always")
    fake_post(inst["port"], "/_fake/crash?code=0")
    ready = wait_state(daemon, "always", "ready", restarts=1)
    assert ready["pid"] != inst["pid"]
    assert [p.pid for p in fake_processes(fake_binary, port=inst["port"])] == [ready["pid"]]


# --------------------------------------------------------------------------- hangs


def test_hung_instance_goes_unhealthy_then_is_killed_and_restarted(daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="hangs")
    old_pid, port = inst["pid"], inst["port"]
    fake_post(port, "/_fake/hang")

    w = Watch(daemon, "hangs")
    unhealthy = w.until(lambda i: i["state"] == "unhealthy", message="unhealthy")
    assert unhealthy["pid"] == old_pid  # still the same (hung) process
    assert "probe" in (unhealthy["last_error"] or "")

    ready = w.until(
        lambda i: i["state"] == "ready" and i["pid"] not in (None, old_pid),
        timeout=30,
        message="respawned after the probe limit",
    )
    assert ready["restarts"] == 1
    wait_for(lambda: not pid_alive(old_pid), 10, message="hung process killed")
    assert group_gone(old_pid)
    assert [p.pid for p in fake_processes(fake_binary, port=port)] == [ready["pid"]]
    states = w.states()
    assert states.index("unhealthy") < len(states) - 1
    assert states[-1] == "ready"


# --------------------------------------------------------------------------- stubborn processes


@pytest.mark.parametrize("how", ["endpoint", "sidecar"])
def test_stop_sigkills_a_process_that_ignores_sigterm(daemon, make_model, fake_binary, how):
    model = make_model("stubborn", ignore_sigterm=True) if how == "sidecar" else make_model()
    inst = launch(daemon, model, name="stubborn")
    pid, port = inst["pid"], inst["port"]
    if how == "endpoint":
        assert fake_post(port, "/_fake/ignore-sigterm")[1]["ignore_sigterm"] is True
    assert fake_get(port, "/_fake/state")[1]["ignore_sigterm"] is True

    status, stopped = api(daemon, "POST", "/api/v1/instances/stubborn/stop")
    assert status == 200, stopped
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    # The stop answer comes after the kill: nothing of the group is left.
    assert not pid_alive(pid)
    assert group_gone(pid)
    assert fake_processes(fake_binary, port=port) == []
    log = (daemon.settings.logs_dir / "stubborn.log").read_text()
    assert "ignoring signal" in log  # it did get (and ignore) SIGTERM first


def test_stop_of_a_well_behaved_instance_uses_sigterm(daemon, model_file):
    inst = launch(daemon, model_file, name="polite")
    status, stopped = api(daemon, "POST", "/api/v1/instances/polite/stop")
    assert status == 200 and stopped["state"] == "stopped"
    assert group_gone(inst["pid"])
    log = (daemon.settings.logs_dir / "polite.log").read_text()
    assert "cleaning up before exit" in log  # the fake's SIGTERM handler ran


# --------------------------------------------------------------------------- exit during load


def test_exit_during_load_fails_the_launch_with_the_log_tail(daemon, make_model, fake_binary):
    model = make_model("broken", exit_during_load=3, load_seconds=0.4)
    status, payload = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model), "name": "broken", "wait": True}
    )
    err = assert_error(status, payload, 502, "launch_failed")
    assert "exit_during_load" in err.get("detail", ""), err  # the instance's own log lines
    assert "failed to load model" in err["detail"]

    inst = get(daemon, "broken")
    assert inst["state"] == "failed"
    assert inst["exit_code"] == 3
    assert inst["pid"] is None
    assert inst["last_error"]
    # Not restarted in a loop: still failed, no restarts, no process, one spawn in the log.
    time.sleep(1.0)
    inst = get(daemon, "broken")
    assert inst["state"] == "failed" and inst["restarts"] == 0
    assert fake_processes(fake_binary, model=model) == []
    log = (daemon.settings.logs_dir / "broken.log").read_text()
    assert log.count("--- corral ") == 1


def test_exit_during_load_detached_launch_ends_failed(daemon, make_model):
    model = make_model("broken2", exit_during_load=2, load_seconds=0.2)
    inst = launch(daemon, model, name="broken2", wait=False)
    assert inst["state"] == "starting" and inst["pid"]
    failed = wait_state(daemon, "broken2", "failed", "ready", "exited")
    assert failed["state"] == "failed" and failed["exit_code"] == 2


# --------------------------------------------------------------------------- daemon restarts


def _spawn_count(daemon, name: str) -> int:
    return (daemon.settings.logs_dir / f"{name}.log").read_text().count("--- corral ")


def test_new_daemon_adopts_running_instances_without_duplicates(
    daemon, spawn_daemon, make_model, fake_binary
):
    a = launch(daemon, make_model("alpha"), name="alpha")
    b = launch(daemon, make_model("beta"), name="beta")
    before = {i["name"]: i for i in (a, b)}

    daemon.kill9()
    for inst in before.values():
        assert pid_alive(inst["pid"])  # instances outlive the daemon

    d2 = spawn_daemon()  # same home, same port
    listed = {i["name"]: i for i in api(d2, "GET", "/api/v1/instances")[1]}
    assert set(listed) == {"alpha", "beta"}
    for name, old in before.items():
        now = listed[name]
        assert now["pid"] == old["pid"] and now["port"] == old["port"], now
        assert now["state"] in ("starting", "ready")
        wait_state(d2, name, "ready", pid=old["pid"])

    # Give the supervisor several probe rounds: still the same single process per port.
    time.sleep(1.0)
    for name, old in before.items():
        now = get(d2, name)
        assert now["state"] == "ready" and now["pid"] == old["pid"] and now["restarts"] == 0
        procs = fake_processes(fake_binary, port=old["port"])
        assert [p.pid for p in procs] == [old["pid"]], procs
        assert _spawn_count(d2, name) == 1


def test_new_daemon_restarts_vanished_instance_and_keeps_stopped_one_stopped(
    daemon, spawn_daemon, make_model, fake_binary
):
    keep = launch(daemon, make_model("keep"), name="keep")
    gone = launch(daemon, make_model("gone"), name="gone")
    rest = launch(daemon, make_model("rest"), name="rest")
    assert api(daemon, "POST", "/api/v1/instances/rest/stop")[0] == 200

    daemon.kill9()
    kill_group(gone["pid"])  # dies while nobody watches; it should be running
    wait_for(lambda: not pid_alive(gone["pid"]), 10)

    d2 = spawn_daemon()
    back = wait_state(d2, "gone", "ready", timeout=30)
    assert back["pid"] != gone["pid"]
    assert back["port"] == gone["port"]
    assert back["restarts"] >= 1
    assert [p.pid for p in fake_processes(fake_binary, port=gone["port"])] == [back["pid"]]

    kept = get(d2, "keep")
    assert kept["pid"] == keep["pid"] and kept["state"] in ("starting", "ready")

    stopped = get(d2, "rest")
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    assert fake_processes(fake_binary, port=rest["port"]) == []
    time.sleep(0.5)
    assert get(d2, "rest")["state"] == "stopped"
    assert fake_processes(fake_binary, port=rest["port"]) == []


def test_new_daemon_adopts_an_instance_that_is_still_loading(
    daemon, spawn_daemon, make_model, fake_binary
):
    model = make_model("slowload", load_seconds=3)
    inst = launch(daemon, model, name="slow", wait=False)
    assert inst["state"] == "starting"
    daemon.kill9()

    d2 = spawn_daemon()
    ready = wait_state(d2, "slow", "ready", timeout=30)
    assert ready["pid"] == inst["pid"]
    assert ready["restarts"] == 0
    assert [p.pid for p in fake_processes(fake_binary, model=model)] == [inst["pid"]]
    assert _spawn_count(d2, "slow") == 1


def test_adopted_instance_that_crashes_is_restarted(daemon, spawn_daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="adoptee")
    daemon.kill9()
    d2 = spawn_daemon()
    wait_state(d2, "adoptee", "ready", pid=inst["pid"])

    fake_post(inst["port"], "/_fake/crash?code=1")
    ready = wait_state(d2, "adoptee", "ready", restarts=1, timeout=30)
    assert ready["pid"] != inst["pid"]
    assert [p.pid for p in fake_processes(fake_binary, port=inst["port"])] == [ready["pid"]]


def test_adopted_instance_can_be_stopped(daemon, spawn_daemon, model_file, fake_binary):
    inst = launch(daemon, model_file, name="adoptee")
    daemon.kill9()
    d2 = spawn_daemon()
    wait_state(d2, "adoptee", "ready", pid=inst["pid"])
    status, stopped = api(d2, "POST", "/api/v1/instances/adoptee/stop")
    assert status == 200 and stopped["state"] == "stopped"
    assert group_gone(inst["pid"])
    assert fake_processes(fake_binary, port=inst["port"]) == []


def test_daemon_sigterm_leaves_instances_running_for_the_next_daemon(
    daemon, spawn_daemon, model_file, fake_binary
):
    inst = launch(daemon, model_file, name="survivor")
    daemon.stop()  # graceful daemon exit: instances keep running
    assert daemon.proc.returncode is not None
    assert pid_alive(inst["pid"])
    d2 = spawn_daemon()
    ready = wait_state(d2, "survivor", "ready", pid=inst["pid"])
    assert ready["restarts"] == 0
    assert [p.pid for p in fake_processes(fake_binary, port=inst["port"])] == [inst["pid"]]


# --------------------------------------------------------------------------- more lifecycles


@pytest.mark.slow
def test_instance_that_hangs_every_time_ends_failed(daemon, make_model, fake_binary):
    model = make_model("hangloop", hang=True, hang_after=0.3, load_seconds=0.1)
    inst = launch(daemon, model, name="hangloop")
    w = Watch(daemon, "hangloop")
    final = w.until(lambda i: i["state"] == "failed", timeout=90, message="failed after 5 hangs")
    assert "crash limit" in final["last_error"]
    assert final["restarts"] == 4
    assert final["pid"] is None
    assert "unhealthy" in w.states()
    pids = {pid for _, _, pid, _ in w.seen if pid is not None} | {inst["pid"]}
    assert len(pids) == 5
    assert fake_processes(fake_binary, model=model) == []


def test_stop_during_backoff_cancels_the_restart(spawn_daemon, model_file, fake_binary):
    d = spawn_daemon(CORRAL_BACKOFF_INITIAL="3", CORRAL_BACKOFF_MAX="3")
    inst = launch(d, model_file, name="b")
    fake_post(inst["port"], "/_fake/crash?code=1")
    wait_state(d, "b", "backoff")
    status, stopped = api(d, "POST", "/api/v1/instances/b/stop")
    assert status == 200 and stopped["state"] == "stopped"
    time.sleep(4)  # longer than the backoff: it must not come back
    now = get(d, "b")
    assert now["state"] == "stopped" and now["pid"] is None and now["restarts"] == 0
    assert fake_processes(fake_binary) == []


def test_stop_while_loading(daemon, make_model, fake_binary):
    model = make_model("slow", load_seconds=5)
    inst = launch(daemon, model, name="slow", wait=False)
    assert inst["state"] == "starting"
    status, stopped = api(daemon, "POST", "/api/v1/instances/slow/stop")
    assert status == 200 and stopped["state"] == "stopped"
    assert group_gone(inst["pid"])
    assert fake_processes(fake_binary) == []


def test_load_timeout_fails_and_kills_the_process(spawn_daemon, make_model, fake_binary):
    d = spawn_daemon(CORRAL_LOAD_TIMEOUT="1")
    model = make_model("forever", load_seconds=60)
    status, body = api(
        d, "POST", "/api/v1/instances", {"model": str(model), "name": "forever", "wait": True}
    )
    assert_error(status, body, 502, "launch_failed")
    inst = get(d, "forever")
    assert inst["state"] == "failed" and inst["pid"] is None
    assert "not ready after" in inst["last_error"]
    assert fake_processes(fake_binary, model=model) == []


def test_port_taken_while_in_backoff_fails_the_instance(spawn_daemon, model_file, fake_binary):
    from tests.integration.conftest import listening_socket

    d = spawn_daemon(CORRAL_BACKOFF_INITIAL="2", CORRAL_BACKOFF_MAX="2")
    inst = launch(d, model_file, name="squatted")
    fake_post(inst["port"], "/_fake/crash?code=1")
    wait_state(d, "squatted", "backoff")
    wait_for(lambda: not pid_alive(inst["pid"]), 10)
    with listening_socket(inst["port"]):
        failed = wait_state(d, "squatted", "failed", "ready", timeout=20)
        assert failed["state"] == "failed"
        assert str(inst["port"]) in failed["last_error"]
        assert fake_processes(fake_binary) == []
    # once the port is free again it can be started by hand
    status, started = api(d, "POST", "/api/v1/instances/squatted/start?wait=true")
    assert status == 200 and started["state"] == "ready", started


def test_failed_instance_can_be_started_again(daemon, make_model):
    model = make_model("flaky", exit_during_load=1)
    status, _ = api(
        daemon, "POST", "/api/v1/instances", {"model": str(model), "name": "flaky", "wait": True}
    )
    assert status == 502
    Path(str(model) + ".fake.json").write_text("{}")  # "fixed"
    status, started = api(daemon, "POST", "/api/v1/instances/flaky/start?wait=true")
    assert status == 200 and started["state"] == "ready"
    assert started["last_error"] is None and started["exit_code"] is None


def test_new_daemon_finishes_a_stop_the_old_one_was_doing(
    daemon_env, spawn_daemon, make_model, fake_binary
):
    import threading

    d1 = spawn_daemon(CORRAL_STOP_TIMEOUT="60")
    inst = launch(d1, make_model("stubborn", ignore_sigterm=True), name="stubborn")

    def stop_it() -> None:
        try:
            api(d1, "POST", "/api/v1/instances/stubborn/stop", timeout=90)
        except OSError:
            pass  # the daemon is killed under it

    stopper = threading.Thread(target=stop_it, daemon=True)
    stopper.start()
    wait_state(d1, "stubborn", "stopping")
    d1.kill9()
    stopper.join(10)
    assert pid_alive(inst["pid"])  # SIGTERM was ignored and nobody sent SIGKILL yet

    d2 = spawn_daemon()  # FAST knobs: stop_timeout 1 s
    now = wait_state(d2, "stubborn", "stopped", timeout=20)
    assert now["pid"] is None
    wait_for(lambda: group_gone(inst["pid"]), 10, message="stubborn group killed")
    assert fake_processes(fake_binary) == []


@pytest.mark.parametrize("same_start_time", [False, True])
def test_new_daemon_does_not_adopt_a_reused_pid(
    daemon, spawn_daemon, model_file, fake_binary, same_start_time
):
    """The stored pid now belongs to another process: never adopt it, never signal it."""
    import subprocess

    import psutil

    from corral.store import instances as table
    from corral.store.db import Store

    inst = launch(daemon, model_file, name="victim")
    daemon.kill9()
    kill_group(inst["pid"])
    wait_for(lambda: not pid_alive(inst["pid"]), 10)
    bystander = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        store = Store(daemon.settings.db_path)
        try:
            changes = {"pid": bystander.pid}
            if same_start_time:
                changes["create_time"] = psutil.Process(bystander.pid).create_time()
            table.update(store, "victim", **changes)
        finally:
            store.close()

        d2 = spawn_daemon()
        back = wait_state(d2, "victim", "ready", timeout=30)
        assert back["pid"] not in (inst["pid"], bystander.pid)
        assert bystander.poll() is None, "corral signalled a process it did not start"
        assert [p.pid for p in fake_processes(fake_binary)] == [back["pid"]]
    finally:
        bystander.kill()
        bystander.wait()
