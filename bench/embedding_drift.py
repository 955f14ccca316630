"""How far the copy curriculum moves the embedding rows of ids it never shows (docs/benchmarks.md,
"Why a copier start costs completion"). For each checkpoint: the mean cosine between the tied
embedding/output rows over all pairs, and the mean row length, for the 436 ids the values
curriculum drills (the world's 256 most frequent and the chat values' ids, ``bench/copy_recipes.py``)
and for every other id from 16 up.

    .venv/bin/python bench/embedding_drift.py ~/.cache/spongebob/bench/copy/*/last.pt

Not a test: prints two lines per checkpoint; writes only the prepared pretraining text that
``bench/copy_recipes.py`` uses (``bench/copy/world``), when it is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from copy_recipes import drill_ids, value_ids  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import read_checkpoint
from spongebob.data import PreparedData, prepare
from spongebob.runtime import artifacts_dir
from spongebob.sft import frequent_ids
from spongebob.world import course_tokenizer, sample_dir


def agreement(rows: torch.Tensor) -> float:
    """Mean cosine similarity between the rows, over all pairs."""
    e = torch.nn.functional.normalize(rows.float(), dim=1)
    return float(((e @ e.T).sum() - len(e)) / (len(e) * (len(e) - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    args = ap.parse_args()
    tok = course_tokenizer()
    folder = artifacts_dir("bench", "copy", "world")
    prepare(sample_dir(0) / "pretrain.jsonl", tok, folder)  # as bench/copy_recipes.py does
    text = PreparedData(folder)
    wide = drill_ids(frequent_ids(text), value_ids(tok))
    for path in args.checkpoints:
        w = read_checkpoint(path)[0]["tok_embeddings.weight"]
        drilled = torch.zeros(len(w), dtype=torch.bool)
        drilled[wide] = True
        others = ~drilled
        others[:16] = False  # the special ids
        print(path)
        for name, m in (("drilled", drilled), ("others", others)):
            print(f"  {name:8s} {int(m.sum()):5d} ids: mean cosine {agreement(w[m]):.2f}, "
                  f"mean length {w[m].norm(dim=1).mean():.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
