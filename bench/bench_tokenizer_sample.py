"""Tokenizer training on a bounded sample: time and peak memory of `spongebob tokenizer train
--max-lines N` as N grows (issue 14, point 10; docs/benchmarks.md).

The file is shaped like the real ``pretrain.jsonl`` (one ``{"text": ...}`` a line, mostly Chinese):
a third of the lines are the embedded world's, two thirds synthetic Chinese of 100-500 characters
(20,000 "words" of 1-3 characters drawn with Zipf-like frequencies, a punctuation mark every 3-8
words). Synthetic text is not the real corpus: BPE's cost grows with the number of distinct
pre-tokens, which differs, so the numbers give the trend, not the real file's time. Each N runs in a fresh process (``/usr/bin/time``
style peak RSS from ``resource``), vocabulary 6400.

    OMP_NUM_THREADS=1 flock /tmp/heavy.lock .venv/bin/python bench/bench_tokenizer_sample.py \\
        --lines 25000,50000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time
from spongebob.tokenizer import train_tokenizer
t = time.perf_counter()
tok = train_tokenizer(sys.argv[1], 6400, max_lines=int(sys.argv[2]))
print(time.perf_counter() - t, tok.vocab_size)
"""


def make_file(path: Path, lines: int, seed: int = 0) -> None:
    from spongebob.world import write_sample

    world = path.parent / "world"
    write_sample(world, seed=seed)
    texts = [
        json.loads(x)["text"]
        for x in (world / "pretrain.jsonl").read_text("utf-8").split("\n")
        if x
    ]
    rng = random.Random(seed)
    pool = [chr(0x4E00 + i) for i in range(3500)]
    words = [
        "".join(rng.choice(pool) for _ in range(rng.choice((1, 2, 2, 3)))) for _ in range(20000)
    ]
    weights = [1 / (r + 1) ** 1.1 for r in range(len(words))]  # Zipf-like word frequencies
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(lines):
            if i % 3 == 0:
                text = texts[i % len(texts)]
            else:
                target, parts = rng.randint(100, 500), []
                while sum(map(len, parts)) < target:
                    parts += rng.choices(words, weights, k=rng.randint(3, 8))
                    parts.append(rng.choice("，。，、；"))
                text = "".join(parts)
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", default="25000,50000,100000", help="sample sizes (comma-separated)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.lines.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pretrain.jsonl"
        make_file(data, max(sizes))
        mb = data.stat().st_size / 1e6
        print(f"file: {max(sizes):,} lines, {mb:.0f} MB; load average {os.getloadavg()}")
        print("| lines read | MB | seconds | peak RSS (MB) | vocabulary |")
        print("|---|---|---|---|---|")
        for n in sizes:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, str(data), str(n)],
                               capture_output=True, text=True, check=True)  # fmt: skip
            wall = time.perf_counter() - t0
            secs, vocab = r.stdout.split()
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            print(f"| {n:,} | {mb * n / max(sizes):.0f} | {float(secs):.1f} (wall {wall:.1f}) | "
                  f"{max(peak, before) / 1024:.0f} | {vocab} |")  # fmt: skip
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
