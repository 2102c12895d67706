"""What the CLI can do with instances when no daemon runs: look, and stop them."""

from __future__ import annotations

import os
import signal
import time

from corral.settings import Settings
from corral.store import instances as table
from corral.store.db import Store
from corral.supervisor.process import same_process
from corral.supervisor.states import RESTING, State


def offline_records(settings: Settings) -> list[table.InstanceRecord]:
    """Instances as the store has them, with states corrected for dead processes."""
    if not settings.db_path.exists():
        return []
    store = Store(settings.db_path)
    try:
        records = table.list_all(store)
    finally:
        store.close()
    for rec in records:
        if State(rec.state) not in RESTING and not (
            rec.pid and same_process(rec.pid, rec.create_time)
        ):
            rec.state = State.EXITED.value
            rec.last_error = rec.last_error or "process gone while the daemon was not running"
            rec.pid = None
    return records


def stop_all_offline(settings: Settings, timeout: float | None = None) -> list[str]:
    """SIGTERM (then SIGKILL) every live instance group recorded in the store."""
    if not settings.db_path.exists():
        return []
    timeout = settings.stop_timeout if timeout is None else timeout
    store = Store(settings.db_path)
    stopped = []
    try:
        for rec in table.list_all(store):
            if rec.pid and same_process(rec.pid, rec.create_time):
                _stop_group(rec.pid, rec.create_time, timeout)
                stopped.append(rec.name)
            if rec.state != State.STOPPED or rec.desired != "stopped":
                table.update(
                    store,
                    rec.name,
                    state=State.STOPPED.value,
                    desired="stopped",
                    pid=None,
                    create_time=None,
                )
    finally:
        store.close()
    return stopped


def _stop_group(pid: int, create_time: float | None, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not same_process(pid, create_time):
                return
            time.sleep(0.05)
