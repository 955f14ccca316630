"""The distillation recipes that chapter 08 compares, re-measured: greedy accuracy and format
compliance on all 200 unseen problems of ``eval_arith.jsonl``, the held-out fact questions, and
the same problems reworded (``eval_arith_reworded.jsonl``: accuracy, and the share whose first
reasoning line copies the question's numbers).

    .venv/bin/python bench/distill_recipes.py                 # every recipe, about 25 minutes
    .venv/bin/python bench/distill_recipes.py --only drill-1500
    .venv/bin/python bench/distill_recipes.py --only no-eval-drill-mix600-1500   # the ablation
    .venv/bin/python bench/distill_recipes.py --only text-drill32-mix600-1500-grouped  # 08's
    .venv/bin/python bench/distill_recipes.py --only text-drill32-mix600-1500 \
        --init ~/.cache/spongebob/bench/sft/batch16-lr1e-3-seed1/last.pt \
        --work ~/.cache/spongebob/bench/distill-from/batch16-lr1e-3-seed1   # from another SFT model

Not a test: it prints a table and writes only under ``--work`` (default: the artifact folder's
``bench/distill``). Every recipe starts from the SFT checkpoint of chapter 07 (found, or trained
first; ``--init`` names another), with the chapter's tokenizer, seeds and tag weight 10; what
differs is the replay (none, the whole pretraining text, only its equation lines from
``spongebob.distill.drill_lines``, or the text with those lines repeated:
``spongebob.distill.drilled_text``, chapter 08's recipe), the SFT chats mixed in, the learning
rate, the batch sizes and the number of steps. Runs are cached by ``distill_checkpoint``.

The ablation ``no-eval-drill-*`` replays the drill lines *without* the equations that the held-out
problems' reasoning needs (``a + b = s`` and ``s - c = r`` for an add-then-subtract problem...):
it measures how much of chapter 08's "unseen arithmetic" is the composition of drilled equations.
Those equations can still occur in pretraining stories about other problems.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from sft_recipes import chapter_sft  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.data import read_jsonl
from spongebob.distill import (
    EQUATION_LINE,
    copies_question,
    distill_checkpoint,
    distill_config,
    distill_options,
    drill_lines,
    format_problem,
)
from spongebob.evaluate import evaluate_sets
from spongebob.files import iter_jsonl, write_jsonl
from spongebob.runtime import artifacts_dir
from spongebob.world import course_tokenizer, sample_dir
from spongebob.world.arithmetic import THINK_EN

# name: (replay source: None | "pretrain" | "drill" | "text-drillN" (N: drill_copies), lr, steps,
# SFT chats mixed in[, TrainConfig overrides, option overrides]); replay batches: 8 windows of 256
RECIPES = {
    "chats-300": (None, 1e-3, 300, 0),
    "chats-600": (None, 1e-3, 600, 0),
    "chats-1500": (None, 1e-3, 1500, 0),
    "chats-1500-lr2e-3": (None, 2e-3, 1500, 0),
    "pretrain-replay-600": ("pretrain", 1e-3, 600, 0),
    "drill-1000": ("drill", 2e-3, 1000, 0),
    "drill-1500": ("drill", 2e-3, 1500, 0),
    # 600 of SFT's chats shuffled into the 2,000 reasoning chats (chapter 08's tiny recipe)
    "drill-mix600-1000": ("drill", 2e-3, 1000, 600),
    "drill-mix600-1500": ("drill", 2e-3, 1500, 600),
    # the ablation: the same recipe, the held-out problems' equations taken out of the drill lines
    "no-eval-drill-mix600-1500": ("no-eval-drill", 2e-3, 1500, 600),
    # the whole pretraining text replayed with its drill lines written N more times
    # (distill_options' drill_copies): the text that holds the facts stays in view; 32 is
    # chapter 08's tiny recipe
    "text-drill8-mix600-1500": ("text-drill8", 2e-3, 1500, 600),
    "text-drill16-mix600-1500": ("text-drill16", 2e-3, 1500, 600),
    "text-drill32-mix600-1500": ("text-drill32", 2e-3, 1500, 600),
    # issue 15, point 7: the same recipe in less compute: half the batches (8 reasoning chats and
    # 4 replay windows a step), half the steps, half the chat batch only, a quarter of the batches
    "text-drill32-mix600-1500-half-batch": ("text-drill32", 2e-3, 1500, 600,
                                            {"batch_size": 8}, {"replay_batch_size": 4}),
    "text-drill32-mix600-750": ("text-drill32", 2e-3, 750, 600),
    "text-drill32-mix600-1500-half-chats": ("text-drill32", 2e-3, 1500, 600, {"batch_size": 8}),
    "text-drill32-mix600-1500-quarter-batch": ("text-drill32", 2e-3, 1500, 600,
                                               {"batch_size": 4}, {"replay_batch_size": 2}),
    # the recipe with its chat batches grouped by length (`ChatLoader(length_window=100)`, as in
    # SFT): the same chats and tokens, about a quarter fewer padded positions a chat batch;
    # chapter 08's tiny recipe since 2026-12-07 (every other row: random chat batches)
    "text-drill32-mix600-1500-grouped": ("text-drill32", 2e-3, 1500, 600, {},
                                         {"length_window": 100}),
}  # fmt: skip


def eval_equations(world_json: Path) -> set[str]:
    """The equation lines of the world's own reasoning (``THINK_EN``) for every held-out problem
    of ``world_json`` (its ``problems`` with split ``"eval"``: kind, numbers, answer), in the
    drill lines' spelling."""
    out = set()
    for p in json.loads(Path(world_json).read_text(encoding="utf-8"))["problems"]:
        if p["split"] != "eval":
            continue
        a, b, c = (*p["numbers"], 0)[:3]
        s = a * b if p["kind"] == "mul_add" else a + b  # the intermediate result, as the world's
        out |= {line.format(a=a, b=b, c=c, s=s, r=p["answer"])
                for line in THINK_EN[p["kind"]] if " = " in line}  # fmt: skip
    return out


def drill_without(drill: Path, equations: set[str], out: Path) -> Path:
    """The drill lines of ``drill`` with ``equations`` removed from each line (a line left empty
    is dropped); prints how many equations were removed."""
    kept, removed = [], 0
    for _, rec in iter_jsonl(drill):
        eqs = [e.strip() for e in re.split(r"[.] ?", rec["text"]) if e.strip()]
        rest = [e for e in eqs if e not in equations]
        removed += len(eqs) - len(rest)
        if rest:
            kept.append({**rec, "text": ". ".join(rest) + "."})
    write_jsonl(out, kept)
    print(f"ablation: {removed} equations removed from the drill lines ({len(equations)} distinct)")
    return out


def found_elsewhere(pretrain: Path, equations: set[str]) -> int:
    """How many of ``equations`` occur (as whole numbers) in pretraining lines that are not
    drill lines: the stories and worked problems that the ablation leaves in place."""
    other = "\n".join(rec["text"] for _, rec in iter_jsonl(pretrain)
                      if not EQUATION_LINE.fullmatch(rec["text"]))  # fmt: skip
    return sum(bool(re.search(rf"(?<!\d){re.escape(e)}(?!\d)", other)) for e in equations)


def distilled_measures(model, tok, world: Path) -> tuple[dict, dict[str, float]]:
    """A distilled model graded on the unseen problems, the held-out facts and the reworded
    problems: the ``evaluate_sets`` reports, and the accuracies, the well-formed share on the
    unseen problems and the share of reworded answers whose first reasoning line copies the
    question's numbers."""
    reports = evaluate_sets(model, tok, world, ["arith", "facts", "arith_reworded"])
    arith, reworded = reports["arith"], reports["arith_reworded"]
    numbers = [r["numbers"] for r in read_jsonl(world / "eval_arith_reworded.jsonl")]
    n = len(arith.records)
    return reports, {
        "arith": arith.accuracy,
        "well_formed": sum(format_problem(r["answer"]) is None for r in arith.records) / n,
        "facts": reports["facts"].accuracy,
        "reworded": reworded.accuracy,
        "copies": sum(copies_question(r["answer"], k)
                      for r, k in zip(reworded.records, numbers)) / len(numbers),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(RECIPES), help="recipes to run")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this SFT checkpoint instead of chapter 07's")  # fmt: skip
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.work or artifacts_dir("bench", "distill")
    world, tok = sample_dir(0), course_tokenizer()
    sft_ckpt = args.init
    if sft_ckpt is None:  # chapter 07's, found or trained (after chapter 06's pretraining)
        sft_ckpt = chapter_sft(world, tok)
    drill = drill_lines(world / "pretrain.jsonl", work / "drill.jsonl")
    sources = {"pretrain": world / "pretrain.jsonl", "drill": drill}
    for copies in (8, 16, 32):  # distill writes the drilled text itself (drill_copies)
        sources[f"text-drill{copies}"] = world / "pretrain.jsonl"
    if any(RECIPES[name][0] == "no-eval-drill" for name in args.only or RECIPES):
        held = eval_equations(world / "world.json")
        sources["no-eval-drill"] = drill_without(drill, held, work / "no-eval-drill.jsonl")
        print(f"ablation: {found_elsewhere(world / 'pretrain.jsonl', held)} of them also occur in "
              "pretraining lines that are not drill lines")  # fmt: skip
    print(f"torch threads {torch.get_num_threads()}")
    header = ("recipe", "steps", "minutes", "right", "formed", "facts", "reword", "copies")
    print(f"{header[0]:22s}", " ".join(f"{h:>7s}" for h in header[1:]))
    for name in args.only or RECIPES:
        replay, lr, steps, mix, train, extra = (*RECIPES[name], {}, {})[:6]
        cfg = distill_config("tiny", lr=lr, max_steps=steps, grad_accum=2 if replay else 1, **train)
        # random chat batches unless a row says otherwise: the rows measured before chapter 08
        # grouped its batches by length (2026-12-07) keep their meaning
        options = distill_options("tiny", replay=0.5 if replay else 0.0, mix_chats=mix,
                                  drill_copies=int(replay[10:]) if replay and replay.startswith(
                                      "text-drill") else 0,
                                  **{"length_window": 0, **extra})  # fmt: skip
        if mix:
            options["mix_source"] = world / "sft_512.jsonl"
        if replay:
            options["replay_source"] = sources[replay]
        t0 = time.perf_counter()
        ckpt = distill_checkpoint(world / "r1_1024.jsonl", tok, work / name, cfg, init=sft_ckpt,
                                  progress=False, **options)  # fmt: skip
        minutes = (time.perf_counter() - t0) / 60
        _, m = distilled_measures(load_model(ckpt).eval(), tok, world)
        print(f"{name:22s} {steps:7d} {minutes:7.1f} {m['arith']:7.1%} {m['well_formed']:7.1%} "
              f"{m['facts']:7.1%} {m['reworded']:7.1%} {m['copies']:7.1%}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
