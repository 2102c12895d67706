"""`corral rm` and the files a running instance reads; `corral ls/show` and hostile GGUF text.

Issue 10: ``corral rm MODEL`` deleted the files of a model a running instance used
without a word, and ``corral show`` printed GGUF strings raw, so a hostile file's
escape sequences reached the terminal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral import models as lib
from corral.cli import cli
from corral.cli.terminal import printable
from corral.errors import Conflict
from corral.settings import load_settings
from corral.store import instances as instances_table
from corral.store.db import Store
from corral.store.instances import InstanceRecord
from tests.unit.test_models import write_gguf


@pytest.fixture
def store(corral_home: Path):
    s = Store(corral_home / "corral.db")
    yield s
    s.close()


def _downloaded(
    store: Store, name: str = "a-Q4_K_M.gguf", mmproj: bool = False, quant: str = "Q4_K_M"
):
    """An owned model (as `corral pull` leaves it) under CORRAL_HOME/models."""
    d = load_settings().models_dir / "org" / "repo"
    path = write_gguf(d / name)
    mm = write_gguf(d / "mmproj-F16.gguf", arch="clip") if mmproj else None
    rec = lib.register_download(
        store,
        repo="org/repo",
        revision=None,
        filename=path.name,
        files=[{"path": str(path)}],
        mmproj=str(mm) if mm else None,
        quant=quant,
    )
    return rec, path, mm


def _instance(
    store: Store,
    name: str,
    model: Path,
    *,
    state: str = "ready",
    desired: str = "running",
    argv: list[str] | None = None,
    port: int = 20001,
):
    instances_table.insert(
        store,
        InstanceRecord(
            name=name,
            model=str(model),
            binary="/bin/true",
            port=port,
            state=state,
            desired=desired,
            argv=argv or ["/bin/true", "--model", str(model)],
        ),
    )


# -- rm --------------------------------------------------------------------------------


def test_rm_refuses_model_used_by_running_instance(store, corral_home):
    rec, path, _ = _downloaded(store)
    _instance(store, "chat", path)
    with pytest.raises(Conflict, match="chat"):
        lib.remove(store, rec.id, delete_files=True, models_dir=load_settings().models_dir)
    assert path.exists() and lib.resolve(store, rec.id).id == rec.id  # nothing changed

    result = CliRunner().invoke(cli, ["rm", rec.id], catch_exceptions=False)
    assert result.exit_code == Conflict.exit_code, result.output
    assert "chat" in result.output and "--force" in result.output
    assert "Traceback" not in result.output and path.exists()


def test_rm_refuses_model_whose_mmproj_a_backoff_instance_uses(store):
    """Any file of the model counts (here the projector, via argv), and an instance in
    backoff or meant to run counts as running: it will read the file again."""
    rec, path, mm = _downloaded(store, mmproj=True)
    other = write_gguf(Path(str(path)).parent / "other.gguf")
    _instance(
        store,
        "vision",
        other,
        state="backoff",
        argv=["/bin/true", "--model", str(other), "--mmproj", str(mm)],
    )
    with pytest.raises(Conflict, match="vision"):
        lib.remove(store, rec.id, delete_files=True, models_dir=load_settings().models_dir)
    assert mm.exists() and path.exists()


def test_rm_force_deletes_files_a_running_instance_uses(store):
    rec, path, _ = _downloaded(store)
    _instance(store, "chat", path)
    result = CliRunner().invoke(cli, ["rm", "--force", rec.id], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not path.exists()


def test_rm_allowed_when_the_instance_is_stopped_or_files_are_kept(store):
    rec, path, _ = _downloaded(store)
    _instance(store, "chat", path, state="stopped", desired="stopped")
    rec2, path2, _ = _downloaded(store, name="b-Q8_0.gguf", quant="Q8_0")
    _instance(store, "live", path2, port=20002)
    models_dir = load_settings().models_dir
    assert lib.remove(store, rec.id, delete_files=True, models_dir=models_dir)["deleted"] == [
        str(path)
    ]
    kept = lib.remove(store, rec2.id, delete_files=False, models_dir=models_dir)
    assert kept["deleted"] == [] and path2.exists()


# -- ls / show and terminal escapes ------------------------------------------------------

HOSTILE = {
    "arch": "llama\x1b[31mRED",
    "name": "evil\x1b]0;pwned\x07\u202ename",
    "size_label": "1B\x1b[2J\r",
}


def _hostile_model(tmp_path: Path) -> Path:
    import gguf as gguf_py

    path = tmp_path / "evil-Q4_K_M.gguf"
    w = gguf_py.GGUFWriter(str(path), HOSTILE["arch"])
    w.add_name(HOSTILE["name"])
    w.add_string("general.size_label", HOSTILE["size_label"])
    w.add_file_type(15)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return path


def _no_controls(text: str) -> None:
    bad = [c for c in text if c != "\n" and printable(c) != c]
    assert not bad, f"control characters reached the terminal: {bad!r} in {text!r}"


def test_show_strips_terminal_escapes(tmp_path, store):
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["import", str(_hostile_model(tmp_path))], catch_exceptions=False
        ).exit_code
        == 0
    )
    out = runner.invoke(cli, ["show", "evil"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    _no_controls(out.output)
    # shown escaped, not dropped: the reader sees that the file holds something odd
    assert "evil\\x1b]0;pwned\\x07\\u202ename" in out.output
    assert "llama\\x1b[31mRED" in out.output and "1B\\x1b[2J\\x0d" in out.output


def test_ls_strips_terminal_escapes(tmp_path, store):
    runner = CliRunner()
    runner.invoke(cli, ["import", str(_hostile_model(tmp_path))], catch_exceptions=False)
    out = runner.invoke(cli, ["ls"], catch_exceptions=False)
    assert out.exit_code == 0 and "llama\\x1b[31mRED" in out.output, out.output
    _no_controls(out.output)


def test_show_json_keeps_the_text_json_escaped(tmp_path, store):
    runner = CliRunner()
    runner.invoke(cli, ["import", str(_hostile_model(tmp_path))], catch_exceptions=False)
    out = runner.invoke(cli, ["show", "evil", "--json"], catch_exceptions=False)
    _no_controls(out.output)  # JSON escapes them itself (\u001b) ...
    assert json.loads(out.output)["metadata"]["name"] == HOSTILE["name"]  # ... losslessly


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("plain text/with-dashes_1.gguf", "plain text/with-dashes_1.gguf"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\x9bb", "a\\x9bb"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("tab\there", "tab\\x09here"),
        ("\u202eabc", "\\u202eabc"),
        ("ünïcødé ✓", "ünïcødé ✓"),
    ],
)
def test_printable_escapes_controls_and_keeps_text(raw, shown):
    assert printable(raw) == shown
