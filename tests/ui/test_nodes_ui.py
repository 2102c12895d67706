"""The fleet in the browser: the Nodes view, the dashboard's Node column and filter, logs
and launching on a node, against two real daemons on 127.0.0.1 (a controller and a node
whose API is closed by an admin key made with `corral keys create`), fake llama-server.

The node plans on simulated devices (``CORRAL_FIT_DEVICES``), so the launch view shows
the bars of the node's devices. A third "node" is a small HTTP server answering as a
corral daemon with markup in every string it sends: the page must show it as text.
Every expectation is read from the page and from the daemons' own APIs.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import expect

from corral import __version__
from tests.conftest import DaemonProcess, wait_for
from tests.ui.conftest import HUB_REPO, Page, api, daemon_environment, gguf_file

pytest.importorskip("gguf")

from tests.fakes.gguf_shapes import dense_14b  # noqa: E402

XSS = '<img src=x onerror="document.title=1">'
NODE = "box"
DEVICES = "12GiB,8GiB,host=16GiB"
SHOTS = Path("/tmp/corral-nodes-ui")


def url_of(d: DaemonProcess) -> str:
    return f"http://127.0.0.1:{d.settings.port}"


def node_api(node: DaemonProcess, key: str, method: str, path: str, body=None):
    return api(node, method, path, body, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, fake_hub):
    """(controller, node, the node's admin key, the name of the node's model): the node has one
    ready instance (``node-one``), the controller one (``here-one``) and links the node
    as ``box``. Both daemons stopped, with their instances, after."""
    from corral.supervisor.offline import stop_all_offline

    started: list[DaemonProcess] = []
    try:
        node_home = tmp_path_factory.mktemp("nodes-ui-node") / "home"
        env = daemon_environment(
            node_home, CORRAL_FIT_DEVICES=DEVICES, CORRAL_HF_ENDPOINT=fake_hub.url
        )
        node = DaemonProcess(env).start()
        started.append(node)
        ctl_home = tmp_path_factory.mktemp("nodes-ui-controller") / "home"
        env = daemon_environment(ctl_home, CORRAL_NODE_POLL_INTERVAL="0.5")
        controller = DaemonProcess(env).start()
        started.append(controller)
        made = node.cli("keys", "create", "controller")
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()

        (node_home.parent / "models").mkdir()
        model = dense_14b(node_home.parent / "models" / "qwen-14b-Q4_K_M.gguf")
        status, body = node_api(node, key, "POST", "/api/v1/models/import", {"path": str(model)})
        assert status == 200, body
        model_name = body["models"][0]["name"]
        body = {"model": model_name, "name": "node-one", "wait": True}
        status, inst = node_api(node, key, "POST", "/api/v1/instances", body)
        assert status == 201, inst
        here = gguf_file(ctl_home.parent / "models" / "here-Q4_K_M.gguf", "here")
        body = {"model": str(here), "name": "here-one", "wait": True}
        status, inst = api(controller, "POST", "/api/v1/instances", body)
        assert status == 201, inst
        link = {"name": NODE, "url": url_of(node), "key": key}
        status, added = api(controller, "POST", "/api/v1/nodes", link)
        assert status == 201, added
        yield controller, node, key, model_name
    finally:
        for d in reversed(started):
            d.stop()
            stop_all_offline(d.settings, timeout=1.0)


@pytest.fixture
def ui(browser, fleet):
    p = Page(browser, fleet[0].settings.daemon_url)
    try:
        yield p
    finally:
        p.close()
    assert not p.errors, f"uncaught errors in the page: {p.errors}"


@pytest.fixture(scope="module")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


def test_nodes_view_adds_with_the_right_key_only_and_removes(ui, fleet, shots):
    controller, node, key, _ = fleet
    page = ui.open("nodes")
    card = page.locator(f'.node-card[data-node="{NODE}"]')
    expect(card.locator(".badge")).to_have_text("up")
    expect(card.locator(".node-url")).to_have_text(url_of(node))
    expect(card.locator(".node-version")).to_have_text(__version__)
    expect(card.locator(".node-instances")).to_have_text("1 (1 ready)")
    expect(card.locator(".node-models")).to_have_text("1")
    expect(card.locator("a", has_text="Launch here")).to_have_attribute(
        "href", f"#/launch?node={NODE}"
    )

    # a wrong key: the daemon's one-line refusal under the form, nothing linked, key gone
    wrong = "crl_" + "x" * 43
    page.fill("#node-name", "box-two")
    page.fill("#node-url", url_of(node))
    page.fill("#node-key", wrong)
    page.click("#node-add")
    expect(page.locator("#node-add-error")).to_contain_text("refused the key")
    expect(page.locator("#node-key")).to_have_value("")
    expect(page.locator('.node-card[data-node="box-two"]')).to_have_count(0)
    status, listed = api(controller, "GET", "/api/v1/nodes")
    assert [n["name"] for n in listed] == [NODE]

    # the right key: linked, shown up, the form emptied, the key nowhere in the page
    page.fill("#node-key", key)
    page.click("#node-add")
    added = page.locator('.node-card[data-node="box-two"]')
    expect(added.locator(".badge")).to_have_text("up")
    expect(page.locator("#node-add-error")).to_have_text("")
    for field in ("#node-name", "#node-url", "#node-key"):
        expect(page.locator(field)).to_have_value("")
    assert key not in page.content()
    assert page.locator("#node-key").get_attribute("type") == "password"
    status, listed = api(controller, "GET", "/api/v1/nodes")
    assert sorted(n["name"] for n in listed) == [NODE, "box-two"]
    page.screenshot(path=str(shots / "nodes-light.png"), full_page=True)

    # removed after the confirm: gone from the page and from the daemon
    added.get_by_role("button", name="Remove node box-two").click()
    expect(added).to_have_count(0)
    assert any("Remove node box-two?" in d for d in ui.dialogs), ui.dialogs
    status, listed = api(controller, "GET", "/api/v1/nodes")
    assert [n["name"] for n in listed] == [NODE]
    expect(page.locator("#node-summary")).to_have_text("1 linked · 1 up")


def test_nodes_view_names_a_taken_name_and_a_bad_url_in_one_line(ui, fleet):
    _, node, key, _ = fleet
    page = ui.open("nodes")
    expect(page.locator(f'.node-card[data-node="{NODE}"]')).to_be_visible()
    page.fill("#node-name", NODE)
    page.fill("#node-url", url_of(node))
    page.fill("#node-key", key)
    page.click("#node-add")
    error = page.locator("#node-add-error")
    expect(error).to_contain_text(f"a node named '{NODE}' exists already")
    expect(page.locator("#node-name")).to_be_focused()
    page.fill("#node-name", "elsewhere")
    page.fill("#node-url", "ftp://127.0.0.1:1")
    page.fill("#node-key", key)
    page.click("#node-add")
    expect(error).to_contain_text("a node URL starts with http:// or https://")
    assert "\n" not in error.text_content()


def test_dashboard_node_column_and_filter(ui, fleet, shots):
    page = ui.open("dashboard")
    remote = page.locator(f'tr[data-instance="node-one"][data-node="{NODE}"]')
    local = page.locator('tr[data-instance="here-one"]')
    expect(remote.locator(".badge")).to_have_text("ready")
    expect(remote.locator(".node-cell")).to_have_text(NODE)
    expect(local.locator(".node-cell")).to_have_text("this machine")
    expect(page.locator("th", has_text="Node")).to_be_visible()
    # a node's instance: its log through the relay, Chat (this daemon's /v1 relays it),
    # no Open (its llama-server listens on the node's loopback)
    logs = remote.get_by_role("link", name=f"Logs of node-one on {NODE}")
    expect(logs).to_have_attribute("href", f"#/logs/node-one?node={NODE}")
    expect(remote.get_by_role("button", name=f"Chat with node-one on {NODE}")).to_be_enabled()
    expect(remote.locator("a", has_text="Open")).to_have_count(0)
    page.screenshot(path=str(shots / "dashboard-nodes.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 900})
    page.screenshot(path=str(shots / "dashboard-nodes-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    select = page.locator("#node-filter")
    select.select_option(NODE)
    expect(local).to_have_count(0)
    expect(remote).to_be_visible()
    select.select_option("")
    expect(remote).to_have_count(0)
    expect(local).to_be_visible()
    select.select_option("*")
    expect(remote).to_be_visible()
    expect(local).to_be_visible()

    # opened on one node (the Nodes view's "Instances" link)
    page = ui.open(f"dashboard?node={NODE}")
    expect(page.locator(f'tr[data-instance="node-one"][data-node="{NODE}"]')).to_be_visible()
    expect(page.locator('tr[data-instance="here-one"]')).to_have_count(0)
    expect(page.locator("#node-filter")).to_have_value(NODE)

    logs = page.get_by_role("link", name=f"Logs of node-one on {NODE}")
    logs.click()
    expect(page.locator("#log-node")).to_have_value(NODE)
    expect(page.locator("#log-instance")).to_have_value("node-one")
    expect(page.locator("#log-lines")).to_contain_text("model loaded")
    expect(page.locator("#log-state")).to_contain_text(f"Following node-one on {NODE}")


def chat_requests(port: int) -> int:
    """How many chat completions the fake llama-server on ``port`` has received."""
    from tests.integration.conftest import fake_get

    status, received = fake_get(port, "/_fake/requests")
    assert status == 200, received
    return sum(1 for r in received if r["path"] == "/v1/chat/completions")


def test_chat_with_a_node_instance_from_the_dashboard(ui, fleet, shots):
    controller, node, key, _ = fleet
    status, there = node_api(node, key, "GET", "/api/v1/instances/node-one")
    assert status == 200 and there["state"] == "ready", there
    status, here = api(controller, "GET", "/api/v1/instances/here-one")
    assert status == 200, here
    before_there, before_here = chat_requests(there["port"]), chat_requests(here["port"])

    page = ui.open("dashboard")
    row = page.locator(f'tr[data-instance="node-one"][data-node="{NODE}"]')
    row.get_by_role("button", name=f"Chat with node-one on {NODE}").click()
    expect(page).to_have_url(re.compile(r"#/chat\?model=node-one$"))
    expect(page.locator("#chat-model")).to_have_value("node-one")
    expect(page.locator("#chat-model option:checked")).to_have_text(f"node-one — on {NODE}")
    page.fill("#chat-input", "Say hello from the node")
    page.click("#send")

    reply = page.locator(".msg-assistant").last
    expect(reply.locator(".msg-body")).to_have_text("Hello, I am a fake llama server")
    expect(page.locator("#chat-status")).to_contain_text("Done in")
    page.screenshot(path=str(shots / "chat-node.png"), full_page=True)

    # served by the node's instance, through the controller: the controller has no
    # instance of that name and its own llama-server saw no chat request
    assert chat_requests(there["port"]) == before_there + 1
    assert chat_requests(here["port"]) == before_here
    status, there = node_api(node, key, "GET", "/api/v1/instances/node-one")
    assert status == 200 and there["state"] == "ready", there
    status, _ = api(controller, "GET", "/api/v1/instances/node-one")
    assert status == 404
    status, listed = api(controller, "GET", "/api/v1/instances")
    assert [i["name"] for i in listed] == ["here-one"]

    # the controller keeps the conversation, with the node's answer
    convs = wait_for(
        lambda: [
            c
            for c in api(controller, "GET", "/api/v1/conversations")[1]
            if c["model"] == "node-one"
        ],
        message="the conversation saved on the controller",
    )
    _, conv = api(controller, "GET", f"/api/v1/conversations/{convs[0]['id']}")
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["content"] == "Hello, I am a fake llama server"


def test_chat_picker_lists_node_only_models_with_their_node(ui, fleet, shots):
    controller, _, _, model = fleet
    status, union = api(controller, "GET", "/v1/models")
    assert status == 200, union
    by_id = {m["id"]: m for m in union["data"]}
    assert by_id[model]["local"] is False and by_id[model]["nodes"] == [NODE], by_id[model]
    assert by_id["here-one"]["local"] is True and by_id["here-one"]["nodes"] == []

    page = ui.open("chat")
    expect(page.locator(f'#chat-model option[value="{model}"]')).to_have_text(
        f"{model} — on {NODE}"
    )
    expect(page.locator('#chat-model option[value="node-one"]')).to_have_text(
        f"node-one — on {NODE}"
    )
    expect(page.locator('#chat-model option[value="here-one"]')).to_have_text("here-one")
    page.locator("#chat-model").select_option(model)
    page.locator(".chat-main .card").screenshot(path=str(shots / "chat-picker-node.png"))


def test_a_node_instance_named_like_a_ready_local_one_cannot_be_chatted_from_its_row(
    ui, fleet, shots
):
    _, node, key, model = fleet
    body = {"model": model, "name": "here-one", "wait": True}
    status, inst = node_api(node, key, "POST", "/api/v1/instances", body)
    assert status == 201, inst
    try:
        page = ui.open(f"dashboard?node={NODE}")
        row = page.locator(f'tr[data-instance="here-one"][data-node="{NODE}"]')
        expect(row.locator(".badge")).to_have_text("ready")
        chat = row.get_by_role("button", name=f"Chat with here-one on {NODE}")
        expect(chat).to_be_disabled()
        expect(chat).to_have_attribute(
            "title", re.compile(f"This machine's own here-one is ready: .* not to {NODE}")
        )
        other = page.locator(f'tr[data-instance="node-one"][data-node="{NODE}"]')
        expect(other.get_by_role("button", name=f"Chat with node-one on {NODE}")).to_be_enabled()
        page.locator("#instances").screenshot(path=str(shots / "dashboard-node-name-taken.png"))
    finally:
        node_api(node, key, "DELETE", "/api/v1/instances/here-one")


def test_logs_choose_the_node_then_the_instance(ui, fleet, shots):
    page = ui.open("logs")
    expect(page.locator("#log-instance option", has_text="here-one")).to_have_count(1)
    page.locator("#log-node").select_option(NODE)
    expect(page).to_have_url(re.compile(rf"#/logs\?node={NODE}$"))
    expect(page.locator("#log-instance option", has_text="node-one")).to_have_count(1)
    expect(page.locator("#log-instance option", has_text="here-one")).to_have_count(0)
    page.locator("#log-instance").select_option("node-one")
    expect(page).to_have_url(re.compile(rf"#/logs/node-one\?node={NODE}$"))
    expect(page.locator("#log-lines")).to_contain_text("model loaded")
    page.screenshot(path=str(shots / "logs-node.png"))


def test_launch_on_a_node_plans_there_and_starts_it_there(ui, fleet, shots):
    controller, node, key, model = fleet
    status, plan = node_api(node, key, "POST", "/api/v1/instances/plan", {"model": model})
    assert status == 200 and plan["placement"], plan
    page = ui.open("launch")
    expect(page.locator("#flag-editor .flag-row").first).to_be_visible()
    expect(page.locator("#launch-node")).to_have_value("")
    page.locator("#launch-node").select_option(NODE)
    expect(page.locator("#fit-where")).to_have_text(f" on {NODE}")
    # the node's index: its model is offered by name
    expect(page.locator(f'#model-options option[value="{model}"]')).to_have_count(1)
    page.fill("#launch-model", model)
    page.fill("#launch-name", "ui-remote")

    # the memory card: a bar per device of the node (simulated there, none here)
    bars = page.locator("#fit-devices .fit-device")
    expect(bars).to_have_count(len(plan["placement"]["devices"]))
    for dev in plan["placement"]["devices"]:
        expect(page.locator(f'#fit-devices [data-device="{dev["id"]}"]')).to_be_visible()
    expect(page.locator("#fit-status")).to_contain_text(re.compile(r"^Fits: "))
    page.locator("#fit-card").screenshot(path=str(shots / "launch-node-fit.png"))
    page.screenshot(path=str(shots / "launch-node.png"))

    page.click("#launch-button")
    expect(page).to_have_url(re.compile(rf"#/dashboard\?node={NODE}$"))
    row = page.locator(f'tr[data-instance="ui-remote"][data-node="{NODE}"]')
    expect(row).to_be_visible()
    status, inst = node_api(node, key, "GET", "/api/v1/instances/ui-remote")
    assert status == 200 and inst["placement"], inst
    status, _ = api(controller, "GET", "/api/v1/instances/ui-remote")
    assert status == 404  # launched there, not here
    expect(row.locator(".badge")).to_have_text("ready", timeout=60_000)

    # stopped and deleted from the dashboard, through the relay
    row.get_by_role("button", name=f"Stop ui-remote on {NODE}").click()
    expect(row.get_by_role("button", name=f"Delete ui-remote on {NODE}")).to_be_visible()
    row.get_by_role("button", name=f"Delete ui-remote on {NODE}").click()
    expect(row).to_have_count(0)
    wait_for(
        lambda: node_api(node, key, "GET", "/api/v1/instances/ui-remote")[0] == 404,
        20,
        message="ui-remote deleted on the node",
    )


def test_models_view_pulls_and_lists_on_the_node(ui, fleet, shots):
    controller, node, key, model = fleet
    page = ui.open("models")
    expect(page.locator("#local-title")).to_have_text("Local models")
    page.locator("#models-node").select_option(NODE)
    expect(page).to_have_url(re.compile(rf"#/models\?node={NODE}$"))
    expect(page.locator("#local-title")).to_have_text(f"Models on {NODE}")
    expect(page.locator("#pulls-title")).to_have_text(f"Downloads on {NODE}")
    row = page.locator(f'#local-models tr[data-model="{model}"]')
    expect(row).to_be_visible()
    expect(row.get_by_role("button", name=f"Chat with {model}")).to_have_count(0)

    # a pull from the node's Hub, done by the node, its progress followed through the relay
    page.get_by_role("searchbox", name="Search the Hub").fill("tiny")
    page.get_by_role("button", name="Search", exact=True).click()
    repo = page.locator(f'li[data-repo="{HUB_REPO}"]')
    repo.get_by_role("button", name=f"Quants of {HUB_REPO}").click()
    repo.get_by_role("button", name=f"Pull {HUB_REPO}:Q8_0").click()
    job = page.locator("#pulls tr[data-pull]", has_text=f"{HUB_REPO}:Q8_0")
    expect(job).to_have_attribute("data-state", "done", timeout=60_000)
    expect(page.locator(".toast", has_text=f"Pulled {HUB_REPO}:Q8_0 on {NODE}")).to_have_count(1)
    status, jobs = node_api(node, key, "GET", "/api/v1/pulls")
    assert status == 200 and job.get_attribute("data-pull") in [j["id"] for j in jobs]
    status, models = node_api(node, key, "GET", "/api/v1/models")
    assert any(m.get("repo") == HUB_REPO for m in models), models
    status, here = api(controller, "GET", "/api/v1/pulls")
    assert here == []
    expect(page.locator("#local-models tr[data-model]")).to_have_count(2)
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    page.screenshot(path=str(shots / "models-node-dark.png"), full_page=True)

    row = page.locator(f'#local-models tr[data-model="{model}"]')
    row.get_by_role("button", name=f"Launch {model}").click()
    expect(page).to_have_url(re.compile(rf"#/launch\?model=.*&node={NODE}$"))
    expect(page.locator("#launch-node")).to_have_value(NODE)
    expect(page.locator("#fit-where")).to_have_text(f" on {NODE}")


class Rogue(BaseHTTPRequestHandler):
    """A server answering as a corral daemon, with markup in every string it sends."""

    answers = {
        "/healthz": {"status": "ok", "version": XSS},
        "/api/v1/system": {
            "gpus": [{"index": 0, "name": XSS, "vram_total": 24e9, "vram_free": 9e9}],
            "builds": [{"id": 1, "is_default": True, "build": XSS}],
            "ram_free": 8e9,
        },
        "/api/v1/instances": [
            {"name": XSS, "state": "ready", "model": f"/m/{XSS}.gguf", "port": 1, "restarts": 0}
        ],
        "/api/v1/models": [],
        "/v1/models": {"object": "list", "data": [{"id": XSS, "object": "model"}]},
    }

    def do_GET(self):  # noqa: N802 - http.server's name
        body = self.answers.get(self.path.split("?")[0])
        data = json.dumps(body).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def rogue(fleet):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Rogue)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    status, added = api(
        fleet[0], "POST", "/api/v1/nodes", {"name": "rogue", "url": url, "key": "k"}
    )
    assert status == 201, added
    yield url
    api(fleet[0], "DELETE", "/api/v1/nodes/rogue")
    server.shutdown()
    server.server_close()


def no_markup(page) -> None:
    assert page.evaluate("document.querySelectorAll('img:not(.brand img)').length") == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert page.title() != "1"


def test_a_hostile_node_and_hostile_input_are_shown_as_text(ui, fleet, rogue, shots):
    page = ui.open("nodes")
    card = page.locator('.node-card[data-node="rogue"]')
    expect(card.locator(".node-version")).to_contain_text(XSS)
    expect(card.locator(".node-llama")).to_have_text(XSS)
    expect(card.locator(".node-gpu .field-label")).to_have_text(f"GPU 0 · {XSS}")
    expect(card.locator(".node-gpu")).to_contain_text("9.0 GB free of 24.0 GB")
    expect(card.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "63")
    page.emulate_media(color_scheme="dark")
    page.evaluate("document.documentElement.dataset.theme = 'dark'")
    page.screenshot(path=str(shots / "nodes-dark.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 900})
    page.screenshot(path=str(shots / "nodes-narrow.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    no_markup(page)

    # what the daemon refuses repeats the input: a name and a URL with markup in them
    page.fill("#node-name", XSS)
    page.fill("#node-url", url_of(fleet[1]))
    page.fill("#node-key", "k")
    page.click("#node-add")
    expect(page.locator("#node-add-error")).to_contain_text(XSS)
    page.fill("#node-name", "fine")
    page.fill("#node-url", f"http://{XSS}:1")
    page.fill("#node-key", "k")
    page.click("#node-add")
    expect(page.locator("#node-add-error")).to_contain_text("a node URL")
    no_markup(page)

    # the name its /v1/models lists, in the chat's model picker with the node's name
    page = ui.open("chat")
    expect(page.locator("#chat-model option", has_text="— on rogue")).to_have_text(
        f"{XSS} — on rogue"
    )
    page.locator("#chat-model").select_option(label=f"{XSS} — on rogue")
    page.locator(".chat-main .card").screenshot(path=str(shots / "chat-picker-rogue.png"))
    no_markup(page)

    # its instance on the dashboard, and the node going down: its error shown as text
    page = ui.open("dashboard?node=rogue")
    row = page.locator('tr[data-node="rogue"]')
    expect(row).to_contain_text(XSS)
    expect(row.locator(".node-cell")).to_have_text("rogue")
    no_markup(page)
    Rogue.answers, saved = {}, Rogue.answers
    try:
        page = ui.open("nodes")
        card = page.locator('.node-card[data-node="rogue"]')
        expect(card.locator(".badge")).to_have_text("down", timeout=30_000)
        expect(card.locator(".node-error")).to_contain_text("is not a corral daemon")
        page = ui.open("dashboard")
        expect(page.locator('#nodes-unreachable li[data-node="rogue"]')).to_contain_text("down")
        page.screenshot(path=str(shots / "dashboard-node-down.png"), full_page=True)
        no_markup(page)
    finally:
        Rogue.answers = saved
    assert ui.dialogs == []


def test_a_node_refusing_its_key_is_said_so_and_no_key_is_asked_here(ui, fleet):
    controller, node, _, _ = fleet
    made = node.cli("keys", "create", "soon-revoked")
    assert made.returncode == 0, made.stderr
    link = {"name": "box-old", "url": url_of(node), "key": made.stdout.strip()}
    status, added = api(controller, "POST", "/api/v1/nodes", link)
    assert status == 201, added
    try:
        keys = json.loads(node.cli("keys", "ls", "--json").stdout)
        key_id = next(k["id"] for k in keys if k["name"] == "soon-revoked")
        assert node.cli("keys", "revoke", key_id).returncode == 0
        # the node's 401 comes back through the relay: an error naming the node, not
        # this daemon's key dialog (this daemon needs no key)
        page = ui.open("logs/node-one?node=box-old")
        expect(page.locator("#log-state")).to_contain_text(
            "node box-old refused this daemon's key for it"
        )
        expect(page.locator("#key-dialog")).not_to_be_visible()
        page = ui.open("nodes")
        card = page.locator('.node-card[data-node="box-old"]')
        expect(card.locator(".badge")).to_have_text("down", timeout=30_000)
        expect(card.locator(".node-error")).to_contain_text("refused the key")
    finally:
        api(controller, "DELETE", "/api/v1/nodes/box-old")
