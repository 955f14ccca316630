"""Probe: where a CPU training step of the seed model goes, ours against the original's formulation.

    .venv/bin/python bench/probe_train_step.py --threads 2     # about 1 minute on 2 idle cores

Three measurements (docs/benchmarks.md, "Winning the step back"):

1. RoPE forward + backward on the seed preset's queries ``(4, 512, 8, 64)`` and keys
   ``(4, 512, 2, 64)``: pairs split by indexing (``xf[..., 0]``, the earlier `apply_rope`), by
   ``unbind`` (today's), and a complex multiply (the original's formulation).
2. Gradient clipping + one AdamW step over the seed model's 29 M parameters: PyTorch's default,
   ``foreach=True`` and ``fused=True``.
3. ``--profile``: the torch profiler's self-CPU table of two training steps of each model
   (bench_model's ``train_step_fn``, the optimizer each uses), top operators.

Not a test: it prints milliseconds and writes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from spongebob.config import ModelConfig
from spongebob.model import SpongeBob
from spongebob.rope import apply_rope, precompute_rope
from spongebob.train import TrainConfig, make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from bench_model import Baseline, baseline_loss, train_step_fn  # noqa: E402


def median_ms(fn, n: int = 15) -> float:
    fn()
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1000


def rope_indexed(x, cos, sin):
    """The earlier apply_rope: the same arithmetic, pairs split with two selects."""
    B, T, H, D = x.shape
    xf = x.reshape(B, T, H, D // 2, 2)
    x1, x2 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


def rope_complex(x, cos, sin):
    """The original's formulation: each pair one complex number, times e^(i angle)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    rot = torch.complex(cos, sin)[None, :, None, :]
    return torch.view_as_real(xc * rot).flatten(3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also profile two steps of each model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    B, T, H, H_kv, D = 4, 512, 8, 2, 64
    cos, sin = precompute_rope(D, T)
    q = torch.randn(B, T, H, D, requires_grad=True)
    k = torch.randn(B, T, H_kv, D, requires_grad=True)
    gq, gk = torch.randn_like(q), torch.randn_like(k)
    want = apply_rope(q, cos, sin)
    print(f"RoPE forward + backward, q {tuple(q.shape)} and k {tuple(k.shape)}, "
          f"{args.threads} threads:")  # fmt: skip
    for name, rope in [("indexed pairs (before)", rope_indexed), ("unbind (apply_rope)", apply_rope),
                       ("complex multiply", rope_complex)]:  # fmt: skip
        torch.testing.assert_close(rope(q, cos, sin), want)  # the same rotation
        ms = median_ms(lambda r=rope: torch.autograd.backward(
            [r(q, cos, sin), r(k, cos, sin)], [gq, gk]))  # fmt: skip
        print(f"  {name:24} {ms:6.2f} ms")

    cfg = ModelConfig.preset("seed")
    model = SpongeBob(cfg)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    print(f"clipping + AdamW step, {sum(p.numel() for p in model.parameters()):,} parameters:")
    for kw in ({}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, **kw)

        def step(opt=opt):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        print(f"  AdamW({', '.join(f'{k}={v}' for k, v in kw.items()) or 'default'}):"
              f" {median_ms(step, 10):6.1f} ms")  # fmt: skip

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        base = Baseline(cfg)
        base.load_state_dict(model.state_dict())
        model.zero_grad(set_to_none=True)
        steps = {
            "baseline": train_step_fn(base, lambda m, x, y, w: baseline_loss(m(x)[0], y, w), B, T),
            "ours": train_step_fn(
                model,
                lambda m, x, y, w: m(x, y, loss_weights=w).loss,
                B,
                T,
                make_optimizer(model, TrainConfig(lr=5e-4)),
            ),  # fmt: skip
        }
        for name, fn in steps.items():
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(), fn()
            print(f"\n{name}: two training steps")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
