"""The supervisor in-process, through its seams: fake process ops, a scripted probe.

Races are set up by hand (a probe held open, a process that exits on cue, a task that
ignores its cancellation, a store that refuses writes) so each outcome is decided by
the order of events, not by timing. Assertions are on states, event sequences, signals
and records. The only time bound is a liveness one: a stop must *end* (issue 10).
"""

from __future__ import annotations

import ast
import asyncio
import signal
from pathlib import Path

import pytest

from corral.errors import DiskFull
from corral.settings import load_settings
from corral.store import instances as table
from corral.store.db import Store
from corral.supervisor import supervisor as sup_mod
from corral.supervisor.states import Event, InvalidTransition, State
from corral.supervisor.supervisor import LaunchSpec, Supervisor

# --------------------------------------------------------------------------- fakes


class FakeHandle:
    """Duck-types ProcessHandle: exits when told, or on a signal (unless stubborn)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.create_time = 1_000.0 + pid
        self.code: int | None = None
        self.signals: list[int] = []
        self.ignore_term = False

    def poll(self):
        return self.code

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)
        if self.code is None and (sig == signal.SIGKILL or not self.ignore_term):
            self.code = -sig

    def group_alive(self) -> bool:
        return self.code is None


class FakeOps:
    """Duck-types ProcessOps: no process is started; pids count up from 5000."""

    def __init__(self) -> None:
        self.spawned: list[FakeHandle] = []
        self.adoptable: dict[int, FakeHandle] = {}
        self.taken: set[int] = set()

    def spawn(self, argv, env, log_path: Path) -> FakeHandle:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        handle = FakeHandle(5000 + len(self.spawned))
        self.spawned.append(handle)
        return handle

    def adopt(self, pid, create_time, argv):
        handle = self.adoptable.get(pid)
        return handle if handle is not None and handle.code is None else None

    def port_free(self, host: str, port: int) -> bool:
        return port not in self.taken


class ScriptedProbe:
    """Answers per pid: 200 by default, ``None`` (no answer) or a held request."""

    def __init__(self, ops: FakeOps) -> None:
        self.ops = ops
        self.answers: dict[int, int | None] = {}
        self.hold = asyncio.Event()  # set: held probes never answer, ever
        self.swallow = False  # held probes ignore cancellation until released
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self, host: str, port: int, timeout: float):
        self.calls += 1
        pid = self.ops.spawned[-1].pid if self.ops.spawned else None
        if self.hold.is_set():
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    if not self.swallow:
                        raise
                    # the bug class of issue 10: a cancellation eaten by a probe
            return None
        await asyncio.sleep(0)
        return self.answers.get(pid, 200)


FAST = dict(
    probe_interval=0.02,
    probe_timeout=0.1,
    probe_failures=3,
    backoff_initial=0.01,
    backoff_max=0.04,
    stop_timeout=0.3,
    load_timeout=5.0,
    crash_limit=4,
    crash_window=300.0,
)

#: A stop ends within this, whatever the supervision task does (the supervisor's own bound
#: plus slack): the liveness guarantee under test, not a speed figure.
STOP_BOUND = FAST["stop_timeout"] + sup_mod.TASK_CANCEL_GRACE + sup_mod.KILL_WAIT + 3.0


class Rig:
    """A Supervisor on a temp store with fake ops and a scripted probe."""

    def __init__(self, fake_binary: Path, model_file: Path) -> None:
        self.settings = load_settings()
        for key, value in FAST.items():
            setattr(self.settings, key, value)
        self.settings.ensure_dirs()
        self.store = Store(self.settings.db_path)
        self.ops = FakeOps()
        self.probe = ScriptedProbe(self.ops)
        self.binary, self.model = fake_binary, model_file
        self.sup = self.new_supervisor()
        self.states: list[tuple[str, str]] = []

    def new_supervisor(self) -> Supervisor:
        sup = Supervisor(self.settings, self.store, ops=self.ops, probe=self.probe)
        return sup

    def record_states(self, sup: Supervisor | None = None) -> None:
        q = (sup or self.sup).subscribe()

        async def drain():
            while True:
                ev = await q.get()
                if ev["type"] == "state":
                    self.states.append((ev["instance"], ev["state"]))

        self._drain = asyncio.create_task(drain())

    def seen(self, name: str) -> list[str]:
        return [s for n, s in self.states if n == name]

    async def launch(self, name: str = "one", **kw):
        spec = LaunchSpec(model=str(self.model), binary=str(self.binary), name=name, **kw)
        rec = await self.sup.launch(spec)
        return rec

    async def until(self, pred, what: str, timeout: float = 10.0):
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.005)
        return True

    def state(self, name: str = "one") -> State:
        return State(self.sup.get(name).state)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def rig(fake_binary, model_file):
    r = Rig(fake_binary, model_file)
    yield r
    r.store.close()


# --------------------------------------------------------------------------- stop bound


def test_stop_while_loading_ends_though_the_probe_swallows_its_cancellation(rig):
    """Issue 10: a probe that eats CancelledError wedged stop forever (state ready,
    desired stopped, process running, lock held)."""

    async def main():
        rig.probe.hold.set()
        rig.probe.swallow = True
        await rig.launch()
        await rig.until(lambda: rig.probe.calls > 0, "a probe in flight")
        async with asyncio.timeout(STOP_BOUND):
            rec = await rig.sup.stop("one")
        assert rec.state == "stopped" and rec.desired == "stopped"
        assert (
            rig.ops.spawned[0].signals[0] == signal.SIGTERM and rig.ops.spawned[0].code is not None
        )
        # The lock is free: the instance starts again and becomes ready.
        rig.probe.hold.clear()
        async with asyncio.timeout(STOP_BOUND):
            await rig.sup.start_instance("one")
            await rig.sup.wait_ready("one", timeout=5)
        rig.probe.release.set()
        await rig.sup.close()

    run(main())


def test_stop_abandons_a_task_that_ignores_cancellation_and_it_can_no_longer_act(rig):
    async def main():
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        rt = rig.sup._rts["one"]
        await rig.sup._cancel_task(rt)  # take over the task slot with a stubborn one
        release = asyncio.Event()
        acted: list[str] = []

        async def stubborn(_rt):
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    pass  # ignores every cancellation
            try:
                rig.sup._apply(rt, Event.PROBE_FAILED)
                acted.append("wrote a state")
            except sup_mod._StaleTask:
                acted.append("refused")
            try:
                rig.sup._spawn(rt, Event.START)
                acted.append("spawned")
            except sup_mod._StaleTask:
                acted.append("refused")

        rig.sup._run_task(rt, stubborn)
        await asyncio.sleep(0)
        async with asyncio.timeout(STOP_BOUND):
            await rig.sup.stop("one")
        assert rig.sup.abandoned == ["one"]
        assert rig.state() is State.STOPPED
        spawned = len(rig.ops.spawned)
        release.set()
        await asyncio.sleep(0.05)
        assert acted == ["refused", "refused"]
        assert rig.state() is State.STOPPED and len(rig.ops.spawned) == spawned
        await rig.sup.close()

    run(main())


def test_a_cancelled_stop_caller_does_not_leave_the_instance_half_stopped(rig):
    async def main():
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        rig.ops.spawned[0].ignore_term = True  # the stop takes stop_timeout, then SIGKILL
        caller = asyncio.create_task(rig.sup.stop("one"))
        await rig.until(lambda: rig.ops.spawned[0].signals, "SIGTERM sent")
        caller.cancel()  # a client hanging up mid-stop
        with pytest.raises(asyncio.CancelledError):
            await caller
        await rig.until(lambda: rig.state() is State.STOPPED, "stopped all the same", STOP_BOUND)
        assert rig.ops.spawned[0].signals == [signal.SIGTERM, signal.SIGKILL]
        assert table.get(rig.store, "one").state == "stopped"
        await rig.sup.close()

    run(main())


# --------------------------------------------------------------------------- transitions


def test_crash_goes_through_backoff_to_a_new_process(rig):
    async def main():
        rig.record_states()
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        rig.ops.spawned[0].code = 1  # crashes
        await rig.until(
            lambda: len(rig.ops.spawned) == 2 and rig.state() is State.READY, "ready again"
        )
        rec = rig.sup.get("one")
        assert rec.restarts == 1 and rec.pid == rig.ops.spawned[1].pid
        assert table.get(rig.store, "one").restarts == 1  # persisted, not only in memory
        await asyncio.sleep(0)
        assert rig.seen("one") == ["starting", "ready", "backoff", "starting", "ready"]
        await rig.sup.close()

    run(main())


def test_hung_instance_is_killed_then_respawned_through_backoff(rig):
    async def main():
        rig.record_states()
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        rig.probe.answers[rig.ops.spawned[0].pid] = None  # stops answering
        await rig.until(
            lambda: len(rig.ops.spawned) == 2 and rig.state() is State.READY, "respawned and ready"
        )
        assert rig.ops.spawned[0].signals[0] == signal.SIGTERM
        await asyncio.sleep(0)
        assert rig.seen("one") == [
            "starting",
            "ready",
            "unhealthy",
            "unhealthy",
            "unhealthy",
            "backoff",
            "starting",
            "ready",
        ]
        assert table.get(rig.store, "one").restarts == 1
        await rig.sup.close()

    run(main())


def test_crash_loop_ends_failed_at_the_limit(rig):
    async def main():
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        for _ in range(10):
            if rig.state() is State.FAILED:
                break
            handle = rig.ops.spawned[-1]
            await rig.until(lambda: rig.state() is State.READY, "ready")
            handle.code = 1
            await rig.until(
                lambda handle=handle: (
                    rig.state() in (State.FAILED, State.STARTING, State.READY)
                    and rig.ops.spawned[-1] is not handle
                    or rig.state() is State.FAILED
                ),
                "next round",
            )
        assert rig.state() is State.FAILED
        assert len(rig.ops.spawned) == FAST["crash_limit"]
        assert "crashed 4 times" in rig.sup.get("one").last_error
        await rig.sup.close()

    run(main())


def test_first_launch_that_exits_fails_fast_without_restart(rig):
    async def main():
        rig.probe.answers[5000] = 503  # still loading
        await rig.launch()
        rig.ops.spawned[0].code = 2
        await rig.until(lambda: rig.state() is State.FAILED, "failed")
        assert len(rig.ops.spawned) == 1 and rig.sup.get("one").exit_code == 2
        await rig.sup.close()

    run(main())


def test_impossible_event_is_refused_loudly_and_nothing_is_written(rig):
    async def main():
        await rig.launch()
        await rig.sup.stop("one")
        rt = rig.sup._rts["one"]
        with pytest.raises(InvalidTransition):
            rig.sup._apply(rt, Event.HEALTH_OK)
        assert rig.state() is State.STOPPED and table.get(rig.store, "one").state == "stopped"
        await rig.sup.close()

    run(main())


def test_failed_spawn_leaves_no_record_behind(rig):
    async def main():
        def refuse(argv, env, log_path):
            raise ValueError("embedded null byte")

        rig.ops.spawn = refuse
        from corral.errors import BinaryError

        with pytest.raises(BinaryError):
            await rig.launch()
        assert "one" not in rig.sup._rts and table.find(rig.store, "one") is None
        await rig.sup.close()

    run(main())


# --------------------------------------------------------------------------- adoption


def _write_record(rig, name="old", **cols) -> None:
    rec = table.InstanceRecord(
        name=name,
        model=str(rig.model),
        binary=str(rig.binary),
        port=cols.pop("port", 20001),
        host="127.0.0.1",
        flags=[],
        argv=[str(rig.binary)],
        restart_policy=cols.pop("restart", "on-failure"),
        desired=cols.pop("desired", "running"),
        state=cols.pop("state", "ready"),
        pid=cols.pop("pid", None),
        create_time=None,
    )
    table.insert(rig.store, rec)
    if cols:
        table.update(rig.store, name, **cols)


def test_adopted_live_instance_keeps_its_state_and_is_not_spawned(rig):
    async def main():
        live = FakeHandle(4242)
        rig.ops.adoptable[4242] = live
        _write_record(rig, pid=4242, ready_at=1.0)
        await rig.sup.start()
        assert rig.state("old") is State.READY and rig.ops.spawned == []
        live.code = 1  # crashes under the new daemon: restarted, policy on-failure
        await rig.until(lambda: rig.ops.spawned and rig.state("old") is State.READY, "restarted")
        await rig.sup.close()

    run(main())


def test_restart_never_not_honoured_for_instance_that_exited_unwatched(rig):
    """Issue 10: '--restart never' was restarted by the next daemon when the process had
    exited while no daemon watched it."""

    async def main():
        _write_record(rig, pid=999999, restart="never")  # not adoptable: gone
        await rig.sup.start()
        await asyncio.sleep(0.05)
        assert rig.ops.spawned == []
        rec = rig.sup.get("old")
        assert rec.state == "exited" and "restart policy 'never'" in rec.last_error
        assert table.get(rig.store, "old").state == "exited"
        await rig.sup.close()

    run(main())


def test_vanished_on_failure_instance_is_started_again(rig):
    async def main():
        _write_record(rig, pid=999999, restart="on-failure", ready_at=1.0)
        await rig.sup.start()
        await rig.until(lambda: rig.ops.spawned and rig.state("old") is State.READY, "restarted")
        assert rig.sup.get("old").restarts == 1
        await rig.sup.close()

    run(main())


def test_adoption_finishes_a_stop_the_old_daemon_began(rig):
    async def main():
        live = FakeHandle(4343)
        rig.ops.adoptable[4343] = live
        _write_record(rig, pid=4343, desired="stopped", state="stopping")
        await rig.sup.start()
        assert live.signals == [signal.SIGTERM] and rig.state("old") is State.STOPPED
        assert rig.ops.spawned == []
        await rig.sup.close()

    run(main())


# --------------------------------------------------------------------------- full disk


def test_disk_full_supervision_keeps_restarting_crashed_instance(rig, monkeypatch):
    """Issue 10: with the disk full, a crashed on-failure instance was never restarted
    ('supervisor error: database or disk is full'), even after space was freed."""

    async def main():
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        real_update = table.update
        full = True

        def update(store, name, **changes):
            if full:
                raise DiskFull("database or disk is full")
            return real_update(store, name, **changes)

        monkeypatch.setattr(table, "update", update)
        rig.ops.spawned[0].code = 1
        await rig.until(
            lambda: len(rig.ops.spawned) == 2 and rig.state() is State.READY,
            "restarted while the disk is full",
        )
        assert table.get(rig.store, "one").pid == rig.ops.spawned[0].pid  # store lags behind
        full = False  # space freed: the retry loop catches the store up
        await rig.until(
            lambda: table.get(rig.store, "one").pid == rig.ops.spawned[1].pid, "store caught up"
        )
        stored = table.get(rig.store, "one")
        assert stored.state == "ready" and stored.restarts == 1
        await rig.sup.close()

    async def with_flusher():
        await rig.sup.start()
        await main()

    run(with_flusher())


def test_stop_works_while_the_disk_is_full(rig, monkeypatch):
    async def main():
        await rig.launch()
        await rig.sup.wait_ready("one", timeout=5)
        monkeypatch.setattr(
            table, "update", lambda *a, **k: (_ for _ in ()).throw(DiskFull("disk full"))
        )
        rec = await rig.sup.stop("one")
        assert rec.state == "stopped" and rig.ops.spawned[0].code is not None
        await rig.sup.close()

    run(main())


# --------------------------------------------------------------------------- structure


def test_transition_is_the_only_writer_of_state():
    """No code in the supervisor package assigns a state but ``_apply`` (via transition)."""
    src = Path(sup_mod.__file__).parent
    offenders = []
    for path in src.glob("*.py"):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if func.name == "_apply":
                continue
            for node in ast.walk(func):
                targets = []
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and t.attr == "state":
                        offenders.append(f"{path.name}:{node.lineno} in {func.name}")
                    if (
                        isinstance(t, ast.Subscript)
                        and isinstance(t.slice, ast.Constant)
                        and t.slice.value == "state"
                    ):
                        offenders.append(f"{path.name}:{node.lineno} in {func.name}")
                if (
                    isinstance(node, ast.keyword)
                    and node.arg == "state"
                    and func.name not in ("offline_records",)
                ):
                    offenders.append(f"{path.name}:{node.lineno} in {func.name} (state=)")
                if (
                    isinstance(node, ast.Dict)
                    and any(isinstance(k, ast.Constant) and k.value == "state" for k in node.keys)
                    and func.name != "_emit"
                ):
                    offenders.append(f"{path.name}:{node.lineno} in {func.name} ({{'state': ..}})")
    # offline.py marks dead processes EXITED for display only (never written): allowed.
    offenders = [o for o in offenders if not o.startswith("offline.py")]
    # launch() creates the record at rest (STOPPED) before the START event.
    offenders = [o for o in offenders if " in launch (state=)" not in o]
    assert offenders == []


def test_deleted_db_under_running_supervisor_keeps_every_instance_listed(rig):
    """Issue 10: a deleted corral.db under a running daemon lost an instance from the
    list; the rebuilt store gets every instance back, as memory has it."""

    async def main():
        await rig.launch("one")
        await rig.launch("two")
        await rig.sup.wait_ready("one", timeout=5)
        await rig.sup.wait_ready("two", timeout=5)
        rig.settings.db_path.unlink()
        await rig.sup.stop("two")  # the next write notices, rebuilds, re-registers
        assert rig.settings.db_path.exists()
        fresh = Store(rig.settings.db_path)
        try:
            rows = {r.name: r for r in table.list_all(fresh)}
        finally:
            fresh.close()
        assert set(rows) == {"one", "two"}
        assert rows["two"].state == "stopped" and rows["one"].state == "ready"
        assert rows["one"].pid == rig.sup.get("one").pid
        await rig.sup.close()

    run(main())


# --------------------------------------------------------------------------- memory plan


def _dense(rig) -> Path:
    from tests.fakes.gguf_shapes import dense_14b

    return dense_14b(rig.model.parent / "dense-14b.gguf")


def test_launch_is_planned_and_records_its_placement(rig):
    """Issue 11: every launch that does not fix -ngl/-ts/--device gets the planner's
    flags, and the instance keeps its plan (devices and bytes per device)."""
    rig.settings.fit_devices = "12GiB,8GiB,host=64GiB"

    async def main():
        model = _dense(rig)
        rec = await rig.sup.launch(
            LaunchSpec(model=str(model), binary=str(rig.binary), name="big", flags=["-c", "8192"])
        )
        placement = rec.placement
        assert placement and placement["fits"]
        gpus = [d for d in placement["devices"] if d["kind"] == "gpu"]
        assert sum(d["layers"] for d in gpus) > 0
        for d in placement["devices"]:
            assert d["used_bytes"] <= d["free_bytes"] - 1024**3  # the margin holds
        assert "--gpu-layers" in rec.argv and rec.argv[rec.argv.index("--ctx-size") + 1] == "8192"
        assert table.get(rig.store, "big").placement == placement  # persisted
        await rig.sup.close()

    run(main())


def test_second_launch_counts_what_the_first_holds_and_is_refused_past_free_memory(rig):
    """Two models never get placed on one card past its free memory: the first one's
    projection counts before any driver shows it."""
    from corral.errors import NoRoom

    rig.settings.fit_devices = "12GiB,host=12GiB"

    async def main():
        model = _dense(rig)
        spec = dict(model=str(model), binary=str(rig.binary), flags=["-c", "8192"])
        first = await rig.sup.launch(LaunchSpec(name="a", **spec))
        assert first.placement["fits"]
        plan = await rig.sup.plan_fit(LaunchSpec(name="b", **spec))
        assert plan is not None
        with pytest.raises(NoRoom) as err:
            await rig.sup.launch(LaunchSpec(name="b", **spec))
        assert err.value.short_bytes and "does not fit" in err.value.message
        assert table.find(rig.store, "b") is None
        # --no-fit launches exactly what was typed, plan or not.
        rec = await rig.sup.launch(LaunchSpec(name="c", fit=False, **spec))
        assert rec.placement is None and "--gpu-layers" not in rec.argv
        # Once the first is stopped its memory is free again.
        await rig.sup.stop("a")
        again = await rig.sup.launch(LaunchSpec(name="b", **spec))
        assert again.placement["fits"]
        await rig.sup.close()

    run(main())


def test_user_placed_launch_is_not_planned(rig):
    rig.settings.fit_devices = "12GiB"

    async def main():
        rec = await rig.sup.launch(
            LaunchSpec(
                model=str(_dense(rig)), binary=str(rig.binary), name="mine", flags=["-ngl", "10"]
            )
        )
        assert rec.placement is None
        assert rec.argv.count("--gpu-layers") + rec.argv.count("--n-gpu-layers") == 1
        await rig.sup.close()

    run(main())


def test_a_launch_over_rpc_servers_is_not_planned_for_the_local_devices_alone(rig):
    rig.settings.fit_devices = "12GiB"

    async def main():
        flags = ["--rpc", "10.0.0.2:50052"]
        spec = LaunchSpec(model=str(_dense(rig)), binary=str(rig.binary), name="r", flags=flags)
        rec = await rig.sup.launch(spec)
        assert rec.placement is None and "--rpc" in rec.argv
        assert "--gpu-layers" not in rec.argv and "--n-gpu-layers" not in rec.argv
        await rig.sup.close()

    run(main())


def test_model_that_cannot_be_estimated_launches_as_typed(rig):
    async def main():
        rec = await rig.launch("plain")  # a GGUF magic and nothing else
        assert rec.placement is None and rig.state("plain") is State.STARTING
        await rig.sup.close()

    run(main())


def _spawn_printing(rig, scale: float):
    """FakeOps.spawn that writes llama-server's buffer lines: ``scale`` x the plan."""
    real_spawn = rig.ops.spawn

    def spawn(argv, env, log_path):
        handle = real_spawn(argv, env, log_path)
        rec = next(rt.rec for rt in rig.sup._rts.values() if rt.rec.argv == argv)
        lines = ["--- corral 2026-12-02 00:00:00: " + " ".join(argv)]
        for d in rec.placement["devices"]:
            buf = "CPU" if d["id"] == "host" else f"CUDA{d['id'][3:]}"
            mib = d["used_bytes"] * scale / 2**20
            lines.append(f"0.01 I load_tensors:   {buf} model buffer size = {mib:.2f} MiB")
        log_path.write_text("old launch noise\n" + "\n".join(lines) + "\n")
        return handle

    rig.ops.spawn = spawn


def test_real_allocation_is_read_back_after_load(rig):
    """Issue 11 part 6: what llama-server reports it allocated lands in the placement."""
    rig.settings.fit_devices = "12GiB,8GiB,host=64GiB"
    _spawn_printing(rig, 1.0)

    async def main():
        rec = await rig.sup.launch(
            LaunchSpec(
                model=str(_dense(rig)), binary=str(rig.binary), name="big", flags=["-c", "8192"]
            )
        )
        assert rec.argv[-2:] == ["--verbosity", "4"] or "--verbosity" in rec.argv
        await rig.sup.wait_ready("big", timeout=5)
        await rig.until(lambda: (rig.sup.get("big").placement or {}).get("real"), "real read")
        placement = rig.sup.get("big").placement
        for d in placement["devices"]:
            if d["used_bytes"]:
                assert abs(placement["real"][d["id"]] - d["used_bytes"]) < 2**20
        assert placement["mismatch"] == []
        assert table.get(rig.store, "big").placement["real"] == placement["real"]
        await rig.sup.close()

    run(main())


def test_real_allocation_far_from_the_plan_is_a_warning(rig, caplog):
    rig.settings.fit_devices = "12GiB,8GiB,host=64GiB"
    _spawn_printing(rig, 1.5)

    async def main():
        await rig.sup.launch(
            LaunchSpec(
                model=str(_dense(rig)), binary=str(rig.binary), name="big", flags=["-c", "8192"]
            )
        )
        await rig.sup.wait_ready("big", timeout=5)
        await rig.until(lambda: (rig.sup.get("big").placement or {}).get("real"), "real read")
        mismatch = rig.sup.get("big").placement["mismatch"]
        assert mismatch and all(m["real_bytes"] > m["projected_bytes"] for m in mismatch)
        await rig.sup.close()

    with caplog.at_level("WARNING", logger="corral.supervisor"):
        run(main())
    assert any("the plan said" in r.getMessage() for r in caplog.records)


def test_user_verbosity_is_kept(rig):
    rig.settings.fit_devices = "12GiB"

    async def main():
        rec = await rig.sup.launch(
            LaunchSpec(
                model=str(_dense(rig)), binary=str(rig.binary), name="quiet", flags=["-lv", "1"]
            )
        )
        assert rec.argv.count("--verbosity") + rec.argv.count("-lv") == 1
        assert rec.argv[rec.argv.index("--verbosity") + 1] == "1"
        await rig.sup.close()

    run(main())
