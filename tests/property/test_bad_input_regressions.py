"""The bad inputs of issue 10 that were 500s or accepted, each pinned by name."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corral.builds.catalog import FlagCatalog
from corral.cli import cli
from corral.errors import FlagValueError, UsageError
from tests.fakes import read_help_text
from tests.property.conftest import assert_clean, send

BEYOND = 2**63  # SQLite INTEGER is signed 64-bit


def _error(resp, status: int, code: str | None = None) -> dict:
    assert_clean(resp, "regression")
    assert resp.status_code == status, (resp.status_code, resp.text)
    err = resp.json()["error"]
    assert code is None or err["code"] == code, err
    return err


def test_build_id_beyond_sqlite_range_is_400(daemon_in_process):
    d = daemon_in_process
    m = str(d.model)
    for bad in (BEYOND, 2**64, -1, 0):
        _error(d.client.post(f"/api/v1/builds/{bad}/default"), 400)
        _error(d.client.get(f"/api/v1/flags?build={bad}"), 400)
        _error(send(d.client, "POST", "/api/v1/instances/plan", {"model": m, "build": bad}), 400)
        _error(send(d.client, "POST", "/api/v1/instances", {"model": m, "build": bad}), 400)
        _error(send(d.client, "PUT", "/api/v1/presets/p", {"build": bad}), 400)
        doc = f"p:\n  build: {bad}\n"
        _error(send(d.client, "POST", "/api/v1/presets/import", {"text": doc}), 400)
    assert d.client.get("/api/v1/instances").json() == []  # nothing was recorded


@pytest.mark.parametrize(
    "argv",
    [
        ["builds", "use", str(BEYOND)],
        ["builds", "rm", str(BEYOND)],
        ["builds", "use", "--", "-5"],
        ["flags", "--build", str(BEYOND)],
    ],
)
def test_build_id_beyond_sqlite_range_is_a_one_line_cli_error(argv):
    result = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert result.exit_code == UsageError.exit_code, result.output
    assert result.output.startswith("error: build must be a build id"), result.output
    assert result.output.count("\n") == 1


def test_nul_byte_in_flag_value_is_400(daemon_in_process):
    d = daemon_in_process
    for flags in (["-c", "40\x0096"], ["--ctx-size=40\x0096"], ["--no-mmap\x00"]):
        body = {"model": str(d.model), "flags": flags}
        _error(send(d.client, "POST", "/api/v1/instances/plan", body), 400, "flag_value")
        _error(send(d.client, "POST", "/api/v1/instances", body), 400, "flag_value")
    assert d.client.get("/api/v1/instances").json() == []  # refused before any record


def test_nul_byte_in_flag_value_refused_by_the_catalog():
    catalog = FlagCatalog.parse(read_help_text())
    with pytest.raises(FlagValueError, match="NUL"):
        catalog.normalize(["-c", "40\x0096"])
    with pytest.raises(FlagValueError, match="NUL"):
        catalog.normalize(["--alias", "a\x00"])
    assert catalog.normalize(["-c", "4096"]) == [("--ctx-size", "4096")]


def test_name_with_trailing_newline_refused(daemon_in_process):
    d = daemon_in_process
    _error(send(d.client, "PUT", "/api/v1/presets/chat%0A", {}), 400)
    _error(send(d.client, "PUT", "/api/v1/presets/chat", {"aliases": ["gpt\n"]}), 400)
    _error(send(d.client, "POST", "/api/v1/presets/import", {"text": "chat\n: {}\n"}), 400)
    for ref in (
        "org/tiny-GGUF\n:Q4_K_M",
        "org/tiny-GGUF@main\n:Q4_K_M",
        "org/tiny-GGUF:Q4\n_K_M",
        "org/tiny-GGUF@\x00",
    ):
        _error(send(d.client, "POST", "/api/v1/pulls", {"ref": ref}), 400)
    _error(d.client.get("/api/v1/hub/quants?repo=org/tiny-GGUF%0A/x"), 400)
    _error(
        send(d.client, "POST", "/api/v1/builds/update", {"from": "release", "version": "b6000\n"}),
        400,
    )
    assert send(d.client, "PUT", "/api/v1/presets/chat", {}).status_code == 201  # still fine


def test_name_with_trailing_newline_refused_by_the_library():
    from corral import hub, models, presets
    from corral.builds import release, source

    with pytest.raises(UsageError):
        presets.validate(presets.Preset(name="chat\n"))
    with pytest.raises(UsageError):
        presets.validate(presets.Preset(name="chat", aliases=["a\n"]))
    for ref in ("org/re\npo", "org/repo\n:Q4_K_M", "org/repo@ma\nin", "org/repo:Q4\n_K"):
        with pytest.raises(UsageError):
            hub.parse_ref(ref)
    assert hub.parse_ref(" org/repo\n").repo == "org/repo"  # the whole text is trimmed
    with pytest.raises(UsageError):
        release.get_release("http://127.0.0.1:9", "b6000\n")
    assert source.TAG_RE.fullmatch("b6000\n") is None and source.TAG_RE.fullmatch("b6000")
    assert models.split_info("x-00001-of-00002.gguf\n") is None
    assert models.split_info("x-00001-of-00002.gguf") == ("x", 1, 2)
    assert release.parse_asset_name("llama-b1-bin-ubuntu-x64.zip\n") is None
    assert release.parse_asset_name("llama-b1-bin-ubuntu-x64.zip") is not None


def test_rm_refuses_model_used_by_running_instance_over_the_api(daemon_in_process, tmp_path):
    """DELETE /api/v1/models/{id}: 409 naming the instance unless ?force=true."""
    d = daemon_in_process
    pull = send(d.client, "POST", "/api/v1/pulls", {"ref": "org/tiny-GGUF:Q4_K_M"}).json()
    from tests.conftest import wait_for

    final = wait_for(
        lambda: (lambda j: j if j["state"] not in ("queued", "running") else None)(
            d.client.get(f"/api/v1/pulls/{pull['id']}").json()
        ),
        message="the pull to end",
    )
    assert final["state"] == "done", final
    model = next(m for m in d.client.get("/api/v1/models").json() if m["owned"])
    launched = send(d.client, "POST", "/api/v1/instances", {"model": model["id"], "name": "user1"})
    assert launched.status_code == 201, launched.text
    err = _error(d.client.delete(f"/api/v1/models/{model['id']}"), 409, "conflict")
    assert "user1" in err["message"]
    from pathlib import Path

    assert Path(model["path"]).exists()
    gone = d.client.delete(f"/api/v1/models/{model['id']}?force=true")
    assert gone.status_code == 200 and not Path(model["path"]).exists()
