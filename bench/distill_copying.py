"""Chapter 08's distillation with key-value copy drills kept in its batches: does a distilled
model that still copies restate a reworded problem's numbers? (issue 15, point 5)

Chapter 08's recipe (``distill_config("tiny")``, ``distill_options("tiny")``: the reasoning
chats with 600 SFT chats mixed in, half the batches the drilled pretraining text) from ``--init``
(an SFT checkpoint that copies: ``bench/copy_through.py``'s chain), with ``--share`` of the
batches replaced by ``bench/copy_through.py``'s ``KeyValueRecall`` drills written into windows of
the pretraining text, each target weighing ``--weight``. The induction probe on the detail
values' ids is logged every 250 steps; at the end: unseen arithmetic, well-formed share, held-out
facts, the reworded problems and the share of first reasoning lines that copy their numbers, and
per set the share of answers with a repetition loop (a unit of 1-3 characters 9 times in a row).

    B=~/.cache/spongebob/bench
    .venv/bin/python bench/distill_copying.py \\
        --init $B/copy-through/attrfirst-kvtext0.4-wake300-w1-sft1200/sft/last.pt \\
        --work $B/distill-copying/chain-share0.2

Not a test: writes only under ``--work``; a finished run there is used again.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from copy_recipes import drill_ids, value_ids  # bench/ is on sys.path when this script runs
from copy_through import KeyValueRecall
from distill_recipes import distilled_measures

from spongebob.checkpoint import load_model
from spongebob.distill import distill_config, distill_options, drilled_text, write_chat_mix
from spongebob.pretrain import induction_probe, open_pretraining_data
from spongebob.sft import ReplayMix, frequent_ids, open_chat_data, sft_loader
from spongebob.train import train
from spongebob.world import course_tokenizer, sample_dir

# a unit of 1-3 characters repeated 8 more times in a row ("anananan..."): a repetition loop
LOOP = re.compile(r"(.{1,3}?)\1{8,}", re.S)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", type=Path, required=True, help="the SFT checkpoint to distil")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--share", type=float, default=0.2, help="share of batches that are drills")
    ap.add_argument("--weight", type=float, default=1.0, help="loss weight of a drill target")
    args = ap.parse_args()
    if not args.init.is_file():
        raise SystemExit(f"{args.init}: no such checkpoint")
    tok, world = course_tokenizer(), sample_dir(0)
    cfg, opts = distill_config("tiny"), distill_options("tiny")
    work = args.work
    text = open_pretraining_data(world / "pretrain.jsonl", tok, work / "text")
    values = value_ids(tok)
    wide = drill_ids(frequent_ids(text), values)
    run = work / "run"
    t0 = time.perf_counter()
    if not (run / "last.pt").is_file():
        model = load_model(args.init)
        chats = write_chat_mix(work / "chats.jsonl", [(world / "r1_1024.jsonl", None),
                                                      (world / "sft_512.jsonl", opts["mix_chats"])],
                               seed=cfg.seed)  # fmt: skip
        replay_src = drilled_text(world / "pretrain.jsonl", work / "replay_text.jsonl",
                                  opts["drill_copies"], seed=cfg.seed)  # fmt: skip
        data = open_chat_data(chats, tok, work / "data", cfg.seq_len, model.config.max_seq_len)
        replay = open_pretraining_data(replay_src, tok, work / "replay")
        loader = sft_loader(data, cfg, replay, replay=opts["replay"],
                            replay_batch_size=opts["replay_batch_size"],
                            random_windows=opts["random_windows"], tag_weight=opts["tag_weight"],
                            length_window=opts["length_window"])  # fmt: skip
        drills = KeyValueRecall(tok.vocab_size, cfg.seq_len, cfg.batch_size, wide,
                                pairs=8 * cfg.seq_len // 256, seed=40, text=np.asarray(text.ids))  # fmt: skip
        mix = ReplayMix(loader, drills, args.share, replay_weight=args.weight)
        probes = {"probe_values": lambda m: induction_probe(m, ids=values)}
        train(model, mix, cfg, out_dir=run, progress=False, probes=probes)
    minutes = (time.perf_counter() - t0) / 60
    log = [json.loads(line) for line in open(run / "metrics.jsonl")]
    curve = [(r["step"], round(r["probe_values"], 3)) for r in log if "probe_values" in r]
    model = load_model(run / "last.pt").eval()
    reports, measures = distilled_measures(model, tok, world)
    print(json.dumps({
        "share": args.share, "weight": args.weight, "minutes": round(minutes, 1),
        "probe_by_step": curve, "probe_values": round(induction_probe(model, ids=values), 3),
        **{k: round(v, 3) for k, v in measures.items()},
        "loops": {k: round(sum(bool(LOOP.search(r["answer"])) for r in rep.records)
                           / len(rep.records), 3) for k, rep in reports.items()},
        "example": reports["arith_reworded"].records[0]["answer"][:160],
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
