"""The web UI in a real browser (Chromium) against a real daemon, fake llama-server and
fake Hub: every assertion reads the page's DOM or the daemon's own state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psutil
from playwright.sync_api import expect

from tests.conftest import running_daemon, wait_for
from tests.ui.conftest import HUB_REPO, api, daemon_environment, gguf_file

XSS = "<img src=x onerror=alert(1)>"


def instance(daemon, name: str) -> dict | None:
    status, body = api(daemon, "GET", f"/api/v1/instances/{name}")
    return body if status == 200 else None


def sidecar(model: Path, **knobs) -> None:
    Path(str(model) + ".fake.json").write_text(json.dumps(knobs))


def set_flag(page, search: str, flag: str, value: str | None = None, option: str | None = None):
    """Find a flag through the editor's search box and set it."""
    page.fill("#flag-search", search)
    field = page.locator(f'[data-flag="{flag}"] .flag-input [data-flag="{flag}"]')
    expect(field).to_be_visible()
    if option is not None:
        field.select_option(option)
    else:
        field.fill(value)
    return field


def test_launch_with_two_flags_reaches_ready_then_logs_and_stop(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / "launchme-Q4_K_M.gguf")
    page = ui.open("launch")
    page.fill("#launch-model", str(model))
    page.fill("#launch-name", "ui-launch")
    set_flag(page, "ctx-size", "--ctx-size", "2048")
    set_flag(page, "flash", "--flash-attn", option="on")
    expect(page.locator("#cmdline")).to_contain_text("--ctx-size 2048 --flash-attn on")
    page.click("#launch-button")

    expect(page).to_have_url(re.compile(r"#/dashboard$"))
    row = page.locator('tr[data-instance="ui-launch"]')
    expect(row.locator(".badge")).to_have_text("ready")
    inst = instance(ui_daemon, "ui-launch")
    argv = inst["argv"]
    assert (
        argv[argv.index("--ctx-size") + 1] == "2048"
        and argv[argv.index("--flash-attn") + 1] == "on"
    )
    expect(row).to_contain_text(str(inst["port"]))
    assert row.locator("a", has_text="Open").get_attribute("href") == inst["url"]

    row.locator("a", has_text="Logs").click()
    expect(page).to_have_url(re.compile(r"#/logs/ui-launch$"))
    log = page.locator("#log-lines")
    expect(log).to_contain_text("model loaded")
    expect(log).to_contain_text(str(model))

    # paused: new lines are held back, and shown on resume
    page.click("#log-pause")
    expect(page.locator("#log-pause")).to_have_text("Resume")
    before = log.locator(".line").count()
    status, _ = api(
        ui_daemon,
        "POST",
        "/v1/chat/completions",
        {"model": "ui-launch", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 200
    expect(page.locator("#log-state")).to_contain_text(
        re.compile(r"Paused: [1-9]\d* new lines? held back")
    )
    assert log.locator(".line").count() == before
    assert "processing task" not in log.inner_text()
    page.click("#log-pause")
    expect(log).to_contain_text("processing task")

    page.click('nav a[data-view="dashboard"]')
    pid = inst["pid"]
    page.locator('tr[data-instance="ui-launch"]').get_by_role(
        "button", name="Stop ui-launch"
    ).click()
    expect(page.locator('tr[data-instance="ui-launch"] .badge')).to_have_text("stopped")
    assert instance(ui_daemon, "ui-launch")["state"] == "stopped"
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        message="the stopped llama-server process to exit",
    )


def test_bad_flag_value_is_shown_inline_and_launches_nothing(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / "badflag-Q4_K_M.gguf")
    page = ui.open("launch")
    page.fill("#launch-model", str(model))
    page.fill("#launch-name", "ui-badflag")
    field = set_flag(page, "ctx-size", "--ctx-size", "lots")
    error = page.locator("#flag-ctx-size-error")
    expect(error).to_have_text("--ctx-size takes a number (got 'lots')")
    expect(field).to_have_attribute("aria-invalid", "true")
    page.click("#launch-button")
    expect(page.locator("#launch-error")).to_contain_text("Fix 1 invalid flag value first")
    expect(page).to_have_url(re.compile(r"#/launch$"))

    # a bad value only the daemon can judge (typed as an extra argument) is shown inline too
    field.fill("2048")
    expect(error).to_be_hidden()
    page.fill("#launch-extra", "--flash-attn maybe")
    page.click("#launch-button")
    expect(page.locator("#launch-extra-error")).to_contain_text(
        "invalid value 'maybe' for --flash-attn"
    )
    expect(page.locator("#launch-error")).to_contain_text("--flash-attn")
    expect(page).to_have_url(re.compile(r"#/launch$"))
    assert instance(ui_daemon, "ui-badflag") is None
    status, listed = api(ui_daemon, "GET", "/api/v1/instances")
    assert status == 200 and all(i["name"] != "ui-badflag" for i in listed)


def test_chat_streams_into_the_page_and_stop_interrupts(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / "chatty-Q4_K_M.gguf")
    sidecar(model, tokens=2000, token_delay=0.02)  # ~40 s if nobody stops it
    status, body = api(ui_daemon, "POST", "/api/v1/models/import", {"path": str(model)})
    assert status == 200, body
    name = body["models"][0]["name"]

    page = ui.open(f"chat?model={name}")
    expect(page.locator("#chat-model")).to_have_value(name)
    page.locator("details.system > summary").click()
    page.fill("#chat-system", "Be brief.")
    page.fill("#chat-temperature", "0.5")
    page.fill("#chat-input", "Say hello")
    page.click("#send")

    reply = page.locator(".msg-assistant").last
    expect(reply).to_have_class(re.compile(r"\bstreaming\b"))
    expect(reply.locator(".msg-body")).to_contain_text("fake llama server")  # text while streaming
    expect(page.locator("#stop")).to_be_visible()
    expect(reply).to_have_class(re.compile(r"\bstreaming\b"))
    page.click("#stop")

    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()
    done = page.locator(".msg-assistant").last
    expect(done.locator(".msg-meta")).to_contain_text("stopped")
    expect(page.locator("#chat-status")).to_contain_text("Stopped")
    words = done.locator(".msg-body").inner_text().split()
    assert 0 < len(words) < 2000

    # the daemon keeps the conversation, with the interrupted reply
    convs = wait_for(
        lambda: api(ui_daemon, "GET", "/api/v1/conversations")[1], message="a saved conversation"
    )
    mine = [c for c in convs if c["model"] == name]
    assert len(mine) == 1 and mine[0]["title"] == "Say hello"
    _, conv = api(ui_daemon, "GET", f"/api/v1/conversations/{mine[0]['id']}")
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
    assert conv["messages"][1]["stopped"] is True and conv["system"] == "Be brief."
    assert conv["params"] == {"temperature": 0.5}
    expect(page.locator(f'li[data-conversation="{conv["id"]}"]')).to_contain_text("Say hello")

    # the fake server saw the client go away (generation stopped upstream)
    port = instance(ui_daemon, name)["port"]
    from tests.integration.conftest import fake_get

    wait_for(
        lambda: fake_get(port, "/_fake/state")[1]["cancelled"] >= 1,
        message="the fake llama-server to see the stream cancelled",
    )

    # rename and delete through the list
    ui.answers.append("Greetings")
    page.get_by_role("button", name="Rename Say hello").click()
    expect(page.locator(f'li[data-conversation="{conv["id"]}"]')).to_contain_text("Greetings")
    assert api(ui_daemon, "GET", f"/api/v1/conversations/{conv['id']}")[1]["title"] == "Greetings"
    page.get_by_role("button", name="Delete Greetings").click()
    expect(page.locator(f'li[data-conversation="{conv["id"]}"]')).to_have_count(0)
    assert api(ui_daemon, "GET", f"/api/v1/conversations/{conv['id']}")[0] == 404


def test_hub_search_pull_progress_and_the_model_appears(ui, ui_daemon, fake_hub):
    from tests.fakes.fake_hub import Fault

    # slow the bytes down so the bar moves through intermediate values
    fake_hub.faults["tiny-Q4_K_M.gguf"] = Fault(delay=0.03, times=None)
    page = ui.open("models")
    page.wait_for_selector("#pulls")
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            for (const m of document.querySelectorAll('#pulls [role=progressbar]'))
                window.__seen.push([m.getAttribute('aria-valuenow'), m.textContent]);
        }).observe(document.getElementById('pulls'), {subtree: true, childList: true, attributes: true});
    }""")
    page.get_by_role("searchbox", name="Search the Hub").fill("tiny")
    page.get_by_role("button", name="Search", exact=True).click()
    repo = page.locator(f'li[data-repo="{HUB_REPO}"]')
    expect(repo).to_contain_text("1.2k downloads")
    repo.get_by_role("button", name=f"Quants of {HUB_REPO}").click()
    quant = repo.locator('tr[data-quant="Q4_K_M"]')
    expect(quant).to_contain_text("3.0 MB")
    quant.get_by_role("button", name=f"Pull {HUB_REPO}:Q4_K_M").click()

    job = page.locator("#pulls tr[data-pull]").first
    expect(job).to_have_attribute("data-state", "done", timeout=60_000)
    bar = job.locator("[role=progressbar]")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar).to_contain_text("100 % · 3.0 MB / 3.0 MB")
    seen = page.evaluate("window.__seen")
    middle = [label for value, label in seen if 0 < int(value) < 100]
    assert middle, f"no intermediate progress seen: {seen[:5]}"
    assert any(re.search(r"/s · ETA", label) for label in middle), middle[:5]

    row = page.locator('#local-models tr[data-model="tiny-gguf"]')
    expect(row).to_contain_text("Q4_K_M")
    expect(row).to_contain_text(HUB_REPO)
    status, models = api(ui_daemon, "GET", "/api/v1/models")
    assert any(m["name"] == "tiny-gguf" and m["repo"] == HUB_REPO for m in models)


def test_pull_can_be_cancelled(ui, ui_daemon, fake_hub):
    from tests.fakes.fake_hub import Fault

    fake_hub.faults["slow-Q4_K_M.gguf"] = Fault(delay=0.5, times=None)
    page = ui.open("models")
    page.get_by_role("searchbox", name="Search the Hub").fill("slow")
    page.get_by_role("button", name="Search", exact=True).click()
    repo = page.locator('li[data-repo="acme/slow-GGUF"]')
    repo.get_by_role("button", name="Quants of acme/slow-GGUF").click()
    repo.get_by_role("button", name="Pull acme/slow-GGUF:Q4_K_M").click()
    job = page.locator("#pulls tr[data-pull]", has_text="acme/slow-GGUF")
    expect(job).to_have_attribute("data-state", "running")
    job.get_by_role("button", name="Cancel acme/slow-GGUF:Q4_K_M").click()
    expect(job).to_have_attribute("data-state", "cancelled")
    pull_id = job.get_attribute("data-pull")
    assert api(ui_daemon, "GET", f"/api/v1/pulls/{pull_id}")[1]["state"] == "cancelled"
    del fake_hub.faults["slow-Q4_K_M.gguf"]


def test_theme_follows_the_system_and_the_toggle_survives_reload(browser, ui_daemon):
    from tests.ui.conftest import Page

    dark = Page(browser, ui_daemon.settings.daemon_url, color_scheme="dark")
    try:
        page = dark.open()
        expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    finally:
        dark.close()

    light = Page(browser, ui_daemon.settings.daemon_url, color_scheme="light")
    try:
        page = light.open("models")
        html = page.locator("html")
        expect(html).to_have_attribute("data-theme", "light")
        bg_light = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.click("#theme-toggle")
        expect(html).to_have_attribute("data-theme", "dark")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != bg_light
        page.reload()
        expect(html).to_have_attribute("data-theme", "dark")
        assert page.evaluate("localStorage.getItem('corral.theme')") == "dark"
        expect(page.locator("#theme-toggle")).to_have_attribute(
            "aria-label", "Switch to light theme"
        )
        assert not light.errors
    finally:
        light.close()


def test_html_in_names_and_text_is_shown_as_text(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / f"{XSS}.gguf", name=XSS)
    status, body = api(ui_daemon, "POST", "/api/v1/models/import", {"path": str(model)})
    assert status == 200, body
    page = ui.open("models")
    cell = page.locator("#local-models .file-name", has_text=XSS)
    expect(cell).to_have_text(f"{XSS}.gguf")

    # launched, its path shows on the Dashboard and in the log lines, as text too
    status, inst = api(
        ui_daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model), "name": "ui-xss", "wait": True},
    )
    assert status == 201, inst
    page.click('nav a[data-view="dashboard"]')
    expect(page.locator('tr[data-instance="ui-xss"]')).to_contain_text(f"{XSS}.gguf")
    page.goto(f"{ui.base_url}/#/logs/ui-xss")
    expect(page.locator("#log-lines")).to_contain_text(XSS)

    # chat Markdown: markup in model output stays text; only http(s) links become links
    rendered = page.evaluate(
        """async (xss) => {
        const md = await import('/ui/js/markdown.js');
        const box = document.createElement('div');
        box.appendChild(md.render(xss + '\\n\\n**bold** and `code`\\n\\n- one\\n- two\\n\\n'
            + '[bad](javascript:alert(1)) [good](https://example.org/x)\\n\\n```\\n' + xss + '\\n```'));
        return {text: box.textContent, imgs: box.querySelectorAll('img').length,
                strong: box.querySelector('strong')?.textContent, items: box.querySelectorAll('li').length,
                links: [...box.querySelectorAll('a')].map(a => [a.getAttribute('href'), a.rel]),
                code: box.querySelector('pre code')?.textContent};
    }""",
        XSS,
    )
    assert rendered["imgs"] == 0 and rendered["text"].startswith(XSS)
    assert rendered["strong"] == "bold" and rendered["items"] == 2 and rendered["code"] == XSS
    assert rendered["links"] == [["https://example.org/x", "noopener noreferrer"]]

    assert page.evaluate("document.querySelectorAll('img:not(.brand img)').length") == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    assert ui.dialogs == []
    api(ui_daemon, "DELETE", "/api/v1/instances/ui-xss")


def test_key_prompt_once_then_kept_for_the_session(browser, tmp_path):
    from tests.ui.conftest import Page

    env = daemon_environment(tmp_path / "keyed" / "home", CORRAL_API_KEY="sekrit-key")
    with running_daemon(env) as daemon:
        p = Page(browser, daemon.settings.daemon_url)
        try:
            page = p.open("dashboard")
            dialog = page.locator("#key-dialog")
            expect(dialog).to_be_visible()
            page.fill("#key-input", "wrong")
            page.get_by_role("button", name="Use key").click()
            expect(page.locator("#key-why")).to_contain_text("refused")
            page.fill("#key-input", "sekrit-key")
            page.get_by_role("button", name="Use key").click()
            expect(dialog).to_be_hidden()
            expect(page.locator("#instances")).to_contain_text("No instances")
            expect(page.locator("#daemon-status")).to_contain_text("daemon")
            assert page.evaluate("sessionStorage.getItem('corral.apiKey')") == "sekrit-key"
            page.reload()
            expect(page.locator("#instances")).to_contain_text("No instances")
            expect(dialog).to_be_hidden()
            assert not p.errors
        finally:
            p.close()


def test_save_a_preset_and_load_it_back(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / "preset-Q4_K_M.gguf")
    page = ui.open("launch")
    page.fill("#launch-model", str(model))
    set_flag(page, "ctx-size", "--ctx-size", "8192")
    page.fill("#flag-search", "metrics")
    page.check('.flag-input input[data-flag="--metrics"]')  # a switch: a checkbox
    set_flag(page, "warmup", "--warmup", option="off")  # a switch with a negation: on/off/default
    page.fill("#launch-env", "CUDA_VISIBLE_DEVICES=0")
    page.fill("#preset-name", "ui-preset")
    page.click("#save-preset")
    expect(page.locator("#toasts")).to_contain_text("Preset ui-preset saved")
    status, saved = api(ui_daemon, "GET", "/api/v1/presets/ui-preset")
    assert status == 200, saved
    assert saved["flags"][:2] == ["--ctx-size", "8192"]
    assert "--metrics" in saved["flags"] and "--no-warmup" in saved["flags"]
    assert saved["env"] == {"CUDA_VISIBLE_DEVICES": "0"} and saved["model"] == str(model)

    page.goto(f"{ui.base_url}/#/launch?preset=ui-preset")
    page.reload()
    expect(page.locator("#launch-model")).to_have_value(str(model))
    expect(page.locator('.flag-input [data-flag="--ctx-size"]')).to_have_value("8192")
    expect(page.locator("#launch-env")).to_have_value("CUDA_VISIBLE_DEVICES=0")
    expect(page.locator("#cmdline")).to_contain_text("--ctx-size 8192")
    expect(page.locator('.flag-input [data-flag="--metrics"]')).to_be_checked()
    expect(page.locator('.flag-input [data-flag="--warmup"]')).to_have_value("off")
    expect(page.locator("#cmdline")).to_contain_text("--no-warmup")


def test_command_line_comes_from_the_daemon_with_the_defaults_merged(ui, ui_daemon, models_dir):
    model = gguf_file(models_dir / "planned-Q4_K_M.gguf")
    status, _ = api(ui_daemon, "PUT", "/api/v1/presets/*", {"flags": ["--threads", "3"]})
    assert status in (200, 201)
    try:
        page = ui.open("launch")
        page.fill("#launch-model", str(model))
        page.fill("#launch-name", "ui-planned")
        set_flag(page, "ctx-size", "--ctx-size", "1024")
        note = page.locator("#plan-note")
        expect(note).to_contain_text("As the daemon would run it: instance ui-planned")
        # '*' defaults are not in the page's own flags: only the daemon's plan has them
        expect(page.locator("#cmdline")).to_contain_text("--threads 3 --ctx-size 1024")
        page.fill("#launch-extra", "--ctx-sise 8")
        expect(note).to_contain_text("did you mean --ctx-size")
        assert instance(ui_daemon, "ui-planned") is None  # planning launched nothing
    finally:
        api(ui_daemon, "DELETE", "/api/v1/presets/*")


def test_settings_are_saved_and_a_non_number_is_refused_in_the_page(ui, ui_daemon):
    page = ui.open("settings")
    ttl = page.locator("#setting-idle_ttl")
    expect(ttl).to_have_value(re.compile(r"^\d+(\.\d+)?$"))
    before = api(ui_daemon, "GET", "/api/v1/settings")[1]["settings"]["idle_ttl"]["value"]
    ttl.fill("soon")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Not a number: idle_ttl")).to_be_visible()
    assert api(ui_daemon, "GET", "/api/v1/settings")[1]["settings"]["idle_ttl"]["value"] == before
    ttl.fill("900")
    page.get_by_role("button", name="Save settings").click()
    wait_for(
        lambda: (
            api(ui_daemon, "GET", "/api/v1/settings")[1]["settings"]["idle_ttl"]["value"] == 900
        ),
        message="idle_ttl saved",
    )
    api(ui_daemon, "PUT", "/api/v1/settings", {"idle_ttl": None})  # back to the default
