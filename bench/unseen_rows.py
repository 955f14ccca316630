"""Ids that pretraining never shows start SFT as one vector: does drawing them afresh help?

The course tokenizer learns its merges from every file of the world, so 856 of its ids never occur
in the pretraining text; SFT's chats are 15 % such tokens (most of them pieces of Chinese
characters), the reasoning chats 7 %, `eval_facts` questions 25 %. AdamW moves their rows of the
tied embedding/output matrix at every step of pretraining all the same way (docs/benchmarks.md,
"Why a copier start costs completion"), so after chapter 06 they agree to a mean cosine of 0.999.
This runs chapter 07's SFT recipe from chapter 06's checkpoint as it is and with those rows drawn
afresh from the initialisation's N(0, 0.02^2) (``--seeds`` SFT seeds each), and prints held-out
facts, English and Chinese, and the share of tokens of each file that pretraining never shows.

    .venv/bin/python bench/unseen_rows.py --seeds 1337 1338     # about 3 minutes a run on 2 cores

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/unseen-rows``).
Needs chapter 06's run (``runs/pretrain-tiny``) in the artifact folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from copy_recipes import reset_unseen_rows  # bench/ is on sys.path when this script runs
from embedding_drift import agreement

from spongebob.checkpoint import load_model, read_checkpoint, save_checkpoint
from spongebob.data import PreparedData, prepare, read_jsonl
from spongebob.evaluate import evaluate_sets
from spongebob.runtime import artifacts_dir
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.world import course_tokenizer, sample_dir


def never_seen(text: PreparedData, vocab_size: int) -> torch.Tensor:
    """Ids from 16 up that the prepared text never contains."""
    counts = np.bincount(np.asarray(text.ids), minlength=vocab_size)
    return torch.tensor([i for i in range(16, vocab_size) if counts[i] == 0])


def token_share(path: Path, tok, ids: torch.Tensor) -> float:
    """Share of the message tokens of a chat file that are among ``ids``."""
    wanted, hit, total = set(ids.tolist()), 0, 0
    for row in read_jsonl(path):
        for m in row.get("conversations", row.get("messages", [])):
            enc = tok.encode(m["content"])
            total += len(enc)
            hit += sum(i in wanted for i in enc)
    return hit / max(1, total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or artifacts_dir("bench", "unseen-rows")
    tok, world = course_tokenizer(), sample_dir(0)
    pretrained = artifacts_dir("runs", "pretrain-tiny") / "last.pt"
    if not pretrained.is_file():
        raise SystemExit(f"{pretrained}: no such run; execute chapter 06 first")
    prepare(world / "pretrain.jsonl", tok, work / "text")
    never = never_seen(PreparedData(work / "text"), tok.vocab_size)
    shares = {f: round(token_share(world / f, tok, never), 3)
              for f in ("sft_512.jsonl", "r1_1024.jsonl", "eval_facts.jsonl",
                        "eval_arith_reworded.jsonl")}  # fmt: skip
    state, rest = read_checkpoint(pretrained)
    w = state["tok_embeddings.weight"]
    print(json.dumps({"never_seen_ids": len(never), "token_share": shares,
                      "cosine_before": round(agreement(w[never]), 3)}), flush=True)  # fmt: skip
    reset = work / "pretrain-reset.pt"
    if not reset.is_file():
        model = load_model(pretrained)
        keep = torch.ones(tok.vocab_size, dtype=torch.bool)
        keep[never] = False
        reset_unseen_rows(model, keep.nonzero().flatten())  # the never-seen rows, drawn afresh
        save_checkpoint(reset, {**rest, "model": model.state_dict()})
    for seed in args.seeds:
        for name, init in (("as-is", pretrained), ("reset", reset)):
            t0 = time.perf_counter()
            ckpt = sft_checkpoint(world / "sft_512.jsonl", tok, work / f"sft-{name}-{seed}",
                                  sft_config("tiny", seed=seed), init=init,
                                  replay_source=world / "pretrain.jsonl",
                                  **sft_options("tiny"), progress=False)  # fmt: skip
            facts = evaluate_sets(load_model(ckpt).eval(), tok, world, ["facts"])["facts"]
            by = facts.by(2)
            print(json.dumps({"init": name, "seed": seed,
                              "minutes": round((time.perf_counter() - t0) / 60, 1),
                              "facts": round(facts.accuracy, 3), "en": round(by.get("en", 0), 3),
                              "zh": round(by.get("zh", 0), 3)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
