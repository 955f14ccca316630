"""Probe: SDPA with repeat_kv copies vs SDPA enable_gqa=True, the attention call alone (CPU).

.venv/bin/python bench/probe_gqa_attention.py
"""

import time

import torch
import torch.nn.functional as F

from spongebob.attention import causal_mask, repeat_kv

torch.set_num_threads(1)
torch.manual_seed(0)
H, H_kv, D = 8, 2, 64  # seed-gqa: 8 query heads of 64, 2 kv heads


def median_us(fn, n):
    fn()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(runs)[2]


def run(gqa, q, k, v, kw, backward):
    """One attention call: enable_gqa on un-repeated k/v, or repeat_kv copies then plain SDPA."""
    if gqa:
        out = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True, **kw
        )
    else:
        k_rep, v_rep = (repeat_kv(t, H // H_kv).transpose(1, 2) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k_rep, v_rep, **kw)
    if backward:
        out.sum().backward()
    return out.detach()


cases = [  # name, B, T (queries), S (keys), padded, backward, repetitions
    ("decode, 1 query, 200 cached", 1, 1, 200, False, False, 2000),
    ("decode, batch 8, padding mask", 8, 1, 200, True, False, 1000),
    ("prefill 4 x 512, causal", 4, 512, 512, False, False, 10),
    ("chunk of 64 after 448, mask", 2, 64, 512, True, False, 50),
    ("train fwd+bwd 4 x 512", 4, 512, 512, False, True, 5),
]
for name, B, T, S, padded, backward, n in cases:
    q = torch.randn(B, T, H, D).transpose(1, 2).requires_grad_(backward)  # (B, H, T, D)
    k, v = torch.randn(B, S, H_kv, D), torch.randn(B, S, H_kv, D)  # (B, S, H_kv, D), as cached
    keys = torch.ones(B, 1, 1, S, dtype=torch.bool)
    keys[: B // 2, ..., : S // 4] = False  # half the rows left-padded
    mask = causal_mask(T, S) & keys if padded else None
    kw = dict(attn_mask=mask, is_causal=mask is None and T > 1)

    with torch.set_grad_enabled(backward):
        args = (q, k, v, kw, backward)
        equal = torch.equal(run(False, *args), run(True, *args))
        t_rep = median_us(lambda: run(False, *args), n)  # noqa: B023 (called in this iteration)
        t_gqa = median_us(lambda: run(True, *args), n)  # noqa: B023
    print(
        f"{name:<30} repeat_kv + SDPA {t_rep:8.1f} us | enable_gqa {t_gqa:8.1f} us | "
        f"{t_rep / t_gqa:.2f}x | bit-identical: {equal}"
    )
