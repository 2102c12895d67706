"""The memory plan in the browser: the launch view's bar per device, suggested flags and
notes as the form changes, and the dashboard's devices per instance.

A daemon of its own plans on simulated devices (``CORRAL_FIT_DEVICES``: GPUs of 12 and
8 GiB, 16 GiB of host RAM); the model is a GGUF header in the shape of Qwen2.5-14B
Q4_K_M with sparse data (``tests/fakes/gguf_shapes.py``), which the fake llama-server
runs since it only checks the magic. Every expectation is read from the daemon's own
answer (``/api/v1/instances/plan``, the instance record).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import running_daemon
from tests.ui.conftest import Page, api, daemon_environment

pytest.importorskip("gguf")

from tests.fakes.gguf_shapes import dense_14b  # noqa: E402

DEVICES = "12GiB,8GiB,host=16GiB"
TOO_BIG = "-c 131072 -ctk f16 -ctv f16"  # 25 GiB of f16 KV cache: no room anywhere


@pytest.fixture(scope="module")
def fit_daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("fit-ui") / "home"
    with running_daemon(daemon_environment(home, CORRAL_FIT_DEVICES=DEVICES)) as d:
        yield d


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return dense_14b(tmp_path_factory.mktemp("fit-ui-models") / "qwen-14b-Q4_K_M.gguf")


@pytest.fixture
def page(browser, fit_daemon):
    p = Page(browser, fit_daemon.settings.daemon_url)
    try:
        yield p
    finally:
        p.close()
    assert not p.errors, f"uncaught errors in the page: {p.errors}"


def gib(n: int) -> str:
    """format.js bytes(): decimal units, one decimal under 100."""
    v, units = float(n), ["B", "kB", "MB", "GB", "TB"]
    i = 0
    while abs(v) >= 1000 and i < len(units) - 1:
        v, i = v / 1000, i + 1
    return f"{v:.{0 if i == 0 or v >= 100 else 1}f} {units[i]}"


def test_launch_view_bars_suggested_flags_notes_and_apply(page, fit_daemon, model, screenshots):
    status, plan = api(fit_daemon, "POST", "/api/v1/instances/plan", {"model": str(model)})
    assert status == 200 and plan["placement"], plan
    placement = plan["placement"]
    p = page.open("launch")
    expect(p.locator("#flag-editor .flag-row").first).to_be_visible()
    p.fill("#launch-model", str(model))

    bars = p.locator("#fit-devices .fit-device")
    expect(bars).to_have_count(len(placement["devices"]))
    for dev in placement["devices"]:
        bar = p.locator(f'#fit-devices [data-device="{dev["id"]}"]')
        expect(bar).to_contain_text(
            f"{gib(dev['used_bytes'])} planned of {gib(dev['free_bytes'])} free"
        )
        want = round(100 * dev["used_bytes"] / dev["free_bytes"])
        expect(bar.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", str(want))
    expect(p.locator("#fit-status")).to_have_text(
        f"Fits: context {placement['context']}, KV cache {placement['cache_type_k']}/"
        f"{placement['cache_type_v']}."
    )
    added = [f if v is None else f"{f} {v}" for f, v in placement["added"]]
    text = p.locator("#fit-flags")
    expect(text).to_have_text(re.compile("^" + " ".join([r"\S+ \S+"] * len(added)) + "$"))
    for pair in added:
        expect(text).to_contain_text(pair)
    expect(p.locator("#fit-notes li")).to_have_count(len(placement["notes"]))
    expect(p.locator("#fit-notes")).to_contain_text(placement["notes"][0])
    p.locator("#fit-card").screenshot(path=str(screenshots / "launch-fit.png"))

    # one click: the plan's flags become the form's (and so fixed: nothing more is planned)
    p.click("#fit-apply")
    for flag, value in placement["added"]:
        expect(p.locator(f'.flag-input [data-flag="{flag}"]')).to_have_value(value)
    for pair in added:
        expect(p.locator("#cmdline")).to_contain_text(pair)
    expect(p.locator("#fit-status")).to_contain_text("placed by your flags")
    expect(p.locator("#fit-suggest")).to_be_hidden()


def test_launch_view_says_why_a_launch_is_refused_and_no_fit_turns_planning_off(page, model):
    p = page.open("launch")
    expect(p.locator("#flag-editor .flag-row").first).to_be_visible()
    p.fill("#launch-model", str(model))
    expect(p.locator("#fit-status")).to_have_text(re.compile(r"^Fits: "))
    p.fill("#launch-extra", TOO_BIG)  # a flag change re-plans (debounced)
    expect(p.locator("#fit-status")).to_contain_text(re.compile(r"Refused: .*does not fit by"))
    expect(p.locator("#fit-suggest")).to_be_hidden()
    p.uncheck("#launch-fit")
    expect(p.locator("#fit-status")).to_have_text(
        "Not planned: the launch runs exactly the flags given."
    )
    expect(p.locator("#fit-devices .fit-device")).to_have_count(0)
    expect(p.locator("#plan-note")).to_contain_text("As the daemon would run it")


def test_launch_without_fit_from_the_form_is_not_planned(page, fit_daemon, model):
    p = page.open("launch")
    expect(p.locator("#flag-editor .flag-row").first).to_be_visible()
    p.fill("#launch-model", str(model))
    p.fill("#launch-name", "ui-typed")
    p.uncheck("#launch-fit")
    p.click("#launch-button")
    expect(p).to_have_url(re.compile(r"#/dashboard$"))
    status, inst = api(fit_daemon, "GET", "/api/v1/instances/ui-typed")
    assert status == 200 and inst["placement"] is None, inst
    expect(p.locator('tr[data-instance="ui-typed"] [data-testid=devices]')).to_have_text("—")
    api(fit_daemon, "DELETE", "/api/v1/instances/ui-typed")


def test_dashboard_shows_the_devices_of_each_instance(page, fit_daemon, model, screenshots):
    status, inst = api(
        fit_daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model), "name": "ui-placed", "wait": True},
    )
    assert status == 201, inst
    try:
        used = [d for d in inst["placement"]["devices"] if d["used_bytes"]]
        p = page.open("dashboard")
        cell = p.locator('tr[data-instance="ui-placed"] [data-testid=devices]')
        expect(cell.locator("[data-device]")).to_have_count(len(used))
        for dev in used:
            want = f"{dev['id']} {gib(dev['used_bytes'])} planned"
            line = cell.locator(f'[data-device="{dev["id"]}"]')
            if inst["placement"].get("real") and dev["id"] in inst["placement"]["real"]:
                want = (
                    f"{dev['id']} {gib(inst['placement']['real'][dev['id']])} real / "
                    f"{gib(dev['used_bytes'])} planned"
                )
            expect(line).to_have_text(want)
        p.screenshot(path=str(screenshots / "dashboard-devices.png"), full_page=True)
    finally:
        api(fit_daemon, "DELETE", "/api/v1/instances/ui-placed")
