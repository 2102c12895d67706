"""BuildJobs with a scripted ``update`` in place of the real one: states, progress,
one build at a time, cancellation, errors. The real update() runs in
tests/integration/test_build_jobs.py against the fake release server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from corral.builds.jobs import KEEP_JOBS, LOG_LINES, BuildJobs, progress_of
from corral.errors import BinaryError, Conflict, UsageError
from corral.settings import load_settings
from corral.store.builds import BuildRecord

RECORD = BuildRecord(
    id=7,
    path="/x/bin/b6000-cpu/llama-server",
    version="version: 6000",
    backend="cpu",
    origin="release",
    is_default=True,
    added_at=1.0,
    build="b6000",
)


class Script:
    """A stand-in for update(): says, reports progress, may block until released."""

    def __init__(self, steps=(), error: Exception | None = None, block: bool = False) -> None:
        self.steps = list(steps)  # ("say", text) | ("progress", args)
        self.error = error
        self.calls: list[dict] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.block = block
        self.finished_steps = 0

    def __call__(self, settings, store, *, say, progress, **options):
        self.calls.append(options)
        self.entered.set()
        if self.block and not self.release.wait(30):
            raise AssertionError("the test never released the scripted update")
        for kind, arg in self.steps:
            if kind == "say":
                say(arg)
            else:
                progress(*arg)
            self.finished_steps += 1
        if self.error is not None:
            raise self.error
        return RECORD


def jobs_with(script: Script) -> BuildJobs:
    return BuildJobs(load_settings(), store=None, runner=script)  # the script needs no store


def run(coro):
    return asyncio.run(coro)


def drain(queue: asyncio.Queue) -> list[dict]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


async def wait_entered(script: Script) -> None:
    await asyncio.to_thread(script.entered.wait, 30)
    assert script.entered.is_set(), "the scripted update never started"


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize(
    "args, phase, progress",
    [
        ((1024, 4096), "downloading", {"done": 1024, "total": 4096, "unit": "bytes"}),
        ((1024, None), "downloading", {"done": 1024, "total": None, "unit": "bytes"}),
        (
            (45, "[ 45%] Building CXX object common/arg.cpp.o"),
            "building",
            {"done": 45, "total": 100, "unit": "percent"},
        ),
        (
            (9, "[12/130] Building CXX object tools/server/server.cpp.o"),
            "building",
            {"done": 12, "total": 130, "unit": "steps"},
        ),
        ((None, "-- Found Threads: TRUE"), "building", None),
    ],
)
def test_progress_callbacks_of_releases_and_source_builds_become_figures(args, phase, progress):
    assert progress_of(args) == (phase, progress)


# --------------------------------------------------------------------------- a job's life


def test_a_job_publishes_every_step_and_ends_done_with_the_build():
    script = Script(
        [
            ("say", "backend: cpu (asked for)"),
            ("progress", (500, 1000)),
            ("progress", (1000, 1000)),
            ("say", "installed b6000-cpu: /x"),
        ]
    )
    jobs = jobs_with(script)

    async def scenario():
        queue = jobs.events.subscribe()
        job = await jobs.start("release", "cpu", version="b6000")
        await jobs.wait(job.id)
        return job, drain(queue)

    job, events = run(scenario())
    view = job.view()
    assert script.calls == [
        {"backend": "cpu", "from_": "release", "version": "b6000", "source": None, "force": False}
    ]
    assert view["state"] == "done" and view["build"] == RECORD.to_dict()
    assert view["log"] == ["backend: cpu (asked for)", "installed b6000-cpu: /x"]
    assert view["message"] == "installed b6000-cpu: /x"
    assert view["progress"] == {"done": 1000, "total": 1000, "unit": "bytes"}
    assert view["error"] is None and view["phase"] is None
    assert view["started_at"] <= view["ended_at"]
    assert all(e["type"] == "build" and e["id"] == job.id for e in events)
    states = [e["state"] for e in events]
    assert states[0] == "queued" and states[-1] == "done" and "running" in states
    assert {"done": 1000, "total": 1000, "unit": "bytes"} in [e["progress"] for e in events]
    assert events[-1] == {"type": "build", **view}
    assert [j.id for j in jobs.list()] == [job.id] and jobs.get(job.id) is job


def test_the_log_keeps_the_last_lines_only():
    script = Script([("say", f"line {i}") for i in range(LOG_LINES + 7)])
    jobs = jobs_with(script)

    async def scenario():
        job = await jobs.start("release", "cpu")
        return await jobs.wait(job.id)

    view = run(scenario()).view()
    assert view["log"] == [f"line {i}" for i in range(7, LOG_LINES + 7)]


def test_a_failing_update_ends_failed_with_a_one_line_error():
    script = Script(
        [("say", "backend: cpu (asked for)")],
        error=BinaryError("cmake build failed (exit 2); see build.log\nerror: x.cpp:1"),
    )
    jobs = jobs_with(script)

    async def scenario():
        job = await jobs.start("pypi", "cpu")
        return await jobs.wait(job.id)

    view = run(scenario()).view()
    assert view["state"] == "failed" and view["build"] is None
    assert view["error"] == "cmake build failed (exit 2); see build.log"
    assert view["error_code"] == "no_binary"


def test_an_unexpected_exception_still_ends_the_job():
    jobs = jobs_with(Script(error=KeyError("tag_name")))

    async def scenario():
        job = await jobs.start("release", "cpu")
        return await jobs.wait(job.id)

    view = run(scenario()).view()
    assert view["state"] == "failed" and view["error_code"] == "internal"
    assert view["error"] == "KeyError: 'tag_name'"


# --------------------------------------------------------------------------- one at a time


def test_an_identical_request_joins_and_a_different_one_conflicts():
    script = Script(block=True)
    jobs = jobs_with(script)

    async def scenario():
        first = await jobs.start("release", "cpu")
        await wait_entered(script)
        joined = await jobs.start("release", "cpu")
        with pytest.raises(Conflict) as conflict:
            await jobs.start("release", "vulkan")
        assert first.state == "running"
        script.release.set()
        await jobs.wait(first.id)
        again = await jobs.start("release", "vulkan")  # free once the first ended
        await jobs.wait(again.id)
        return first, joined, conflict.value, again

    first, joined, conflict, again = run(scenario())
    assert joined is first
    assert first.id in conflict.message and "--backend cpu" in conflict.message
    assert first.state == "done" and again.state == "done" and again.id != first.id
    assert len(script.calls) == 2


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(from_="git"), "from must be one of"),
        (dict(backend="opencl"), "backend must be one of"),
        (dict(from_="source"), "needs a source"),
    ],
)
def test_bad_options_fail_before_any_job_exists(options, words):
    script = Script()
    jobs = jobs_with(script)
    with pytest.raises(UsageError, match=words):
        run(jobs.start(**options))
    assert jobs.list() == [] and script.calls == []


def test_options_the_source_ignores_do_not_make_requests_differ():
    script = Script(block=True)
    jobs = jobs_with(script)

    async def scenario():
        first = await jobs.start("pypi", "cpu", version="b1", source="/somewhere")
        joined = await jobs.start("pypi", "cpu")
        script.release.set()
        await jobs.wait(first.id)
        return first, joined

    first, joined = run(scenario())
    assert joined is first
    assert first.view()["version"] is None and first.view()["source"] is None


# --------------------------------------------------------------------------- cancel, close


def test_cancel_takes_effect_at_the_next_progress_point():
    script = Script([("progress", (10, 100)), ("say", "installed (must not happen)")], block=True)
    jobs = jobs_with(script)

    async def scenario():
        job = await jobs.start("release", "cpu")
        await wait_entered(script)
        jobs.cancel(job.id)
        assert job.view()["cancel_requested"] is True and job.state == "running"
        script.release.set()
        return await jobs.wait(job.id)

    view = run(scenario()).view()
    assert view["state"] == "cancelled" and view["error_code"] == "cancelled"
    assert script.finished_steps == 0 and view["build"] is None
    assert "installed (must not happen)" not in view["log"]


def test_a_cancel_that_finds_no_progress_point_lets_the_job_finish():
    script = Script([("say", "installed b6000-cpu: /x")], block=True)
    jobs = jobs_with(script)

    async def scenario():
        job = await jobs.start("release", "cpu")
        await wait_entered(script)
        jobs.cancel(job.id)
        script.release.set()
        return await jobs.wait(job.id)

    view = run(scenario()).view()
    assert view["state"] == "done" and view["cancel_requested"] is True


def test_close_cancels_the_running_job():
    script = Script([("progress", (10, 100))], block=True)
    jobs = jobs_with(script)

    async def scenario():
        job = await jobs.start("release", "cpu")
        await wait_entered(script)
        closing = asyncio.create_task(jobs.close())
        await asyncio.sleep(0)  # close() has set the cancel flags before it waits
        script.release.set()
        await closing
        return job

    assert run(scenario()).state == "cancelled"


def test_only_the_newest_finished_jobs_are_kept():
    jobs = jobs_with(Script())

    async def scenario():
        ids = []
        for _ in range(25):
            job = await jobs.start("release", "cpu")
            await jobs.wait(job.id)
            ids.append(job.id)
        return ids

    ids = run(scenario())
    kept = [j.id for j in jobs.list()]
    assert len(kept) == KEEP_JOBS
    assert kept[0] == ids[-1] and ids[0] not in kept
