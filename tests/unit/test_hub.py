import os
import shutil
from collections import namedtuple

import pytest

from corral.errors import HubError, NotFound, UsageError
from corral.hub import (
    Hub,
    HubFile,
    ModelRef,
    PullPlan,
    check_disk_space,
    group_quants,
    parse_ref,
    pick_mmproj,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("org/repo", ModelRef("org/repo", "main", "Q4_K_M", None)),
        ("org/repo:Q5_K_M", ModelRef("org/repo", "main", "Q5_K_M", None)),
        ("hf.co/org/repo:IQ4_XS", ModelRef("org/repo", "main", "IQ4_XS", None)),
        ("huggingface.co/org/repo:ud-q4_k_xl", ModelRef("org/repo", "main", "ud-q4_k_xl", None)),
        ("org/repo@v1.2:Q8_0", ModelRef("org/repo", "v1.2", "Q8_0", None)),
        ("org/repo/sub/dir/file.gguf", ModelRef("org/repo", "main", None, "sub/dir/file.gguf")),
        (
            "https://huggingface.co/org/repo/resolve/main/file.gguf",
            ModelRef("org/repo", "main", None, "file.gguf"),
        ),
        (
            "https://huggingface.co/org/repo/blob/abc123/x/y.gguf",
            ModelRef("org/repo", "abc123", None, "x/y.gguf"),
        ),
    ],
)
def test_parse_ref(text, expected):
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "repo-only",
        "org/repo:",
        "org/repo/../../etc/passwd.gguf",
        "org/repo/file.bin",
        "org/repo/x.gguf:Q4_K_M",
        "https://huggingface.co/org",
        "../x/y",
        "org/re po",
    ],
)
def test_parse_ref_rejects(text):
    with pytest.raises(UsageError):
        parse_ref(text)


def f(path, size=100):
    return HubFile(path=path, size=size, sha256="0" * 64)


def test_group_quants_groups_split_parts_and_skips_mmproj():
    files = [
        f("README.md", 10),
        f("model-Q8_0.gguf", 800),
        f("Q2_K/model-Q2_K-00002-of-00002.gguf", 50),
        f("Q2_K/model-Q2_K-00001-of-00002.gguf", 60),
        f("model-UD-Q4_K_XL.gguf", 400),
        f("mmproj-model-F16.gguf", 30),
    ]
    groups = group_quants(files)
    assert [(g.quant, g.total_size, len(g.files)) for g in groups] == [
        ("Q2_K", 110, 2),
        ("UD-Q4_K_XL", 400, 1),
        ("Q8_0", 800, 1),
    ]
    assert groups[0].files[0].path.endswith("00001-of-00002.gguf")


def test_pick_mmproj_prefers_f16():
    files = [f("mmproj-x-F32.gguf"), f("mmproj-x-F16.gguf"), f("x-Q4_K_M.gguf")]
    assert pick_mmproj(files).path == "mmproj-x-F16.gguf"
    assert pick_mmproj([f("x-Q4_K_M.gguf")]) is None


def test_disk_space_is_checked_with_numbers(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, 10**9))
    plan = PullPlan("o/r", "abc", "Q4_K_M", [f("big.gguf", 5 * 10**9)])
    with pytest.raises(HubError, match=r"need 5.00 GB, 1.00 GB free"):
        check_disk_space(tmp_path, plan)
    check_disk_space(tmp_path, plan, present=5 * 10**9 - 10**6)  # nearly all there: fits


def test_unreachable_hub_is_one_clear_error(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = Hub(f"http://127.0.0.1:{port}")
    with pytest.raises(HubError) as err:
        hub.plan(parse_ref("org/repo"))
    assert "\n" not in err.value.message


def test_hostile_file_path_from_the_hub_is_refused(tmp_path):
    hub = Hub("http://127.0.0.1:9")
    plan = PullPlan("o/r", "abc", None, [f("../../outside.gguf")])
    with pytest.raises(HubError, match="leaves"):
        hub.download(plan, tmp_path / "models" / "o" / "r")
    assert not (tmp_path / "outside.gguf").exists()


def test_plan_against_the_fake_hub(tmp_path, monkeypatch):
    from tests.fakes.fake_hub import FakeHub

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub() as h:
        h.add_repo(
            "o/r-GGUF",
            files={
                "r-Q4_K_M.gguf": b"GGUF" + os.urandom(100),
                "r-Q8_0.gguf": b"GGUF" + os.urandom(200),
            },
        )
        hub = Hub(h.url)
        plan = hub.plan(parse_ref("o/r-GGUF"))
        assert plan.quant == "Q4_K_M" and len(plan.revision) == 40
        assert plan.files[0].sha256 == h.sha256("o/r-GGUF", "r-Q4_K_M.gguf")
        with pytest.raises(NotFound, match="it has: Q4_K_M, Q8_0"):
            hub.plan(parse_ref("o/r-GGUF:Q6_K"))
        paths = hub.download(plan, tmp_path / "m")
        assert paths[0].read_bytes()[:4] == b"GGUF"
        assert not any((tmp_path / "m" / ".partial").rglob("*.part"))


def test_split_parts_must_be_complete():
    from corral.hub import check_split_complete

    check_split_complete([f("a-00001-of-00002.gguf"), f("a-00002-of-00002.gguf")])
    with pytest.raises(NotFound, match="parts \\[1, 3\\]"):
        check_split_complete([f("a-00001-of-00003.gguf"), f("a-00003-of-00003.gguf")])


def test_partials_are_keyed_by_content(tmp_path):
    from corral.hub import part_path

    a = HubFile("m.gguf", 10, "a" * 64)
    b = HubFile("m.gguf", 10, "b" * 64)
    assert part_path(tmp_path, a) != part_path(tmp_path, b)


def test_two_pulls_sharing_a_file_take_turns_and_both_succeed(tmp_path, monkeypatch):
    import threading

    from tests.fakes.fake_hub import FakeHub, Fault

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub(chunk_size=16 * 1024) as h:
        h.add_repo(
            "o/r-GGUF",
            files={
                "r-Q4_K_M.gguf": b"GGUF" + os.urandom(300_000),
                "r-Q8_0.gguf": b"GGUF" + os.urandom(300_000),
                "mmproj-r-F16.gguf": b"GGUF" + os.urandom(300_000),
            },
        )
        h.faults["mmproj-r-F16.gguf"] = Fault(delay=0.01, times=None)
        hub = Hub(h.url)
        dest = tmp_path / "m"
        results, errors = [], []

        def pull(q):
            try:
                results.append(hub.download(hub.plan(parse_ref(f"o/r-GGUF:{q}")), dest))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=pull, args=(q,)) for q in ("Q4_K_M", "Q8_0")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == [] and len(results) == 2
        mm = dest / "mmproj-r-F16.gguf"
        assert mm.read_bytes() == h.file("o/r-GGUF", "mmproj-r-F16.gguf").data


def test_huge_retry_after_fails_with_the_figure(tmp_path, monkeypatch):
    from tests.fakes.fake_hub import FakeHub, Fault

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with FakeHub() as h:
        h.add_repo("o/r-GGUF", files={"r-Q4_K_M.gguf": b"GGUF" + os.urandom(1000)})
        h.faults["r-Q4_K_M.gguf"] = Fault(
            status=429, retry_after=86400, times=None, methods=("GET",)
        )
        hub = Hub(h.url)
        with pytest.raises(HubError, match="retry in 86400 s"):
            hub.download(hub.plan(parse_ref("o/r-GGUF")), tmp_path / "m")
