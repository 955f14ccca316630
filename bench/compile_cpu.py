"""``torch.compile`` on the CPU for the course's tiny model: chapter 06's batch (16 x 256 tokens,
its ``TrainConfig``) trained by ``spongebob.train.train`` on random ids, eager then compiled, in
fresh processes. Prints the whole run's seconds (compilation included) and the tokens/s of every
10-step window (the first compiled window holds the compilation).

    .venv/bin/python bench/compile_cpu.py            # about 1.5 minutes on 2 cores

Not a test: writes only under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from spongebob.config import ModelConfig
from spongebob.model import SpongeBob
from spongebob.train import TrainConfig, train


def random_batches(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randint(0, 2048, (16, 257), generator=g)
        yield x[:, :-1], x[:, 1:], None


def one(mode: str, steps: int, work: Path) -> None:
    torch.manual_seed(0)
    model = SpongeBob(ModelConfig.preset("tiny"))
    cfg = TrainConfig.preset("tiny", max_steps=steps, compile=mode == "compile", log_every=10)
    out = work / mode
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    train(model, random_batches(), cfg, out_dir=out, progress=False)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    windows = [round(r["tok_s"]) for r in rows if "tok_s" in r]
    steady = sorted(windows[1:])[len(windows[1:]) // 2]
    print(json.dumps({"mode": mode, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
                      "median_tok_s_after_first_window": steady, "windows": windows}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--work", type=Path, default=Path("/tmp/spongebob-bench-compile"))
    ap.add_argument("--mode", choices=["eager", "compile"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        one(args.mode, args.steps, args.work)
        return
    for mode in ("eager", "compile"):  # a fresh process each: no warm state carried over
        subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(args.steps),
                        "--work", str(args.work)], check=True)  # fmt: skip


if __name__ == "__main__":
    main()
