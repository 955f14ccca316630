# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Attention: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../03_attention.ipynb) and runs the same self-check.

# %%
import math

import torch
import torch.nn.functional as F

from spongebob.attention import Attention, KVCache, causal_mask
from spongebob.rope import precompute_rope

# %% [markdown]
# **Exercise 1.** Keys and values (2) for every layer, sequence, position, kv head and dimension.


# %%
def kv_cache_bytes(n_layers, n_kv_heads, head_dim, seq_len, batch_size=1, bytes_per_value=2):
    return n_layers * 2 * batch_size * seq_len * n_kv_heads * head_dim * bytes_per_value


# %%
try:
    got = kv_cache_bytes(8, 2, 64, 512, batch_size=3, bytes_per_value=4)
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    want = 8 * KVCache(3, 512, 2, 64, torch.float32, "meta").nbytes
    assert got == want, (
        f"Exercise 1: {got:,} != {want:,}. Hint: 2 tensors (k and v) x layers x batch x "
        "positions x kv heads x head_dim values, each of bytes_per_value bytes"
    )
    print("Exercise 1: correct")

# %% [markdown]
# **Exercise 2.** $0 \log 0$ is taken as 0 (its limit), so masked keys are replaced by 0 before the
# product rather than producing `0 * -inf = nan`.


# %%
def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    log_w = torch.where(weights > 0, weights.log(), torch.zeros_like(weights))
    entropy = -(weights * log_w).sum(dim=-1)  # (B, H, T): one value per query row
    return entropy.mean(dim=(0, 2))  # (H,)


# %%
try:
    T = 6
    uniform = causal_mask(T, T).float() / torch.arange(1, T + 1)[:, None]  # row t: 1/(t+1)
    one_hot = torch.eye(T)  # each query on itself
    got = attention_entropy(torch.stack([uniform, one_hot])[None])  # (1, 2, T, T) -> (2,)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    want = torch.log(torch.arange(1.0, T + 1)).mean()
    torch.testing.assert_close(
        got,
        torch.stack([want, torch.tensor(0.0)]),
        msg=lambda m: (
            f"Exercise 2: {m}\nHint: 0 * log 0 is nan in floating point; use torch.xlogy(w, w) "
            "or clamp w before the log, sum over keys, then average over dims 0 and 2"
        ),
    )
    print("Exercise 2: correct")

# %% [markdown]
# **Exercise 3.** Query `i` sits at position `p = S - T + i` and may see keys `p - window < j <= p`:
# the causal mask minus everything `window` or more positions back.


# %%
def sliding_window_mask(T: int, S: int, window: int) -> torch.Tensor:
    pos = torch.arange(S - T, S)[:, None]  # (T, 1): absolute positions of the queries
    keys = torch.arange(S)[None, :]  # (1, S)
    return (keys <= pos) & (keys > pos - window)


# %%
try:
    m = sliding_window_mask(3, 6, window=2)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    assert m.tolist() == [[0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]], (
        f"Exercise 3: got {m.int().tolist()}. Hint: query i sits at position S - T + i and sees "
        "keys j with 0 <= (S - T + i) - j < window"
    )
    torch.manual_seed(11)
    layer, xs = Attention(32, 4, 2).eval(), torch.randn(1, 8, 32)
    c, s = precompute_rope(8, 8)
    out = layer(xs, c, s, mask=sliding_window_mask(8, 8, 3))
    torch.testing.assert_close(
        out[:, 5],
        layer(xs[:, 3:6], c[3:6], s[3:6])[:, 2],  # position 5 sees 3..5 only
        msg=lambda m: f"Exercise 3: as the layer's mask it must hide keys < t - 2. {m}",
    )
    print("Exercise 3: correct")

# %% [markdown]
# **Exercise 4.** Online softmax: after each chunk, `acc / l` is the exact attention over the keys
# seen so far. When a chunk raises the running maximum from `m` to `m_new`, everything summed
# earlier was exponentiated relative to the old maximum and is rescaled by `exp(m - m_new)`.


# %%
def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int):
    T, scale = q.shape[0], 1.0 / math.sqrt(q.shape[-1])
    m = torch.full((T, 1), float("-inf"))  # running max of the scores of each query
    l = torch.zeros(T, 1)  # running sum of exp(score - m)
    acc = torch.zeros(T, v.shape[-1])  # running sum of exp(score - m) * value
    for start in range(0, k.shape[0], chunk):
        scores = q @ k[start : start + chunk].T * scale  # (T, chunk): the only scores held
        m_new = torch.maximum(m, scores.max(dim=-1, keepdim=True).values)
        p = torch.exp(scores - m_new)
        correction = torch.exp(m - m_new)  # 0 on the first chunk (m = -inf)
        l = l * correction + p.sum(dim=-1, keepdim=True)
        acc = acc * correction + p @ v[start : start + chunk]
        m = m_new
    return acc / l


# %%
try:
    torch.manual_seed(12)
    q, k, v = torch.randn(5, 16) * 3, torch.randn(37, 16) * 3, torch.randn(37, 16)
    got = chunked_attention(q, k, v, chunk=8)
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    torch.testing.assert_close(
        got,
        F.scaled_dot_product_attention(q, k, v),
        msg=lambda m: (
            f"Exercise 4: {m}\nHint: per chunk, m_new = max(m, chunk scores max); scale l and acc "
            "by exp(m - m_new) before adding exp(scores - m_new) and its product with v; divide "
            "acc by l at the end"
        ),
    )
    print("Exercise 4: correct")
