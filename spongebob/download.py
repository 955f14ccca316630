# Hand-written module (not generated from a notebook).
"""Download the original project's real data from ModelScope (``Harris/pretrainSpongeBob``).

The files and their formats are SEED.md's: ``pretrain.jsonl`` (~1.6 GB), ``sft_512.jsonl`` (~7 GB),
``sft_1024.jsonl`` (~5.2 GB) and ``r1_1024.jsonl``. The download goes through the official
``modelscope`` client (``pip install "spongebob[download]"``), which shows its own progress bar,
resumes interrupted transfers and verifies hashes; this module adds what a learner needs around it:

- **Fail fast when offline.** Left alone, the client retries an unreachable host with back-off for
  about 45 seconds before it gives up. :func:`check_reachable` first opens one TCP connection to the
  ModelScope host with a short timeout (3 s), so an offline machine gets a clear error at once.
- **Files already there are kept** (pass ``force=True`` to fetch them again), so a second call is
  free and an interrupted run picks up where it stopped.

    from spongebob.download import download
    paths = download(["pretrain", "sft_512"], "data/")      # or: spongebob data download ...
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DATASET = "Harris/pretrainSpongeBob"
FILES = {
    "pretrain": "pretrain.jsonl",
    "sft_512": "sft_512.jsonl",
    "sft_1024": "sft_1024.jsonl",
    "r1_1024": "r1_1024.jsonl",
}
DEFAULT_HOST = "www.modelscope.cn"  # the client's default; MODELSCOPE_DOMAIN overrides it


class DownloadError(RuntimeError):
    """The download cannot start or did not finish; the message says why and what to do."""


def modelscope_host() -> str:
    """The host the client will contact: ``$MODELSCOPE_DOMAIN`` (as the client reads it) or the
    default ``www.modelscope.cn``."""
    domain = os.environ.get("MODELSCOPE_DOMAIN", DEFAULT_HOST)
    return domain.split("://")[-1].split("/")[0]


def check_reachable(host: str | None = None, port: int = 443, timeout: float = 3.0) -> None:
    """Raise `DownloadError` unless a TCP connection to ``host:port`` opens within ``timeout`` s."""
    host = host or modelscope_host()
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as e:
        waited = time.monotonic() - start
        raise DownloadError(
            f"cannot reach {host}:{port} ({type(e).__name__}: {e}; gave up after {waited:.1f} s). "
            "Downloading the real data needs the internet; the course runs offline on the "
            "embedded world instead (`spongebob data sample`)."
        ) from None


def _client() -> Callable:
    try:
        from modelscope import dataset_file_download
    except ImportError:
        raise DownloadError(
            "downloading needs the ModelScope client: pip install 'spongebob[download]' "
            "(or pip install modelscope)"
        ) from None
    return dataset_file_download


def download(
    names: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    force: bool = False,
    timeout: float = 3.0,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Download the named files (keys of `FILES`, or their file names) into ``out_dir``.

    Returns their paths, in order. A file already in ``out_dir`` is kept unless ``force``. An
    unknown name, a missing client or an unreachable host raise `DownloadError` before any transfer
    starts (the reachability check takes at most ``timeout`` seconds).
    """
    wanted = []
    for name in names:
        file = FILES.get(name, name)
        if file not in FILES.values():
            choices = ", ".join(FILES)
            raise DownloadError(f"unknown data file {name!r}; choose from {choices}")
        wanted.append(file)
    out = Path(out_dir)
    todo = [f for f in wanted if force or not (out / f).is_file()]
    for f in wanted:
        if f not in todo:
            log(f"{f}: already in {out}, kept (force=True downloads it again)")
    if todo:
        fetch = _client()
        check_reachable(timeout=timeout)
        out.mkdir(parents=True, exist_ok=True)
        for f in todo:
            log(f"{f}: downloading from ModelScope dataset {DATASET} ...")
            try:
                got = Path(fetch(DATASET, f, local_dir=str(out)))
            except Exception as e:  # the client's own errors: network, auth, missing file
                raise DownloadError(f"{f}: the ModelScope client failed: {e}") from e
            if got.resolve() != (out / f).resolve():
                raise DownloadError(f"{f}: the client wrote {got}, expected {out / f}")
    return [out / f for f in wanted]
