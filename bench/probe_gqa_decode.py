"""Probe: whole-model greedy decoding (seed-gqa) with repeat_kv + SDPA patched back in vs enable_gqa.

.venv/bin/python bench/probe_gqa_decode.py
"""

import time

import torch
import torch.nn.functional as F

from spongebob.attention import repeat_kv
from spongebob.config import ModelConfig
from spongebob.generate import generate
from spongebob.model import SpongeBob

torch.set_num_threads(1)
sdpa = F.scaled_dot_product_attention


def sdpa_with_repeat_kv(q, k, v, *args, enable_gqa=False, **kw):  # the previous formulation
    if enable_gqa:
        n_rep = q.shape[1] // k.shape[1]
        k, v = (repeat_kv(t.transpose(1, 2), n_rep).transpose(1, 2) for t in (k, v))
    return sdpa(q, k, v, *args, **kw)


torch.manual_seed(0)
model = SpongeBob(ModelConfig.preset("seed-gqa")).eval()
prompt = torch.randint(3, 6400, (1, 64))
ms, out = {"repeat_kv": [], "enable_gqa": []}, {}
for name, fn in [("repeat_kv", sdpa_with_repeat_kv), ("enable_gqa", sdpa)] * 7:
    F.scaled_dot_product_attention = fn  # what spongebob.attention calls
    t0 = time.perf_counter()
    out[name] = generate(model, prompt, 128, temperature=0)
    ms[name].append((time.perf_counter() - t0) / 128 * 1e3)
F.scaled_dot_product_attention = sdpa
assert out["repeat_kv"] == out["enable_gqa"]
for name, v in ms.items():  # the first round is a warm-up
    print(f"{name}: median {sorted(v[1:])[3]:.2f} ms per new token (64 + 128, greedy)")
