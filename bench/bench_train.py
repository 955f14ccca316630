"""End-to-end training throughput on a CPU: `spongebob.train` on packed, pre-tokenised data vs the
original's formulation (per-sample tokenisation in the data loader, every sample padded to 512).

    .venv/bin/python bench/bench_train.py --threads 2         # about 4 minutes on 2 idle cores
    .venv/bin/python bench/bench_train.py --threads 1 --profile  # where one step goes, 30 s
    .venv/bin/python bench/bench_train.py --threads 1 --loop-overhead  # train() vs a bare loop

Not a test: it prints a table and writes only under ``--work``. Both sides train the same model
(``--preset``, default ``tiny``) from the same initial weights with the same AdamW settings, batch
``--batch`` x 512 tokens, fp32, ``--steps`` optimizer steps after ``--warmup`` untimed ones. What
differs is only the data path:

* **baseline** (written here from SEED.md's description, not copied): the JSONL file is parsed whole
  into a Python list; a ``torch.utils.data.Dataset`` tokenises one line per ``__getitem__`` as
  ``<s>text</s>``, pads it to 512 with the pad id and masks the padding out of the loss; a
  ``DataLoader`` (``num_workers=0``: the 2 cores are busy with the math) collates the batch;
* **ours**: ``spongebob.data.prepare`` once (timed separately), then ``spongebob.train.train`` on a
  ``PackedLoader`` (no padding), its real loop (progress bar off).

Useful tokens are trained, non-padding targets. Two corpora: the embedded world's ``pretrain.jsonl``
(short lines: the padding share is extreme) and a "real-like" corpus built from it whose lines are
joined up to SEED.md's bound of 511 characters, like the real ``pretrain.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from spongebob.config import ModelConfig
from spongebob.data import PackedLoader, PreparedData, prepare
from spongebob.model import IGNORE_INDEX, SpongeBob, init_weights
from spongebob.train import TrainConfig, make_optimizer, train
from spongebob.world import course_tokenizer, sample_dir

MAX_LEN = 512


class OriginalStyleDataset(Dataset):
    """Lines held in a list; each item tokenised on demand and padded to ``MAX_LEN``."""

    def __init__(self, path: Path, tok) -> None:
        with open(path, encoding="utf-8") as f:
            self.lines = [json.loads(line)["text"] for line in f]  # the whole file in RAM
        self.tok = tok

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int):
        ids = self.tok.encode(f"<s>{self.lines[i]}</s>")[:MAX_LEN]
        n = len(ids)
        ids = ids + [self.tok.pad_id] * (MAX_LEN - n)
        mask = [1] * n + [0] * (MAX_LEN - n)
        x = torch.tensor(ids[:-1])
        y = torch.tensor(ids[1:])
        y[torch.tensor(mask[1:]) == 0] = IGNORE_INDEX  # padding is not trained
        return x, y


def real_like(src: Path, out: Path) -> Path:
    """Join consecutive lines (with a space) while the result stays under 512 characters."""
    with open(src, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        cur = ""
        for line in f:
            text = json.loads(line)["text"]
            if cur and len(cur) + 1 + len(text) > 511:
                g.write(json.dumps({"text": cur}, ensure_ascii=False) + "\n")
                cur = ""
            cur = f"{cur} {text}" if cur else text
        if cur:
            g.write(json.dumps({"text": cur}, ensure_ascii=False) + "\n")
    return out


def fresh_model(preset: str) -> SpongeBob:
    torch.manual_seed(0)
    model = SpongeBob(ModelConfig.preset(preset, max_seq_len=MAX_LEN))
    init_weights(model)
    return model


def run_baseline(path: Path, tok, args) -> dict:
    model = fresh_model(args.preset).train()
    cfg = TrainConfig.preset("tiny", batch_size=args.batch, seq_len=MAX_LEN - 1)
    opt = make_optimizer(model, cfg)
    t_load = time.perf_counter()
    loader = DataLoader(OriginalStyleDataset(path, tok), batch_size=args.batch, shuffle=True)
    t_load = time.perf_counter() - t_load
    it = iter(loader)
    useful, start = 0, None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            useful, start = 0, time.perf_counter()
        x, y = next(it)
        loss = model(x, y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        useful += int((y != IGNORE_INDEX).sum())
    secs = time.perf_counter() - start
    return {"useful_tok_s": useful / secs, "load_s": t_load, "useful_share": useful / (
        args.steps * args.batch * (MAX_LEN - 1))}  # fmt: skip


def run_ours(path: Path, tok, args, work: Path) -> dict:
    t_prep = time.perf_counter()
    folder = work / f"prepared-{path.stem}"
    (folder / "meta.json").unlink(missing_ok=True)
    prepare(path, tok, folder)
    t_prep = time.perf_counter() - t_prep
    data = PreparedData(folder)
    model = fresh_model(args.preset)
    times = []

    def on_log(record):  # log_every=1: one record per step, with its wall time
        times.append(record["elapsed"])

    cfg = TrainConfig.preset("tiny", batch_size=args.batch, seq_len=MAX_LEN - 1,
                             max_steps=args.warmup + args.steps, log_every=1, warmup_steps=5)  # fmt: skip
    train(model, PackedLoader(data, MAX_LEN - 1, args.batch, seed=0), cfg, progress=False,
          on_log=on_log)  # fmt: skip
    secs = times[-1] - times[args.warmup - 1]
    return {"useful_tok_s": args.steps * args.batch * (MAX_LEN - 1) / secs, "prepare_s": t_prep,
            "tokens": data.meta["tokens"]}  # fmt: skip


def profile_step(preset: str, batch: int, seq: int) -> None:
    """Profile one forward + backward of ``preset`` at ``batch x seq`` (fp32): the top operators."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = SpongeBob(ModelConfig.preset(preset)).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    y = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)

    def step():
        model(x, y).loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    t = time.perf_counter()
    step()
    print(
        f"{preset}, batch {batch} x {seq}, fp32: forward + backward {time.perf_counter() - t:.2f} s"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def loop_overhead(args) -> None:
    """``train()`` against a bare loop doing the same arithmetic on the same batches (AdamW with
    the same groups, clipping, fp32), interleaved ``--repeats`` times: what the loop's machinery
    (prefetch thread, logging, token counting) costs per step on this CPU."""
    import statistics

    from spongebob.train import param_groups

    tok = course_tokenizer()
    folder = args.work / "prepared-world"
    prepare(sample_dir() / "pretrain.jsonl", tok, folder)
    data = PreparedData(folder)
    T, B, n = MAX_LEN - 1, args.batch, args.steps

    def bare() -> float:
        model = fresh_model(args.preset)
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-3, betas=(0.9, 0.95))
        batches = iter(PackedLoader(data, T, B, seed=0))
        start = None
        for step in range(args.warmup + n):
            if step == args.warmup:
                start = time.perf_counter()
            x, y, _ = next(batches)
            model(x, y).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return n * B * T / (time.perf_counter() - start)

    def ours() -> float:
        times = []
        cfg = TrainConfig.preset("tiny", batch_size=B, seq_len=T, max_steps=args.warmup + n,
                                 log_every=1, warmup_steps=5)  # fmt: skip
        train(fresh_model(args.preset), PackedLoader(data, T, B, seed=0), cfg, progress=False,
              on_log=lambda r: times.append(r["elapsed"]))  # fmt: skip
        return n * B * T / (times[-1] - times[args.warmup - 1])

    results = {"bare loop": [], "train()": []}
    for _ in range(args.repeats):
        results["bare loop"].append(bare())
        results["train()"].append(ours())
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, v in results.items():
        print(f"{k:10} median {med[k]:8.0f} tokens/s  runs: {', '.join(f'{t:.0f}' for t in v)}")
    print(f"train() / bare loop: {med['train()'] / med['bare loop']:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/spongebob-bench-train"))
    p.add_argument("--profile", action="store_true",
                   help="only profile one step of the seed model (batch 4 x 512) and stop")  # fmt: skip
    p.add_argument("--loop-overhead", action="store_true",
                   help="only compare train() with a bare loop on the same batches")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="of --loop-overhead, interleaved")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.loop_overhead:
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"load average {os.getloadavg()[0]:.2f} at start, threads {args.threads}")
        loop_overhead(args)
        print(f"load average {os.getloadavg()[0]:.2f} at end")
        return 0
    if args.profile:
        print(f"load average {os.getloadavg()[0]:.2f}")
        profile_step("seed", 4, 512)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    tok = course_tokenizer()
    world = sample_dir() / "pretrain.jsonl"
    corpora = {"world": world, "real-like": real_like(world, args.work / "real_like.jsonl")}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, threads {args.threads}, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip
    print(f"model: {args.preset}, batch {args.batch} x {MAX_LEN}, fp32, {args.steps} timed steps")
    for name, path in corpora.items():
        base = run_baseline(path, tok, args)
        ours = run_ours(path, tok, args, args.work)
        epoch_tokens = ours["tokens"]
        ours_epoch = ours["prepare_s"] + epoch_tokens / ours["useful_tok_s"]
        base_epoch = base["load_s"] + epoch_tokens / base["useful_tok_s"]
        print(f"\n{name} ({path.name}): baseline useful share {base['useful_share']:.1%}")
        print(f"  baseline: {base['useful_tok_s']:8.0f} useful tokens/s")
        print(f"  ours:     {ours['useful_tok_s']:8.0f} useful tokens/s  "
              f"({ours['useful_tok_s'] / base['useful_tok_s']:.2f}x)")  # fmt: skip
        print(f"  one epoch ({epoch_tokens:,} tokens) end to end, prepare/load included: "
              f"baseline {base_epoch:.0f} s, ours {ours_epoch:.0f} s "
              f"({base_epoch / ours_epoch:.2f}x; prepare {ours['prepare_s']:.1f} s)")  # fmt: skip
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
