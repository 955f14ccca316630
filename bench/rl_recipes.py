"""GRPO recipes from chapter 08's distilled model (issue 17): each variant of chapter 09's tiny
recipe trains with ``spongebob.rl.rl_checkpoint`` (a finished run is found, not retrained) and is
graded on the 200 held-out problems of ``eval_arith.jsonl``: greedy, eight samples at temperature 1
(their mean: one sample's accuracy; their best: "at least one of 8"), the share of well-formed
greedy answers, the run's minutes and the mean KL estimate of its last ten steps.

    .venv/bin/python bench/rl_recipes.py                    # every variant, about 12 minutes
    .venv/bin/python bench/rl_recipes.py --only recipe lr1e-4

Not a test: writes only under the artifact folder's ``bench/rl``. The distilled model is found or
re-created with chapter 08's recipe (``distill_checkpoint``).
"""

from __future__ import annotations

import argparse
import json

import torch
from sft_recipes import chapter_sft  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.distill import distill_checkpoint, distill_config, distill_options
from spongebob.evaluate import evaluate_file, parse_r1
from spongebob.rl import rl_checkpoint, rl_config
from spongebob.runtime import artifacts_dir
from spongebob.world import course_tokenizer, sample_dir

# name -> overrides of rl_config("tiny")
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "steps200": dict(steps=200),
    "lr1e-4": dict(lr=1e-4),
    "updates2": dict(updates=2),
    "wild": dict(steps=30, lr=4e-4, beta=0.0),  # chapter 09's section 8
    "wild-beta0.2": dict(steps=30, lr=4e-4, beta=0.2),  # its exercise 3
}


def grade(model, tok, world) -> dict:
    path = world / "eval_arith.jsonl"
    greedy = evaluate_file(model, tok, path, "number", max_new_tokens=96)
    samples = [evaluate_file(model, tok, path, "number", max_new_tokens=96, temperature=1.0,
                             seed=s) for s in range(8)]  # fmt: skip
    right = torch.tensor(
        [[r["correct"] for r in rep.records] for rep in samples], dtype=torch.float
    )
    formed = sum(parse_r1(r["answer"]) is not None for r in greedy.records) / len(greedy.records)
    return {"greedy": round(greedy.accuracy, 3), "one_sample": round(right.mean().item(), 3),
            "any_of_8": round(right.max(dim=0).values.mean().item(), 3),
            "well_formed": round(formed, 3)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS), default=None)
    args = ap.parse_args()
    tok, world = course_tokenizer(), sample_dir(0)
    distilled = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
                                   distill_config("tiny"), init=chapter_sft(world, tok),
                                   replay_source=world / "pretrain.jsonl",
                                   mix_source=world / "sft_512.jsonl", **distill_options("tiny"),
                                   progress=False)  # fmt: skip
    print(json.dumps({"variant": "distilled", **grade(load_model(distilled).eval(), tok, world)}))
    for name in args.only or VARIANTS:
        cfg = rl_config("tiny", **VARIANTS[name])
        ckpt = rl_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("bench", "rl", name), cfg,
                             init=distilled, progress=False)  # fmt: skip
        log = [json.loads(line) for line in open(ckpt.parent / "metrics.jsonl", encoding="utf-8")]
        print(json.dumps({"variant": name, **VARIANTS[name],
                          **grade(load_model(ckpt).eval(), tok, world),
                          "minutes": round(log[-1]["elapsed"] / 60, 1),
                          "kl_last10": round(sum(r["kl"] for r in log[-10:]) / 10, 4)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
