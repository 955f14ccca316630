"""Does a pretrained model that can copy recall in chats? Chapter 07's SFT and long stages, run
from any pretrained checkpoint (for example one that ``bench/copy_recipes.py`` wrote), with the
probes and evaluations chapter 07 reports.

    .venv/bin/python bench/copy_downstream.py CHECKPOINT TAG    # about 7 minutes on 2 cores

Not a test. Runs ``sft_checkpoint`` with ``sft_config("tiny")`` and its options (600 steps,
replay 0.5), then the long stage twice (``sft_config("tiny-long")``: loss on all replies, then on
the last reply only), and prints per stage the minutes, the induction probe on the 256 most
frequent ids of the pretraining text, held-out fact accuracy (after SFT) and ``eval_long``
recall. Writes only under ``--work`` (default: the artifact folder's ``bench/copy-downstream/TAG``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from spongebob.checkpoint import load_model
from spongebob.data import PreparedData, prepare
from spongebob.evaluate import evaluate_sets
from spongebob.pretrain import induction_probe
from spongebob.runtime import artifacts_dir
from spongebob.sft import frequent_ids, sft_checkpoint, sft_config, sft_options
from spongebob.world import course_tokenizer, sample_dir

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("tag")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or artifacts_dir("bench", "copy-downstream", args.tag)
    tok, world = course_tokenizer(), sample_dir(0)
    prepare(world / "pretrain.jsonl", tok, work / "text")
    alphabet = frequent_ids(PreparedData(work / "text"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    sft = sft_checkpoint(world / "sft_512.jsonl", tok, work / "sft", sft_config("tiny"),
                         init=args.checkpoint, replay_source=world / "pretrain.jsonl",
                         **sft_options("tiny"), progress=False)  # fmt: skip
    model = load_model(sft).eval()
    report = evaluate_sets(model, tok, world, ["facts", "long"])
    print(json.dumps({"stage": "sft", "minutes": round((time.perf_counter() - t0) / 60, 1),
                      "probe_world": round(induction_probe(model, ids=alphabet), 3),
                      "facts": round(report["facts"].accuracy, 3),
                      "long": round(report["long"].accuracy, 3)}), flush=True)  # fmt: skip
    for last in (False, True):
        t0 = time.perf_counter()
        folder = work / ("long-last" if last else "long-all")
        options = sft_options("tiny-long", last_reply_only=last)
        long = sft_checkpoint(world / "sft_1024.jsonl", tok, folder, sft_config("tiny-long"),
                              init=sft, stage="sft_long", replay_source=world / "pretrain.jsonl",
                              progress=False, **options)  # fmt: skip
        model = load_model(long).eval()
        report = evaluate_sets(model, tok, world, ["long"])
        print(json.dumps({"stage": "long, " + ("last reply" if last else "all replies"),
                          "minutes": round((time.perf_counter() - t0) / 60, 1),
                          "probe_world": round(induction_probe(model, ids=alphabet), 3),
                          "long": round(report["long"].accuracy, 3)}), flush=True)  # fmt: skip
