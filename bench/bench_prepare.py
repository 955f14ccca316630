"""Benchmark of `spongebob data prepare` on a generated JSONL file: MB/s, peak RSS, and the speed-up of
``workers`` processes over one.

    .venv/bin/python bench/bench_prepare.py                      # 1 GB of pretraining lines, 1 worker
    .venv/bin/python bench/bench_prepare.py --gb 0.2 --workers 1,2   # 1 vs 2 workers
    .venv/bin/python bench/bench_prepare.py --kind chat          # SFT conversations
    .venv/bin/python bench/bench_prepare.py --gb 0.05            # a quick try

Not a test: it prints numbers and writes only under ``--work`` (default /tmp/spongebob-bench-prepare).
The input repeats the embedded world's ``pretrain.jsonl`` (or ``sft_512.jsonl``) until it is ``--gb``
gigabytes (tokenizing speed does not care that lines repeat; every line is encoded anew). Each run
happens in a fresh child process that reports its own peak resident memory (``ru_maxrss``) and its
workers' largest; a child that only imports the package and loads the tokenizer gives the floor that
any Python process with torch pays, so the growth due to the data is the difference. Every run with
several workers is checked to write the same bytes as the one-worker run. The load average is
printed before and after: on a shared machine, other processes take cores from the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from spongebob.data import prepare
from spongebob.world import course_tokenizer
tok = course_tokenizer()
src, out, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
res = {}
if workers:
    start = time.perf_counter()
    meta = prepare(src, tok, out, max_seq_len=512, workers=workers)
    res = {"secs": time.perf_counter() - start, "documents": meta["documents"],
           "tokens": meta["tokens"]}
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
res["rss_mb"], res["worker_rss_mb"] = me.ru_maxrss / 1024, kids.ru_maxrss / 1024
res["cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps(res))
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


def run_child(src: Path, out: Path, workers: int) -> dict:
    """The child's JSON line (``workers=0``: imports and tokenizer only)."""
    shutil.rmtree(out, ignore_errors=True)  # force a real run
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(out), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=["pretrain", "chat"], default="pretrain")
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2")
    p.add_argument("--work", type=Path, default=Path("/tmp/spongebob-bench-prepare"))
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    src = make_input(args.kind, args.gb, args.work)
    size_mb = src.stat().st_size / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip
    floor = run_child(src, args.work / "floor", 0)
    floor_mb = floor["rss_mb"]
    first, first_dir = None, None
    for w in counts:
        out = args.work / f"prepared-{args.kind}-{w}"
        res = run_child(src, out, w)
        if first is None:
            first, first_dir = res, out
            print(f"input: {src.name}, {size_mb:,.0f} MB, {res['documents']:,} documents, "
                  f"{res['tokens']:,} tokens")  # fmt: skip
        else:
            for name in ("ids.bin", "offsets.bin", "kinds.bin"):
                if (out / name).exists() and (out / name).read_bytes() != (
                    first_dir / name
                ).read_bytes():
                    raise SystemExit(f"{w} workers wrote a different {name} than {counts[0]}")
        cpu = res["cpu_s"] - floor["cpu_s"]  # the CPU time of the work, imports excluded
        print(f"workers {w}: {res['secs']:.1f} s = {size_mb / res['secs']:.1f} MB/s "
              f"({res['tokens'] / res['secs'] / 1e6:.2f} M tokens/s), "
              f"{first['secs'] / res['secs']:.2f}x the first; CPU {cpu:.1f} s "
              f"({cpu / res['secs']:.2f} cores busy on average, {size_mb / cpu:.1f} MB per "
              f"CPU-second); peak RSS {res['rss_mb']:.0f} MB "
              f"(growth {res['rss_mb'] - floor_mb:.0f} MB over the {floor_mb:.0f} MB floor), "
              f"largest worker {res['worker_rss_mb']:.0f} MB; "
              f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
