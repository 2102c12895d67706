"""The one mapping of Hub errors (corral.hub._hub_errors): every answer and library error
a Hub call can meet, metadata or a file's download, becomes one corral error with one line
-- checked against the fake Hub (real HTTP on 127.0.0.1) and, for what it cannot produce,
against huggingface_hub's own exception classes. Also: huggingface_hub's client is
configured through its public doors."""

from __future__ import annotations

import errno
import os

import pytest
from huggingface_hub import errors as hf
from huggingface_hub.utils import httpx as hf_httpx

from corral.errors import HubAuthError, HubError, NotFound
from corral.hub import Hub, _hub_errors, _map_error, _Transient, parse_ref
from tests.fakes.fake_hub import FakeHub, Fault

FILE = "r-Q4_K_M.gguf"


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub() as h:
        h.add_repo("o/r-GGUF", files={FILE: b"GGUF" + os.urandom(1000)})
        h.add_repo("o/gated-GGUF", files={FILE: b"GGUF" + os.urandom(1000)}, gated=True)
        yield h


@pytest.mark.parametrize(
    ("repo", "fault", "cls", "message"),
    [
        ("o/gated-GGUF", None, HubAuthError,
         "o/gated-GGUF: access denied (HTTP 401); accept its terms and set HF_TOKEN"),
        ("o/r-GGUF", Fault(status=403, times=None, methods=("GET",)), HubAuthError,
         "o/r-GGUF: access denied (HTTP 403); accept its terms and set HF_TOKEN"),
        ("o/r-GGUF", Fault(status=404, times=None, methods=("GET",)), NotFound,
         "o/r-GGUF has no file 'r-Q4_K_M.gguf' at {rev}"),
        ("o/r-GGUF", Fault(status=418, times=None, methods=("GET",)), HubError,
         "r-Q4_K_M.gguf: HTTP 418 from the Hub"),
        ("o/r-GGUF", Fault(status=503, times=None, methods=("GET",)), HubError,
         "r-Q4_K_M.gguf: HTTP 503 from the Hub (gave up after 0 retries)"),
    ],
)  # fmt: skip
def test_a_download_answer_is_one_corral_error(hub, tmp_path, repo, fault, cls, message):
    client = Hub(hub.url)
    plan = client.plan(parse_ref(repo))
    if fault is not None:
        hub.faults[FILE] = fault
    with pytest.raises((HubError, NotFound)) as got:
        client.download(plan, tmp_path / "m", retries=0)
    assert type(got.value) is cls
    assert got.value.message == message.format(rev=plan.revision[:12])


@pytest.mark.parametrize(
    ("ref", "cls", "message"),
    [
        ("o/nope-GGUF", NotFound, "repo o/nope-GGUF not found (or private: set HF_TOKEN)"),
        ("o/r-GGUF@v9", NotFound, "revision 'v9' not found in o/r-GGUF"),
    ],
)
def test_a_metadata_answer_is_one_corral_error(hub, ref, cls, message):
    with pytest.raises(cls) as got:
        Hub(hub.url).plan(parse_ref(ref))
    assert got.value.message == message


def test_a_metadata_5xx_fails_at_once_as_a_hub_error(hub):
    hub.faults["/api/models/o/r-GGUF/revision/main"] = Fault(status=503, times=None)
    with pytest.raises(HubError) as got:
        Hub(hub.url).plan(parse_ref("o/r-GGUF"))
    assert type(got.value) is HubError
    assert got.value.message == "o/r-GGUF: HTTP 503 from the Hub"


def _response(status: int, **headers) -> hf_httpx.Response:
    return hf_httpx.Response(
        status, headers=headers, request=hf_httpx.Request("GET", "http://hub.test/x")
    )


@pytest.mark.parametrize(
    ("exc", "path", "expected"),
    [
        (hf.GatedRepoError("g", response=_response(403)), None,
         (HubAuthError, "o/r is gated: accept its terms on the Hub and set HF_TOKEN")),
        (hf.LocalEntryNotFoundError("offline"), None,
         (HubError, "o/r: the Hub is unreachable (offline?)")),
        (hf.EntryNotFoundError("no x.gguf\nmore"), None,
         (NotFound, "file not found in o/r: no x.gguf")),
        (hf.HfHubHTTPError("h", response=_response(401)), None,
         (HubAuthError, "o/r: access denied (HTTP 401); set HF_TOKEN")),
        (hf.HfHubHTTPError("h", response=_response(404)), None,
         (HubError, "o/r: HTTP 404 from the Hub")),
        (hf.HfHubHTTPError("h", response=_response(429, **{"retry-after": "7"})), None,
         (HubError, "o/r: HTTP 429 from the Hub")),
        (hf_httpx.ConnectError("refused\nat 127.0.0.1"), None,
         (HubError, "o/r: network error: ConnectError: refused")),
        (OSError(errno.ENETUNREACH, "unreachable"), None,
         (HubError, "o/r: network error: OSError: [Errno 101] unreachable")),
    ],
)  # fmt: skip
def test_library_errors_of_a_metadata_call(exc, path, expected):
    with pytest.raises((HubError, NotFound)) as got:
        with _hub_errors("o/r", "main", path):
            raise exc
    assert (type(got.value), got.value.message) == expected


def test_a_transient_fault_of_a_download_is_left_to_its_retry_loop():
    err = _map_error(
        hf.HfHubHTTPError("h", response=_response(429, **{"retry-after": "7"})), "o/r", "m", "x"
    )
    assert isinstance(err, _Transient) and (err.reason, err.retry_after) == (
        "HTTP 429 from the Hub",
        7.0,
    )
    with pytest.raises(_Transient):
        with _hub_errors("o/r", "main", "x.gguf"):
            raise hf_httpx.ReadTimeout("timed out")


def test_a_disk_error_in_a_download_is_not_a_network_error():
    with pytest.raises(OSError) as got:
        with _hub_errors("o/r", "main", "x.gguf"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert got.value.errno == errno.ENOSPC


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        with _hub_errors("o/r"):
            raise KeyError("bug")


def test_the_hub_client_has_timeouts_and_keeps_huggingface_hubs_hooks(hub):
    from huggingface_hub import get_session

    Hub(hub.url)
    session = get_session()
    assert (session.timeout.connect, session.timeout.read) == (30.0, 60.0)
    assert session.event_hooks["request"], "huggingface_hub's own request hook is kept"
    assert session.follow_redirects


def test_hub_uses_no_private_module_of_its_dependencies():
    import corral.hub

    with open(corral.hub.__file__, encoding="utf-8") as fh:
        source = fh.read()
    assert "utils._http" not in source and "httpcore._" not in source
