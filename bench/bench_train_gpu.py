"""Training throughput of the `seed` model on one GPU: tokens/s and MFU, and the projected epoch.

Two measurements on random tokens, for T = 512 and 1024:

* **step**: the training step of `spongebob.train` (token-normalised `accumulate_gradients`,
  clipping, fused AdamW, bf16 autocast) on tensors already on the GPU, one micro-batch: the model's
  speed without data loading (an upper bound). A sweep of batch sizes with `torch.compile` off,
  then the best batch size compiled.
* **train()**: the real loop, `spongebob.train.train`, at the best batch size with the seed
  recipe's accumulation (`--grad-accum`, 8): a `PackedLoader` on a token array, the background
  prefetch, pinned copies, logging every 4 steps; tokens/s from its own records. Eager and
  compiled.

Budget: about 3 minutes on one H100 or H200 (compilation included).

    python bench/bench_train_gpu.py                       # the full sweep, markdown table on stdout
    python bench/bench_train_gpu.py --device cpu --smoke  # a seconds-long check of the script itself

The projected epoch uses `--epoch-tokens` (default 0.36 B: the original's 1.6 GB pretrain.jsonl at
about 3 bytes per Chinese character and 1.5 characters per token; an estimate, see chapter 06).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spongebob.config import ModelConfig
from spongebob.data import PackedLoader
from spongebob.model import SpongeBob, flops_per_token
from spongebob.train import TrainConfig, accumulate_gradients, make_optimizer, peak_flops, train


def measure(cfg: ModelConfig, batch: int, seq_len: int, compile_: bool, device, steps: int):
    """Tokens per second over ``steps`` timed optimizer steps, after 3 warm-up steps."""
    torch.manual_seed(0)
    model = SpongeBob(cfg).to(device)
    opt = make_optimizer(model, TrainConfig(lr=1e-4))
    net = torch.compile(model) if compile_ else model
    amp = torch.bfloat16 if device.type == "cuda" else None

    def autocast():
        return (
            torch.autocast(device.type, dtype=amp) if amp else torch.autocast("cpu", enabled=False)
        )

    x = torch.randint(0, cfg.vocab_size, (batch, seq_len), device=device)
    y = torch.roll(x, -1, dims=1)

    def step():
        accumulate_gradients(net, [(x, y, None)], autocast=autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * seq_len * steps / (time.perf_counter() - t)


def measure_loop(cfg: ModelConfig, batch: int, seq_len: int, compile_: bool, device, steps: int,
                 grad_accum: int) -> float:  # fmt: skip
    """Tokens per second of ``train()`` over ``steps`` steps after 4 untimed ones."""
    torch.manual_seed(0)
    model = SpongeBob(cfg).to(device)
    n = batch * seq_len * grad_accum * (steps + 8) + 1
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, n).astype(np.uint16)
    warm = 4
    tc = TrainConfig(lr=1e-4, warmup_steps=0, max_steps=warm + steps, batch_size=batch,
                     seq_len=seq_len, grad_accum=grad_accum, log_every=warm, compile=compile_)  # fmt: skip
    records: list[dict] = []
    loader = PackedLoader(ids, seq_len, batch, seed=0)
    train(model, loader, tc, progress=False, on_log=records.append)
    first, last = records[0], records[-1]  # the first record closes the untimed steps
    return (last["tokens"] - first["tokens"]) / (last["elapsed"] - first["elapsed"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="seed")
    p.add_argument("--batches", default="8,16,32,64,128")
    p.add_argument("--seq-lens", default="512,1024")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--epoch-tokens", type=float, default=0.36e9)
    p.add_argument("--grad-accum", type=int, default=8, help="of the train() rows (seed: 8)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 2 steps, no compile")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = ModelConfig.preset(args.preset)
    batches = [int(b) for b in args.batches.split(",")]
    seq_lens = [int(t) for t in args.seq_lens.split(",")]
    steps = args.steps
    accum = args.grad_accum
    if args.smoke:
        cfg, batches, seq_lens, steps, accum = ModelConfig.preset("tiny"), [2], [64], 4, 2
    peak = peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.preset if not args.smoke else 'tiny'} model, "
          f"peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s bf16 dense\n")  # fmt: skip
    print("| T | what | batch | compile | tokens/s | MFU | one epoch (projected) |")
    print("|---|---|---|---|---|---|---|")

    def row(T, what, B, compile_, tps):
        mfu = flops_per_token(cfg, T) * tps / peak if peak else float("nan")
        print(f"| {T} | {what} | {B} | {'on' if compile_ else 'off'} | {tps:,.0f} | {mfu:.0%} | "
              f"{args.epoch_tokens / tps / 60:.1f} min |", flush=True)  # fmt: skip

    for T in seq_lens:
        best = (0.0, None)
        for compile_ in (False, True):
            if compile_ and (args.smoke or best[1] is None):
                continue
            for B in [best[1]] if compile_ else batches:
                try:
                    tps = measure(cfg, B, T, compile_, device, steps)
                except torch.cuda.OutOfMemoryError:
                    print(f"| {T} | step | {B} | {compile_} | out of memory | | |")
                    torch.cuda.empty_cache()
                    continue
                if not compile_ and tps > best[0]:
                    best = (tps, B)
                row(T, "step", B, compile_, tps)
        for compile_ in (False, True) if not args.smoke else (False,):
            tps = measure_loop(cfg, best[1], T, compile_, device, steps, accum)
            row(T, f"train(), accumulation {accum}", best[1], compile_, tps)


if __name__ == "__main__":
    main()
