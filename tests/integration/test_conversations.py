"""/api/v1/conversations against a real daemon: create, list, get, patch, delete, limits."""

from __future__ import annotations

import pytest

from tests.integration.conftest import api, assert_error

BASE = "/api/v1/conversations"


def create(daemon, **body) -> dict:
    status, conv = api(daemon, "POST", BASE, body)
    assert status == 201, conv
    return conv


def test_crud_round_trip(daemon):
    conv = create(
        daemon,
        title="First",
        model="tiny",
        system="Be brief.",
        params={"temperature": 0.3, "max_tokens": 64},
        messages=[
            {"role": "user", "content": "hi <b>there</b>"},
            {"role": "assistant", "content": "Hello!", "tokens_per_second": 12.5},
        ],
    )
    assert conv["title"] == "First" and conv["model"] == "tiny" and conv["system"] == "Be brief."
    assert conv["params"] == {"temperature": 0.3, "max_tokens": 64}
    assert conv["messages"] == [
        {"role": "user", "content": "hi <b>there</b>"},
        {"role": "assistant", "content": "Hello!", "tokens_per_second": 12.5},
    ]
    assert conv["created_at"] == conv["updated_at"] > 0

    status, got = api(daemon, "GET", f"{BASE}/{conv['id']}")
    assert status == 200 and got == conv

    # rename only: everything else stays
    status, renamed = api(daemon, "PATCH", f"{BASE}/{conv['id']}", {"title": "Renamed"})
    assert status == 200 and renamed["title"] == "Renamed"
    assert renamed["messages"] == conv["messages"] and renamed["params"] == conv["params"]
    assert renamed["updated_at"] > conv["updated_at"]

    # a reply appended, stopped early
    msgs = conv["messages"] + [
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "Hel", "stopped": True},
    ]
    status, longer = api(daemon, "PATCH", f"{BASE}/{conv['id']}", {"messages": msgs, "model": None})
    assert status == 200 and longer["messages"] == msgs and longer["model"] is None
    assert longer["title"] == "Renamed"

    status, gone = api(daemon, "DELETE", f"{BASE}/{conv['id']}")
    assert status == 200 and gone == {"deleted": conv["id"]}
    for method in ("GET", "DELETE"):
        assert_error(*api(daemon, method, f"{BASE}/{conv['id']}"), 404, "not_found")
    assert_error(*api(daemon, "PATCH", f"{BASE}/{conv['id']}", {"title": "x"}), 404, "not_found")


def test_list_is_newest_first_without_messages(daemon):
    a = create(daemon, title="a", messages=[{"role": "user", "content": "1"}])
    b = create(daemon, title="b")
    status, listed = api(daemon, "GET", BASE)
    assert status == 200 and [c["id"] for c in listed] == [b["id"], a["id"]]
    assert all("messages" not in c for c in listed)
    assert {c["id"]: c["message_count"] for c in listed} == {a["id"]: 1, b["id"]: 0}
    api(daemon, "PATCH", f"{BASE}/{a['id']}", {"title": "a2"})  # touched: first again
    assert [c["id"] for c in api(daemon, "GET", BASE)[1]] == [a["id"], b["id"]]


def test_conversations_survive_a_daemon_restart(daemon, spawn_daemon):
    conv = create(daemon, title="kept", messages=[{"role": "user", "content": "remember me"}])
    daemon.stop()
    again = spawn_daemon()
    status, got = api(again, "GET", f"{BASE}/{conv['id']}")
    assert status == 200 and got["messages"] == [{"role": "user", "content": "remember me"}]


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x" * 201},
        {"messages": [{"role": "tool", "content": "x"}]},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "user", "content": "x" * 100_001}]},
        {"messages": [{"role": "user", "content": "x", "html": "<b>"}]},
        {"messages": [{"role": "user", "content": "x"}] * 501},
        {"params": {"temperature": 3}},
        {"params": {"max_tokens": 0}},
        {"params": {"seed": 1}},
        {"system": "x" * 100_001},
        {"owner": "me"},
    ],
    ids=[
        "long-title",
        "bad-role",
        "no-content",
        "huge-message",
        "extra-message-field",
        "too-many-messages",
        "hot",
        "no-tokens",
        "unknown-param",
        "huge-system",
        "unknown-field",
    ],
)
def test_limits_are_one_line_400s(daemon, body):
    err = assert_error(*api(daemon, "POST", BASE, body), 400, "bad_request")
    assert "\n" not in err["message"]
    conv = create(daemon)
    assert_error(*api(daemon, "PATCH", f"{BASE}/{conv['id']}", body), 400, "bad_request")
    assert api(daemon, "GET", f"{BASE}/{conv['id']}")[1] == conv  # nothing changed


def test_bodies_must_be_json(daemon):
    status, payload = api(
        daemon,
        "POST",
        BASE,
        raw=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status in (400, 415), payload
    assert api(daemon, "GET", BASE)[1] == []
