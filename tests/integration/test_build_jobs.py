"""`corral update` as a daemon job: a real daemon runs the real update() against the fake
release server (a real HTTP server), through POST /api/v1/builds/update.

The releases API is reached through a gate (a small HTTP server that answers with a
redirect to the fake only once the test opens it), so a job can be held at its first
step for as long as a test needs — no sleeps, no timing assumptions.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from corral.builds import release
from corral.builds.update import host_os_arch
from tests.conftest import DaemonProcess, wait_for
from tests.fakes.fake_releases import FakeReleases, make_hostile_archive
from tests.integration.conftest import api, assert_error

ACTIVE = ("queued", "running")


class Gate:
    """Redirects every request to ``target`` once ``open`` is set; holds it until then."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.open = threading.Event()
        self.held = threading.Event()  # a request is waiting at the gate
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):
                gate.held.set()
                if not gate.open.wait(60):
                    self.send_error(504, "the test never opened the gate")
                    return
                self.send_response(307)
                self.send_header("Location", gate.target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "Gate":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.open.set()  # let a held request go before shutting down
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def releases():
    with FakeReleases() as rel:
        yield rel


@pytest.fixture
def gate(releases):
    with Gate(releases.host) as g:
        yield g


@pytest.fixture
def build_daemon(daemon_env, gate, releases):
    url = releases.url.replace(releases.host, gate.host)
    d = DaemonProcess(dict(daemon_env, CORRAL_RELEASES_URL=url)).start()
    try:
        yield d
    finally:
        d.stop()


def cpu_asset(releases: FakeReleases, tag: str = "b6000") -> dict:
    os_name, arch = host_os_arch()
    asset = release.pick_asset(releases.release_json(tag), os_name, arch, "cpu")
    assert asset is not None, f"the fake release has no cpu asset for {os_name}/{arch}"
    return asset


def start(d, **body) -> dict:
    status, view = api(d, "POST", "/api/v1/builds/update", {"from": "release", **body})
    assert status == 202, (status, view)
    return view


def job(d, job_id: str) -> dict:
    status, view = api(d, "GET", f"/api/v1/builds/jobs/{job_id}")
    assert status == 200, (status, view)
    return view


def ended(d, job_id: str, timeout: float = 60) -> dict:
    return wait_for(
        lambda: (v := job(d, job_id))["state"] not in ACTIVE and v,
        timeout=timeout,
        message=f"build job {job_id} to end",
    )


def registered(d) -> list[dict]:
    status, builds = api(d, "GET", "/api/v1/builds")
    assert status == 200
    return builds


class EventStream:
    """GET .../events read line by line (http.client, with a timeout: a hang fails)."""

    def __init__(self, d, job_id: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", d.settings.port, timeout=60)
        self.conn.request("GET", f"/api/v1/builds/jobs/{job_id}/events")
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200
        assert self.resp.getheader("Content-Type", "").startswith("text/event-stream")

    def events(self):
        for raw in self.resp:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                yield json.loads(line[6:])

    def close(self) -> None:
        self.conn.close()


def test_a_release_job_streams_progress_and_registers_the_build(build_daemon, gate, releases):
    d = build_daemon
    first = start(d, backend="cpu")
    assert first["state"] in ACTIVE and first["from"] == "release" and first["backend"] == "cpu"
    stream = EventStream(d, first["id"])
    try:
        events = stream.events()
        assert next(events)["id"] == first["id"]  # subscribed: nothing can be missed now
        assert gate.held.wait(30), "the job never asked for the release"

        # While it runs: the same request joins it, another one is refused naming it.
        assert start(d, backend="cpu")["id"] == first["id"]
        status, payload = api(
            d, "POST", "/api/v1/builds/update", {"from": "release", "backend": "vulkan"}
        )
        err = assert_error(status, payload, 409, "conflict")
        assert first["id"] in err["message"]
        assert [j["id"] for j in api(d, "GET", "/api/v1/builds/jobs")[1]] == [first["id"]]

        gate.open.set()
        seen = list(events)  # the stream ends with the job
    finally:
        stream.close()

    final = seen[-1]
    assert final["state"] == "done", final
    asset = cpu_asset(releases)
    downloads = [e["progress"] for e in seen if e["progress"] and e["progress"]["unit"] == "bytes"]
    assert downloads and downloads[-1] == {
        "done": asset["size"],
        "total": asset["size"],
        "unit": "bytes",
    }
    assert "backend: cpu (asked for)" in final["log"]
    assert any(line.startswith("installed b6000-cpu") for line in final["log"])
    assert final["error"] is None and final["started_at"] <= final["ended_at"]
    build = final["build"]
    assert build["build"] == "b6000" and build["backend"] == "cpu" and build["is_default"]
    assert build["origin"] == "release"
    assert Path(d.env["CORRAL_HOME"]) / "bin" / "b6000-cpu" in Path(build["path"]).parents
    assert [(b["id"], b["is_default"]) for b in registered(d)] == [(build["id"], True)]
    assert job(d, first["id"]) == final


def test_an_unknown_tag_fails_with_one_line(build_daemon, gate):
    gate.open.set()
    view = ended(build_daemon, start(build_daemon, backend="cpu", version="b1")["id"])
    assert view["state"] == "failed" and view["error_code"] == "not_found", view
    assert "b1" in view["error"] and "\n" not in view["error"]
    assert view["build"] is None and registered(build_daemon) == []


def test_a_hostile_archive_fails_and_installs_nothing(build_daemon, gate, releases):
    releases.add_asset("b6000", cpu_asset(releases)["name"], make_hostile_archive("zip"))
    gate.open.set()
    view = ended(build_daemon, start(build_daemon, backend="cpu")["id"])
    assert view["state"] == "failed", view
    assert view["error"] and "\n" not in view["error"]
    assert registered(build_daemon) == []
    assert not (Path(build_daemon.env["CORRAL_HOME"]) / "bin" / "b6000-cpu").exists()


def test_cancel_stops_at_the_download_and_the_next_update_resumes(build_daemon, gate, releases):
    d = build_daemon
    first = start(d, backend="cpu")
    assert gate.held.wait(30), "the job never asked for the release"
    with ThreadPoolExecutor(1) as pool:
        cancelling = pool.submit(api, d, "DELETE", f"/api/v1/builds/jobs/{first['id']}")
        wait_for(lambda: job(d, first["id"])["cancel_requested"], message="cancel_requested")
        gate.open.set()
        status, view = cancelling.result(timeout=60)
    assert status == 200 and view["state"] == "cancelled", view
    assert view["build"] is None and registered(d) == []
    name = cpu_asset(releases)["name"]
    assert (Path(d.env["CORRAL_HOME"]) / "bin" / ".downloads" / f"{name}.part").exists()

    again = ended(d, start(d, backend="cpu")["id"])
    assert again["state"] == "done", again
    ranges = releases.downloads_of(name)
    assert ranges[0] is None and all(r is not None for r in ranges[1:]), ranges
    assert [b["build"] for b in registered(d)] == ["b6000"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"from": "git"}, "from"),
        ({"from": "source"}, "needs a source"),
        ({"backend": "opencl"}, "backend"),
        ({"force": "yes please"}, "force"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_update_requests_are_400_and_start_nothing(daemon, body, words):
    status, payload = api(daemon, "POST", "/api/v1/builds/update", body)
    err = assert_error(status, payload, 400)
    assert words in err["message"] and "\n" not in err["message"]
    assert api(daemon, "GET", "/api/v1/builds/jobs") == (200, [])


def test_unknown_jobs_are_404(daemon):
    for method, path in (
        ("GET", "/api/v1/builds/jobs/nope"),
        ("DELETE", "/api/v1/builds/jobs/nope"),
        ("GET", "/api/v1/builds/jobs/nope/events"),
    ):
        assert_error(*api(daemon, method, path), 404, "not_found")
