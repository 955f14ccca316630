"""Can a model learn key-value recall drills (``bench/copy_through.py``'s ``KeyValueRecall``: a
key of 2-3 ids and a value of 1-4 ids written twice in a row of random ids, the second value
predictable only by matching the key) at all? 300 steps of pure drills (16 rows of 256, lr 1e-3)
from chapter 07's SFT model (no induction head) and from the bench's copier
(``copier-values+world-drills-10``: a head formed by drills and kept through pretraining), the
greedy accuracy on the recalled values of a held-out batch logged every 50 steps.

    .venv/bin/python bench/kv_drills.py            # about 3 minutes on 2 cores

Not a test: prints one line per starting model and writes nothing.
"""

from __future__ import annotations

import argparse

from copy_recipes import drill_ids, value_ids  # bench/ is on sys.path when this script runs
from copy_through import KeyValueRecall, kv_accuracy

from spongebob.checkpoint import load_model
from spongebob.pretrain import open_pretraining_data
from spongebob.runtime import artifacts_dir
from spongebob.sft import frequent_ids
from spongebob.train import TrainConfig, train
from spongebob.world import course_tokenizer, sample_dir

STARTS = {
    "sft": ("runs", "sft-tiny"),
    "copier": ("bench", "copy", "copier-values+world-drills-10"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(STARTS), help="starting models")
    args = ap.parse_args()
    tok, world = course_tokenizer(), sample_dir(0)
    text = open_pretraining_data(world / "pretrain.jsonl", tok, artifacts_dir("bench", "kv"))
    wide = drill_ids(frequent_ids(text), value_ids(tok))
    probe = KeyValueRecall(tok.vocab_size, 256, 16, wide, pairs=8)
    for name in args.only or STARTS:
        path = artifacts_dir(*STARTS[name]) / "last.pt"
        if not path.is_file():
            raise SystemExit(f"{path}: no such checkpoint (chapter 07, or bench/copy_recipes.py)")
        model = load_model(path).train()
        cfg = TrainConfig(max_steps=300, batch_size=16, seq_len=256, warmup_steps=20, lr=1e-3,
                          eval_every=50, log_every=50)  # fmt: skip
        points = [(0, round(kv_accuracy(model.eval(), probe), 3))]
        model.train()

        def log(record: dict, points: list = points) -> None:
            if "kv" in record:
                points.append((record["step"], round(record["kv"], 3)))

        drills = KeyValueRecall(tok.vocab_size, 256, 16, wide, pairs=8, seed=3)
        train(model, drills, cfg, progress=False, on_log=log,
              probes={"kv": lambda m: kv_accuracy(m, probe)})  # fmt: skip
        print(f"{name}: recalled values by step", " ".join(f"{s}: {a:.1%}" for s, a in points),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
