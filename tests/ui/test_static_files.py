"""The UI's files: no HTML-parsing sink, no eval, nothing fetched from another host
(it must work offline), and the daemon serves them with the right headers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.api.web import CSP, WEB_DIR

FILES = sorted(p for p in WEB_DIR.rglob("*") if p.is_file())
TEXT_FILES = [p for p in FILES if p.suffix in (".html", ".js", ".css", ".svg")]
FORBIDDEN = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function\s*\("
)
URL = re.compile(r"(?:https?:)?//([A-Za-z0-9.-]+\.[A-Za-z]{2,}|\d+\.\d+\.\d+\.\d+|localhost)\b")
#: XML namespaces are identifiers inside SVG files, never fetched.
NAMESPACES = {"www.w3.org"}


def test_the_ui_has_its_files():
    names = {p.relative_to(WEB_DIR).as_posix() for p in FILES}
    views = {
        f"js/views/{v}.js"
        for v in ("dashboard", "models", "launch", "chat", "logs", "nodes", "settings")
    }
    assert {
        "index.html",
        "app.css",
        "js/app.js",
        "js/api.js",
        "js/sse.js",
        "js/dom.js",
        "js/markdown.js",
        "js/fleet.js",
        "js/flags.js",
        "js/format.js",
        "js/theme.js",
    } | views <= names


def test_every_view_is_routed_and_every_route_is_a_view():
    """app.js's VIEWS table and the files under js/views/ name the same views."""
    app = (WEB_DIR / "js" / "app.js").read_text()
    table = re.search(r"const VIEWS = \{(.*?)\};", app, re.S)
    assert table, "app.js has no VIEWS table"
    routes = dict(re.findall(r'(\w+): "\./views/([\w-]+)\.js"', table.group(1)))
    assert routes and all(view == file for view, file in routes.items()), routes
    files = {p.stem for p in (WEB_DIR / "js" / "views").glob("*.js")}
    assert set(routes) == files


@pytest.mark.parametrize(
    "path",
    [p for p in TEXT_FILES if p.suffix == ".js"],
    ids=lambda p: p.relative_to(WEB_DIR).as_posix(),
)
def test_every_relative_import_is_a_file(path: Path):
    """A module a view imports (../fleet.js) is shipped: a missing one breaks the view."""
    text = path.read_text()
    targets = re.findall(r'from\s+"(\.{1,2}/[^"]+)"', text)
    targets += re.findall(r'import\(\s*"(\.{1,2}/[^"]+)"\s*\)', text)
    missing = [t for t in targets if not (path.parent / t).resolve().is_file()]
    assert not missing, missing


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.relative_to(WEB_DIR).as_posix())
def test_no_html_sinks_nor_eval(path: Path):
    hits = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert not hits, hits


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.relative_to(WEB_DIR).as_posix())
def test_nothing_from_another_host(path: Path):
    hosts = {m.group(1) for m in URL.finditer(path.read_text())} - NAMESPACES
    assert not hosts, f"{path.name} names other hosts: {sorted(hosts)}"
    assert not re.search(r"@import|url\(\s*['\"]?(?!data:)[a-z]+:", path.read_text()), path.name


def test_html_has_no_inline_script_or_style():
    html = (WEB_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)


def test_the_detector_finds_what_it_looks_for():
    assert FORBIDDEN.search("el.innerHTML = x") and FORBIDDEN.search("eval (s)")
    assert not FORBIDDEN.search("evaluate(x)")
    assert URL.search('import x from "https://cdn.example.com/x.js"')
    assert URL.search("url(//fonts.example.net/a.woff)")
    assert not URL.search("placeholder: 'e.g. --lora a.gguf'")


def _get(daemon, path: str):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.settings.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_served_with_types_csp_and_no_cache(ui_daemon):
    status, headers, body = _get(ui_daemon, "/")
    assert status == 200 and body == (WEB_DIR / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "frame-ancestors 'none'" in CSP
    assert headers["cache-control"] == "no-cache" and headers["x-content-type-options"] == "nosniff"
    for path, ctype in [
        ("/ui/js/app.js", "text/javascript; charset=utf-8"),
        ("/ui/js/views/chat.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ]:
        status, headers, body = _get(ui_daemon, path)
        assert status == 200 and headers["content-type"] == ctype, (path, status, headers)
        assert headers["cache-control"] == "no-cache" and body


@pytest.mark.parametrize(
    "path",
    [
        "/ui/../api/web.py",
        "/ui/%2e%2e/api/web.py",
        "/ui/js/",
        "/ui/nope.js",
        "/ui/../../../../etc/passwd",
        "/ui/js/../../web.py",
        "/ui/a%00.js",
        "/ui/" + "a" * 5000 + ".js",
    ],
)
def test_nothing_else_is_served(ui_daemon, path):
    status, headers, body = _get(ui_daemon, path)
    assert status == 404, (path, status, body[:200])
    assert b"import" not in body
