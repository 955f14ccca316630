"""Fixed cuts against shifted cuts: chapter 06's pretraining recipe with the packed windows cut at
the same places every epoch (``PackedLoader(cuts="fixed")``), its curves recorded for the chapter.

    .venv/bin/python bench/cuts_recipes.py                  # fixed cuts, about 5 minutes on 2 cores
    .venv/bin/python bench/cuts_recipes.py --cuts shifted   # the chapter's own recipe, for comparison

The run is ``spongebob.pretrain.pretrain`` on the world of seed 0 with the course tokenizer and
``TrainConfig.preset("tiny", eval_every=50)`` (the chapter validates every 150 steps; validation
does not change the training), then the chapter's completion check of ``eval_completion.jsonl``.
With ``--cuts fixed`` (the default) it writes ``notebooks/data/pretrain_fixed_cuts.json``: the
training loss of every 10-step log window and the validation loss of every evaluation, rounded to
4 digits, the completion accuracy, the command and the versions. Chapter 06 plots that recorded
curve next to its own run's. Other ``--cuts`` print only (``--out`` writes anywhere). The run's
checkpoint and metrics go under ``--work`` (default: the artifact folder's ``bench/cuts``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from spongebob.checkpoint import load_model
from spongebob.pipeline import completion_accuracy
from spongebob.pretrain import pretrain
from spongebob.runtime import artifacts_dir
from spongebob.train import TrainConfig
from spongebob.world import course_tokenizer, sample_dir

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "notebooks" / "data" / "pretrain_fixed_cuts.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", choices=("fixed", "shifted", "random"), default="fixed")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="where to write the record")
    args = ap.parse_args(argv)
    work = (args.work or artifacts_dir("bench", "cuts")) / args.cuts
    out = args.out or (RECORDED if args.cuts == "fixed" else None)
    tok, world = course_tokenizer(), sample_dir(0)
    cfg = TrainConfig.preset("tiny", eval_every=50)
    start = time.perf_counter()
    result = pretrain(world / "pretrain.jsonl", tok, work, cfg, cuts=args.cuts, progress=False)
    minutes = (time.perf_counter() - start) / 60
    records = [json.loads(line) for line in open(work / "metrics.jsonl", encoding="utf-8")]
    train_curve = [[r["step"], round(r["loss"], 4)] for r in records if "loss" in r]
    val_curve = [[r["step"], round(r["val_loss"], 4)] for r in records if "val_loss" in r]
    acc = completion_accuracy(load_model(result.checkpoint).eval(), tok,
                              world / "eval_completion.jsonl")  # fmt: skip
    low = min(val_curve, key=lambda sv: sv[1])
    print(f"cuts={args.cuts}: {cfg.max_steps} steps in {minutes:.1f} min; validation loss lowest "
          f"{low[1]:.3f} at step {low[0]}, last {val_curve[-1][1]:.3f}; training loss last "
          f"{train_curve[-1][1]:.3f}; completion {acc['accuracy']:.1%} of {acc['n']}")  # fmt: skip
    if out is not None:
        record = {
            "what": f"chapter 06's pretraining recipe with cuts={args.cuts!r}",
            "command": "python bench/cuts_recipes.py"
            + ("" if args.cuts == "fixed" else f" --cuts {args.cuts}"),
            "train_config": cfg.to_dict(),
            "cuts": args.cuts,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "completion_accuracy": round(acc["accuracy"], 4),
            "completion_n": acc["n"],
            "train_loss": train_curve,
            "val_loss": val_curve,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=None) + "\n", encoding="utf-8")
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
