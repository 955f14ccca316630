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
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from sft_recipes import chapter_sft  # bench/ is on sys.path when this script runs

from spongebob import rl
from spongebob.checkpoint import load_model
from spongebob.distill import copies_question, distill_checkpoint, distill_config, distill_options
from spongebob.evaluate import evaluate_file, parse_r1
from spongebob.files import iter_jsonl, write_jsonl
from spongebob.rl import rl_checkpoint, rl_config
from spongebob.runtime import artifacts_dir
from spongebob.world import course_tokenizer, sample_dir

KINDS = ("add", "sub", "mul", "add_sub", "mul_add")
# name -> overrides of rl_config("tiny")
VARIANTS: dict[str, dict] = {
    "recipe": {},
    "steps200": dict(steps=200),
    "lr1e-4": dict(lr=1e-4),
    "updates2": dict(updates=2),
    "wild": dict(steps=30, lr=4e-4, beta=0.0),  # chapter 09's section 8
    "wild-beta0.2": dict(steps=30, lr=4e-4, beta=0.2),  # its exercise 3
}
# name -> (the kinds of r1_1024.jsonl's problems the run draws from, overrides of rl_config("tiny"),
# a copy bonus): the weakest kinds of the held-out set alone, so that every step's groups hold them;
# with a bonus > 0, a reply whose reasoning starts from the question's two numbers
# (spongebob.distill.copies_question) earns that much more (a bench-only reward: the checkpoint
# does not record it, the folder's name does)
POOLS: dict[str, tuple[tuple[str, ...], dict, float]] = {
    "pool-sub-mul": (("sub", "mul"), {}, 0.0),
    "pool-sub-mul-lr1e-4-160": (("sub", "mul"), dict(lr=1e-4, steps=160), 0.0),
    "copy-bonus-0.5": (KINDS, {}, 0.5),
    "pool-sub-mul-copy-bonus-0.5": (("sub", "mul"), {}, 0.5),
}


class Expected(str):
    """An expected answer that also carries the question's numbers, for the copy bonus."""

    numbers: list[int]


@contextmanager
def copy_bonus(bonus: float):
    """``spongebob.rl``'s reward plus ``bonus`` for a reply that copies the question's numbers;
    the problems read with their ``numbers`` (``pool_file``'s lines). Nothing changes at 0."""
    if bonus == 0:
        yield
        return
    plain_reward, plain_read = rl.reward, rl.read_problems

    def read(path):
        out = []
        for _, rec in iter_jsonl(path):
            e = Expected(rec["expected"])
            e.numbers = rec["numbers"]
            out.append((rec["messages"][0], e))
        return out

    def reward(text, expected, *, format_bonus=0.1):
        return plain_reward(text, expected, format_bonus=format_bonus) + bonus * (
            parse_r1(text) is not None and copies_question(text, expected.numbers)
        )

    rl.reward, rl.read_problems = reward, read
    try:
        yield
    finally:
        rl.reward, rl.read_problems = plain_reward, plain_read


def pool_file(problems: dict, kinds: tuple[str, ...], out, limit: int | None = None) -> Path:
    """The training problems (``problems``: world.json's, by id; split "r1", the problems of
    r1_1024.jsonl) of ``kinds``, the first ``limit`` of them, as eval lines in
    ``out/problems.jsonl``, which ``spongebob.rl.read_problems`` reads."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "problems.jsonl"
    chosen = [p for p in problems.values() if p["split"] == "r1" and p["kind"] in kinds][:limit]
    write_jsonl(path, [{"messages": [{"role": "user", "content": p["question"]}],
                        "expected": str(p["answer"]), "id": p["id"], "numbers": p["numbers"]}
                       for p in chosen])  # fmt: skip
    return path


def grade(model, tok, world, problems: dict) -> dict:
    path = world / "eval_arith.jsonl"
    greedy = evaluate_file(model, tok, path, "number", max_new_tokens=96)
    samples = [evaluate_file(model, tok, path, "number", max_new_tokens=96, temperature=1.0,
                             seed=s) for s in range(8)]  # fmt: skip
    right = torch.tensor(
        [[r["correct"] for r in rep.records] for rep in samples], dtype=torch.float
    )
    formed = sum(parse_r1(r["answer"]) is not None for r in greedy.records) / len(greedy.records)
    copied = sum(copies_question(r["answer"], problems[r["id"]]["numbers"]) for r in greedy.records)
    kinds = defaultdict(list)
    for r in greedy.records:
        kinds[problems[r["id"]]["kind"]].append(r["correct"])
    return {"greedy": round(greedy.accuracy, 3), "one_sample": round(right.mean().item(), 3),
            "any_of_8": round(right.max(dim=0).values.mean().item(), 3),
            "well_formed": round(formed, 3), "copies": round(copied / len(greedy.records), 3),
            "greedy_by_kind": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(kinds.items())}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS | POOLS), default=None)
    args = ap.parse_args()
    tok, world = course_tokenizer(), sample_dir(0)
    distilled = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
                                   distill_config("tiny"), init=chapter_sft(world, tok),
                                   replay_source=world / "pretrain.jsonl",
                                   mix_source=world / "sft_512.jsonl", **distill_options("tiny"),
                                   progress=False)  # fmt: skip
    model = load_model(distilled).eval()
    problems = {p["id"]: p for p in json.loads((world / "world.json").read_text())["problems"]}
    # the weakest kind on problems it was trained on: the first 40 training problems of kind "sub"
    train_sub = pool_file(problems, ("sub",), artifacts_dir("bench", "rl", "train-sub"), limit=40)
    sub = evaluate_file(model, tok, train_sub, "number", max_new_tokens=96)
    print(json.dumps({"variant": "distilled", **grade(model, tok, world, problems),
                      "train_sub_greedy": f"{sum(r['correct'] for r in sub.records)}/40"}))  # fmt: skip
    for name in args.only or [*VARIANTS, *POOLS]:
        out = artifacts_dir("bench", "rl", name)
        if name in POOLS:
            kinds, overrides, bonus = POOLS[name]
            source = pool_file(problems, kinds, out / "pool")
        else:
            overrides, source, bonus = VARIANTS[name], world / "r1_1024.jsonl", 0.0
        cfg = rl_config("tiny", **overrides)
        with copy_bonus(bonus):
            ckpt = rl_checkpoint(source, tok, out, cfg, init=distilled, progress=False)
        log = [json.loads(line) for line in open(ckpt.parent / "metrics.jsonl", encoding="utf-8")]
        print(json.dumps({"variant": name, **overrides,
                          **grade(load_model(ckpt).eval(), tok, world, problems),
                          "minutes": round(log[-1]["elapsed"] / 60, 1),
                          "kl_last10": round(sum(r["kl"] for r in log[-10:]) / 10, 4)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
