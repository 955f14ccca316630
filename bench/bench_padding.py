"""Useful-token share of SFT batches (real tokens / positions computed) with and without length
grouping, on a length distribution shaped like the original's ``sft_512.jsonl``, and the time to
build one chat batch.

    .venv/bin/python bench/bench_padding.py
    .venv/bin/python bench/bench_padding.py --chats 200000 --batch 32 --world 1,8

Not a test: it prints a markdown table. The lengths are synthetic (the real file is 7 GB and not
here): conversation text of lognormal length in characters (median ``--median-chars``, clipped to
512 characters as the file's name says), about 1.5 characters per token with the original's
6,400-token tokenizer, plus ``--overhead`` tokens of chat template and system prompt, cut at
``max_seq_len + 1 = 513`` tokens as `spongebob.data.prepare` cuts them. The world's own
``sft_512.jsonl`` (prepared with the course tokenizer) is measured too. The batches are the real
`spongebob.data.ChatLoader`'s, over one epoch: plain shuffling (``length_window=0``) against
grouping by length within windows of 100 global batches, on each rank of ``--world`` ranks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spongebob.data import CONTEXT, TRAINED, ChatLoader, PreparedData, prepare
from spongebob.model import IGNORE_INDEX


class LengthsOnly:
    """What `ChatLoader` reads from a `PreparedData`, for conversations of given lengths."""

    kind = "chat"
    folder = Path("synthetic")

    def __init__(self, lengths: np.ndarray, pad_id: int = 0) -> None:
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint64)
        n = int(self.offsets[-1])
        rng = np.random.default_rng(1)
        self.ids = rng.integers(3, 6400, n).astype(np.uint16)
        self.kinds = np.where(rng.random(n) < 0.5, TRAINED, CONTEXT).astype(np.uint8)
        self.meta = {"pad_id": pad_id}
        self._n = len(lengths)

    def __len__(self) -> int:
        return self._n

    def doc(self, i: int):
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], self.kinds[a:b]


def sft512_like(n: int, median_chars: float, overhead: int, seed: int = 0) -> np.ndarray:
    chars = np.random.default_rng(seed).lognormal(np.log(median_chars), 0.6, n).clip(10, 512)
    return np.minimum(np.ceil(chars / 1.5).astype(np.int64) + overhead, 513)


def shares(data, batch: int, world: int, window: int, pad_multiple: int = 1) -> tuple[float, float]:
    """(per-rank share, share of a DDP step that waits for its longest rank) over one epoch."""
    loaders = [ChatLoader(data, batch, seed=0, rank=r, world_size=world, length_window=window,
                          pad_multiple=pad_multiple, pin_memory=False) for r in range(world)]  # fmt: skip
    lengths = loaders[0].lengths - 1  # positions a row computes
    real = padded = step_padded = 0
    for _ in range(loaders[0].batches_per_epoch):
        rows = [lengths[ld.order.next_batch()] for ld in loaders]
        longest = [-(-int(r.max()) // pad_multiple) * pad_multiple for r in rows]
        real += sum(int(r.sum()) for r in rows)
        padded += sum(batch * L for L in longest)
        step_padded += world * batch * max(longest)
    return real / padded, real / step_padded


def batch_of_loop(loader: ChatLoader, docs: np.ndarray):
    """The row-by-row batch building that `ChatLoader.batch_of` replaced (for the timing)."""
    rows = [loader.data.doc(int(i)) for i in docs]
    L = max(len(ids) for ids, _ in rows) - 1
    x = torch.full((len(rows), L), loader.pad_id, dtype=torch.int64)
    y = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.int64)
    for r, (ids, kinds) in enumerate(rows):
        ids = torch.from_numpy(ids.astype(np.int64))
        k = torch.from_numpy(kinds[1:].astype(np.int64))
        n = len(ids) - 1
        x[r, :n] = ids[:-1]
        y[r, :n] = torch.where(k > 0, ids[1:], IGNORE_INDEX)
    return x, y


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chats", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32, help="conversations per rank and micro-batch")
    p.add_argument("--world", default="1,8", help="comma-separated numbers of ranks")
    p.add_argument("--median-chars", type=float, default=200.0)
    p.add_argument("--overhead", type=int, default=30)
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    lengths = sft512_like(args.chats, args.median_chars, args.overhead)
    print(
        f"sft_512-like: {len(lengths):,} chats, tokens median {int(np.median(lengths))}, "
        f"mean {lengths.mean():.0f}, p90 {int(np.percentile(lengths, 90))}, max {lengths.max()}"
    )
    data = LengthsOnly(lengths)
    from spongebob.world import course_tokenizer, sample_dir

    with tempfile.TemporaryDirectory() as tmp:
        prepare(sample_dir() / "sft_512.jsonl", course_tokenizer(), tmp, max_seq_len=512)
        world_data = PreparedData(tmp)
        print("| data | ranks | batch | order | useful share per rank | per DDP step |")
        print("|---|---|---|---|---|---|")
        for name, d in (("sft_512-like", data), ("world sft_512", world_data)):
            for world in [int(w) for w in args.world.split(",")]:
                b = args.batch if name != "world sft_512" else min(args.batch, 16)
                for label, window, mult in (("shuffled", 0, 1), ("grouped, window 100", 100, 1),
                                            ("grouped, L to a multiple of 64", 100, 64)):  # fmt: skip
                    try:
                        rank_share, step_share = shares(d, b, world, window, mult)
                    except ValueError as e:  # too few chats for this many ranks
                        print(f"| {name} | {world} | {b} | {label} | {e} | |")
                        continue
                    print(f"| {name} | {world} | {b} | {label} | {rank_share:.1%} | "
                          f"{step_share:.1%} |")  # fmt: skip
        loader = ChatLoader(data, args.batch, seed=0, pin_memory=False)
        docs = [loader.order.next_batch() for _ in range(200)]
        for name, fn in (("row loop", lambda d: batch_of_loop(loader, d)),
                         ("NumPy batch_of", loader.batch_of)):  # fmt: skip
            fn(docs[0])
            t = time.perf_counter()
            for d in docs:
                fn(d)
            ms = (time.perf_counter() - t) / len(docs) * 1e3
            print(f"building one batch of {args.batch} ({name}): {ms:.2f} ms")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
