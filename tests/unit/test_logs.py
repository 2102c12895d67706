import asyncio

from corral.supervisor.logs import follow, rotate_if_needed, tail


def test_tail_reads_last_lines_of_a_large_file(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail(path, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail(path, 0) == []
    assert tail(tmp_path / "missing.log", 5) == []


def test_tail_handles_invalid_utf8(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"ok\n\xff\xfe bad\nlast\n")
    assert tail(path, 2) == ["\ufffd\ufffd bad", "last"]


def test_rotation_copy_truncates_and_keeps_n(tmp_path):
    path = tmp_path / "i.log"
    for round_ in range(5):
        path.write_text(f"round {round_}\n" * 100)
        assert rotate_if_needed(path, max_bytes=10, backups=3)
        assert path.stat().st_size == 0
    assert (tmp_path / "i.log.1").read_text().startswith("round 4")
    assert (tmp_path / "i.log.3").read_text().startswith("round 2")
    assert not (tmp_path / "i.log.4").exists()
    assert not rotate_if_needed(path, max_bytes=10, backups=3)  # empty: nothing to do


def test_rotation_keeps_an_append_writer_working(tmp_path):
    path = tmp_path / "i.log"
    with open(path, "ab", buffering=0) as writer:  # like the instance's inherited fd
        writer.write(b"a" * 100 + b"\n")
        rotate_if_needed(path, max_bytes=10, backups=1)
        writer.write(b"after\n")
    assert path.read_bytes() == b"after\n"


def test_follow_yields_tail_then_new_lines(tmp_path):
    path = tmp_path / "f.log"
    path.write_text("old1\nold2\n")

    async def scenario():
        seen = []
        agen = follow(path, start_lines=1, poll=0.01)
        seen.append(await agen.__anext__())
        with open(path, "a") as fh:
            fh.write("new1\nnew2\n")
        seen.append(await agen.__anext__())
        seen.append(await agen.__anext__())
        await agen.aclose()
        return seen

    assert asyncio.run(scenario()) == ["old2", "new1", "new2"]
