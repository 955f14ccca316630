"""Can a trained model still learn to copy? (issue 15, points 2-3): from a checkpoint (chapter
07's SFT model by default), chapter 07's copy-drill curriculum (``RepeatedSpans``: periods 6-24 in
64 x 64 rows, then 6-60 in 32 x 128) over the world's 256 most frequent ids and the ids the chat
details are written with, training either every weight or only the attention projections (the
feed-forward layers, norms and embeddings, where the facts live, frozen). Prints the induction
probe every 50 steps and the held-out facts before and after; the checkpoint it writes is the
``--init`` of ``bench/copy_through.py --long-only``.

    .venv/bin/python bench/graft_head.py --train attention      # about 2 minutes on 2 cores

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/graft/TRAIN``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from copy_recipes import drill_ids, value_ids  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.evaluate import evaluate_sets
from spongebob.pretrain import induction_probe, open_pretraining_data
from spongebob.runtime import artifacts_dir
from spongebob.sft import Curriculum, RepeatedSpans, frequent_ids
from spongebob.train import TrainConfig, train
from spongebob.world import course_tokenizer, sample_dir

ATTENTION = ("attention.wq", "attention.wk", "attention.wv", "attention.wo")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--init", type=Path, default=artifacts_dir("runs", "sft-tiny") / "last.pt")
    ap.add_argument("--train", choices=["attention", "all"], default="attention")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    if not args.init.is_file():
        raise SystemExit(f"{args.init}: no such checkpoint; execute chapters 06 and 07 first")
    work = args.work or artifacts_dir("bench", "graft", f"{args.train}-{args.steps}-lr{args.lr}")
    tok, world = course_tokenizer(), sample_dir(0)
    text = open_pretraining_data(world / "pretrain.jsonl", tok, work / "text")
    alphabet, values = frequent_ids(text), value_ids(tok)
    wide = drill_ids(alphabet, values)
    model = load_model(args.init).train()
    if args.train == "attention":
        for name, p in model.named_parameters():
            p.requires_grad = any(part in name for part in ATTENTION)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    facts0 = evaluate_sets(model.eval(), tok, world, ["facts"])["facts"].accuracy
    V = tok.vocab_size
    loader = Curriculum([(175, RepeatedSpans(V, 64, 64, seed=7, ids=wide)),
                         (None, RepeatedSpans(V, 128, 32, k_max=60, seed=8, ids=wide))])  # fmt: skip
    cfg = TrainConfig(max_steps=args.steps, batch_size=64, seq_len=64, lr=args.lr, eval_every=50)
    probes = {"world": lambda m: induction_probe(m, ids=alphabet),
              "values": lambda m: induction_probe(m, ids=values)}  # fmt: skip
    t0 = time.perf_counter()
    train(model.train(), loader, cfg, out_dir=work, progress=False, probes=probes)
    minutes = (time.perf_counter() - t0) / 60
    log = [json.loads(line) for line in open(work / "metrics.jsonl")]
    facts1 = evaluate_sets(model.eval(), tok, world, ["facts"])["facts"].accuracy
    print(json.dumps({"train": args.train, "trained_params": trained, "steps": args.steps,
                      "lr": args.lr, "minutes": round(minutes, 1),
                      **{f"probe_{k}": {r["step"]: round(r[k], 3) for r in log if k in r}
                         for k in probes},
                      "facts_before": round(facts0, 3), "facts_after": round(facts1, 3),
                      "checkpoint": str(work / "last.pt")}))  # fmt: skip


if __name__ == "__main__":
    main()
