"""``corral update`` as a daemon job: one build at a time, progress to subscribers.

A job runs :func:`corral.builds.update.update` in a worker thread (downloads, cmake and
``--version`` runs block). What update() reports becomes the job's view:

* each ``say`` line becomes ``message`` (the latest) and joins ``log`` (the last 50);
* ``progress(done, total)`` of a release download becomes ``{"unit": "bytes"}``;
  ``progress(percent, line)`` of a source build becomes ``{"unit": "steps"}`` when the
  line is ninja's ``[x/y]``, else ``{"unit": "percent"}`` (make's ``[ 45%]``).

Decisions:

* **One build at a time.** Builds share ``cache/build-work``, ``bin/`` and the CPU. A
  request identical to the running one joins it (like pulls); a different one is a
  :class:`Conflict` naming the running job.
* **Cancelling** raises :class:`Cancelled` from the progress callback, the only point
  where update() hands control back mid-way: a release download keeps its ``.part`` (the
  next update resumes it), a source build kills cmake and removes its staging tree. A
  cancel asked during a step without progress (the release lookup, the sdist download,
  unpacking, ``--version``) takes effect at the next progress point; if none comes the
  job ends ``done`` and ``cancel_requested`` stays true.
* **Jobs live in memory** (there is no table for them): the 20 newest. A daemon restart
  forgets them; the builds they installed are in the store.
* Progress-only changes are published at most every 0.1 s; every other change at once.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from corral.errors import Cancelled, Conflict, CorralError, NotFound, UsageError
from corral.events import Broadcaster
from corral.settings import Settings
from corral.store.db import Store

ACTIVE = ("queued", "running")
LOG_LINES = 50
KEEP_JOBS = 20
PROGRESS_EVERY = 0.1  # seconds between two progress-only events of one job
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclass(frozen=True)
class UpdateRequest:
    """What to install; two equal requests are the same build."""

    from_: str = "release"
    backend: str = "auto"
    version: str | None = None
    source: str | None = None
    force: bool = False

    def describe(self) -> str:
        what = self.version or self.source or "newest"
        return f"--from {self.from_} --backend {self.backend} ({what})" + (
            " --force" if self.force else ""
        )


def make_request(
    from_: str, backend: str, version: str | None, source: str | None, force: bool
) -> UpdateRequest:
    """Validate before any job exists; drop the options the chosen source ignores."""
    from corral.builds.update import BACKENDS, SOURCES

    if from_ not in SOURCES:
        raise UsageError(f"from must be one of {', '.join(SOURCES)}, got {from_!r}")
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if from_ == "source" and not source:
        raise UsageError("from=source needs a source: a directory, a tarball URL or a tag")
    if from_ == "release" and version:
        from corral.builds.release import VERSION_RE

        if not VERSION_RE.fullmatch(version):
            raise UsageError(f"{version[:60]!r} is not a release tag (like b6000)")
    if source is not None and "\0" in source:
        raise UsageError("a source may not hold a NUL byte")
    return UpdateRequest(
        from_=from_,
        backend=backend,
        version=(version or None) if from_ == "release" else None,
        source=source if from_ == "source" else None,
        force=bool(force),
    )


@dataclass
class BuildJob:
    """One update run. Fields are replaced whole (never mutated) so views stay consistent."""

    id: str
    request: UpdateRequest
    state: str = "queued"
    phase: str | None = None  # preparing | downloading | building, while running
    message: str = ""
    log: tuple[str, ...] = ()
    progress: dict | None = None  # {"done", "total", "unit"}
    build: dict | None = None
    error: str | None = None
    error_code: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def view(self) -> dict:
        r = self.request
        return {
            "id": self.id,
            "state": self.state,
            "from": r.from_,
            "backend": r.backend,
            "version": r.version,
            "source": r.source,
            "force": r.force,
            "phase": self.phase,
            "message": self.message,
            "log": list(self.log),
            "progress": self.progress,
            "build": self.build,
            "error": self.error,
            "error_code": self.error_code,
            "cancel_requested": self.cancel.is_set(),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


def progress_of(args: tuple) -> tuple[str, dict | None]:
    """(phase, progress) from one call of update()'s progress callback.

    Releases call ``progress(done_bytes, total_bytes_or_None)``; source builds call
    ``progress(percent_or_None, output_line)``. None: the call carries no figure.
    """
    if len(args) >= 2 and isinstance(args[1], str):
        m = _NINJA.match(args[1])
        if m and int(m.group(2)):
            return "building", {"done": int(m.group(1)), "total": int(m.group(2)), "unit": "steps"}
        if isinstance(args[0], int):
            return "building", {"done": args[0], "total": 100, "unit": "percent"}
        return "building", None
    if args and isinstance(args[0], int):
        total = args[1] if len(args) >= 2 and isinstance(args[1], int) else None
        return "downloading", {"done": args[0], "total": total, "unit": "bytes"}
    return "preparing", None


def one_line(text: str, limit: int = 500) -> str:
    """The first non-empty line of an error message, capped (the UI shows one line)."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


class BuildJobs:
    """Runs build installs in the daemon and publishes their progress on ``events``."""

    def __init__(
        self, settings: Settings, store: Store, runner: Callable[..., object] | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.events = Broadcaster()
        self.jobs: dict[str, BuildJob] = {}
        self._runner = runner  # update() unless a test injects one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Task] = {}  # job id -> its worker, while it runs
        self._last_emit: dict[str, float] = {}

    # -- API ---------------------------------------------------------------------------
    def list(self) -> list[BuildJob]:
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)

    def get(self, job_id: str) -> BuildJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no build job {job_id!r}")
        return job

    def active(self) -> BuildJob | None:
        return next((j for j in self.jobs.values() if j.state in ACTIVE), None)

    async def start(
        self,
        from_: str = "release",
        backend: str = "auto",
        version: str | None = None,
        source: str | None = None,
        force: bool = False,
    ) -> BuildJob:
        """Start an update; the identical one already running is returned instead."""
        request = make_request(from_, backend, version, source, force)
        running = self.active()
        if running is not None:
            if running.request == request:
                return running
            raise Conflict(
                f"build job {running.id} ({running.request.describe()}) is running; "
                "wait for it or cancel it first"
            )
        self._loop = asyncio.get_running_loop()
        job = BuildJob(id=uuid.uuid4().hex[:12], request=request)
        self.jobs[job.id] = job
        self._prune()
        task = asyncio.create_task(asyncio.to_thread(self._run, job))
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))
        self._emit(job)
        return job

    def cancel(self, job_id: str) -> BuildJob:
        """Ask a running job to stop at its next progress point (see the module docstring)."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            job.cancel.set()
            self._emit(job)
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> BuildJob:
        """The job once it ended (its last event published), or as it is after ``timeout``."""
        job = self.get(job_id)
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
        return job

    async def close(self) -> None:
        """Stop publishing (running builds are cancelled)."""
        for job in self.jobs.values():
            job.cancel.set()
        if self._tasks:  # workers notice the cancel at their next progress point
            await asyncio.wait(set(self._tasks.values()), timeout=5)
        self._loop = None

    # -- worker thread -----------------------------------------------------------------
    def _run(self, job: BuildJob) -> None:
        job.state, job.phase, job.started_at = "running", "preparing", time.time()
        self._emit(job)
        r = job.request
        try:
            if job.cancel.is_set():
                raise Cancelled("build cancelled")
            rec = self._update()(
                self.settings,
                self.store,
                backend=r.backend,
                from_=r.from_,
                version=r.version,
                source=r.source,
                force=r.force,
                say=lambda msg: self._say(job, msg),
                progress=lambda *args: self._progress(job, args),
            )
            job.build, job.state = rec.to_dict(), "done"
        except Cancelled:
            job.state, job.error, job.error_code = "cancelled", "build cancelled", Cancelled.code
        except CorralError as exc:
            job.state, job.error, job.error_code = "failed", one_line(exc.message), exc.code
        except Exception as exc:  # noqa: BLE001 - a job must end, whatever went wrong
            job.state, job.error_code = "failed", "internal"
            job.error = one_line(f"{type(exc).__name__}: {exc}")
        job.phase, job.ended_at = None, time.time()
        self._emit(job)

    def _update(self) -> Callable[..., object]:
        if self._runner is None:
            from corral.builds.update import update

            self._runner = update
        return self._runner

    def _say(self, job: BuildJob, msg: str) -> None:
        job.message = msg
        job.log = (*job.log, msg)[-LOG_LINES:]
        self._emit(job)

    def _progress(self, job: BuildJob, args: tuple) -> None:
        if job.cancel.is_set():
            raise Cancelled("build cancelled")  # unwinds update(); see the module docstring
        phase, progress = progress_of(args)
        job.phase = phase
        if progress is None:
            return
        job.progress = progress
        finished = progress["total"] is not None and progress["done"] >= progress["total"]
        self._emit(job, throttle=not finished)

    def _emit(self, job: BuildJob, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self._last_emit.get(job.id, float("-inf")) < PROGRESS_EVERY:
            return
        self._last_emit[job.id] = now
        loop = self._loop
        if loop is None:
            return
        payload = {"type": "build", **job.view()}
        try:
            loop.call_soon_threadsafe(self.events.publish, payload)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _prune(self) -> None:
        """Keep the newest jobs (the active one always: it is the newest)."""
        for job in self.list()[KEEP_JOBS:]:
            del self.jobs[job.id]
            self._last_emit.pop(job.id, None)
