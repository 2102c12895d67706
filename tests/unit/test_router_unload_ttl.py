"""The router's public unload and the supervisor's ``set_idle_ttl``, in process (fake
process ops, a scripted probe): a changed TTL is kept in the store and decides the next
idle check; an unload forgets a router instance's counters and metric series."""

from __future__ import annotations

import asyncio
import time

import pytest

from corral.errors import NotFound, UsageError
from corral.router import Router, Target
from corral.store import instances as table
from tests.unit.test_supervisor_inprocess import Rig


@pytest.fixture
def rig(fake_binary, model_file):
    r = Rig(fake_binary, model_file)
    yield r
    r.store.close()


def served(router: Router, rec, label: str = "m") -> None:
    """One finished request on ``rec``, counted and in the metrics."""
    u = router.begin(rec, label)
    router.end(rec, label, u, status=200, ttft=0.01, elapsed=0.02, tail=None, endpoint="chat")


def requests_of(router: Router, instance: str, label: str = "m") -> float | None:
    """The instance's ``corral_requests_total`` series (None: there is none)."""
    labels = {"model": label, "instance": instance, "endpoint": "chat", "status": "200"}
    return router.metrics.registry.get_sample_value("corral_requests_total", labels)


def test_set_idle_ttl_is_kept_and_decides_the_next_idle_check(rig):
    async def main():
        rig.settings.idle_ttl = 3600
        await rig.launch("r", origin="router")
        await rig.sup.wait_ready("r", timeout=5)
        router = Router(rig.sup)
        served(router, rig.sup.get("r"))
        router._last_used["r"] = time.monotonic() - 30  # idle for 30 s
        assert await router.reap_idle_once() == []  # the default TTL: an hour
        rec = rig.sup.set_idle_ttl("r", 10)
        assert rec.idle_ttl == 10 and table.get(rig.store, "r").idle_ttl == 10
        assert router.idle_ttl_of(rec) == 10
        assert await router.reap_idle_once() == ["r"]
        assert rig.sup.find("r") is None and "r" not in router.usage()["instances"]

    asyncio.run(main())


def test_set_idle_ttl_refuses_bad_values_and_unknown_names(rig):
    async def main():
        await rig.launch("u")
        with pytest.raises(UsageError):
            rig.sup.set_idle_ttl("u", -1)
        with pytest.raises(NotFound):
            rig.sup.set_idle_ttl("nope", 5)
        assert rig.sup.set_idle_ttl("u", 0).idle_ttl == 0  # never
        assert rig.sup.set_idle_ttl("u", None).idle_ttl is None  # the default again
        assert table.get(rig.store, "u").idle_ttl is None

    asyncio.run(main())


def test_unload_forgets_a_router_instance_and_stops_a_users(rig):
    async def main():
        await rig.launch("r", origin="router")
        await rig.launch("u")
        await rig.sup.wait_ready("r", timeout=5)
        await rig.sup.wait_ready("u", timeout=5)
        router = Router(rig.sup)
        served(router, rig.sup.get("r"))
        served(router, rig.sup.get("u"), "mu")
        assert requests_of(router, "r") == 1.0
        assert await router.unload("r") is True
        assert rig.sup.find("r") is None
        assert "r" not in router.usage()["instances"] and requests_of(router, "r") is None
        assert requests_of(router, "u", "mu") == 1.0  # the others' series stay
        assert await router.unload("u") is True
        assert rig.sup.get("u").state == "stopped"  # a user's: stopped, kept
        assert router.may_start(rig.sup.get("u"))  # and started again on demand, as idled
        assert await router.unload("u") is False  # not running any more
        assert await router.unload("nope") is False

    asyncio.run(main())


def test_ensure_refuses_an_instance_target(rig):
    async def main():
        router = Router(rig.sup)
        with pytest.raises(UsageError):
            await router.ensure(Target(key="instance:x", label="x"), flags=("--ctx-size", "8"))

    asyncio.run(main())
