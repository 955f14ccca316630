"""spongebob.files: the one JSONL reader, the JSONL writer, atomic writes and file hashing.

Expected values are computed here independently (``hashlib`` over the whole file, ``json.loads``
per line); failures are provoked midway through real writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from spongebob import files
from spongebob.files import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    iter_jsonl,
    jsonl_line,
    sha256_file,
    write_jsonl,
)


def leftovers(folder) -> list[str]:
    """Names in ``folder`` other than the expected files: temporary files left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------- reading
def test_iter_jsonl_numbers_lines_and_skips_blank_ones(tmp_path):
    path = tmp_path / "any.jsonl"
    path.write_text('[1, 2]\n"s"\n\n  \t\n{"x": null}\n', "utf-8")
    assert list(iter_jsonl(path)) == [(1, [1, 2]), (2, "s"), (5, {"x": None})]


def test_iter_jsonl_names_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "any.jsonl"
    path.write_text('{"x": 1}\n\n{"x": \n{"x": 2}\n', "utf-8")
    reader = iter_jsonl(path)
    assert next(reader) == (1, {"x": 1})
    with pytest.raises(ValueError, match=r"any\.jsonl:3: not valid JSON \(.+\)$"):
        next(reader)


def test_iter_jsonl_names_file_and_line_of_bad_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not valid UTF-8 \(.+\)$"):
        list(iter_jsonl(path))


def test_iter_jsonl_streams(tmp_path):
    # records come one at a time: the good lines are yielded before the broken one is reached
    path = tmp_path / "stream.jsonl"
    path.write_text('{"n": 1}\n{"n": 2}\nbroken\n', "utf-8")
    reader = iter_jsonl(path)
    assert [next(reader), next(reader)] == [(1, {"n": 1}), (2, {"n": 2})]
    with pytest.raises(ValueError, match=r"stream\.jsonl:3: "):
        next(reader)


# ----------------------------------------------------------------------------------- writing
RECORDS = [{"text": "海绵宝宝\nlives in a pineapple"}, {"n": 1, "list": [1, 2]}, "s", None]


def test_write_jsonl_round_trips_and_keeps_unicode(tmp_path):
    path = tmp_path / "out.jsonl"
    assert write_jsonl(path, iter(RECORDS)) == len(RECORDS)
    raw = path.read_bytes()
    assert "海绵宝宝".encode() in raw  # not \\u-escaped
    assert raw.count(b"\n") == len(RECORDS)  # newlines inside strings are escaped
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == RECORDS
    assert [v for _, v in iter_jsonl(path)] == RECORDS
    assert raw.decode("utf-8") == "".join(jsonl_line(r) for r in RECORDS)
    assert leftovers(tmp_path) == []


def test_atomic_writes_replace_the_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old content that is longer than the new one", "utf-8")
    atomic_write_text(path, "新\n")
    assert path.read_bytes() == "新\n".encode()
    atomic_write_bytes(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert leftovers(tmp_path) == []


def test_text_writes_are_utf8_with_plain_newlines(tmp_path):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "a\nb\r\nc")
    assert path.read_bytes() == b"a\nb\r\nc"


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"old": true}\n', "utf-8")

    def records():
        yield {"a": 1}
        yield {"b": 2}
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        write_jsonl(path, records())
    assert path.read_text("utf-8") == '{"old": true}\n'
    assert leftovers(tmp_path) == []

    with pytest.raises(TypeError):  # a record that is not JSON, after some were written
        write_jsonl(path, [{"a": 1}, {"b": object()}])
    assert path.read_text("utf-8") == '{"old": true}\n'
    assert leftovers(tmp_path) == []


def test_atomic_open_shows_nothing_until_the_block_ends(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with atomic_open(path, "wb") as fh:
        fh.write(b"new")
        fh.flush()
        assert path.read_bytes() == b"old"  # readers still see the old file
        assert len(leftovers(tmp_path)) == 1  # the private temporary file, in the same folder
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_atomic_open_creates_a_new_file_with_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "new.bin").stat().st_mode)
    assert mode == 0o644 or os.name == "nt"


def test_atomic_open_rejects_other_modes_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        with atomic_open(tmp_path / "f", "ab"):
            pass
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "no" / "such" / "folder.txt", "x")


def test_atomic_write_fsyncs_before_replacing(tmp_path, monkeypatch):
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: order.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        files.os, "replace", lambda a, b: order.append("replace") or real_replace(a, b)
    )
    atomic_write_text(tmp_path / "f.txt", "x")
    assert order == ["fsync", "replace"]


def test_atomic_path_for_writers_that_need_a_file_name(tmp_path, monkeypatch):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"old")
    with files.atomic_path(out) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        with open(tmp, "wb") as fh:  # e.g. a third-party writer given the path
            fh.write(b"new")
        assert out.read_bytes() == b"old"  # nothing shows until the block ends
    assert out.read_bytes() == b"new" and list(tmp_path.iterdir()) == [out]
    # an error inside the block: the old file stays, the temporary one is removed
    with pytest.raises(RuntimeError), files.atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert out.read_bytes() == b"new" and list(tmp_path.iterdir()) == [out]
    # a writer that wrote nothing is an error, not an empty file
    with pytest.raises(FileNotFoundError, match="nothing was written"), files.atomic_path(out):
        pass
    assert out.read_bytes() == b"new"
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: order.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        files.os, "replace", lambda a, b: order.append("replace") or real_replace(a, b)
    )
    with files.atomic_path(out) as tmp:
        tmp.write_bytes(b"x")
    assert order == ["fsync", "replace"]


# ----------------------------------------------------------------------------------- hashing
@pytest.mark.parametrize(
    "size", [0, 1, files.BLOCK_SIZE - 1, files.BLOCK_SIZE, 2 * files.BLOCK_SIZE + 7]
)
def test_sha256_file_equals_hashlib_over_the_whole_file(tmp_path, size):
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_file_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        sha256_file(tmp_path / "missing.bin")


def test_no_second_copy_of_atomic_writes_or_hashing_in_the_package():
    from pathlib import Path

    package = Path(files.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name == "files.py":
            continue
        source = path.read_text("utf-8")
        for needle in ("os.replace(", "mkstemp(", "def _atomic_write", "def _write_atomic"):
            assert needle not in source, (path.name, needle)
        assert "iter(lambda" not in source, path.name  # a block-hashing loop


def test_iter_jsonl_on_error_reports_bad_lines_and_reads_on(tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b'{"a": 1}\n\xff\n{oops\n\n{"a": 2}\n')
    seen = []
    got = list(iter_jsonl(f, on_error=lambda n, p: seen.append((n, p.split(" (")[0]))))
    assert got == [(1, {"a": 1}), (5, {"a": 2})]
    assert seen == [(2, "not valid UTF-8"), (3, "not valid JSON")]
