"""The pure parts of corral nodes: the health state machine (misses, backoff) with times
passed in, the URL and key checks, the poll summary, and the registry's poll with an
injected clock and httpx's MockTransport (the node's answers), publishing state changes.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from corral.errors import UpstreamError, UsageError
from corral.nodes.fleet import Candidate, Fleet, catalog_of, hop_of, rank
from corral.nodes.health import BACKOFF_CAP, MISSES_DOWN, Health, backoff_cap, poll_timeout
from corral.nodes.registry import NodeRegistry, Tracked, check_key
from corral.nodes.remote import RemoteNode, check_url, served, summarize
from corral.store import nodes as table
from corral.store.db import Store
from corral.store.nodes import NodeRow

SECRET = "crl_" + "s" * 43


# -- health ---------------------------------------------------------------------------


def test_three_misses_in_a_row_make_a_node_down_and_one_answer_up_again():
    h = Health(interval=10.0)
    assert h.state == "unknown"
    assert h.answered(0.0) == "up" and h.next_at == 10.0
    assert h.answered(10.0) is None  # up stays up: nothing to publish
    assert h.missed(20.0, "refused") is None and h.state == "up"
    assert h.missed(30.0, "refused") is None and h.state == "up"
    assert h.answered(40.0) is None and h.misses == 0  # an answer resets the count
    for t in (50.0, 60.0):
        assert h.missed(t, "refused") is None
    assert h.missed(70.0, "refused") == "down"
    assert (h.state, h.misses, h.last_error, h.last_seen) == ("down", MISSES_DOWN, "refused", 40.0)
    assert h.missed(90.0, "refused") is None  # down stays down
    assert h.answered(100.0) == "up"
    assert (h.misses, h.last_error, h.last_seen) == (0, None, 100.0)


def test_a_node_never_seen_goes_from_unknown_to_down_after_three_misses():
    h = Health(interval=1.0)
    assert [h.missed(float(t), "x") for t in range(3)] == [None, None, "down"]


def test_polls_of_a_down_node_back_off_up_to_the_cap():
    h = Health(interval=10.0)
    delays = []
    for t in range(10):
        h.missed(float(t), "gone")
        delays.append(h.next_at - t)
    assert delays[: MISSES_DOWN - 1] == [10.0] * (MISSES_DOWN - 1)  # not down: the interval
    assert max(delays) == backoff_cap(10.0) == BACKOFF_CAP
    assert delays == sorted(delays)  # never shorter while it stays down
    h.answered(100.0)
    assert h.next_at == 110.0  # back to the plain interval


def test_the_backoff_of_short_intervals_stays_a_few_intervals():
    h = Health(interval=0.2)
    for t in range(20):
        h.missed(t * 0.1, "gone")
    assert h.delay() == backoff_cap(0.2) == pytest.approx(1.6)
    assert backoff_cap(100.0) == 100.0  # never below the interval itself


def test_a_poll_timeout_is_the_interval_within_bounds():
    assert [poll_timeout(i) for i in (0.2, 3.0, 10.0)] == [2.0, 3.0, 5.0]


# -- checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("http://127.0.0.1:9380", "http://127.0.0.1:9380"),
        ("http://127.0.0.1:9380/", "http://127.0.0.1:9380"),
        ("https://Box.lan:443", "https://box.lan:443"),
        ("http://[::1]:9380", "http://[::1]:9380"),
        ("http://gpu-box", "http://gpu-box"),
    ],
)
def test_node_urls_that_are_taken(given, want):
    assert check_url(given) == want


@pytest.mark.parametrize(
    "given",
    [
        "",
        "ftp://127.0.0.1:1",
        "127.0.0.1:9380",
        "http://",
        "http://:9380",
        "http://user:pw@127.0.0.1:9380",
        "http://127.0.0.1:9380/../x",
        "http://127.0.0.1:9380/api",
        "http://127.0.0.1:9380?x=1",
        "http://127.0.0.1:9380#x",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1:x",
        "http://bad host:1",
        "http://a\\b:1",
        "http://ü.lan:1",
        "http://127.0.0.1:1\n",
        "http://" + "a" * 3000,
        None,
    ],
)
def test_node_urls_that_are_refused(given):
    with pytest.raises(UsageError) as caught:
        check_url(given)
    assert "pw" not in caught.value.message or "credentials" in caught.value.message


@pytest.mark.parametrize("bad", ["", "a b", "x\n", "k" * 513, "ké", None])
def test_bad_keys_are_refused_without_being_repeated(bad):
    with pytest.raises(UsageError) as caught:
        check_key(bad)
    assert bad is None or bad == "" or bad not in caught.value.message


def test_the_key_is_in_no_repr_nor_view():
    row = NodeRow("box", "http://127.0.0.1:1", SECRET, added_at=1.0)
    assert SECRET not in repr(row) and SECRET not in json.dumps(row.to_dict())
    remote = RemoteNode("box", row.url, SECRET)
    tracked = Tracked(row, remote, Health(1.0))
    assert SECRET not in repr(remote) and SECRET not in json.dumps(tracked.view())
    asyncio.run(remote.close())


def test_the_summary_of_a_node():
    system = {
        "gpus": [{"index": 0, "name": "RTX", "vram_total": 12, "vram_free": 10, "uuid": "u"}],
        "builds": [
            {"is_default": False, "build": "b1", "version": "version: 1 (a)"},
            {"is_default": True, "build": None, "version": "version: 6000 (abc)\nbuilt with"},
        ],
        "ram_free": 5,
    }
    instances = [{"state": "ready"}, {"state": "stopped"}]
    got = summarize({"status": "ok", "version": "0.1.0"}, system, instances, [{}])
    assert got == {
        "corral_version": "0.1.0",
        "llama_cpp_version": "6000 (abc)",
        "gpus": [{"index": 0, "name": "RTX", "vram_total": 12, "vram_free": 10}],
        "ram_free": 5,
        "instances": 2,
        "instances_ready": 1,
        "models": 1,
        "served": [],
    }
    assert summarize({}, {"builds": [{"build": "b6000"}]}, [], [])["llama_cpp_version"] == "b6000"
    assert summarize({}, {}, [], [])["llama_cpp_version"] is None


# -- the registry's poll, with a fake node ------------------------------------------------


class FakeNode:
    """The node's answers through httpx's MockTransport: up, down (refused) or a key
    it does not take; records the Authorization headers it was sent."""

    def __init__(self) -> None:
        self.mode = "up"
        self.auth: set[str] = set()
        self.fits = True
        self.fit_calls = 0
        self.fit_bodies: list = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.auth.add(request.headers.get("authorization", ""))
        if self.mode == "down":
            raise httpx.ConnectError("refused", request=request)
        path = request.url.path
        if path == "/api/v1/fit":
            self.fit_calls += 1
            self.fit_bodies.append(json.loads(request.content))
            return httpx.Response(200, json={"fits": self.fits, "devices": []})
        if self.mode == "bad-key" and path != "/healthz":
            return httpx.Response(401, json={"error": {"code": "unauthorized"}})
        answers = {
            "/healthz": {"status": "ok", "version": "9.9.9"},
            "/api/v1/system": {"gpus": [], "builds": []},
            "/api/v1/instances": [],
            "/api/v1/models": [{"id": "m"}],
            "/v1/models": {"object": "list", "data": [{"id": "m", "state": "stopped"}]},
        }
        return httpx.Response(200, json=answers[path])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_registry(tmp_path, body):
    """Run ``body(registry, fake, clock)`` in an event loop, the registry closed after."""
    fake, clock = FakeNode(), Clock()

    async def main():
        store = Store(tmp_path / "corral.db")
        reg = NodeRegistry(store, lambda: 10.0, clock=clock, transport=httpx.MockTransport(fake))
        try:
            await body(reg, fake, clock)
        finally:
            await reg.close()
            store.close()

    asyncio.run(main())


def test_add_then_polls_publish_down_and_up_once_each(tmp_path):
    async def body(reg, fake, clock):
        events = reg.events.subscribe()
        view = await reg.add("box", "http://10.0.0.2:9380", SECRET)
        assert (view["state"], view["corral_version"], view["models"]) == ("up", "9.9.9", 1)
        assert events.get_nowait()["state"] == "up"
        tracked = reg._nodes["box"]
        tracked.task.cancel()  # the test drives the polls itself, clock in hand
        fake.mode = "down"
        for _ in range(MISSES_DOWN):
            clock.now += 10
            await reg.poll_once(tracked)
        change = events.get_nowait()
        assert (change["node"], change["state"], change["previous"]) == ("box", "down", "up")
        assert "unreachable" in change["error"] and events.empty()
        assert table.get(reg.store, "box").last_seen == 1000.0
        fake.mode = "up"
        clock.now += 15
        await reg.poll_once(tracked)
        assert events.get_nowait()["state"] == "up" and events.empty()
        assert reg.get("box")["last_seen"] == clock.now == table.get(reg.store, "box").last_seen
        assert fake.auth == {f"Bearer {SECRET}"}
        assert SECRET not in json.dumps(reg.views())

    run_registry(tmp_path, body)


def test_add_stores_nothing_when_the_node_refuses_the_key_or_is_gone(tmp_path):
    async def body(reg, fake, clock):
        fake.mode = "bad-key"
        with pytest.raises(UsageError, match="refused the key"):
            await reg.add("box", "http://10.0.0.2:9380", SECRET)
        fake.mode = "down"
        with pytest.raises(UpstreamError, match="unreachable"):
            await reg.add("box", "http://10.0.0.2:9380", SECRET)
        assert table.list_all(reg.store) == [] and reg.views() == []

    run_registry(tmp_path, body)


def test_stored_nodes_start_unknown_and_are_polled_at_once(tmp_path):
    async def body(reg, fake, clock):
        table.insert(reg.store, NodeRow("box", "http://10.0.0.2:9380", SECRET, added_at=1.0))
        reg.start()
        assert reg.get("box")["state"] == "unknown"
        events = reg.events.subscribe()
        got = await asyncio.wait_for(events.get(), 10)
        assert (got["state"], got["previous"]) == ("up", "unknown")
        await reg.remove("box")
        assert reg.views() == [] and table.list_all(reg.store) == []

    run_registry(tmp_path, body)


# -- routing across nodes (corral.nodes.fleet) -------------------------------------------


def test_rank_running_then_fits_then_fewest_instances_then_here_first():
    here = Candidate(None, False, None, 3)
    busy_fit = Candidate("a", False, True, 5)
    idle_fit = Candidate("b", False, True, 1)
    no_fit = Candidate("c", False, False, 0)
    running = Candidate("d", True, False, 9)
    assert [c.node for c in rank([no_fit, here, busy_fit, idle_fit, running])] == [
        "d",
        "b",
        "a",
        None,
        "c",
    ]
    # a tie is broken towards this daemon (no hop), then by name
    assert [
        c.node for c in rank([Candidate("z", False, None, 1), Candidate(None, False, None, 1)])
    ] == [
        None,
        "z",
    ]


def test_catalog_and_served_keep_names_states_and_aliases_only():
    answer = {
        "data": [
            {"id": "m", "kind": "model", "state": "stopped", "model_path": "/secret/m.gguf"},
            {"id": "inst", "kind": "instance", "state": "ready", "aliases": ["fast", 3]},
            {"id": "m", "kind": "instance", "state": "starting"},
            "junk",
            {"id": 5},
        ]
    }
    entries = served(answer)
    assert [e["id"] for e in entries] == ["m", "inst", "m"]
    assert "model_path" not in json.dumps(entries)
    assert catalog_of({"data": entries}) == {"m": True, "inst": True, "fast": True}
    assert served(None) == [] and catalog_of([]) == {}


def test_a_hop_knows_its_node_and_hides_its_key():
    hop = hop_of("box", "https://[fd00::2]:9443", SECRET, "gemma")
    assert (hop.host, hop.port, hop.tls is not None, hop.name) == (
        "fd00::2",
        9443,
        True,
        "gemma@box",
    )
    assert SECRET not in repr(hop) and hop.authorization == f"Bearer {SECRET}".encode()
    assert hop_of("box", "http://10.0.0.2", SECRET, "m").port == 80


def test_placement_is_forgotten_when_the_node_fails_goes_down_or_stops_it(tmp_path):
    async def body(reg, fake, clock):
        fleet = Fleet(reg)
        await reg.add("box", "http://10.0.0.2:9380", SECRET)
        tracked = reg._nodes["box"]
        tracked.task.cancel()
        assert fleet.listed("m") and not fleet.listed("x") and fleet.down_having("m") == []
        fleet.place("m", "box")
        assert fleet.placed("m") == "box"
        fleet.failed("m", "box")
        assert fleet.placed("m") is None
        fleet.place("m", "box")
        await reg.poll_once(tracked)  # the node lists m as stopped: placed afresh next time
        assert fleet.placed("m") is None
        fleet.place("m", "box")
        fake.mode = "down"
        for _ in range(MISSES_DOWN):
            clock.now += 10
            await reg.poll_once(tracked)
        assert fleet.placed("m") is None and not fleet.listed("m")
        assert fleet.down_having("m") == ["box"]
        assert await fleet.candidates("m", Candidate(None, False, None, 0)) == [
            Candidate(None, False, None, 0)
        ]

    run_registry(tmp_path, body)


def test_candidates_ask_the_nodes_planner_once_and_rank_by_it(tmp_path):
    async def body(reg, fake, clock):
        fleet = Fleet(reg, clock=clock)
        await reg.add("box", "http://10.0.0.2:9380", SECRET)
        reg._nodes["box"].task.cancel()
        fake.fits = False
        here = Candidate(None, False, None, 4)
        assert [c.node for c in await fleet.candidates("m", here)] == [None, "box"]
        fake.fits = True  # cached: the node is not asked again within FIT_TTL
        assert [c.node for c in await fleet.candidates("m", here)] == [None, "box"]
        assert fake.fit_calls == 1
        clock.now += 61
        assert [c.node for c in await fleet.candidates("m", here)] == ["box", None]
        assert fake.fit_calls == 2 and fake.fit_bodies[-1] == {"model": "m"}

    run_registry(tmp_path, body)


def test_a_hop_is_made_once_per_node_and_model_and_anew_for_a_re_added_node(tmp_path):
    async def body(reg, fake, clock):
        fleet = Fleet(reg)
        await reg.add("box", "https://10.0.0.2:9443", SECRET)
        first = fleet.hop("box", "m")
        assert first.tls is not None and (first.host, first.port) == ("10.0.0.2", 9443)
        assert fleet.hop("box", "m") is first  # no new TLS context per request
        assert fleet.hop("box", "n").tls is first.tls
        await reg.remove("box")
        with pytest.raises(LookupError):
            fleet.hop("box", "m")
        await reg.add("box", "http://10.0.0.3:9380", "k" * 40)
        again = fleet.hop("box", "m")
        assert again.tls is None and again.authorization == b"Bearer " + b"k" * 40

    run_registry(tmp_path, body)


def test_the_help_of_corral_nodes_names_every_command_that_takes_node(monkeypatch):
    """`corral nodes --help` is where a user learns --node: it names each command that
    takes it (NODE_COMMANDS), so the list cannot drift from what take_node accepts."""
    import re

    from click.testing import CliRunner

    import corral.client
    from corral.cli import NODE_COMMANDS, cli, take_node

    monkeypatch.setattr(corral.client, "NODE", None)  # take_node sets it; restored after
    out = CliRunner().invoke(cli, ["nodes", "--help"])
    assert out.exit_code == 0, out.output
    # the paragraph on --node only: the Commands section below names ls and rm too
    paragraph = out.output.split("--node NAME", 1)[1].split("Options:", 1)[0]
    named = set(re.findall(r"\b[a-z]+\b", paragraph))
    assert set(NODE_COMMANDS) <= named, set(NODE_COMMANDS) - named
    assert take_node(["logs", "x", "--node", "gpu-box", "-f"]) == ["logs", "x", "-f"]
