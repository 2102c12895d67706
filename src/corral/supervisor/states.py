"""Instance states and the rules that move between them. Pure: stdlib only, no I/O.

The supervisor's loops and commands only *produce* events; :func:`transition` decides
the next state, and it is the only place that does (``Supervisor._apply`` is the one
writer that calls it). An event that cannot happen in a state raises
:class:`InvalidTransition`: a supervisor bug, surfaced loudly instead of written.

::

    STOPPED/EXITED/FAILED --start--> STARTING --health ok--> READY <--health ok-- UNHEALTHY
        STOPPED/EXITED/FAILED/BACKOFF --spawn failed (port taken, no binary)--> FAILED
        STARTING --exit (never ready since launch) / load timeout (killed)--> FAILED
        READY --probe failed--> UNHEALTHY --probe failed (below the limit)--> UNHEALTHY
        UNHEALTHY --hung (limit reached, killed)--> BACKOFF (respawn at once) / FAILED (crash loop)
        STARTING/READY/UNHEALTHY --exit--> BACKOFF (policy restarts) / EXITED / FAILED (crash loop)
        BACKOFF --delay over (respawned)--> STARTING
        any state --adopt (a live process found at daemon start)--> STARTING, or stays live
        BACKOFF/STARTING/READY/UNHEALTHY/STOPPING --vanished (gone while no daemon watched)-->
                                              BACKOFF (policy says restart) / EXITED
        any live state --stop--> STOPPING --process gone--> STOPPED;  BACKOFF --stop--> STOPPED
        any state but a resting one --fault (the supervisor itself failed; process killed)--> FAILED
"""

from __future__ import annotations

from enum import StrEnum

from corral.types import RESTART_POLICIES  # noqa: F401 - importable from here, written once


class State(StrEnum):
    STARTING = "starting"  # process spawned, /health not yet 200
    READY = "ready"  # /health answers 200
    UNHEALTHY = "unhealthy"  # alive but failing liveness probes
    BACKOFF = "backoff"  # crashed; waiting before the next start
    STOPPING = "stopping"  # SIGTERM sent, waiting for the group to exit
    STOPPED = "stopped"  # stopped on request
    EXITED = "exited"  # ended by itself and the restart policy says leave it
    FAILED = "failed"  # could not start, or crashed too often


class Event(StrEnum):
    START = "start"  # spawned from rest
    SPAWN_FAILED = "spawn_failed"  # the process could not be started at all
    HEALTH_OK = "health_ok"
    PROBE_FAILED = "probe_failed"
    HUNG = "hung"  # probe failures reached the limit: killed, to be respawned
    EXIT = "exit"  # the process ended by itself
    LOAD_TIMEOUT = "load_timeout"  # never ready within load_timeout: killed
    BACKOFF_DONE = "backoff_done"  # the delay is over and the process was spawned again
    STOP = "stop"
    GONE = "gone"  # the process is gone after a stop
    ADOPT = "adopt"  # a new daemon found the instance's process alive
    VANISHED = "vanished"  # a new daemon found the process gone, and it should run
    FAULT = "fault"  # the supervisor itself failed (a bug); the process was killed


#: States in which a llama-server process exists.
ALIVE = frozenset({State.STARTING, State.READY, State.UNHEALTHY, State.STOPPING})
#: States the supervisor is still working on (a task runs for them).
ACTIVE = ALIVE | {State.BACKOFF}
#: States that need an explicit start to leave.
RESTING = frozenset({State.STOPPED, State.EXITED, State.FAILED})


class InvalidTransition(ValueError):
    """The event cannot happen in that state (a supervisor bug, never user input)."""


def transition(
    state: State, event: Event, *, restart: bool = False, give_up: bool = False
) -> State:
    """Next state after ``event``.

    ``restart``: on EXIT, whether the restart policy wants the process back.
    ``give_up``: on EXIT or HUNG, whether the crash limit is reached (or, for an exit
    while starting, whether the instance has never been ready: fail fast).
    """
    if event is Event.STOP:
        if state is State.BACKOFF:
            return State.STOPPED  # BACKOFF -> STOPPED: nothing to kill
        if state in ALIVE:
            return State.STOPPING  # live -> STOPPING: SIGTERM the group
        if state in RESTING:
            return state  # already at rest: stopping again is a no-op
    if event is Event.START and state in RESTING:
        return State.STARTING  # STOPPED/EXITED/FAILED -> STARTING
    if event is Event.SPAWN_FAILED and (state in RESTING or state is State.BACKOFF):
        return State.FAILED  # nothing runs: the user must fix the cause and start again
    if event is Event.GONE and state is State.STOPPING:
        return State.STOPPED  # STOPPING -> STOPPED
    if event is Event.HEALTH_OK and state in (State.STARTING, State.UNHEALTHY, State.READY):
        return State.READY  # STARTING -> READY; UNHEALTHY -> READY (recovered)
    if event is Event.PROBE_FAILED and state in (State.READY, State.UNHEALTHY):
        return State.UNHEALTHY  # READY -> UNHEALTHY; stays UNHEALTHY below the limit
    if event is Event.HUNG and state is State.UNHEALTHY:
        # UNHEALTHY -> BACKOFF: killed, respawned without delay; or FAILED: crash loop
        return State.FAILED if give_up else State.BACKOFF
    if event is Event.LOAD_TIMEOUT and state is State.STARTING:
        return State.FAILED  # STARTING -> FAILED: never became ready in time
    if event is Event.EXIT and state in (State.STARTING, State.READY, State.UNHEALTHY):
        if give_up:
            return State.FAILED  # exit on first load, or crash loop -> FAILED
        return State.BACKOFF if restart else State.EXITED  # policy decides
    if event is Event.BACKOFF_DONE and state is State.BACKOFF:
        return State.STARTING  # BACKOFF -> STARTING
    if event is Event.ADOPT:
        if state in (State.STARTING, State.READY, State.UNHEALTHY):
            return state  # keep watching from where it was (a loading one keeps loading)
        return State.STARTING  # record lagged behind the process: probe it from the start
    if event is Event.VANISHED and (state in ACTIVE):
        return State.BACKOFF if restart else State.EXITED  # policy decides, as for an exit
    if event is Event.FAULT and state not in RESTING:
        return State.FAILED  # any working state -> FAILED: never leave it unwatched
    raise InvalidTransition(f"{event} is not valid in state {state}")


def should_restart(policy: str, exit_code: int | None) -> bool:
    """Whether an instance that exited with ``exit_code`` is restarted under ``policy``.

    A negative or unknown code (killed by a signal, or an adopted process whose status
    we cannot read) counts as a failure.
    """
    if policy == "always":
        return True
    if policy == "never":
        return False
    return exit_code != 0


def backoff_delay(crashes: int, initial: float = 1.0, cap: float = 60.0) -> float:
    """Delay before restart number ``crashes`` (1-based): 1 s, 2 s, 4 s ... capped."""
    if crashes <= 0:
        return 0.0
    return min(cap, initial * 2 ** (crashes - 1))


def recent(times: list[float], now: float, window: float) -> list[float]:
    """The crash times that fall inside the sliding window ending at ``now``."""
    return [t for t in times if now - t <= window]
