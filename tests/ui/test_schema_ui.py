"""The Launch form takes its names, restart policies and ranges from GET /api/v1/schema.

First against the daemon's own schema (the select shows its policies, a name its pattern
rejects is refused before anything is sent), then with the schema answered by the test
(other policies, a stricter pattern, a smaller port range): the form follows what it is
served, so nothing is typed again in the JavaScript.
"""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from tests.ui.conftest import api, gguf_file


def launch_requests(page) -> list[str]:
    """Records the bodies of POST /api/v1/instances the page sends (the list fills live)."""
    sent: list[str] = []

    def record(request) -> None:
        if request.method == "POST" and request.url.endswith("/api/v1/instances"):
            sent.append(request.post_data or "")

    page.on("request", record)
    return sent


def test_restart_options_and_name_rule_are_the_daemons(ui, ui_daemon, models_dir):
    status, schema = api(ui_daemon, "GET", "/api/v1/schema")
    assert status == 200, schema
    page = ui.open("launch")
    sent = launch_requests(page)
    restart = page.locator("#launch-restart")
    expect(restart.locator("option")).to_have_count(len(schema["restart_policies"]))
    values = restart.locator("option").evaluate_all("opts => opts.map(o => o.value)")
    assert values == schema["restart_policies"]
    expect(restart).to_have_value(schema["default_restart"])
    name = page.locator("#launch-name")
    expect(name).to_have_attribute("pattern", schema["instance_name"]["pattern"])
    expect(name).to_have_attribute("maxlength", str(schema["instance_name"]["max_length"]))

    model = gguf_file(models_dir / "schema-Q4_K_M.gguf")
    page.fill("#launch-model", str(model))
    page.fill("#launch-name", "-not a name")
    page.click("#launch-button")
    expect(page.locator("#launch-error")).to_contain_text("Invalid instance name '-not a name'")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(re.compile(r"#/launch$"))
    assert sent == []

    page.fill("#launch-env", "1ABC=x")
    page.fill("#launch-name", "ui-schema")
    page.click("#launch-button")
    expect(page.locator("#launch-error")).to_contain_text(
        "Environment: '1ABC' is not a variable name"
    )
    assert sent == []
    assert api(ui_daemon, "GET", "/api/v1/instances/ui-schema")[0] == 404


def test_the_form_follows_the_schema_it_is_served(ui, ui_daemon, models_dir):
    status, schema = api(ui_daemon, "GET", "/api/v1/schema")
    assert status == 200, schema
    served = {
        **schema,
        "instance_name": {"pattern": "[a-z]{1,8}", "max_length": 8},
        "restart_policies": ["never", "always"],
        "default_restart": "always",
        "port": {"min": 1000, "max": 2000},
    }
    ui.context.route(
        "**/api/v1/schema",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(served)
        ),
    )
    page = ui.open("launch")
    sent = launch_requests(page)
    restart = page.locator("#launch-restart")
    expect(restart.locator("option")).to_have_count(2)
    assert restart.locator("option").evaluate_all("opts => opts.map(o => o.value)") == [
        "never",
        "always",
    ]
    expect(restart).to_have_value("always")
    expect(page.locator("#launch-name")).to_have_attribute("maxlength", "8")

    model = gguf_file(models_dir / "served-Q4_K_M.gguf")
    page.fill("#launch-model", str(model))
    page.fill("#launch-name", "abc123")  # the daemon's own pattern takes it; this one does not
    page.click("#launch-button")
    expect(page.locator("#launch-error")).to_contain_text("it must match [a-z]{1,8}")
    page.fill("#launch-name", "abc")
    page.fill("#launch-port", "80")
    page.click("#launch-button")
    expect(page.locator("#launch-error")).to_have_text("Port must be 1000 to 2000.")
    page.fill("#preset-name", "abc123")
    page.click("#save-preset")
    expect(page.locator("#launch-error")).to_contain_text("Invalid preset name 'abc123'")
    assert sent == []
    assert api(ui_daemon, "GET", "/api/v1/presets/abc123")[0] == 404
