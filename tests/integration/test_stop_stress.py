"""Stress: hundreds of stop/start/restart/delete cycles at random moments (issue 10).

Before the fix, repeated stop/start of an instance while it loaded (fast probes) wedged
it within ~10-20 cycles: a health probe swallowed its cancellation, the stop waited on
a task that never ended while holding the instance's lock, and every later command
timed out. Here the real supervisor, the real OS process seam and the real health probe
drive fake llama-servers that load slowly, with commands fired at random moments (a
fixed seed, so a failure replays). Any stop slower than 15 s fails the test, and so
does any process left behind.

The 15 s bound is the issue's liveness bound for a hang, not a speed figure: a healthy
stop here takes a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time

import psutil
import pytest

from corral.settings import load_settings
from corral.store.db import Store
from corral.supervisor.states import RESTING, State
from corral.supervisor.supervisor import LaunchSpec, Supervisor
from tests.conftest import free_port_range

STOP_LIMIT = 15.0
CYCLES = 300
NAMES = ("alpha", "beta")

pytestmark = pytest.mark.slow


def _model(tmp_path, name: str):
    path = tmp_path / "models" / f"{name}-Q4_K_M.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(16))
    # slow load: every probe meanwhile gets a 503 or a refused connect
    (path.parent / f"{path.name}.fake.json").write_text(json.dumps({"load_seconds": 0.6}))
    return path


def test_stop_never_hangs_under_random_stop_start_restart_delete(tmp_path, fake_binary):
    settings = load_settings()
    settings.port_range = free_port_range(20)
    settings.probe_interval = 0.05
    settings.probe_timeout = 0.3
    settings.stop_timeout = 2.0
    settings.backoff_initial = 0.05
    settings.backoff_max = 0.2
    settings.load_timeout = 20.0
    settings.ensure_dirs()
    store = Store(settings.db_path)
    models = {name: _model(tmp_path, name) for name in NAMES}
    rng = random.Random(20261202)
    slowest: dict[str, float] = {"stop": 0.0, "delete": 0.0, "restart": 0.0}
    counts: dict[str, int] = {}
    spawned: set[int] = set()

    async def main():
        sup = Supervisor(settings, store)
        await sup.start()

        async def launch(name):
            await sup.launch(
                LaunchSpec(
                    model=str(models[name]), binary=str(fake_binary), name=name, restart="always"
                )
            )

        async def timed(kind, coro):
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(STOP_LIMIT * 2):
                    await coro
            except TimeoutError:
                pytest.fail(f"{kind} still running after {STOP_LIMIT * 2:g} s (a hang)")
            took = time.monotonic() - t0
            if kind in slowest:
                slowest[kind] = max(slowest[kind], took)
            counts[kind] = counts.get(kind, 0) + 1
            assert took < STOP_LIMIT, f"{kind} took {took:.1f} s"

        for name in NAMES:
            await launch(name)
        for _i in range(CYCLES):
            name = rng.choice(NAMES)
            rec = sup._rts.get(name)
            if rec is None:
                await timed("launch", launch(name))
            else:
                if rec.rec.pid:
                    spawned.add(rec.rec.pid)
                op = rng.choices(["stop", "start", "restart", "delete"], [4, 3, 2, 1])[0]
                state = State(rec.rec.state)
                if op == "start" and state not in RESTING:
                    op = "stop"
                if op == "stop":
                    await timed("stop", sup.stop(name))
                elif op == "start":
                    await timed("start", sup.start_instance(name))
                elif op == "restart":
                    await timed("restart", sup.restart(name))
                else:
                    await timed("delete", sup.remove(name))
            # A random moment: mid-load mostly (load takes 0.6 s), sometimes after ready.
            await asyncio.sleep(rng.choice([0, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.8]))
        for name in list(sup._rts):
            rt = sup._rts[name]
            if rt.rec.pid:
                spawned.add(rt.rec.pid)
            await timed("stop", sup.stop(name))
            assert sup.get(name).state == "stopped"
        assert sup.abandoned == []  # no task ignored its cancellation
        await sup.close()

    try:
        asyncio.run(main())
    finally:
        store.close()
        left = [
            p
            for p in spawned
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        for pid in left:  # a failed run must not leave servers behind either
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
    assert left == [], f"processes left running: {left}"
    print(
        f"\nstress: {CYCLES} cycles {counts}; slowest "
        + ", ".join(f"{k} {v:.2f} s" for k, v in slowest.items())
    )
    assert counts.get("stop", 0) >= 100  # hundreds of cycles really ran
