"""Screenshots of every view in light and dark, for review (not compared pixel by pixel).

It makes its own instance, model and conversation, so no view is empty; run after
test_views.py (file order) the views also show what those tests left behind.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import Page, api, gguf_file

#: view -> a selector that shows the view has its data
VIEWS = {
    "dashboard": "#host [data-testid=host-card]",
    "models": "#local-models table",
    "launch": "#flag-editor .flag-row",
    "chat": "#messages .msg-assistant",
    "logs/ui-shots": "#log-lines .line",
    "settings": "#daemon-settings table",
}


@pytest.fixture(scope="module")
def populated(ui_daemon, models_dir):
    """A ready instance and a conversation with a Markdown reply, so no view is empty."""
    model = gguf_file(models_dir / "shots-Q4_K_M.gguf", name="Shots 1B")
    status, body = api(ui_daemon, "POST", "/api/v1/models/import", {"path": str(model)})
    assert status == 200, body
    status, inst = api(
        ui_daemon,
        "POST",
        "/api/v1/instances",
        {"model": str(model), "name": "ui-shots", "wait": True, "flags": ["-c", "4096"]},
    )
    assert status == 201, inst
    reply = (
        "Here is a **short** answer:\n\n1. the first point\n2. the second, with `code`\n\n"
        "```python\nprint('hello')\n```"
    )
    status, conv = api(
        ui_daemon,
        "POST",
        "/api/v1/conversations",
        {
            "title": "Markdown demo",
            "model": "ui-shots",
            "messages": [
                {"role": "user", "content": "Show me <b>Markdown</b>"},
                {"role": "assistant", "content": reply, "tokens_per_second": 41.5},
            ],
        },
    )
    assert status == 201, conv
    yield conv
    api(ui_daemon, "DELETE", "/api/v1/instances/ui-shots")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshot_every_view(browser, ui_daemon, populated, screenshots, theme):
    p = Page(browser, ui_daemon.settings.daemon_url, color_scheme=theme)
    try:
        for view, ready in VIEWS.items():
            query = f"?c={populated['id']}" if view == "chat" else ""
            page = p.open(view + query)
            expect(page.locator(ready).first).to_be_visible()
            expect(page.locator("html")).to_have_attribute("data-theme", theme)
            path = screenshots / f"{view.split('/')[0]}-{theme}.png"
            page.screenshot(path=str(path))
            assert path.stat().st_size > 10_000, f"{path} looks empty"
        assert not p.errors, p.errors
    finally:
        p.close()
