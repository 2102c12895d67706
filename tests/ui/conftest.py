"""Browser tests of the web UI: Playwright driving Debian's Chromium against a real daemon.

One daemon (fake llama-server, fake Hub) and one Chromium serve the whole session: each
test uses its own model files and instance names, and its own browser context (fresh
storage). Chromium is the distribution's (/usr/bin/chromium); Playwright never downloads
a browser. Screenshots go to tests/ui/screenshots/ (git-ignored) for review.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST, REPO, DaemonProcess, free_port, free_port_range, running_daemon
from tests.fakes import make_fake_binary
from tests.fakes.fake_hub import FakeHub

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
HUB_REPO = "acme/tiny-GGUF"


def gguf_file(path: Path, name: str | None = None, size: int = 0) -> Path:
    """A valid GGUF header (gguf-py), optionally padded to ``size`` bytes."""
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    if name:
        w.add_name(name)
    w.add_file_type(15)
    w.add_context_length(4096)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    if size:
        with open(path, "ab") as fh:
            fh.write(os.urandom(max(0, size - path.stat().st_size)))
    return path


def api(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One JSON request to the daemon; (status, decoded body)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=30)
    try:
        hdrs = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw) if raw else None
    except ValueError:
        return resp.status, raw.decode(errors="replace")


@pytest.fixture(scope="package")
def chromium_path() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="package")
def fake_hub(tmp_path_factory):
    files = tmp_path_factory.mktemp("hubfiles")
    with FakeHub(cdn=True, chunk_size=64 * 1024) as hub:
        hub.add_repo(
            HUB_REPO,
            files={
                "tiny-Q4_K_M.gguf": gguf_file(files / "q4.gguf", "tiny", 3_000_000).read_bytes(),
                "tiny-Q8_0.gguf": gguf_file(files / "q8.gguf", "tiny", 1_000_000).read_bytes(),
                "README.md": "# tiny",
            },
            downloads=1234,
        )
        hub.add_repo(
            "acme/slow-GGUF",
            files={
                "slow-Q4_K_M.gguf": gguf_file(files / "slow.gguf", "slow", 4_000_000).read_bytes(),
            },
        )
        yield hub


def daemon_environment(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a test daemon: fake llama-server, fast knobs, free ports."""
    home.mkdir(parents=True, exist_ok=True)
    binary = make_fake_binary(home.parent / "fakebin")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRAL_", "FAKE_LLAMA_"))}
    env.update(FAST)
    env.update(
        {
            "CORRAL_HOME": str(home),
            "CORRAL_PORT": str(port),
            "CORRAL_URL": f"http://127.0.0.1:{port}",
            "CORRAL_PORT_RANGE": free_port_range(),
            "CORRAL_LLAMA_SERVER": str(binary),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(home / "hf"),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        }
    )
    env.update(extra)
    return env


@pytest.fixture(scope="package")
def ui_daemon(tmp_path_factory, fake_hub):
    """The UI tests' daemon (one for the package), talking to the fake Hub."""
    home = tmp_path_factory.mktemp("ui") / "home"
    with running_daemon(daemon_environment(home, CORRAL_HF_ENDPOINT=fake_hub.url)) as d:
        yield d


@pytest.fixture(scope="package")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-models")


@pytest.fixture(scope="package")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Playwright gives every launch a fresh, empty --user-data-dir of its own.
        b = pw.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Page:
    """A page in its own browser context, recording page errors and dialogs (confirm is
    accepted, prompt answered from ``answers``, alert dismissed)."""

    def __init__(self, browser, base_url: str, **context_args) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **context_args)
        self.context.set_default_timeout(20_000)
        self.page = self.context.new_page()
        self.base_url = base_url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        #: what the next window.prompt() dialogs answer, in order
        self.answers: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        if dialog.type == "confirm":
            dialog.accept()
        elif dialog.type == "prompt" and self.answers:
            dialog.accept(self.answers.pop(0))
        else:
            dialog.dismiss()

    def open(self, hash_path: str = "") -> Any:
        self.page.goto(f"{self.base_url}/{'#/' + hash_path if hash_path else ''}")
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser, ui_daemon):
    """A fresh browser context on the session daemon; fails on any uncaught page error."""
    p = Page(browser, ui_daemon.settings.daemon_url)
    try:
        yield p
    finally:
        p.close()
    assert not p.errors, f"uncaught errors in the page: {p.errors}"


@pytest.fixture(scope="package")
def screenshots() -> Path:
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS
