"""Copying kept in the signal through every stage (issue 15, points 2-3; the next step that
docs/benchmarks.md named): from a pretrained model that copies (``bench/copy_recipes.py``'s
``copier-values+world-drills-10``: a head formed on the world's frequent ids and the values' ids,
kept by 10 % drill batches), chapter 07's SFT and then a long stage, both with a share of their
batches copy drills over the same alphabet, the long stage on N generated long chats
(``bench/long_recall.py``'s). Prints, per stage, the induction probe on the values' ids, held-out
facts and ``eval_long`` (whole, and with 0 or 2 filler exchanges kept).

    .venv/bin/python bench/copy_through.py            # about 7 minutes on 2 cores

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/copy-through``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from copy_recipes import drill_ids, value_ids  # bench/ is on sys.path when this script runs
from long_recall import copies_in_turns, long_chats, recall_near

from spongebob.checkpoint import finished_run, load_model, read_checkpoint
from spongebob.data import read_jsonl
from spongebob.evaluate import evaluate_sets
from spongebob.model import IGNORE_INDEX
from spongebob.pretrain import induction_probe, open_pretraining_data
from spongebob.runtime import artifacts_dir
from spongebob.sft import (
    Curriculum,
    RepeatedSpans,
    ReplayMix,
    frequent_ids,
    open_chat_data,
    sft_config,
    sft_loader,
    sft_options,
)
from spongebob.train import train
from spongebob.world import course_tokenizer, sample_dir


class KeyValueRecall:
    """Drills shaped like a chat detail and its recall: rows of random ids from ``ids`` in which
    ``pairs`` key-value spans (a key of 2-3 ids, then a value of 1-4 ids) are written twice, the
    second time anywhere after the first; targets only on the second copy's value, which only a
    match on the key can predict. With ``text`` (a 1-D array of token ids, such as the pretraining
    text's), the rows are random windows of that text instead, the spans written into it: the
    same lookup in a context that reads like the world. Batch ``i`` comes from
    ``numpy.random.default_rng([seed, i])``."""

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, ids, *, pairs: int = 4,
                 seed: int = 0, text=None) -> None:  # fmt: skip
        self.ids, self.shape, self.pairs = (
            np.asarray(ids, dtype=np.int64),
            (batch_size, seq_len),
            pairs,
        )
        self.text = None if text is None else np.asarray(text, dtype=np.int64)
        self.seed, self.count = seed, 0

    def batch(self, rng) -> tuple:
        B, T = self.shape
        if self.text is None:
            rows = self.ids[rng.integers(0, len(self.ids), (B, T + 1))]
        else:
            starts = rng.integers(0, len(self.text) - T - 1, B)
            rows = np.stack([self.text[a : a + T + 1] for a in starts])
        y = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        for b in range(B):
            free = np.ones(T + 1, dtype=bool)
            for _ in range(self.pairs):
                kl, vl = int(rng.integers(2, 4)), int(rng.integers(1, 5))
                n = kl + vl
                for _try in range(20):
                    p1 = int(rng.integers(0, T + 1 - 2 * n))
                    p2 = int(rng.integers(p1 + n, T + 2 - n))
                    if free[p1 : p1 + n].all() and free[p2 : p2 + n].all():
                        break
                else:
                    continue
                span = self.ids[rng.integers(0, len(self.ids), n)]
                rows[b, p1 : p1 + n], rows[b, p2 : p2 + n] = span, span
                free[p1 : p1 + n] = free[p2 : p2 + n] = False
                y[b, p2 + kl - 1 : p2 + n - 1] = span[kl:]  # y[t] is the id at t + 1
        t = torch.from_numpy(rows)
        return t[:, :-1], torch.from_numpy(y), None

    def __iter__(self):
        while True:
            rng = np.random.default_rng([self.seed, self.count])
            self.count += 1
            yield self.batch(rng)

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])


class WeightSwitch:
    """``mix`` (a ``ReplayMix``) as it is for its first ``after`` batches, then with its replay
    batches weighing ``weight`` (and, with ``share``, that share of them). Resumable (the switch
    follows the mix's own count)."""

    def __init__(self, mix: ReplayMix, after: int, weight: float, share: float | None = None):
        self.mix, self.after, self.weight, self.share = mix, after, weight, share

    def _switch(self) -> None:
        if self.mix.count >= self.after:
            self.mix.replay_weight = self.weight
            if self.share is not None:
                self.mix.fraction = self.share

    def __iter__(self):
        for batch in self.mix:
            yield batch
            self._switch()

    @property
    def batches_per_epoch(self) -> int:
        return self.mix.batches_per_epoch

    def state_dict(self) -> dict:
        return self.mix.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.mix.load_state_dict(state)
        self._switch()


@torch.no_grad()
def kv_accuracy(model, drills: KeyValueRecall) -> float:
    """Greedy accuracy on the recalled values of one held-out batch of ``drills``."""
    x, y, _ = drills.batch(np.random.default_rng([12345]))
    pred = model(x).logits.argmax(-1)
    mask = y != IGNORE_INDEX
    return (pred[mask] == y[mask]).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--init",
        type=Path,
        default=artifacts_dir("bench", "copy", "copier-values+world-drills-10") / "last.pt",
    )
    ap.add_argument("--drills", type=float, default=0.2, help="share of batches that are drills")
    ap.add_argument(
        "--kind",
        choices=["spans", "kv", "kv-text"],
        default="spans",
        help="drills: repeated spans (RepeatedSpans), key-value recall (KeyValueRecall) on random "
        "ids, or the same written into windows of the pretraining text",
    )
    ap.add_argument("--chats", type=int, default=3000)
    ap.add_argument("--long-steps", type=int, default=300)
    ap.add_argument("--sft-steps", type=int, default=None, help="default: chapter 07's (600)")
    ap.add_argument("--sft-seed", type=int, default=None, help="default: chapter 07's (1337)")
    ap.add_argument(
        "--long-drill-len",
        type=int,
        default=256,
        help="length of the long stage's key-value drill rows (kv kinds): 1024 spreads the "
        "lookups over the long stage's whole window, at the same tokens per batch",
    )
    ap.add_argument(
        "--long-only",
        action="store_true",
        help="--init is already an SFT model (chapter 07's, say): run the long stage only",
    )
    ap.add_argument(
        "--long-sft-chats",
        type=int,
        default=0,
        help="shuffle this many of sft_512.jsonl's chats in with the long stage's chats, so that "
        "the long stage keeps practising the SFT stage's questions (the held-out facts' test)",
    )
    ap.add_argument(
        "--sft-drills",
        type=float,
        default=None,
        help="share of drill batches in the SFT stage (default: --drills)",
    )
    ap.add_argument(
        "--sft-burst",
        type=int,
        default=0,
        help="the SFT stage's first N batches are drills only, then its mix: a head formed and "
        "then erased in pretraining comes back under dense drills",
    )
    ap.add_argument(
        "--long-burst",
        type=int,
        default=0,
        help="the long stage's first N batches are key-value drills of 256 tokens only",
    )
    ap.add_argument(
        "--drill-weight",
        type=float,
        default=None,
        help="loss weight of a drill batch (default: 4 for key-value drills, 1 for spans)",
    )
    ap.add_argument(
        "--wake",
        type=int,
        default=0,
        help="the SFT stage's drills weigh 4 for its first N batches, then --drill-weight: a "
        "wake-up phase for the head, then a lighter share that leaves the chats their loss",
    )
    ap.add_argument(
        "--after-wake-share",
        type=float,
        default=None,
        help="with --wake: the share of drill batches after the wake-up (default: the SFT's)",
    )
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    if args.wake and not args.drill_weight:
        raise SystemExit("--wake needs --drill-weight (the drills' weight after the wake-up)")
    if not args.init.is_file():
        raise SystemExit(
            f"{args.init}: no such checkpoint; run bench/copy_recipes.py --only "
            "spans-values-curriculum copier-values+world-drills-10 first"
        )
    tag = f"drills{args.drills}" + ("" if args.kind == "spans" else f"-{args.kind}")
    work = args.work or artifacts_dir("bench", "copy-through", tag)
    tok, world = course_tokenizer(), sample_dir(0)
    text = open_pretraining_data(world / "pretrain.jsonl", tok, work / "text")
    alphabet = frequent_ids(text)
    values = value_ids(tok)
    wide = drill_ids(alphabet, values)
    rows = list(read_jsonl(world / "eval_long.jsonl"))
    kv_probe = KeyValueRecall(tok.vocab_size, 256, 16, wide, pairs=8)
    # the same lookups written into 1,024-token windows of the text, at every distance up to 1,000
    kv_long = KeyValueRecall(tok.vocab_size, 1024, 4, wide, pairs=32, text=np.asarray(text.ids))
    model = load_model(args.init).train()

    def report(stage: str, minutes: float) -> None:
        model.eval()
        sets = evaluate_sets(model, tok, world, ["facts", "long"])
        print(json.dumps({"stage": stage, "minutes": round(minutes, 1),
                          "probe_values": round(induction_probe(model, ids=values), 3),
                          "probe_world": round(induction_probe(model, ids=alphabet), 3),
                          "kv_recall": round(kv_accuracy(model, kv_probe), 3),
                          "kv_text_1024": round(kv_accuracy(model, kv_long), 3),
                          "facts": round(sets["facts"].accuracy, 3),
                          "long": round(sets["long"].accuracy, 3),
                          **{f"keep{k}": v for k, v in recall_near(model, tok, rows).items()},
                          "copies_at_0": {k: round(v, 2)
                                          for k, v in copies_in_turns(model, tok, rows).items()},
                          "example": sets["long"].records[0]["answer"]}), flush=True)  # fmt: skip
        model.train()

    report("sft" if args.long_only else "pretrained", 0)
    long_source = long_chats(args.chats, work / "long.jsonl")
    if args.long_sft_chats:
        lines = long_source.read_text(encoding="utf-8").splitlines(keepends=True)
        sft_lines = (world / "sft_512.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        lines += sft_lines[: args.long_sft_chats]
        random.Random(0).shuffle(lines)
        long_source = work / f"long+sft{args.long_sft_chats}.jsonl"
        long_source.write_text("".join(lines), encoding="utf-8")
    sft_cfg = sft_config("tiny", **({"max_steps": args.sft_steps} if args.sft_steps else {}),
                         **({"seed": args.sft_seed} if args.sft_seed is not None else {}))  # fmt: skip
    stages = [("sft", world / "sft_512.jsonl", sft_cfg, sft_options("tiny")),
              ("long", long_source,
               sft_config("tiny-long", max_steps=args.long_steps),
               sft_options("tiny-long", last_reply_only=False))]  # fmt: skip
    if args.long_only:
        stages = stages[1:]
    sft_share = args.drills if args.sft_drills is None else args.sft_drills
    for stage, source, cfg, options in stages:
        t0 = time.perf_counter()
        chats = open_chat_data(source, tok, work / stage, cfg.seq_len, model.config.max_seq_len)
        loader = sft_loader(chats, cfg, text, **options)
        if args.kind.startswith("kv"):
            inside = np.asarray(text.ids) if args.kind == "kv-text" else None
            n = args.long_drill_len if stage == "long" else 256
            drills = KeyValueRecall(tok.vocab_size, n, 16 * 256 // n, wide, pairs=8 * n // 256,
                                    seed=20 + (stage == "long"), text=inside)  # fmt: skip
        else:
            drills = RepeatedSpans(
                tok.vocab_size, 128, 32, k_max=60, seed=20 + (stage == "long"), ids=wide
            )
        # a key-value batch trains about 8 values of a few ids a row (about 400 targets against a
        # chat batch's thousands): each weighs 4, so the drills keep a real share of the loss
        share = sft_share if stage == "sft" else args.drills
        weight = args.drill_weight or (4.0 if args.kind.startswith("kv") else 1.0)
        if stage == "sft" and args.wake:
            loader = WeightSwitch(ReplayMix(loader, drills, share, replay_weight=4.0), args.wake,
                                  weight, args.after_wake_share)  # fmt: skip
        else:
            loader = ReplayMix(loader, drills, share, replay_weight=weight)
        n_burst = args.sft_burst if stage == "sft" else args.long_burst
        if n_burst:
            burst = KeyValueRecall(tok.vocab_size, 256, 16, wide, pairs=8, seed=30,
                                   text=np.asarray(text.ids) if args.kind == "kv-text" else None)  # fmt: skip
            loader = Curriculum([(n_burst, burst), (None, loader)])
        want = {"bench": {"config": cfg.to_dict(), "drills": args.drills, "chats": args.chats,
                          "init": str(args.init)}}  # fmt: skip
        if args.sft_drills is not None or args.sft_burst:  # the long stage starts from that SFT
            want["bench"]["sft_drills"] = [sft_share, args.sft_burst]
        if args.drill_weight:
            want["bench"]["drill_weight"] = weight
        if args.wake:  # the long stage starts from that SFT
            want["bench"]["wake"] = args.wake
            if args.after_wake_share is not None:
                want["bench"]["after_wake_share"] = args.after_wake_share
        if args.sft_steps or args.sft_seed is not None:
            want["bench"]["sft_run"] = [args.sft_steps, args.sft_seed]
        if args.kind != "spans":
            want["bench"]["kind"] = args.kind
        folder = work / stage
        if stage == "long" and args.long_drill_len != 256:
            want["bench"]["drill_len"] = args.long_drill_len
            folder = work / f"long-drills{args.long_drill_len}"
        if stage == "long" and args.long_steps != 300:  # beside the 300-step run, not over it
            folder = folder.with_name(f"{folder.name}-steps{args.long_steps}")
        if stage == "long" and args.long_sft_chats:
            want["bench"]["sft_chats"] = args.long_sft_chats
            folder = folder.with_name(f"{folder.name}-sft{args.long_sft_chats}")
        if stage == "long" and args.long_burst:
            want["bench"]["burst"] = args.long_burst
            folder = folder.with_name(f"{folder.name}-burst{args.long_burst}")
        # a stage that ran before with these arguments is loaded, not trained again
        if finished_run(folder / "last.pt", {**want, "step": cfg.max_steps}):
            model.load_state_dict(read_checkpoint(folder / "last.pt")[0])
        else:
            train(model, loader, cfg, out_dir=folder, progress=False, extra=want)
        report(stage, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    main()
