"""Pull jobs inside the daemon: plan, download (resumable, verified), register.

A job runs in a worker thread (huggingface_hub is synchronous). Progress goes to
subscribers (SSE) at most every 100 ms per file and to the ``pulls`` table at most once a
second. Cancelling keeps the partial files, so the next pull of the same reference
resumes where this one stopped.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field

from corral import hub as hubmod
from corral.errors import Cancelled, CorralError, NotFound
from corral.events import Broadcaster
from corral.settings import Settings
from corral.store import pulls as table
from corral.store.db import Store

ACTIVE = ("queued", "running")


@dataclass
class PullJob:
    id: str
    ref: str
    state: str = "queued"
    total: int = 0
    done: int = 0
    files: dict[str, dict] = field(default_factory=dict)  # path -> {"done", "total"}
    error: str | None = None
    error_code: str | None = None
    model_id: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    speed: float = 0.0  # bytes/s over the last second or so
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def view(self) -> dict:
        eta = None
        if self.speed > 0 and self.total:
            eta = max(0.0, (self.total - self.done) / self.speed)
        return {
            "id": self.id,
            "ref": self.ref,
            "state": self.state,
            "total": self.total,
            "done": self.done,
            "speed": round(self.speed),
            "eta": eta,
            "files": self.files,
            "error": self.error,
            "error_code": self.error_code,
            "model": self.model_id,
            "created_at": self.created_at,
        }


class PullManager:
    """Runs pull jobs and tells subscribers how they go."""

    def __init__(self, settings: Settings, store: Store, hub_factory=None) -> None:
        self.settings = settings
        self.store = store
        self.hub_factory = hub_factory or (
            lambda: hubmod.Hub(settings.hf_endpoint, settings.hf_token or None)
        )
        self.jobs: dict[str, PullJob] = {}
        self.events = Broadcaster()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()
        self._last_persist: dict[str, float] = {}
        self._load_history()

    def _load_history(self) -> None:
        for row in table.recent(self.store, 100):
            if row["state"] in ACTIVE:  # the daemon died during it: the partial files remain
                row["state"] = "interrupted"
            job = PullJob(**row)
            self.jobs[job.id] = job

    # -- API ---------------------------------------------------------------------------
    def list(self) -> list[PullJob]:
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)

    def get(self, job_id: str) -> PullJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no pull {job_id!r}")
        return job

    async def start(self, ref_text: str) -> PullJob:
        """Start pulling ``ref_text``; an identical pull already running is returned."""
        ref = hubmod.parse_ref(ref_text)  # bad input fails here, before any job exists
        ref = hubmod.ModelRef(
            ref.repo, ref.revision, ref.quant.upper() if ref.quant else None, ref.filename
        )
        for job in self.jobs.values():
            if job.ref.lower() == str(ref).lower() and job.state in ACTIVE:
                return job
        self._loop = asyncio.get_running_loop()
        job = PullJob(id=uuid.uuid4().hex[:12], ref=str(ref))
        self.jobs[job.id] = job
        self._persist(job, insert=True)
        task = asyncio.create_task(asyncio.to_thread(self._run, job, ref))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._emit(job)
        return job

    def cancel(self, job_id: str) -> PullJob:
        job = self.get(job_id)
        if job.state in ACTIVE:
            job.cancel.set()
        return job

    async def wait(self, job_id: str, timeout: float | None = None) -> PullJob:
        job = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.state in ACTIVE and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        return job

    def subscribe(self) -> asyncio.Queue:
        """A queue receiving every event as a dict (for SSE)."""
        return self.events.subscribe()

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.events.unsubscribe(q)

    async def close(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()
        if self._tasks:  # workers notice the cancel at their next chunk
            await asyncio.wait(self._tasks, timeout=5)

    # -- worker thread -----------------------------------------------------------------
    def _run(self, job: PullJob, ref: hubmod.ModelRef) -> None:
        from corral import models

        try:
            hub = self.hub_factory()
            job.state, job.started_at = "running", time.time()
            plan = hub.plan(ref)
            if job.cancel.is_set():
                raise Cancelled("pull cancelled")
            job.total = plan.total_size
            job.files = {f.path: {"done": 0, "total": f.size} for f in plan.all_files}
            self._persist(job)
            self._emit(job)
            dest = self.settings.models_dir / plan.repo
            meter = _Meter()

            def progress(path: str, done: int, total: int | None) -> None:
                job.files[path] = {"done": done, "total": total}
                job.done = sum(f["done"] for f in job.files.values())
                job.speed = meter.speed(job.done)
                self._emit(job)
                self._persist(job, throttle=True)

            paths = hub.download(plan, dest, progress=progress, cancel=job.cancel)
            missing = [p for p in paths if not p.exists()]
            if missing:  # e.g. `corral rm` of a model sharing this mmproj, mid-pull
                raise hubmod.HubError(f"{missing[0].name} vanished during the pull; pull again")
            n = len(plan.files)
            files = [
                {"path": str(p), "size": f.size, "sha256": f.sha256}
                for p, f in zip(paths[:n], plan.files, strict=False)
            ]
            record = models.register_download(
                self.store,
                repo=plan.repo,
                revision=plan.revision,
                filename=plan.files[0].path,
                files=files,
                mmproj=str(paths[n]) if plan.mmproj else None,
                quant=plan.quant,
            )
            job.model_id, job.state, job.done = record.id, "done", job.total
        except Cancelled:
            job.state, job.error = (
                "cancelled",
                "cancelled; the partial download is kept for a resume",
            )
        except CorralError as exc:
            job.state, job.error, job.error_code = "failed", exc.message, exc.code
        except Exception as exc:  # noqa: BLE001 - a job must end, whatever went wrong
            job.state, job.error, job.error_code = (
                "failed",
                f"{type(exc).__name__}: {exc}",
                "internal",
            )
        self._persist(job)
        self._emit(job)

    def _persist(self, job: PullJob, insert: bool = False, throttle: bool = False) -> None:
        now = time.monotonic()
        if throttle and now - self._last_persist.get(job.id, 0.0) < 1.0:
            return
        self._last_persist[job.id] = now
        if insert:
            table.insert(
                self.store, job.id, job.ref, job.state, job.total, job.done, job.created_at
            )
        else:
            table.update(
                self.store, job.id, job.state, job.total, job.done, job.error, job.model_id
            )

    def _emit(self, job: PullJob) -> None:
        if self._loop is None:
            return
        payload = {"type": "pull", **job.view()}

        try:
            self._loop.call_soon_threadsafe(self.events.publish, payload)
        except RuntimeError:  # loop closed during shutdown
            pass


class _Meter:
    """Bytes per second over a sliding window of about two seconds."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []

    def speed(self, done: int) -> float:
        now = time.monotonic()
        self.samples.append((now, done))
        self.samples = [s for s in self.samples if now - s[0] <= 2.0]
        t0, d0 = self.samples[0]
        return (done - d0) / (now - t0) if now > t0 else 0.0
