"""Benchmark of `spongebob data prepare` on a generated JSONL file of at least 1 GB: MB/s and peak RSS.

    .venv/bin/python bench/bench_prepare.py                  # 1 GB of pretraining lines
    .venv/bin/python bench/bench_prepare.py --kind chat      # 1 GB of SFT conversations
    .venv/bin/python bench/bench_prepare.py --gb 0.05        # a quick try

Not a test: it prints numbers and writes only under ``--work`` (default /tmp/spongebob-bench-prepare).
The input repeats the embedded world's ``pretrain.jsonl`` (or ``sft_512.jsonl``) until it is ``--gb``
gigabytes (tokenizing speed does not care that lines repeat; every line is encoded anew). Each run
happens in a fresh child process, so its peak resident memory (``ru_maxrss``) is the run's alone;
a second child that only imports the package and loads the tokenizer gives the floor that any
Python process with torch pays, so the growth due to the data is the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
from pathlib import Path
from spongebob.data import prepare
from spongebob.world import course_tokenizer
tok = course_tokenizer()
src, out, only_imports = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
if not only_imports:
    start = time.perf_counter()
    meta = prepare(src, tok, out, max_seq_len=512)
    secs = time.perf_counter() - start
    print(json.dumps({"secs": secs, "documents": meta["documents"], "tokens": meta["tokens"]}))
else:
    print(json.dumps({}))
"""


def make_input(kind: str, gb: float, work: Path) -> Path:
    from spongebob.world import sample_dir

    name = "pretrain.jsonl" if kind == "pretrain" else "sft_512.jsonl"
    path = work / f"{kind}_{gb:g}gb.jsonl"
    if path.exists() and path.stat().st_size >= gb * 1e9:
        return path
    block = (sample_dir() / name).read_bytes()
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        written = 0
        while written < gb * 1e9:
            f.write(block)
            written += len(block)
    os.replace(tmp, path)
    return path


def run_child(src: Path, out: Path, only_imports: bool) -> tuple[dict, float]:
    """(the child's JSON line, its peak RSS in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), "1" if only_imports else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, max over children
    if peak <= before:
        raise RuntimeError("run the children in increasing memory order, or in fresh processes")
    return json.loads(proc.stdout.strip().splitlines()[-1]), peak / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["pretrain", "chat"], default="pretrain")
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--work", type=Path, default=Path("/tmp/spongebob-bench-prepare"))
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    src = make_input(args.kind, args.gb, args.work)
    size_mb = src.stat().st_size / 1e6
    out = args.work / f"prepared-{args.kind}"
    (out / "meta.json").unlink(missing_ok=True)  # force a real run
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip
    _, floor_mb = run_child(src, out, only_imports=True)
    t0 = time.perf_counter()
    res, peak_mb = run_child(src, out, only_imports=False)
    wall = time.perf_counter() - t0
    print(f"input: {src.name}, {size_mb:,.0f} MB, {res['documents']:,} documents, "
          f"{res['tokens']:,} tokens")  # fmt: skip
    print(f"prepare: {res['secs']:.1f} s = {size_mb / res['secs']:.1f} MB/s "
          f"({res['tokens'] / res['secs'] / 1e6:.2f} M tokens/s); child wall {wall:.1f} s")  # fmt: skip
    print(f"peak RSS: {peak_mb:.0f} MB (imports + tokenizer alone: {floor_mb:.0f} MB; "
          f"growth {peak_mb - floor_mb:.0f} MB)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
