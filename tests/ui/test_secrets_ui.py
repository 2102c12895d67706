"""Secrets typed into the launch view never show in its command line (corral.redact)."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.ui.conftest import api, gguf_file
from tests.ui.test_views import set_flag


def test_api_key_masked_in_the_launch_command_line(ui, ui_daemon, models_dir):
    secret = "sekrit-ui-7d2a"
    model = gguf_file(models_dir / "keyed-ui-Q4_K_M.gguf")
    page = ui.open("launch")
    page.fill("#launch-model", str(model))
    page.fill("#launch-name", "ui-keyed")
    field = set_flag(page, "api-key", "--api-key", secret)
    cmdline = page.locator("#cmdline")
    note = page.locator("#plan-note")
    expect(note).to_contain_text("As the daemon would run it: instance ui-keyed")
    expect(cmdline).to_contain_text("--api-key '***'")
    assert secret not in cmdline.inner_text()
    assert field.get_attribute("type") == "password"  # the daemon said it holds a secret
    # the page's own preview masks too, before the daemon's plan comes back
    page.fill("#launch-extra", f"--hf-token={secret}")
    assert secret not in cmdline.inner_text()
    expect(cmdline).to_contain_text("'--hf-token=***'")
    assert secret not in cmdline.inner_text()
    status, inst = api(ui_daemon, "GET", "/api/v1/instances/ui-keyed")
    assert status == 404, inst  # planning launched nothing
