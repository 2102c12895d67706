import pytest

from corral.supervisor.states import (
    Event,
    InvalidTransition,
    State,
    backoff_delay,
    recent,
    should_restart,
    transition,
)


@pytest.mark.parametrize(
    "state,event,kwargs,expected",
    [
        (State.STOPPED, Event.START, {}, State.STARTING),
        (State.FAILED, Event.START, {}, State.STARTING),
        (State.STARTING, Event.HEALTH_OK, {}, State.READY),
        (State.READY, Event.PROBE_FAILED, {}, State.UNHEALTHY),
        (State.UNHEALTHY, Event.PROBE_FAILED, {}, State.UNHEALTHY),
        (State.UNHEALTHY, Event.HEALTH_OK, {}, State.READY),
        (State.UNHEALTHY, Event.HUNG, {}, State.BACKOFF),
        (State.UNHEALTHY, Event.HUNG, {"give_up": True}, State.FAILED),
        (State.STARTING, Event.LOAD_TIMEOUT, {}, State.FAILED),
        (State.STARTING, Event.EXIT, {"give_up": True}, State.FAILED),
        (State.READY, Event.EXIT, {"restart": True}, State.BACKOFF),
        (State.READY, Event.EXIT, {"restart": False}, State.EXITED),
        (State.READY, Event.EXIT, {"restart": True, "give_up": True}, State.FAILED),
        (State.BACKOFF, Event.BACKOFF_DONE, {}, State.STARTING),
        (State.BACKOFF, Event.STOP, {}, State.STOPPED),
        (State.READY, Event.STOP, {}, State.STOPPING),
        (State.STARTING, Event.STOP, {}, State.STOPPING),
        (State.STOPPING, Event.GONE, {}, State.STOPPED),
        (State.STOPPED, Event.STOP, {}, State.STOPPED),
        (State.STOPPED, Event.SPAWN_FAILED, {}, State.FAILED),
        (State.BACKOFF, Event.SPAWN_FAILED, {}, State.FAILED),
        (State.READY, Event.ADOPT, {}, State.READY),
        (State.STARTING, Event.ADOPT, {}, State.STARTING),
        (State.BACKOFF, Event.ADOPT, {}, State.STARTING),
        (State.STOPPED, Event.ADOPT, {}, State.STARTING),
        (State.READY, Event.VANISHED, {"restart": True}, State.BACKOFF),
        (State.BACKOFF, Event.VANISHED, {"restart": False}, State.EXITED),
        (State.STOPPING, Event.VANISHED, {"restart": True}, State.BACKOFF),
        (State.UNHEALTHY, Event.FAULT, {}, State.FAILED),
        (State.BACKOFF, Event.FAULT, {}, State.FAILED),
    ],
)
def test_transitions(state, event, kwargs, expected):
    assert transition(state, event, **kwargs) is expected


@pytest.mark.parametrize(
    "state,event",
    [
        (State.STOPPED, Event.HEALTH_OK),
        (State.READY, Event.START),
        (State.BACKOFF, Event.HEALTH_OK),
        (State.STARTING, Event.BACKOFF_DONE),
        (State.READY, Event.HUNG),
        (State.STOPPED, Event.EXIT),
        (State.READY, Event.SPAWN_FAILED),
        (State.STOPPED, Event.VANISHED),
        (State.EXITED, Event.FAULT),
        (State.STOPPING, Event.HEALTH_OK),
    ],
)
def test_impossible_transitions_raise(state, event):
    with pytest.raises(InvalidTransition):
        transition(state, event)


def test_every_state_event_pair_is_decided():
    """No pair falls through silently: each either moves or raises InvalidTransition."""
    for state in State:
        for event in Event:
            try:
                assert isinstance(transition(state, event), State)
            except InvalidTransition:
                pass


@pytest.mark.parametrize(
    "policy,code,expected",
    [
        ("always", 0, True),
        ("always", 1, True),
        ("on-failure", 0, False),
        ("on-failure", 1, True),
        ("on-failure", -9, True),
        ("on-failure", None, True),
        ("never", 1, False),
        ("never", -11, False),
    ],
)
def test_restart_policy(policy, code, expected):
    assert should_restart(policy, code) is expected


def test_backoff_doubles_and_caps():
    assert [backoff_delay(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(3, initial=0.5, cap=1.5) == 1.5


def test_recent_window():
    assert recent([1.0, 50.0, 299.0, 400.0], now=400.0, window=300.0) == [299.0, 400.0]
