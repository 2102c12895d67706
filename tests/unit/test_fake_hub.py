"""FakeHub against the real huggingface_hub client (2.4.0): proves the fake is faithful enough."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.fakes.fake_hub import FakeHub, Fault

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, constants, hf_hub_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "unsloth/gemma-3-1b-it-GGUF"
Q4 = "gemma-3-1b-it-Q4_K_M.gguf"
Q8 = "gemma-3-1b-it-Q8_0.gguf"
Q4_BYTES = bytes(range(256)) * 800  # 200 KiB: several 64 KiB server chunks
Q8_BYTES = b"GGUF" + b"\x01" * 5000


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    # Read at import time by the library: patch the constants too.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture
def sleeps(monkeypatch):
    """Record the library's back-off sleeps instead of sleeping (the fake's own are unaffected)."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", lambda s: calls.append(s))
    return calls


def _populate(hub: FakeHub) -> None:
    hub.add_repo(
        REPO,
        files={Q4: Q4_BYTES, Q8: Q8_BYTES, "README.md": "# gemma\n"},
        downloads=5000,
        likes=50,
        tags=["gguf", "gemma3"],
    )
    hub.add_repo(
        "bartowski/gemma-2-2b-GGUF",
        files={"gemma-2-2b-Q4_K_M.gguf": b"x" * 100},
        downloads=9000,
        likes=10,
    )
    hub.add_repo("org/llama-GGUF", files={"llama.gguf": b"y" * 10}, downloads=1)
    hub.add_repo("org/not-gguf", files={"model.safetensors": b"z"}, tags=["transformers"])
    hub.add_repo("google/gemma-gated-GGUF", files={"g.gguf": b"secret"}, gated=True)
    hub.add_repo("me/private-GGUF", files={"p.gguf": b"private"}, private=True)


@pytest.fixture(params=[False, True], ids=["direct", "cdn"])
def hub(request):
    with FakeHub(cdn=request.param) as h:
        _populate(h)
        yield h


@pytest.fixture
def plain_hub():
    with FakeHub() as h:
        _populate(h)
        yield h


def _dl(hub, filename=Q4, repo=REPO, tmp=None, **kw):
    return hf_hub_download(repo, filename, endpoint=hub.url, local_dir=tmp, **kw)


# -- API --------------------------------------------------------------------------------------


def test_list_models_search_filter_sort_limit(plain_hub):
    api = HfApi(endpoint=plain_hub.url)
    models = list(api.list_models(search="gemma", filter="gguf", sort="downloads", limit=10))
    assert [m.id for m in models] == ["bartowski/gemma-2-2b-GGUF", REPO, "google/gemma-gated-GGUF"]
    assert models[1].downloads == 5000 and models[1].likes == 50
    assert "gguf" in models[1].tags and models[1].last_modified is not None
    path, query = plain_hub.log[-1].path, plain_hub.log[-1].query
    assert path == "/api/models" and query["search"] == ["gemma"] and query["filter"] == ["gguf"]
    assert query["sort"] == ["downloads"] and query["limit"] == ["10"]


def test_list_models_gated_listed_private_hidden_and_pagination():
    with FakeHub(page_size=2) as h:
        _populate(h)
        ids = [m.id for m in HfApi(endpoint=h.url).list_models(filter="gguf")]
        assert "google/gemma-gated-GGUF" in ids and "me/private-GGUF" not in ids
        assert "org/not-gguf" not in ids and len(ids) == 4
        assert sum(1 for m, p, _ in h.requests if p == "/api/models") == 2  # followed Link: next


def test_model_info_files_metadata(plain_hub):
    api = HfApi(endpoint=plain_hub.url)
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == plain_hub.commit(REPO) and len(info.sha) == 40
    sib = {s.rfilename: s for s in info.siblings}
    assert sib[Q4].size == len(Q4_BYTES)
    assert sib[Q4].lfs.sha256 == hashlib.sha256(Q4_BYTES).hexdigest()
    assert sib[Q4].lfs.size == len(Q4_BYTES)
    assert sib["README.md"].lfs is None
    assert plain_hub.log[-1].query.get("blobs") == ["True"] or plain_hub.log[-1].query.get(
        "blobs"
    ) == ["true"]
    # Without blobs: names only, like the Hub.
    assert api.model_info(REPO).siblings[0].size is None
    # By revision (branch name or commit sha).
    assert api.model_info(REPO, revision=info.sha).sha == info.sha
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("me/private-GGUF")
    assert (
        api.model_info("google/gemma-gated-GGUF").gated == "manual"
    )  # metadata of gated repos is public


def test_private_repo_with_valid_token(plain_hub):
    plain_hub.valid_tokens = {"hf_good"}
    api = HfApi(endpoint=plain_hub.url, token="hf_good")
    assert api.model_info("me/private-GGUF").private is True
    with pytest.raises(HfHubHTTPError) as ei:
        HfApi(endpoint=plain_hub.url, token="hf_bad").model_info(REPO)
    assert ei.value.response.status_code == 401


def test_list_repo_tree(plain_hub):
    plain_hub.add_repo(
        "org/multi",
        files={
            "a.gguf": b"1",
            "sub/b-00001-of-00002.gguf": b"22",
            "sub/b-00002-of-00002.gguf": b"333",
            "README.md": "r",
        },
    )
    api = HfApi(endpoint=plain_hub.url)
    top = {e.path: e for e in api.list_repo_tree("org/multi")}
    assert set(top) == {"a.gguf", "sub", "README.md"}
    assert type(top["sub"]).__name__ == "RepoFolder"
    assert top["a.gguf"].lfs.sha256 == hashlib.sha256(b"1").hexdigest() and top["a.gguf"].size == 1
    rec = {e.path for e in api.list_repo_tree("org/multi", recursive=True)}
    assert {"sub/b-00001-of-00002.gguf", "sub/b-00002-of-00002.gguf", "sub"} <= rec
    sub = [e.path for e in api.list_repo_tree("org/multi", path_in_repo="sub")]
    assert sub == ["sub/b-00001-of-00002.gguf", "sub/b-00002-of-00002.gguf"]
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/multi", path_in_repo="missing"))
    with pytest.raises(RevisionNotFoundError):
        list(api.list_repo_tree("org/multi", revision="v9"))


# -- downloads --------------------------------------------------------------------------------


def test_download_bytes_direct_and_cdn(hub, tmp_path):
    path = _dl(hub, tmp=tmp_path)
    assert Path(path).read_bytes() == Q4_BYTES
    assert Path(path) == tmp_path / Q4
    heads = hub.file_requests(Q4, "HEAD")
    gets = hub.file_requests(Q4, "GET")
    assert len(heads) == 1 and heads[0].server == "hub" and len(gets) == 1
    if hub.cdn:
        assert heads[0].status == 302
        assert gets[0].server == "cdn" and gets[0].status == 200
    else:
        assert gets[0].server == "hub"
    # Non-LFS file is never redirected.
    assert Path(_dl(hub, "README.md", tmp=tmp_path)).read_text() == "# gemma\n"
    assert hub.file_requests("README.md")[0].server == "hub"
    # Second call: up to date by etag → HEAD only.
    hub.clear_log()
    assert Path(_dl(hub, tmp=tmp_path)).read_bytes() == Q4_BYTES
    assert hub.file_requests(Q4, "GET") == []


def test_download_to_cache_dir(hub, tmp_path):
    path = hf_hub_download(REPO, Q8, endpoint=hub.url, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == Q8_BYTES
    assert hub.commit(REPO) in path


def test_cdn_get_carries_no_authorization(tmp_path):
    with FakeHub(cdn=True) as h:
        _populate(h)
        h.valid_tokens = {"hf_ok"}
        _dl(h, "g.gguf", repo="google/gemma-gated-GGUF", tmp=tmp_path, token="hf_ok")
        (head,) = h.file_requests("g.gguf", "HEAD")
        (get,) = h.file_requests("g.gguf", "GET")
        assert head.headers.get("Authorization") == "Bearer hf_ok"
        assert get.server == "cdn" and "Authorization" not in get.headers


@pytest.fixture
def small_chunks(monkeypatch):
    """The library writes in DOWNLOAD_CHUNK_SIZE (10 MiB) pieces: bytes of an unfinished piece are
    lost on a drop. Shrink it so a small payload can show a real Range resume."""
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)


def test_drop_mid_body_resumes_with_range(hub, tmp_path, sleeps, small_chunks):
    hub.faults[Q4] = Fault(drop_after=70_000)
    path = _dl(hub, tmp=tmp_path)
    assert Path(path).read_bytes() == Q4_BYTES
    gets = hub.file_requests(Q4, "GET")
    assert [e.range for e in gets] == [None, "bytes=65536-"]  # 4 whole 16 KiB pieces survived
    assert gets[-1].status == 206 and gets[-1].server == ("cdn" if hub.cdn else "hub")
    assert 1 in sleeps  # http_get sleeps 1s before resuming
    assert Q4 not in hub.faults  # consumed
    assert not list((tmp_path / ".cache").rglob("*.incomplete"))


def test_repeated_drops_with_progress_still_complete(plain_hub, tmp_path, sleeps, small_chunks):
    plain_hub.faults[Q4] = Fault(drop_after=20_000, times=None)
    assert Path(_dl(plain_hub, tmp=tmp_path)).read_bytes() == Q4_BYTES
    ranges = [e.range for e in plain_hub.file_requests(Q4, "GET")]
    assert ranges[:3] == [None, "bytes=16384-", "bytes=32768-"] and len(ranges) == 13


def test_drop_without_progress_gives_up_and_leaves_no_partial(plain_hub, tmp_path, sleeps):
    # Default 10 MiB pieces: a 1000-byte drop never completes a piece => no progress, no Range.
    plain_hub.faults[Q4] = Fault(drop_after=1000, times=None)
    with pytest.raises(Exception) as ei:
        _dl(plain_hub, tmp=tmp_path)
    assert "peer closed connection" in str(ei.value)
    gets = plain_hub.file_requests(Q4, "GET")
    assert [e.range for e in gets] == [None] * 6  # first try + 5 resumes
    # 2.4.0 downloads into a process-unique *.incomplete and deletes it on failure: no resume
    # across calls.
    assert not list((tmp_path / ".cache").rglob("*.incomplete"))
    assert not (tmp_path / Q4).exists()


def test_head_500_retried_within_call(plain_hub, tmp_path, sleeps):
    plain_hub.faults[Q4] = Fault(status=500, times=2, methods=("HEAD",))
    assert Path(_dl(plain_hub, tmp=tmp_path)).read_bytes() == Q4_BYTES
    heads = plain_hub.file_requests(Q4, "HEAD")
    assert [e.status for e in heads] == [500, 500, 200]


def test_get_500_not_retried_second_call_succeeds(hub, tmp_path, sleeps):
    hub.faults[Q4] = Fault(status=500, methods=("GET",))
    with pytest.raises(HfHubHTTPError) as ei:
        _dl(hub, tmp=tmp_path)
    assert ei.value.response.status_code == 500
    assert Path(_dl(hub, tmp=tmp_path)).read_bytes() == Q4_BYTES


def test_get_429_retry_after_honoured(hub, tmp_path, sleeps):
    hub.faults[Q4] = Fault(status=429, retry_after=7, methods=("GET",))
    assert Path(_dl(hub, tmp=tmp_path)).read_bytes() == Q4_BYTES
    assert [e.status for e in hub.file_requests(Q4, "GET")] == [429, 200]
    assert 8.0 in sleeps  # Retry-After + 1


def test_head_429_with_retry_after(plain_hub, tmp_path, sleeps):
    plain_hub.faults[Q4] = Fault(status=429, retry_after=3, times=2, methods=("HEAD",))
    assert Path(_dl(plain_hub, tmp=tmp_path)).read_bytes() == Q4_BYTES
    assert [e.status for e in plain_hub.file_requests(Q4, "HEAD")] == [429, 429, 200]
    assert 4.0 in sleeps


def test_corrupt_body_is_not_detected_by_library(hub, tmp_path):
    hub.faults[Q4] = Fault(corrupt=True)
    data = Path(_dl(hub, tmp=tmp_path)).read_bytes()
    assert len(data) == len(Q4_BYTES)
    assert hashlib.sha256(data).hexdigest() != hub.sha256(REPO, Q4)


def test_slow_body_and_file_backed_content(tmp_path):
    big = tmp_path / "big.gguf"
    big.write_bytes(b"B" * 300_000)
    with FakeHub(chunk_size=100_000) as h:
        h.add_repo("org/big", files={"big.gguf": big})
        h.faults["org/big/big.gguf"] = Fault(delay=0.01)
        out = tmp_path / "out"
        assert Path(_dl(h, "big.gguf", repo="org/big", tmp=out)).read_bytes() == big.read_bytes()
        assert h.file_requests("big.gguf")[0].fault is not None


def test_raw_range_and_headers(plain_hub):
    import httpx2 as httpx  # the transport huggingface_hub 2.4.0 uses

    url = f"{plain_hub.url}/{REPO}/resolve/main/{Q8}"
    r = httpx.head(url)
    assert r.headers["X-Repo-Commit"] == plain_hub.commit(REPO)
    assert r.headers["ETag"] == f'"{hashlib.sha256(Q8_BYTES).hexdigest()}"'
    assert (
        r.headers["X-Linked-Size"] == str(len(Q8_BYTES)) and r.headers["Accept-Ranges"] == "bytes"
    )
    r = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == Q8_BYTES[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(Q8_BYTES)}"
    assert httpx.get(url, headers={"Range": f"bytes={len(Q8_BYTES)}-"}).status_code == 416


# -- errors -----------------------------------------------------------------------------------


def test_download_errors(plain_hub, tmp_path):
    with pytest.raises(GatedRepoError) as ei:
        _dl(plain_hub, "g.gguf", repo="google/gemma-gated-GGUF", tmp=tmp_path)
    assert ei.value.response.status_code == 401 and "restricted" in str(ei.value)
    plain_hub.valid_tokens = {"hf_ok", "hf_other"}
    plain_hub.repos["google/gemma-gated-GGUF"].authorized_tokens = {"hf_ok"}
    with pytest.raises(GatedRepoError) as ei:
        _dl(plain_hub, "g.gguf", repo="google/gemma-gated-GGUF", tmp=tmp_path, token="hf_other")
    assert ei.value.response.status_code == 403
    got = _dl(plain_hub, "g.gguf", repo="google/gemma-gated-GGUF", tmp=tmp_path, token="hf_ok")
    assert Path(got).read_bytes() == b"secret"

    with pytest.raises(RepositoryNotFoundError):
        _dl(plain_hub, "x.gguf", repo="nobody/nothing", tmp=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        _dl(plain_hub, "p.gguf", repo="me/private-GGUF", tmp=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        _dl(plain_hub, tmp=tmp_path, revision="does-not-exist")
    with pytest.raises(EntryNotFoundError):
        _dl(plain_hub, "missing-Q2_K.gguf", tmp=tmp_path)


def test_api_faults_by_url_path(plain_hub, sleeps):
    # list_models paginates through http_backoff => 5xx is retried.
    plain_hub.faults["/api/models"] = Fault(status=503)
    assert len(list(HfApi(endpoint=plain_hub.url).list_models(search="gemma"))) == 3
    assert 1 in sleeps
    # model_info is a plain get_session().get => not retried.
    plain_hub.faults[f"/api/models/{REPO}"] = Fault(status=503)
    with pytest.raises(HfHubHTTPError) as ei:
        HfApi(endpoint=plain_hub.url).model_info(REPO)
    assert ei.value.response.status_code == 503
    assert HfApi(endpoint=plain_hub.url).model_info(REPO).id == REPO
