"""bf16 autocast on a CPU that computes bf16 natively (issue 15, point 7: the training chapters'
time). Two measurements:

1. ``--speed``: the tiny model's real training step (``spongebob.train.train``, batch 16 x 256,
   random tokens, no evaluation) in fp32 and under bf16 autocast, alternating, 60 steps each; the
   median tokens/s over steps 21-60 of each run.
2. ``--chain``: chapters 06-08's recipes trained again with pretraining under bf16 autocast,
   then SFT and distillation each in ``--sft-dtype`` and ``--distill-dtype`` (each stage from the
   one before, with the chapters' data, seeds and options), and the figures the chapters assert:
   completion of held-out facts after pretraining, held-out facts after SFT, arithmetic,
   well-formed answers and facts after distillation. The fp32 figures to compare with are the
   chapters' own.

    .venv/bin/python bench/cpu_bf16.py --speed      # about 1 minute on 2 cores
    .venv/bin/python bench/cpu_bf16.py --chain      # about 9 minutes on 2 cores
    .venv/bin/python bench/cpu_bf16.py --chain --distill-dtype fp32
    .venv/bin/python bench/cpu_bf16.py --chain --sft-dtype fp32 --distill-dtype fp32
    .venv/bin/python bench/cpu_bf16.py --chain --pretrain-dtype fp32 --seed 7 \
        --sft-dtype fp32 --distill-dtype fp32        # the control: all fp32, another seed

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/bf16``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from spongebob.checkpoint import load_model
from spongebob.config import ModelConfig
from spongebob.distill import (
    distill_checkpoint,
    distill_config,
    distill_options,
    format_problem,
)
from spongebob.evaluate import evaluate_sets
from spongebob.model import SpongeBob
from spongebob.pipeline import completion_accuracy
from spongebob.pretrain import pretrained_checkpoint
from spongebob.runtime import artifacts_dir
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.train import TrainConfig, train
from spongebob.world import course_tokenizer, sample_dir


class RandomTokens:
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randint(0, 2048, (16, 257), generator=g)
            yield x[:, :-1], x[:, 1:], None


def speed(rounds: int = 2) -> None:
    for dtype in ["fp32", "bf16"] * rounds:
        torch.manual_seed(0)
        model = SpongeBob(ModelConfig.preset("tiny"))
        cfg = TrainConfig.preset("tiny", max_steps=60, log_every=10, dtype=dtype)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            train(model, RandomTokens(), cfg, out_dir=d, progress=False)
            wall = time.perf_counter() - t0
            log = [json.loads(line) for line in open(Path(d) / "metrics.jsonl")]
        tok_s = statistics.median(r["tok_s"] for r in log if "tok_s" in r and r["step"] > 20)
        print(f"{dtype}: 60 steps in {wall:.1f} s, median {tok_s:,.0f} tokens/s (steps 21-60)",
              flush=True)  # fmt: skip


def chain(work: Path, sft_dtype: str, distill_dtype: str, pretrain_dtype: str = "bf16",
          seed: int = 1337) -> None:  # fmt: skip
    world, tok = sample_dir(0), course_tokenizer()
    if (pretrain_dtype, seed) != ("bf16", 1337):  # a control: its own folder
        work = work / f"pretrain-{pretrain_dtype}-seed{seed}"
    t0 = time.perf_counter()
    cfg = TrainConfig.preset("tiny", eval_every=150, dtype=pretrain_dtype, seed=seed)
    pre = pretrained_checkpoint(world / "pretrain.jsonl", tok, work / "pretrain", cfg,
                                progress=False)  # fmt: skip
    t1 = time.perf_counter()
    rows = world / "eval_completion.jsonl"
    done = completion_accuracy(load_model(pre).eval(), tok, rows)["accuracy"]
    print(f"pretraining ({pretrain_dtype}, seed {seed}): {(t1 - t0) / 60:.1f} min, "
          f"completion {done:.1%}", flush=True)  # fmt: skip
    sft_dir = work / ("sft" if sft_dtype == "bf16" else f"sft-{sft_dtype}")
    sft = sft_checkpoint(world / "sft_512.jsonl", tok, sft_dir,
                         sft_config("tiny", dtype=sft_dtype), init=pre,
                         replay_source=world / "pretrain.jsonl", **sft_options("tiny"),
                         progress=False)  # fmt: skip
    t2 = time.perf_counter()
    facts = evaluate_sets(load_model(sft).eval(), tok, world, ["facts"])["facts"]
    print(f"SFT ({sft_dtype}): {(t2 - t1) / 60:.1f} min, held-out facts {facts.accuracy:.1%}",
          flush=True)  # fmt: skip
    t2 = time.perf_counter()
    distill_dir = work / f"{sft_dir.name}-distill-{distill_dtype}"
    dis = distill_checkpoint(world / "r1_1024.jsonl", tok, distill_dir,
                             distill_config("tiny", dtype=distill_dtype), init=sft,
                             replay_source=world / "pretrain.jsonl",
                             mix_source=world / "sft_512.jsonl", **distill_options("tiny"),
                             progress=False)  # fmt: skip
    t3 = time.perf_counter()
    after = evaluate_sets(load_model(dis).eval(), tok, world, ["arith", "facts"])
    records = after["arith"].records
    formed = sum(format_problem(r["answer"]) is None for r in records) / len(records)
    print(f"distillation ({distill_dtype}): {(t3 - t2) / 60:.1f} min, "
          f"arithmetic {after['arith'].accuracy:.1%}, well-formed {formed:.1%}, facts {after['facts'].accuracy:.1%}",
          flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--chain", action="store_true")
    ap.add_argument("--pretrain-dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument(
        "--seed", type=int, default=1337, help="pretraining's seed (the chapter's: 1337)"
    )
    ap.add_argument("--sft-dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--distill-dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip
    if args.speed:
        speed()
    if args.chain:
        chain(args.work or artifacts_dir("bench", "bf16"), args.sft_dtype, args.distill_dtype,
              args.pretrain_dtype, args.seed)  # fmt: skip


if __name__ == "__main__":
    main()
