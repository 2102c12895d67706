"""Pure parts of the router: request parsing and reading usage from responses."""

from __future__ import annotations

import json

import pytest

from corral.errors import CorralError
from corral.router import parse_request, usage_from


def test_parse_request_finds_model_and_stream():
    assert parse_request(b'{"model": "m", "stream": true}') == ("m", True)
    assert parse_request(b'{"model": "m", "stream": "yes"}') == ("m", False)


@pytest.mark.parametrize(
    "body, msg",
    [
        (b"{nope", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"model": ""}', 'needs a "model"'),
        (b'{"model": 3}', 'needs a "model"'),
    ],
)
def test_parse_request_rejects_bad_bodies(body, msg):
    with pytest.raises(CorralError) as err:
        parse_request(body)
    assert err.value.status == 400 and msg in err.value.message


def sse(*objs) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"
    )


def test_usage_from_a_llama_server_stream_uses_timings():
    data = sse(
        {"choices": [{"delta": {"content": "a"}}]},
        {
            "choices": [{"finish_reason": "stop"}],
            "timings": {"prompt_n": 11, "predicted_n": 5, "predicted_per_second": 42.5},
        },
    )
    assert usage_from(data) == (11, 5, 42.5)


def test_usage_from_a_stream_with_include_usage_prefers_usage_counts():
    data = sse(
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}},
        {"choices": [], "timings": {"prompt_n": 2, "predicted_n": 4, "predicted_per_second": 10.0}},
    )
    assert usage_from(data) == (9, 4, 10.0)


def test_usage_from_a_json_body():
    body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 8}}).encode()
    assert usage_from(body) == (3, 8, None)


def test_usage_is_read_from_a_window_not_the_whole_body():
    body = json.dumps(
        {
            "data": [{"embedding": [0.5] * 200_000}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 0},
        }
    ).encode()
    assert len(body) > 500_000
    assert usage_from(body) == (4, 0, None)
    inner = json.dumps(
        {
            "choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 99}'}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3},
        }
    ).encode()
    assert usage_from(inner) == (2, 3, None)  # text that looks like usage is escaped JSON


def test_usage_from_says_nothing_when_the_response_does_not():
    assert usage_from(sse({"choices": []})) is None
    assert usage_from(b"not json") is None
    assert usage_from(b'{"usage": "odd"}') is None
    # a truncated tail (the start of the stream was dropped) still parses whole lines
    tail = sse({"timings": {"prompt_n": 1, "predicted_n": 2, "predicted_per_second": 3.0}})
    assert usage_from(b'tial": 1}\n\n' + tail) == (1, 2, 3.0)


# ------------------------------------------------------------ memory eviction (in process)

import asyncio  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from corral.errors import NoRoom  # noqa: E402
from corral.router import Busy, Router  # noqa: E402

GiB = 1024**3


def placed(**used: float) -> dict:
    """A placement record with ``used`` GiB per device id."""
    return {
        "fits": True,
        "devices": [
            {"id": dev, "kind": "host" if dev == "host" else "gpu", "used_bytes": int(n * GiB)}
            for dev, n in used.items()
        ],
    }


class FakeSupervisor:
    """Just what the router's eviction reads: records, a launch that raises NoRoom while
    the devices' free memory (minus every live plan) is short of ``need``, and remove."""

    def __init__(self, free: dict[str, float], need: dict[str, float]) -> None:
        self.settings = SimpleNamespace(router_max_instances=0, router_memory_budget=0)
        self.generation = 0
        self.free, self.need = free, need
        self.recs: dict[str, SimpleNamespace] = {}
        self.removed: list[str] = []
        self.launches = 0

    def add(self, name: str, *, origin="router", pinned=False, state="ready", **used) -> None:
        self.recs[name] = SimpleNamespace(
            name=name,
            origin=origin,
            pinned=int(pinned),
            state=state,
            desired="running",
            model="/m.gguf",
            placement=placed(**used),
        )

    def list(self):
        return list(self.recs.values())

    async def launch(self):
        self.launches += 1
        left = dict(self.free)
        for rec in self.recs.values():
            for d in rec.placement["devices"]:
                left[d["id"]] -= d["used_bytes"] / GiB
        short = {dev: int((n - left[dev]) * GiB) for dev, n in self.need.items() if n > left[dev]}
        if short:
            raise NoRoom("does not fit", short_bytes=short)
        return "launched"

    async def remove(self, name: str) -> None:
        self.removed.append(name)
        del self.recs[name]


def router_over(sup: FakeSupervisor, used_order: list[str], busy: tuple[str, ...] = ()) -> Router:
    router = Router(sup)
    now = time.monotonic()
    for i, name in enumerate(used_order):  # the first was used longest ago
        router._last_used[name] = now - 100 + i
    for name in busy:
        router.begin(sup.recs[name], name)
    return router


def make_room(router: Router, sup: FakeSupervisor):
    async def go():
        async with router._evict_lock:
            return await router._launch_with_room(sup.launch, "new")

    return asyncio.run(go())


def test_eviction_takes_the_lru_instance_on_the_short_device_not_the_lru_overall():
    sup = FakeSupervisor(free={"gpu0": 11, "gpu1": 7}, need={"gpu0": 6})
    sup.add("on-gpu1-oldest", gpu1=6)
    sup.add("on-gpu0-older", gpu0=5)
    sup.add("on-gpu0-newer", gpu0=5)
    router = router_over(sup, ["on-gpu1-oldest", "on-gpu0-older", "on-gpu0-newer"])
    assert make_room(router, sup) == "launched"
    assert sup.removed == ["on-gpu0-older"]  # one was enough: planned again after it


def test_eviction_goes_on_until_the_shortfall_is_covered():
    sup = FakeSupervisor(free={"gpu0": 11, "gpu1": 7}, need={"gpu0": 10})
    sup.add("a", gpu0=4)
    sup.add("b", gpu0=4)
    sup.add("c", gpu1=6)
    router = router_over(sup, ["c", "b", "a"])
    assert make_room(router, sup) == "launched"
    assert sup.removed == ["b", "a"] and sup.launches == 3


def test_pinned_busy_loading_and_user_instances_are_skipped():
    sup = FakeSupervisor(free={"gpu0": 12}, need={"gpu0": 3})  # 1 left: 2 short
    sup.add("pinned", pinned=True, gpu0=2)
    sup.add("busy", gpu0=2)
    sup.add("loading", state="starting", gpu0=2)
    sup.add("users", origin="user", gpu0=2)
    sup.add("idle", gpu0=3)
    router = router_over(sup, ["pinned", "busy", "loading", "users", "idle"], busy=("busy",))
    assert make_room(router, sup) == "launched"
    assert sup.removed == ["idle"]


def test_nothing_is_evicted_when_it_would_not_cover_the_shortfall():
    sup = FakeSupervisor(free={"gpu0": 12}, need={"gpu0": 8})
    sup.add("pinned", pinned=True, gpu0=5)
    sup.add("users", origin="user", gpu0=4)
    sup.add("idle", gpu0=2)
    router = router_over(sup, ["idle", "pinned", "users"])
    with pytest.raises(Busy) as err:
        make_room(router, sup)
    assert sup.removed == [] and err.value.status == 503 and err.value.retry_after > 0
    msg = err.value.message
    assert "gpu0 is short 7.0 GiB" in msg  # 12 - 11 held = 1 free, 8 needed
    assert "pinned (pinned)" in msg and "users (launched by a user)" in msg
    assert "evicting idle would free only 2.0 GiB" in msg


def test_no_room_stands_when_nothing_corral_runs_holds_the_short_device():
    sup = FakeSupervisor(free={"gpu0": 6, "gpu1": 8}, need={"gpu0": 7})
    sup.add("elsewhere", gpu1=6)
    router = router_over(sup, ["elsewhere"])
    with pytest.raises(NoRoom) as err:
        make_room(router, sup)
    assert sup.removed == [] and err.value.status == 409 and err.value.short_bytes == {"gpu0": GiB}


def test_host_budget_counts_planned_host_bytes_else_the_file_size(tmp_path):
    from corral.router import _host_bytes

    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 1000)
    planned = SimpleNamespace(model=str(f), placement=placed(gpu0=6, host=0.5))
    unplanned = SimpleNamespace(model=str(f), placement=None)
    assert _host_bytes(planned) == GiB // 2
    assert _host_bytes(unplanned) == 1000
