"""The package as a user gets it: built (sdist, then the wheel from the sdist, as
``python -m build`` does), installed into a fresh venv outside the checkout, and run from
there: ``corral --version``, ``corral completion``, and ``corral serve`` answering ``/``
(the web UI, from the installed files), ``/healthz`` and ``/openapi.json``.

The fresh venv has no pip of its own and sees nothing of the checkout's venv: this venv's
pip installs the wheel into it (``pip --python``), its runtime dependencies from the index,
not the dev extras. Everything runs with cwd and CORRAL_HOME in temp dirs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest

import corral
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow

WEB = REPO / "src" / "corral" / "web"


def run(argv: list[str | Path], **kw) -> subprocess.CompletedProcess:
    """Run argv, failing the test with its stderr when it fails."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=240, **kw)
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return done


def web_files() -> list[str]:
    """The web UI's files in the checkout, as the wheel names them (``corral/web/...``)."""
    return sorted(str(p.relative_to(WEB.parents[1])) for p in WEB.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel, built once per session into a temp dir."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, REPO], cwd=out)
    (sdist,) = out.glob("corral-*.tar.gz")
    (wheel,) = out.glob("corral-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="session")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed."""
    root = tmp_path_factory.mktemp("venv")
    assert not root.resolve().is_relative_to(REPO)
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", dist["wheel"]])
    run([sys.executable, "-m", "pip", "--python", python, "check"])
    return root


@pytest.fixture
def outside(venv, tmp_path) -> dict:
    """cwd, env and executables for running the installed corral away from the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CORRAL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["CORRAL_HOME"] = str(tmp_path / "home")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    return {
        "cwd": cwd,
        "env": env,
        "corral": venv / "bin" / "corral",
        "python": venv / "bin" / "python",
    }


def test_the_wheel_carries_the_web_ui_and_no_tests(dist):
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    expected = web_files()
    assert {"corral/web/index.html", "corral/web/app.css", "corral/web/favicon.svg"} <= set(
        expected
    )
    assert "corral/web/js/app.js" in expected and "corral/web/js/views/chat.js" in expected
    assert set(expected) <= set(names), set(expected) - set(names)
    assert not [n for n in names if n.startswith(("tests/", "bench/")) or "__pycache__" in n]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(dist["wheel"]).read(entry_points).decode()
    assert "corral = corral.cli:main" in scripts


def test_the_sdist_carries_the_web_ui_and_the_tests(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {f"src/{f}" for f in web_files()} <= names
    assert {"pyproject.toml", "Makefile", "tests/conftest.py", "README.md"} <= names


def test_the_installed_corral_runs_from_site_packages(outside):
    version = run([outside["corral"], "--version"], cwd=outside["cwd"], env=outside["env"])
    assert version.stdout.strip() == f"corral, version {corral.__version__}"
    as_module = run(
        [outside["python"], "-m", "corral", "--version"], cwd=outside["cwd"], env=outside["env"]
    )
    assert as_module.stdout == version.stdout
    where = run(
        [outside["python"], "-c", "import corral.api.web as w; print(w.__file__)"],
        cwd=outside["cwd"],
        env=outside["env"],
    )
    module = Path(where.stdout.strip())
    assert "site-packages" in module.parts and not module.is_relative_to(REPO)
    script = run([outside["corral"], "completion", "bash"], cwd=outside["cwd"], env=outside["env"])
    assert "_CORRAL_COMPLETE=bash_complete" in script.stdout


def installed_web_dir(outside) -> Path:
    where = run(
        [outside["python"], "-c", "import corral.api.web as w; print(w.WEB_DIR)"],
        cwd=outside["cwd"],
        env=outside["env"],
    )
    web = Path(where.stdout.strip())
    assert web.is_dir() and not web.resolve().is_relative_to(REPO)
    return web


def wait_healthy(base: str, daemon: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise AssertionError(f"corral serve exited {daemon.returncode}: {daemon.stderr.read()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).raise_for_status().json()
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"corral serve not healthy at {base} after {timeout}s")


def test_the_installed_daemon_serves_the_ui_from_the_installed_files(outside):
    # a mark only the installed copy carries: the page served must be that file
    index = installed_web_dir(outside) / "index.html"
    marker = f"<!-- installed copy {uuid.uuid4().hex} -->"
    index.write_text(index.read_text() + marker + "\n")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = subprocess.Popen(
        [str(outside["corral"]), "serve", "--port", str(port)],
        cwd=outside["cwd"],
        env=outside["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        health = wait_healthy(base, daemon)
        assert health["status"] == "ok" and health["version"] == corral.__version__
        assert health["home"] == outside["env"]["CORRAL_HOME"]

        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert marker in page.text and page.content == index.read_bytes()

        script = httpx.get(f"{base}/ui/js/app.js", timeout=10)
        assert script.status_code == 200
        assert script.content == (index.parent / "js" / "app.js").read_bytes()

        schema = httpx.get(f"{base}/openapi.json", timeout=10)
        assert schema.status_code == 200
        assert schema.json()["info"]["version"] == corral.__version__
        assert "/healthz" in schema.json()["paths"]
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=5)
        daemon.stderr.close()
