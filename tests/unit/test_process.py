import os
import signal
import subprocess
import sys
import time

from corral.supervisor.process import ProcessOps, cmdline_matches, same_process


def test_cmdline_matching_tolerates_an_interpreter_prefix():
    argv = ["/x/llama-server", "--model", "m.gguf", "--port", "8081"]
    assert cmdline_matches(argv, argv)
    assert cmdline_matches(
        ["/usr/bin/python3", "/x/llama-server", "--model", "m.gguf", "--port", "8081"], argv
    )
    assert not cmdline_matches(["/x/llama-server", "--model", "m.gguf", "--port", "8082"], argv)
    assert not cmdline_matches(["/x/other", "--model", "m.gguf", "--port", "8081"], argv)
    assert not cmdline_matches([], argv)


def test_spawn_runs_in_its_own_group_and_logs(tmp_path):
    ops = ProcessOps()
    log = tmp_path / "logs" / "t.log"
    argv = [
        sys.executable,
        "-c",
        "import os,sys,time; print('pg', os.getpgid(0) == os.getpid(), flush=True); time.sleep(30)",
    ]
    handle = ops.spawn(argv, dict(os.environ), log)
    try:
        deadline = time.monotonic() + 10
        while "\npg " not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "pg True" in log.read_text()
        assert log.read_text().startswith("--- corral ")
        assert handle.poll() is None
        assert same_process(handle.pid, handle.create_time)
        assert not same_process(handle.pid, handle.create_time + 100)  # pid reuse guard
        adopted = ops.adopt(handle.pid, handle.create_time, argv)
        assert adopted is not None and adopted.popen is None
        assert ops.adopt(handle.pid, handle.create_time, argv[:2] + ["other"]) is None
    finally:
        handle.signal_group(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while handle.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handle.poll() == -signal.SIGKILL
    assert not handle.group_alive()


def test_port_free_detects_a_listener():
    import socket

    ops = ProcessOps()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not ops.port_free("127.0.0.1", port)
    assert ops.port_free("127.0.0.1", port)


def test_adopted_handle_reports_unknown_exit(tmp_path):
    from corral.supervisor.process import UNKNOWN_EXIT

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    ops = ProcessOps()
    import psutil

    handle = ops.adopt(
        proc.pid,
        psutil.Process(proc.pid).create_time(),
        [sys.executable, "-c", "import time; time.sleep(30)"],
    )
    assert handle is not None and handle.poll() is None
    proc.kill()
    proc.wait()
    assert handle.poll() == UNKNOWN_EXIT


def test_host_not_local_is_a_usage_error_not_oserror_99():
    """Issue 10: --host naming an address that is not this machine's raised OSError
    (errno 99, EADDRNOTAVAIL) out of launch and plan: a 500."""
    import pytest

    from corral.errors import UsageError
    from corral.supervisor.process import ProcessOps

    with pytest.raises(UsageError, match="not an address of this machine"):
        ProcessOps().port_free("192.0.2.1", 20999)  # TEST-NET-1: never local; no packet sent
