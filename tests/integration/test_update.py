"""`corral update`, `builds`, `gpus`, `doctor` through the real CLI, against a fake
release server (a real HTTP server) — the source path is exercised for real by
`make test` itself, which builds llama-server with `corral update --from pypi`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_releases import FakeReleases


def cli(env, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(corral_home, tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    e["CORRAL_HOME"] = str(corral_home)
    e["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return e


def test_update_from_release_installs_registers_and_is_idempotent(env):
    with FakeReleases() as rel:
        env["CORRAL_RELEASES_URL"] = rel.url
        first = cli(env, "update", "--backend", "cpu")
        assert first.returncode == 0, first.stderr
        assert "backend: cpu (asked for)" in first.stderr
        assert "b6000-cpu" in first.stdout and "[default]" in first.stdout
        builds = json.loads(cli(env, "builds", "ls", "--json").stdout)
        assert len(builds) == 1 and builds[0]["build"] == "b6000"
        assert builds[0]["backend"] == "cpu" and builds[0]["origin"] == "release"
        assert builds[0]["tools"] == ["llama-fit-params", "rpc-server"]
        binary = Path(builds[0]["path"])
        assert binary.is_file()
        assert Path(env["CORRAL_HOME"]) / "bin" / "b6000-cpu" in binary.parents

        again = cli(env, "update", "--backend", "cpu")
        assert again.returncode == 0 and "already installed" in again.stderr
        assert len(rel.downloads_of("llama-b6000-bin-ubuntu-x64.zip")) == 1  # not fetched again

        forced = cli(env, "update", "--backend", "cpu", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "installed b6000-cpu" in forced.stderr
        assert len(json.loads(cli(env, "builds", "ls", "--json").stdout)) == 1

        older = cli(env, "update", "--backend", "cpu", "--version", "b5990")
        assert older.returncode == 0, older.stderr
        ls = json.loads(cli(env, "builds", "ls", "--json").stdout)
        assert [b["build"] for b in ls if b["is_default"]] == ["b5990"]

        # rm deletes files corral installed
        b5990 = next(b for b in ls if b["build"] == "b5990")
        out = cli(env, "builds", "rm", str(b5990["id"]))
        assert out.returncode == 0 and "and its files" in out.stdout
        assert not (Path(env["CORRAL_HOME"]) / "bin" / "b5990-cpu").exists()
        assert (Path(env["CORRAL_HOME"]) / "bin" / "b6000-cpu").exists()


def test_cuda_on_linux_points_to_a_source_build(env):
    with FakeReleases() as rel:
        env["CORRAL_RELEASES_URL"] = rel.url
        out = cli(env, "update", "--backend", "cuda")
        assert out.returncode == 3, out.stderr
        errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "--from source" in errors[0]
        assert json.loads(cli(env, "builds", "ls", "--json").stdout or "[]") == []


def test_gpus_on_this_cpu_only_host(env):
    out = cli(env, "gpus")
    assert out.returncode == 0
    data = json.loads(cli(env, "gpus", "--json").stdout)
    assert data["backend"]["name"] in ("cpu", "cuda", "rocm", "vulkan", "metal")
    if not data["gpus"]:
        assert "CPU-only host" in out.stdout


def test_setup_non_interactive_installs_a_build_and_imports_a_directory(env, tmp_path):
    import gguf

    models = tmp_path / "my-ggufs"
    models.mkdir()
    w = gguf.GGUFWriter(str(models / "mine-Q8_0.gguf"), "llama")
    w.add_file_type(7)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    with FakeReleases() as rel:
        env["CORRAL_RELEASES_URL"] = rel.url
        out = cli(env, "setup", "--backend", "cpu", "--import", str(models), "--yes")
        assert out.returncode == 0, out.stderr
        assert "backend: cpu" in out.stdout and "ready:" in out.stdout
        assert len(json.loads(cli(env, "builds", "ls", "--json").stdout)) == 1
        names = [m["name"] for m in json.loads(cli(env, "ls", "--json").stdout)]
        assert len(names) == 1 and names[0].startswith("mine")
        again = cli(env, "setup", "--yes")
        assert again.returncode == 0 and "already the default" in again.stdout
