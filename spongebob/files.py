# Hand-written module (not generated from a notebook).
"""File input and output shared by the whole package: JSONL, atomic writes, hashing.

Standard library only, so that every other module (generated or hand-written) may import it.

- **Reading JSONL.** :func:`iter_jsonl` is the one JSONL reader of the package: every JSONL file of
  the course (the generated world and the real data) goes through it, one line at a time. A line
  that is not UTF-8 or not JSON raises ``ValueError("<file>:<line>: <problem>")``; checking the
  shape of each value is the caller's job (``spongebob.data.read_jsonl``,
  ``spongebob.tokenizer.iter_jsonl_texts``).
- **Writing atomically.** A reader (another process, a notebook kernel) must never see half a
  file, and a write that fails must leave the old file as it was. :func:`atomic_open` writes into
  a private temporary file in the same folder, flushes and fsyncs it, then renames it over the
  target with ``os.replace`` (atomic on POSIX and Windows); on any error the temporary file is
  removed. :func:`atomic_write_bytes`, :func:`atomic_write_text` and :func:`write_jsonl` build on
  it.
- **Hashing.** :func:`sha256_file` hashes a file in blocks (the real data is gigabytes).

    from spongebob.files import iter_jsonl, write_jsonl, sha256_file
    write_jsonl("out.jsonl", [{"text": "hi"}])
    for lineno, value in iter_jsonl("out.jsonl"): ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

BLOCK_SIZE = 1 << 20  # bytes read at a time when hashing


def iter_jsonl(
    path: str | os.PathLike, on_error: Callable[[int, str], None] | None = None
) -> Iterator[tuple[int, object]]:
    """Stream ``(line number, parsed JSON value)`` for each record of a JSONL file.

    One line is in memory at a time (the real ``pretrain.jsonl`` is 1.6 GB). Line numbers start
    at 1. A blank line (only whitespace) holds no record and is skipped; a line that is not valid
    UTF-8 or not valid JSON raises ``ValueError("<file>:<line>: not valid UTF-8 (...)")`` /
    ``"... not valid JSON (...)"``. Checking the shape of each value is up to the caller.

    With ``on_error``, a bad line is not raised: ``on_error(line number, problem)`` is called
    (it may raise, or record the line) and reading goes on with the next line.
    """

    def bad(lineno: int, problem: str) -> None:
        if on_error is None:
            raise ValueError(f"{path}:{lineno}: {problem}")
        on_error(lineno, problem)

    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad(lineno, f"not valid UTF-8 ({e.reason})")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                bad(lineno, f"not valid JSON ({e.msg})")
                continue
            yield lineno, value


def jsonl_line(record: object) -> str:
    """One JSONL line for ``record``: compact JSON, non-ASCII characters kept as they are, ``\\n``.

    ``json.dumps`` escapes newlines inside strings, so the line never contains another newline.
    """
    return json.dumps(record, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A private temporary path next to ``path``, for writers that need a file name rather than a
    handle (the ``gguf`` writer, for one); on success it replaces ``path`` atomically.

    The ``with`` block writes the file at the yielded path (nothing exists there yet). Then the
    file is fsynced and renamed over ``path`` (``os.replace``: atomic within one file system, so
    the temporary file lives in the same folder). If the block raises, or writes nothing, the
    temporary file is removed and ``path`` is left exactly as it was. The folder must exist.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{path}: nothing was written to the temporary file {tmp.name}")
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a private temporary file next to ``path``; on success it replaces ``path`` atomically.

    ``mode`` is ``"wb"`` or ``"w"`` (text is UTF-8 with ``"\\n"`` line ends). The temporary file
    lives in the same folder (``os.replace`` is only atomic within one file system), is flushed
    and fsynced before the rename, and is removed if the ``with`` block raises; then ``path`` is
    left exactly as it was. The folder must exist. The new file gets the usual permissions
    (``0o666`` minus the umask), as ``open`` would give it. See :func:`atomic_path`.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o666)
        kwargs = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, as UTF-8 (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_jsonl(path: str | os.PathLike, records: Iterable[object]) -> int:
    """Write ``records`` to ``path`` as JSONL, one :func:`jsonl_line` each, atomically.

    Returns the number of records written. Streams: ``records`` may be a generator, one line is
    built at a time. If a record cannot be serialised (or the generator raises), the old file
    stays as it was.
    """
    n = 0
    with atomic_open(path, "w") as fh:
        for record in records:
            fh.write(jsonl_line(record))
            n += 1
    return n


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in blocks of ``BLOCK_SIZE`` (any size of file)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK_SIZE), b""):
            h.update(block)
    return h.hexdigest()
