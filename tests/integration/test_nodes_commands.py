"""``--node NAME`` on flags, builds, update and fit, with two real daemons on 127.0.0.1.

The node differs from the controller in everything these commands answer about: its
llama-server (``CORRAL_LLAMA_SERVER``) is the fake with one flag more in its ``--help``
and a version of its own, it has two NVIDIA cards (a recorded ``nvidia-smi`` on its PATH
only), its releases come from a fake GitHub only it is pointed at, and its builds and
models are registered in its own home. So an answer that came from this machine instead
of the node shows in every assertion.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.fakes import FAKE_LLAMA_SERVER, HELP_TEXT_PATH, make_fake_binary
from tests.fakes.fake_releases import FakeReleases
from tests.integration.test_nodes import add, cli, env_of_node, node_api, pair, url_of  # noqa: F401
from tests.integration.test_router_placement import dense, fake_nvidia_smi

NODE_FLAG = "--only-on-the-node"
NODE_VERSION = "version: 9999 (build 9999, commit n0de123)"


def node_only_binary(directory: Path) -> Path:
    """A llama-server that is the fake, except that its ``--help`` lists NODE_FLAG too
    and its ``--version`` is NODE_VERSION."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "llama-server"
    extra = NODE_FLAG + " N".ljust(40 - len(NODE_FLAG)) + "a knob this node's build alone has\n"
    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        "sys.argv[0] = __file__\n"
        'if any(a in ("-h", "--help", "--usage") for a in sys.argv[1:]):\n'
        f"    sys.stdout.write(open({str(HELP_TEXT_PATH)!r}).read() + {extra!r})\n"
        "    sys.exit(0)\n"
        'if "--version" in sys.argv[1:]:\n'
        f"    sys.stderr.write({NODE_VERSION + chr(10)!r})\n"
        "    sys.exit(0)\n"
        f'runpy.run_path({str(FAKE_LLAMA_SERVER)!r}, run_name="__main__")\n'
    )
    path.chmod(0o755)
    return path


@pytest.fixture
def releases():
    with FakeReleases() as rel:
        yield rel


@pytest.fixture
def node_env(tmp_path: Path, daemon_env: dict[str, str], releases) -> dict[str, str]:
    tools = fake_nvidia_smi(tmp_path / "node-tools", "nvidia-smi-2gpu.csv")
    return env_of_node(
        tmp_path,
        daemon_env,
        CORRAL_LLAMA_SERVER=str(node_only_binary(tmp_path / "node-build")),
        CORRAL_RELEASES_URL=releases.url,
        PATH=f"{tools}{os.pathsep}{os.environ['PATH']}",
    )


@pytest.fixture
def box(pair):  # noqa: F811
    """(controller, node, key) with the node linked as ``box``."""
    controller, node, key = pair
    assert add(controller, "box", url_of(node), key)[0] == 201
    return pair


def ok(d, *args: str):
    out = cli(d, *args)
    assert out.returncode == 0, out.stderr
    return out


def listed(d, *args: str):
    out = ok(d, *args, "--json")
    return json.loads(out.stdout or "[]")


def test_flags_with_node_are_the_nodes_build(box, fake_binary):
    controller, node, key = box
    node_binary = node.env["CORRAL_LLAMA_SERVER"]
    [knob] = listed(controller, "flags", "only-on-the-node", "--node", "box")
    assert knob["long"] == NODE_FLAG and knob["takes_value"] is True
    assert listed(controller, "flags", "only-on-the-node") == []  # this machine's has none

    shown = ok(controller, "flags", "ctx", "--node", "box")
    assert "--ctx-size" in shown.stdout
    assert shown.stderr.strip().endswith(f"flag(s) from {node_binary} on node box")

    # --build is an id of the node's builds: the plain fake registered there (not here)
    status, build = node_api(node, key, "POST", "/api/v1/builds", {"path": str(fake_binary)})
    assert status == 201, build
    both = ["only-on-the-node", "--build", str(build["id"])]
    assert listed(controller, "flags", *both, "--node", "box") == []
    here = cli(controller, "flags", *both)
    assert here.returncode == 3 and f"no build with id {build['id']}" in here.stderr

    # refused: a path to run (the API never runs a named file on a GET); a node's error
    binary = cli(controller, "flags", "--binary", str(fake_binary), "--node", "box")
    assert binary.returncode == 2
    assert binary.stderr.splitlines() == [
        "error: --binary cannot be used with --node: the node lists the flags of its own "
        "builds only; give --build ID (corral builds ls --node box)"
    ]
    missing = cli(controller, "flags", "--build", "99", "--node", "box")
    assert missing.returncode == 3 and missing.stderr.startswith("error: no build with id 99")


def test_builds_with_node_add_list_use_and_remove_the_nodes_builds(
    box, fake_binary, model_file, tmp_path
):
    controller, node, key = box
    on_node = make_fake_binary(tmp_path / "only-on-the-node")  # a path of the node's

    added = ok(controller, "builds", "add", str(on_node), "--node", "box")
    assert added.stdout.startswith(f"build 1: {on_node} (version: 0.6.0-dev")
    assert added.stdout.rstrip().endswith("flags) [default]")  # the node's first build
    second = ok(controller, "builds", "add", str(fake_binary), "--node", "box")
    assert second.stdout.startswith(f"build 2: {fake_binary} ") and "[default]" not in second.stdout

    there = node_api(node, key, "GET", "/api/v1/builds")[1]
    assert [b["path"] for b in there] == [str(on_node), str(fake_binary)]
    assert listed(controller, "builds", "ls", "--node", "box") == there
    assert listed(controller, "builds", "ls") == []  # nothing registered here
    table_ = ok(controller, "builds", "ls", "--node", "box").stdout.splitlines()
    assert table_[0].split()[:3] == ["ID", "DEFAULT", "BUILD"]
    assert [row.split()[:2] for row in table_[1:]] == [["1", "*"], ["2", "-"]]

    used = ok(controller, "builds", "use", "2", "--node", "box")
    assert used.stdout.strip() == "build 2 is now the default on node box"
    assert [
        b["id"] for b in node_api(node, key, "GET", "/api/v1/builds")[1] if b["is_default"]
    ] == [2]
    assert cli(controller, "builds", "use", "2").returncode == 3  # no build 2 here

    # a build an instance of the node runs is kept; one that none runs is forgotten, and
    # files corral did not install stay
    status, inst = node_api(
        node, key, "POST", "/api/v1/instances", {"model": str(model_file), "build": 2}
    )
    assert status == 201, inst
    busy = cli(controller, "builds", "rm", "2", "--node", "box")
    assert busy.returncode == 4
    assert busy.stderr.strip() == f"error: build 2 is used by running instance(s): {inst['name']}"
    gone = ok(controller, "builds", "rm", "1", "--node", "box")
    assert gone.stdout.strip() == (
        f"forgot build 1; its files were not installed by corral and stay ({on_node})"
    )
    assert on_node.is_file()
    assert [b["id"] for b in node_api(node, key, "GET", "/api/v1/builds")[1]] == [2]
    unknown = cli(controller, "builds", "rm", "1", "--node", "box")
    assert unknown.returncode == 3 and unknown.stderr.startswith("error: no build")


def test_update_with_node_installs_on_the_node_and_relays_its_progress(box, releases):
    controller, node, key = box
    out = ok(controller, "update", "--backend", "cpu", "--node", "box")
    installed = node.settings.home / "bin" / "b6000-cpu"
    [build] = node_api(node, key, "GET", "/api/v1/builds")[1]
    assert (
        build["build"] == "b6000"
        and build["is_default"]
        and installed in Path(build["path"]).parents
    )
    assert (
        out.stdout.strip()
        == f"build {build['id']}: b6000-cpu {build['path']} [default] on node box"
    )
    said = out.stderr.splitlines()
    assert "corral: box: backend: cpu (asked for)" in said  # the node's log, line by line
    assert any(line.startswith("corral: box: installed b6000-cpu") for line in said)
    assert "  100%" in said  # the download's progress, as plain lines off a terminal
    assert len(releases.downloads_of("llama-b6000-bin-ubuntu-x64.zip")) == 1
    assert listed(controller, "builds", "ls") == []  # nothing installed here
    assert not (controller.settings.home / "bin" / "b6000-cpu").exists()

    # the node's failure is the error here, with its exit code
    cuda = cli(controller, "update", "--backend", "cuda", "--node", "box")
    errors = [ln for ln in cuda.stderr.splitlines() if ln.startswith("error:")]
    assert cuda.returncode == 3 and len(errors) == 1 and "--from source" in errors[0]

    # a build corral installed on the node: its files go with it, there
    removed = ok(controller, "builds", "rm", str(build["id"]), "--node", "box")
    assert removed.stdout.strip() == f"removed build {build['id']} and its files ({installed})"
    assert not installed.exists() and node_api(node, key, "GET", "/api/v1/builds")[1] == []


def test_fit_with_node_plans_on_the_nodes_devices_index_and_build(box, tmp_path):
    controller, node, key = box
    model = dense(tmp_path / "node-models" / "dense-Q4_K_M.gguf", n_layer=8)
    status, imported = node_api(node, key, "POST", "/api/v1/models/import", {"path": str(model)})
    assert status == 200, imported
    [made] = imported["models"]

    plan = json.loads(ok(controller, "fit", made["name"], "--node", "box", "--json").stdout)
    gpus = [(d["id"], d["name"]) for d in plan["devices"] if d["kind"] == "gpu"]
    assert gpus == [("gpu0", "NVIDIA GeForce RTX 3060"), ("gpu1", "NVIDIA GeForce RTX 2080")]
    assert plan["fits"] is True and plan["devices"][0]["layers"] > 0
    here = json.loads(ok(controller, "fit", str(model), "--json").stdout)  # this machine
    assert [d for d in here["devices"] if d["kind"] == "gpu"] == []
    unknown = cli(controller, "fit", made["name"])  # the name is in the node's index only
    assert unknown.returncode == 3 and "not in the index" in unknown.stderr

    shown = ok(controller, "fit", made["name"], "--node", "box", "-c", "2048").stdout
    assert "gpu0 NVIDIA GeForce RTX 3060" in shown and "fits: context 2048" in shown

    # the node's build validates the flags: its own flag is known there, not here
    knob = ok(controller, "fit", made["name"], "--node", "box", NODE_FLAG, "3", "--json")
    assert NODE_FLAG in json.loads(knob.stdout)["flags"]
    local = cli(controller, "fit", str(model), NODE_FLAG, "3")
    assert local.returncode == 2 and NODE_FLAG in local.stderr

    simulated = ok(controller, "fit", made["name"], "--node", "box", "--devices", "2GiB", "--json")
    devices = json.loads(simulated.stdout)["devices"]
    assert [(d["id"], d["total_bytes"]) for d in devices if d["kind"] == "gpu"] == [("gpu0", 2**31)]


def test_commands_that_cannot_act_on_a_node_refuse_it(box):
    controller, _, _ = box
    for args in (("setup", "--yes"), ("search", "qwen"), ("preset", "ls"), ("doctor",)):
        out = cli(controller, *args, "--node", "box")
        assert out.returncode == 2, (args, out.stderr)
        [line] = [ln for ln in out.stderr.splitlines() if "--node" in ln]
        assert f"--node is not supported by `corral {args[0]}` yet" in line
        assert out.stdout == ""
    unknown = cli(controller, "builds", "ls", "--node", "nope")
    assert unknown.returncode == 3 and "no node 'nope'" in unknown.stderr


def test_a_jobs_log_lines_are_shown_once_as_its_window_slides():
    """The job's view carries its last lines only: each event shows what is new in it."""
    from corral.cli.builds import _new_lines

    assert _new_lines([], ["a", "b"]) == ["a", "b"]
    assert _new_lines(["a", "b"], ["a", "b"]) == []
    assert _new_lines(["a", "b"], ["a", "b", "b"]) == ["b"]  # a line said twice is shown twice
    assert _new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]  # the oldest fell off
    assert _new_lines(["a"], ["x", "y"]) == ["x", "y"]  # nothing in common: all of it
