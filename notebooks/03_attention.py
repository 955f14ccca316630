# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Attention, GQA and the KV cache
#
# **Build the layer that lets every token look back at the tokens before it: scaled dot-product
# attention, the causal mask, many heads sharing few key/value heads, a fused kernel and a cache
# that makes generation fast.**
#
# Runs in about 1 minute on a laptop CPU. Prerequisites: [02 · RoPE](02_rope.ipynb) (rotary
# position embeddings, `precompute_rope` / `apply_rope`), matrix products and softmax.
#
# What you will build:
#
# 1. single-head attention from scratch, and why scores are divided by $\sqrt{d}$;
# 2. the causal mask, and multi-head attention as one batched product;
# 3. grouped-query attention (`repeat_kv`) and the fused `F.scaled_dot_product_attention`, which
#    can share key/value heads without copying them;
# 4. a preallocated `KVCache` and the finished `Attention` layer, exported to
#    `spongebob.attention`, checked against the full computation and the original's design;
# 5. pictures: the mask, the heads of a small trained model, KV-cache memory of MHA vs GQA.
#
# ![The attention layer: x to q, k, v; RoPE on q and k; the KV cache; GQA heads; wo](../book/figures/attention_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 从零实现缩放点积注意力：为什么除以 √d、因果掩码、多头注意力、分组查询注意力（GQA，多个查询头共享一组键值头），以及 PyTorch 的融合注意力 `scaled_dot_product_attention`。再实现生成时使用的 KV 缓存，处理左填充的批次，查看每个注意力头的权重，并比较多头注意力与 GQA 的 KV 缓存内存。导出模块：`spongebob.attention`。
# :::

# %% [markdown]
# ## Setup
#
# RoPE comes from chapter 02, imported, never redefined (`apply_rope` arrives with the first
# exported cell, in section 5).
#
# **If you edit an exported cell.** The cells marked `#| export` are copied into the `spongebob`
# package only by `make export`; until then, `from spongebob... import` keeps the old code. To
# re-export and reload from here, run `!cd .. && python tools/nbexport.py`, then restart the kernel
# (Kernel → Restart), or use `%load_ext autoreload` and `%autoreload 2` once at the top.

# %%
#| default_exp attention

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from spongebob.rope import precompute_rope
from spongebob.runtime import seed_everything

seed_everything(1337)
plt.rcParams["figure.dpi"] = 80

# %% tags=["remove-cell"]
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)
assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA enable_gqa

# %% [markdown]
# ## 1. Dot-product attention, one head
#
# Every token emits three vectors, computed by learned linear maps from its embedding: a
# **query** ("what am I looking for?"), a **key** ("what do I contain?") and a **value** ("what do I
# pass on if chosen?"). Token $t$ scores every token $s$ by the dot product $q_t \cdot k_s$, turns
# the scores into weights with a softmax, and outputs the weighted average of the values:
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\!\left(\frac{Q K^\top}{\sqrt{d}}\right) V .$$
#
# A draft, for one sequence and one head:


# %%
def attention_draft(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v. q: (T, d), k and v: (S, d); mask: bool (T, S), True = allowed."""
    scores = q @ k.T / math.sqrt(q.shape[-1])  # (T, S): how well each query matches each key
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # softmax gives these weight 0
    weights = torch.softmax(scores, dim=-1)  # (T, S), each row sums to 1
    return weights @ v, weights  # (T, d), (T, S)


torch.manual_seed(0)
T, d = 6, 16
q, k, v = torch.randn(T, d), torch.randn(T, d), torch.randn(T, d)
out, weights = attention_draft(q, k, v)
print("out", tuple(out.shape), " weights", tuple(weights.shape))
torch.testing.assert_close(weights.sum(-1), torch.ones(T))
torch.testing.assert_close(out[2], (weights[2, :, None] * v).sum(0))  # a weighted average

# %% [markdown]
# ## 2. Why divide by $\sqrt{d}$?
#
# If the entries of $q$ and $k$ are independent with mean 0 and variance 1, then $q \cdot k$ is a
# sum of $d$ such products: its variance is $d$, its typical size $\sqrt{d}$. With head_dim 64 the
# raw scores are about 8 times larger than at $d = 1$, the softmax saturates to nearly one-hot, and
# its gradient (which is $\approx 0$ for a saturated softmax) stops the model from learning which
# tokens to attend to. Dividing by $\sqrt{d}$ brings the scores back to variance 1 whatever the
# head size.

# %%
torch.manual_seed(1)
dims = [4, 16, 64, 256, 1024]
peak = {"raw": [], "scaled": []}
for d in dims:
    q, k = torch.randn(2000, d), torch.randn(2000, 16, d)  # 2000 queries, 16 keys each
    raw = torch.einsum("nd,nsd->ns", q, k)  # (2000, 16)
    print(f"d={d:5d}: std of q.k = {raw.std().item():3.0f} (sqrt(d) = {math.sqrt(d):3.0f})")
    peak["raw"].append(torch.softmax(raw, -1).max(-1).values.mean().item())
    peak["scaled"].append(torch.softmax(raw / math.sqrt(d), -1).max(-1).values.mean().item())
assert peak["raw"][-1] > 0.9 and peak["scaled"][-1] < 0.5

# %% [markdown]
# The average largest softmax weight over 16 keys: without scaling it heads to 1 (all attention on
# one key, whichever had the largest random score), with scaling it stays flat.

# %%
plt.figure(figsize=(5, 3))
for name, values in peak.items():
    plt.semilogx(dims, values, "o-", label=name, base=2)
plt.axhline(1 / 16, color="gray", ls="--", lw=1, label="uniform (1/16)")
plt.xlabel("head dimension d")
plt.ylabel("mean max weight")
plt.title("softmax saturation without 1/sqrt(d)")
plt.legend()
plt.show()

# %% [markdown]
# ## 3. The causal mask
#
# A language model predicts token $t+1$ from tokens $0..t$. In training all positions are computed
# at once, so position $t$ must not see the keys of positions after it, or it could copy the
# answer. The causal mask allows query $t$ to attend to keys $s \le t$: a lower-triangular matrix.
# Masked scores are set to $-\infty$ before the softmax, which gives them weight exactly 0.

# %%
T = 8
causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T), True on and below the diagonal
torch.manual_seed(2)
q, k, v = torch.randn(T, 16), torch.randn(T, 16), torch.randn(T, 16)
out, weights = attention_draft(q, k, v, mask=causal)
assert torch.all(weights[~causal] == 0)
v_future = v.clone()
v_future[5:] += 10.0  # change what tokens 5.. would pass on
out2, _ = attention_draft(q, k, v_future, mask=causal)
torch.testing.assert_close(out2[:5], out[:5])  # positions 0..4 cannot tell

fig, axes = plt.subplots(1, 2, figsize=(7, 3))
axes[0].imshow(causal, cmap="Greys")
axes[0].set_title("causal mask (dark = may attend)")
axes[1].imshow(weights, cmap="viridis")
axes[1].set_title("attention weights, one head")
for ax in axes:
    ax.set_xlabel("key position s")
    ax.set_ylabel("query position t")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Many heads at once
#
# One head computes one pattern of attention. A layer runs `n_heads` of them in parallel on
# slices of the model width: `dim = C = n_heads * head_dim` (512 = 8 x 64 in the original). The
# projections produce all heads at once, a reshape splits them, `(B, T, C) -> (B, T, H, D)`, and a
# transpose puts heads next to the batch, `(B, H, T, D)`, so one batched matmul serves every head.
# Then the heads are concatenated back and mixed by the output projection `wo`.

# %%
torch.manual_seed(3)
B, T, H, D = 2, 5, 4, 8
C = H * D
x = torch.randn(B, T, C)
wq, wk, wv = (torch.randn(C, C) / math.sqrt(C) for _ in range(3))
q = (x @ wq).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
k = (x @ wk).view(B, T, H, D).transpose(1, 2)
v = (x @ wv).view(B, T, H, D).transpose(1, 2)
scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T): all heads in one product
scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
batched = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
for b in range(B):  # the same, one head at a time with the draft
    per_head = [attention_draft(q[b, h], k[b, h], v[b, h], causal[:T, :T])[0] for h in range(H)]
    torch.testing.assert_close(batched[b], torch.cat(per_head, dim=-1))

# %% [markdown]
# ### Building the layer, step 1: a skeleton
#
# These pieces make a layer. We build it in steps, each an unexported class that runs, and mark
# what each step adds with `# New:`; the finished `Attention` of section 9 is the last step. The
# skeleton holds the four projections, with the original's names `wq, wk, wv, wo` and no biases,
# and does by hand what the cell above did: split heads, causal softmax attention, merge heads.


# %%
class AttentionStep1(torch.nn.Module):
    """Skeleton step 1 (not exported): causal multi-head attention, computed by hand."""

    def __init__(self, dim, n_heads):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq = torch.nn.Linear(dim, dim, bias=False)
        self.wk = torch.nn.Linear(dim, dim, bias=False)
        self.wv = torch.nn.Linear(dim, dim, bias=False)
        self.wo = torch.nn.Linear(dim, dim, bias=False)  # mixes the concatenated heads

    def forward(self, x):  # x: (B, T, C)
        B, T, C = x.shape
        q, k, v = (
            w(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            for w in (self.wq, self.wk, self.wv)
        )
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.wo(out)


# %% [markdown]
# Given the weights of the cell above (`nn.Linear` stores the transposed matrix) and `wo` set to
# the identity, the skeleton must reproduce `batched`:

# %%
step1 = AttentionStep1(C, H)
with torch.no_grad():
    for layer_w, w in ((step1.wq, wq), (step1.wk, wk), (step1.wv, wv)):
        layer_w.weight.copy_(w.T)
    step1.wo.weight.copy_(torch.eye(C))
    y1 = step1(x)
torch.testing.assert_close(y1, batched)
print("x", tuple(x.shape), "-> step 1 ->", tuple(y1.shape))

# %% [markdown]
# ## 5. Grouped-query attention (GQA)
#
# During generation every layer keeps the keys and values of all past tokens (section 8), and
# that cache, not the weights, soon dominates memory. GQA (Ainslie et al. 2023) lets groups of
# query heads **share** one key/value head: `n_heads` query heads, `n_kv_heads` key/value heads,
# each shared by `n_rep = n_heads // n_kv_heads` consecutive query heads. `wk` and `wv` shrink by
# `n_rep`, and so does the cache. `n_kv_heads = n_heads` is plain multi-head attention (MHA);
# `n_kv_heads = 1` is multi-query attention. The original model's small variant uses 8 query heads
# and 2 kv heads.
#
# To reuse the ordinary attention computation, each kv head is repeated `n_rep` times so that query
# head `j` meets kv head `j // n_rep`. The exported module starts here with `repeat_kv`, the explicit
# formulation. Its `expand` is a view (no copy), but the `reshape` that merges the kv-head and
# repeat axes cannot be a view of the expanded tensor, so it **copies**: the result holds `n_rep`
# copies of every key and value. In a model that would be, per layer and per decoding step, a fresh
# copy of the whole cached K and V at full multi-head size: GQA would save cache memory but still
# pay for MHA-sized tensors at every step. Section 6 shows how the fused kernel avoids the copy.

# %%
#| export
"""Causal multi-head attention with grouped-query heads (GQA), RoPE and a preallocated KV cache.

Defined in 03_attention. Attention runs through ``F.scaled_dot_product_attention`` (fused kernels,
no stored ``max_seq_len x max_seq_len`` mask; GQA via ``enable_gqa=True``, PyTorch >= 2.5, so the
shared key/value heads are never copied); the projections ``wq, wk, wv, wo`` have no biases and
keep the original's state-dict keys. A model builds the complete attention mask once per forward
with ``build_attn_mask``; on the training path there is none (SDPA's ``is_causal``), which keeps
FlashAttention usable on a CUDA GPU (bf16 only; a mask rules it out).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spongebob.rope import apply_rope


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times so that GQA keys line up with the query heads.

    Defined in 03_attention. ``(B, T, H_kv, D) -> (B, T, H_kv * n_rep, D)``; output head ``j`` is
    kv head ``j // n_rep`` (copies are consecutive). The result is a new tensor holding ``n_rep``
    copies of ``x`` (the final reshape copies); ``Attention`` avoids it with SDPA's ``enable_gqa``.
    """
    if n_rep == 1:
        return x
    B, T, H_kv, D = x.shape
    return x[:, :, :, None, :].expand(B, T, H_kv, n_rep, D).reshape(B, T, H_kv * n_rep, D)


# %% [markdown]
# Check against `torch.repeat_interleave`, which does the same, against the rule "query head `j`
# uses kv head `j // n_rep`", and see the copy: a view would follow a change of `kv`, `rep` does not.

# %%
torch.manual_seed(4)
kv = torch.randn(2, 5, 2, 8)  # (B, T, H_kv, D): 2 kv heads
rep = repeat_kv(kv, 4)  # (B, T, 8, D): 8 query heads
print(tuple(kv.shape), "->", tuple(rep.shape))
torch.testing.assert_close(rep, torch.repeat_interleave(kv, 4, dim=2))
assert all(torch.equal(rep[:, :, j], kv[:, :, j // 4]) for j in range(8))
kv[0, 0, 0, 0] += 1.0
assert rep[0, 0, 0, 0] != kv[0, 0, 0, 0]  # rep is a copy, 4 times the size of kv

# %% [markdown]
# ### Step 2: grouped-query heads
#
# The skeleton learns GQA: `wk` and `wv` produce only `n_kv_heads` heads, and `repeat_kv` lines
# them up with the query heads before the same computation as step 1.


# %%
class AttentionStep2(torch.nn.Module):
    """Skeleton step 2 (not exported): step 1 with n_kv_heads shared key/value heads."""

    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.n_rep = n_heads // n_kv_heads  # New: query heads per kv head
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)  # New: n_rep x smaller
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)  # New: n_rep x smaller
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, x):  # x: (B, T, C)
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # New: (B, T, H_kv, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # New: (B, T, H_kv, D)
        k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # New: (B, T, H, D), a copy
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, T)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.wo(out)


# %% [markdown]
# With `n_kv_heads = n_heads` it is step 1 (same weights, same outputs); with 2 kv heads for 8
# query heads, `wk` and `wv` are 4 times smaller:

# %%
torch.manual_seed(13)
step2 = AttentionStep2(C, H, H)
step2.load_state_dict(step1.state_dict())  # the same four weights
torch.testing.assert_close(step2(x), step1(x))
gqa2 = AttentionStep2(64, 8, 2)
print("wq", tuple(gqa2.wq.weight.shape), "| wk", tuple(gqa2.wk.weight.shape))
print("y", tuple(gqa2(torch.randn(2, 5, 64)).shape))

# %% [markdown]
# ## 6. Fused attention: `F.scaled_dot_product_attention`
#
# The manual version materialises the `(B, H, T, T)` score matrix in memory, then the softmax,
# then multiplies. PyTorch's `F.scaled_dot_product_attention` (SDPA) does the same maths in one
# call and dispatches to fused kernels (FlashAttention, memory-efficient attention) on GPUs. These
# never store the full score matrix: they stream over blocks of keys with a running softmax
# (exercise 4). `is_causal=True` applies the causal mask without us building one. Same numbers:

# %%
torch.manual_seed(5)
B, H, T, D = 2, 4, 12, 16
q, k, v = torch.randn(B, H, T, D), torch.randn(B, H, T, D), torch.randn(B, H, T, D)
mask = torch.ones(T, T, dtype=torch.bool).tril()
manual = (q @ k.transpose(-2, -1) / math.sqrt(D)).masked_fill(~mask, float("-inf"))
manual = manual.softmax(-1) @ v  # (B, H, T, D)
fused = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(D) by default
torch.testing.assert_close(fused, manual)
torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, attn_mask=mask), manual)
print("SDPA == manual softmax attention")

# %% [markdown]
# SDPA also does GQA itself: with `enable_gqa=True` (PyTorch 2.5 and later) it accepts keys and
# values with fewer heads than the queries and pairs query head `j` with kv head `j // n_rep`
# inside the kernel, with no repeated copy. Same numbers as `repeat_kv` followed by plain SDPA:

# %%
torch.manual_seed(5)
B, H, H_kv, T, D = 2, 8, 2, 12, 16
q = torch.randn(B, H, T, D)  # (B, H, T, D)
k, v = torch.randn(B, T, H_kv, D), torch.randn(B, T, H_kv, D)  # (B, T, H_kv, D), as cached
shared = F.scaled_dot_product_attention(
    q, k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
)  # k, v: (B, H_kv, T, D)
k_rep, v_rep = (repeat_kv(t, H // H_kv).transpose(1, 2) for t in (k, v))  # (B, H, T, D)
repeated = F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True)
torch.testing.assert_close(shared, repeated)
print("enable_gqa == repeat_kv + SDPA")

# %% [markdown]
# ### Step 3: RoPE and the fused kernel
#
# The skeleton's hand-written maths gives way to one SDPA call, which also takes over the causal
# mask (`is_causal`) and the sharing of kv heads (`enable_gqa`, no `repeat_kv` copy). And the
# layer finally learns where its tokens are: chapter 02's `apply_rope` rotates q and k (never v)
# by the angles of their positions, passed in as the tables `cos` and `sin`. `__init__` is step
# 2's, inherited.


# %%
class AttentionStep3(AttentionStep2):
    """Skeleton step 3 (not exported): RoPE on q and k, and SDPA with enable_gqa."""

    def forward(self, x, cos, sin):  # New: cos, sin (T, D // 2), the tables of positions 0..T-1
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, H_kv, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # New: positions, chapter 02
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D), k, v: (B, H_kv, T, D)
        out = F.scaled_dot_product_attention(  # New: fused, causal, kv heads shared in the kernel
            q, k, v, is_causal=True, enable_gqa=self.n_rep > 1
        )  # (B, H, T, D)
        return self.wo(out.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


# %% [markdown]
# Rotation by angle 0 (`cos = 1`, `sin = 0`) leaves q and k unchanged, so step 3 then equals step
# 2; with the real tables the outputs change, since the scores now depend on positions:

# %%
torch.manual_seed(14)
step3 = AttentionStep3(64, 8, 2)
step3.load_state_dict(gqa2.state_dict())
x3 = torch.randn(2, 5, 64)  # (B, T, C)
no_turn = (torch.ones(5, 4), torch.zeros(5, 4))  # (T, D // 2): angle 0 everywhere
torch.testing.assert_close(step3(x3, *no_turn), gqa2(x3))
cos3, sin3 = precompute_rope(8, 5)
diff = (step3(x3, cos3, sin3) - gqa2(x3)).abs().max().item()
print(f"largest change from RoPE: {diff:.2f}")
assert diff > 1e-3

# %% [markdown]
# Measured on the course's CPU (`docs/benchmarks.md`: seed model sizes with 2 kv heads, 1 thread),
# skipping the copy makes single-query decoding attention at 200 cached positions about 2.9 times
# faster (about 20 instead of 56 µs per layer, some 0.3 ms of a 9 ms decoding step of the whole
# model) and a 4 × 512 prefill about 5 % faster, with bit-identical outputs. The finished layer
# (section 9) therefore uses `enable_gqa`; `repeat_kv` remains the explicit formulation, used for
# checks and for `attention_weights`.

# %% [markdown]
# ## 7. The original's design (a draft, not exported)
#
# The original model computed attention by hand in its fallback path and kept two things that
# this chapter replaces:
#
# - a **registered mask buffer** of shape `(max_seq_len, max_seq_len)` in every layer, filled with
#   $-\infty$ above the diagonal and sliced per call; at `max_seq_len = 1024` in float32 that is
#   4 MiB per layer, allocated even when only the fused kernel is used;
# - a KV cache grown with **`torch.cat`**: every generated token allocates new key and value
#   tensors and copies the whole past into them.
#
# Here is that design written out (our own code, same maths), so that we can check the new layer
# against it. (`bench/bench_model.py` measures the whole model against the same formulation; its
# results are in `docs/benchmarks.md`.)


# %%
class OriginalStyleAttention(torch.nn.Module):
    """Draft: manual attention, a (max_seq_len, max_seq_len) mask buffer, a torch.cat cache."""

    def __init__(self, dim, n_heads, n_kv_heads, max_seq_len):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.wq = torch.nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = torch.nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = torch.nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = torch.nn.Linear(n_heads * self.head_dim, dim, bias=False)
        mask = torch.full((1, 1, max_seq_len, max_seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)  # not in the state dict

    def forward(self, x, cos, sin, past_kv=None):
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        if past_kv is not None:  # grow the cache: a new tensor and a full copy, every step
            k, v = torch.cat([past_kv[0], k], dim=1), torch.cat([past_kv[1], v], dim=1)
        past_kv = (k, v)  # (B, S, H_kv, D): what the next step concatenates onto
        S, n_rep = k.shape[1], self.n_heads // self.n_kv_heads
        q, k, v = (t.transpose(1, 2) for t in (q, repeat_kv(k, n_rep), repeat_kv(v, n_rep)))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, T, S)
        scores = scores + self.mask[:, :, S - T : S, :S]  # the last T rows of the big mask
        out = torch.softmax(scores.float(), dim=-1).type_as(q) @ v  # (B, H, T, D)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1)), past_kv


# %% [markdown]
# What the two design choices cost, for the original's 8 layers at `max_seq_len = 1024`:

# %%
n_layers, L = 8, 1024
buffer_bytes = n_layers * L * L * 4  # one float32 (L, L) mask per layer
print(f"mask buffers: {buffer_bytes / 2**20:.0f} MiB (the whole model's weights: about 110 MiB)")
copied = sum(range(1, L + 1))  # step t re-copies the t positions cached so far
print(
    f"positions copied per layer over a {L}-token generation: {copied:,} with torch.cat, "
    f"{L:,} in place"
)

# %% [markdown]
# ## 8. The KV cache
#
# Generation produces one token per step. Recomputing the whole prefix at every step repeats
# almost all the work: with a causal mask, the keys and values of past positions never change,
# because they depend only on the tokens up to them. So we keep them: at each step the layer
# computes q, k and v for the **new** tokens only, stores the new k and v, and attends over every
# stored key. The cache is allocated once at its full size and filled in place.
#
# The new tokens are the *last* `T` of `S = start_pos + T` positions. A single new token may see
# every stored key, but a chunk of several new tokens (a prompt processed in pieces: *chunked
# prefill*) needs a causal mask whose diagonal is shifted right by `start_pos`. `is_causal=True` in
# SDPA aligns the diagonal at the top left, which is only right when `T == S`, so when `T != S` we
# build the mask ourselves:


# %%
#| export
def causal_mask(T: int, S: int, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(T, S)`` mask, True where a query may attend to a key. Defined in 03_attention.

    The ``T`` queries are the *last* ``T`` of ``S`` positions (earlier ones come from a KV cache),
    so query ``i`` sits at position ``S - T + i`` and may see keys ``j <= S - T + i``.
    """
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


# %%
print(causal_mask(3, 7).int())  # 3 new tokens at positions 4, 5, 6 after 4 cached ones
assert torch.equal(causal_mask(5, 5), torch.ones(5, 5, dtype=torch.bool).tril())

# %% [markdown]
# The cache holds one `(B, max_seq_len, H_kv, D)` buffer for keys and one for values per layer.
# `update` writes the new positions and returns views of everything stored so far; asking for a
# position beyond the buffer is a clear error rather than a silent reallocation.


# %%
#| export
class KVCache:
    """Preallocated keys and values of one attention layer, for incremental decoding.

    Defined in 03_attention. Buffers ``k``, ``v`` have shape
    ``(batch_size, max_seq_len, n_kv_heads, head_dim)``; ``update`` writes new positions in place
    (no ``torch.cat`` growth, no reallocation).
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (batch_size, max_seq_len, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_seq_len = max_seq_len

    def update(self, k: Tensor, v: Tensor, start_pos: int) -> tuple[Tensor, Tensor]:
        """Store ``k``, ``v`` ``(B, T, H_kv, D)`` at positions ``start_pos .. start_pos + T - 1``.

        Returns views ``(B, start_pos + T, H_kv, D)`` of every position cached so far.
        """
        B, T = k.shape[:2]
        end = start_pos + T
        if start_pos < 0 or end > self.max_seq_len:
            raise ValueError(
                f"KV cache overflow: positions {start_pos}..{end - 1} do not fit in a cache of "
                f"max_seq_len={self.max_seq_len}; allocate a cache for all the positions you need"
            )
        if B > self.k.shape[0]:
            raise ValueError(
                f"batch {B} is larger than the cache's batch_size {self.k.shape[0]}; allocate the "
                "cache with batch_size >= the batch"
            )
        self.k[:B, start_pos:end] = k.to(self.k.dtype)
        self.v[:B, start_pos:end] = v.to(self.v.dtype)
        return self.k[:B, :end], self.v[:B, :end]

    @property
    def nbytes(self) -> int:
        """Memory held by the two buffers, in bytes."""
        return self.k.nbytes + self.v.nbytes


# %% [markdown]
# ### Step 4: the cache
#
# The skeleton gains the cache: new keys and values go into it, and the queries attend over
# everything stored. `start_pos` says where the new tokens sit, and a chunk of several new tokens
# after cached ones needs section 8's offset causal mask (`is_causal` would put its diagonal in
# the wrong place). `__init__` is still step 2's.


# %%
class AttentionStep4(AttentionStep2):
    """Skeleton step 4 (not exported): step 3 with a KVCache."""

    def forward(self, x, cos, sin, cache=None, start_pos=0):  # New: cache, start_pos
        B, T, C = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, H_kv, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # cos, sin of the new positions
        if cache is not None:  # New: store the new k, v, get back every cached position
            k, v = cache.update(k, v, start_pos)  # (B, S, H_kv, D), S = start_pos + T
        S = k.shape[1]
        mask = None if T in (1, S) else causal_mask(T, S, x.device)  # New: a chunk's diagonal
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D), k, v: (B, H_kv, S, D)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=self.n_rep > 1
        )  # (B, H, T, D)
        return self.wo(out.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


# %% [markdown]
# A prompt of 3 tokens, then 2 steps of one token, gives step 3's full forward:

# %%
torch.manual_seed(15)
step4 = AttentionStep4(64, 8, 2)
step4.load_state_dict(step3.state_dict())
cache4 = KVCache(batch_size=2, max_seq_len=8, n_kv_heads=2, head_dim=8)
parts = [step4(x3[:, :3], cos3[:3], sin3[:3], cache4, start_pos=0)]  # prefill
parts += [step4(x3[:, t : t + 1], cos3[t : t + 1], sin3[t : t + 1], cache4, t) for t in (3, 4)]
torch.testing.assert_close(torch.cat(parts, dim=1), step3(x3, cos3, sin3))
print("cached:", [tuple(p.shape) for p in parts], "== full forward", tuple(x3.shape))

# %% [markdown]
# ## 9. The finished layer
#
# `Attention` is step 4 plus three things: a `mask` argument for the *complete* mask that a model
# builds once per forward (next paragraphs), dropout for training (off by default, as in the
# original), and a clear error for head counts that do not divide. Everything else (projections
# without biases named `wq, wk, wv, wo` as in the original, so its checkpoints load unchanged,
# RoPE on q and k, the cache, SDPA with `enable_gqa`) is the skeleton's.
#
# The mask takes the cheapest correct form, because the form decides which fused kernel SDPA may
# use (the table after the checks): **no mask** for a single new token (it may see every cached
# key), SDPA's own **`is_causal=True`** when the queries cover all positions (training), and an
# explicit boolean mask only when something else is needed: a chunk of new tokens after cached ones
# (the offset diagonal of section 8) or keys to hide (padding, section 10). The explicit mask is the
# same in every layer of a model, so it is built **once per forward** by `build_attn_mask` and
# handed to each layer as `mask`: the *complete* mask, causality included. A layer given no mask
# applies causality itself.
#
# One subtlety: a query whose keys are *all* hidden (a padding position) would get a softmax over
# nothing, which gives NaN in some PyTorch versions and kernels, and NaN poisons later layers; so
# `build_attn_mask` lets a query always see at least its own position.


# %%
#| export
def build_attn_mask(
    T: int, S: int, attn_mask: Tensor | None = None, device: torch.device | str | None = None
) -> Tensor | None:
    """The complete bool mask of ``T`` new queries over ``S`` keys, or ``None`` if SDPA needs none.

    Defined in 03_attention. Build it once per model forward and pass it to every layer as
    ``Attention(..., mask=)``. Returns ``None`` (the layer then uses SDPA's ``is_causal``, or no
    mask for one query) when there is no ``attn_mask`` and ``T == S`` or ``T == 1``. Otherwise
    ``causal_mask(T, S)`` combined with ``attn_mask`` (bool, broadcastable to ``(B, 1, T, S)``,
    True = may attend, e.g. False on padding keys): shape ``(T, S)`` or ``(B, 1, T, S)``. A query
    always sees its own position, so no softmax row is empty (NaN).
    """
    if attn_mask is None:
        return None if T in (1, S) else causal_mask(T, S, device)
    if attn_mask.dtype != torch.bool:
        raise ValueError(
            f"attn_mask must be a bool tensor (True = may attend), got {attn_mask.dtype}; "
            "convert it with attn_mask.bool() or build it with a comparison"
        )
    device = attn_mask.device if device is None else device
    try:
        mask = causal_mask(T, S, device) & attn_mask.to(device)  # (T, S) or (B, 1, T, S)
    except RuntimeError as e:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} does not broadcast to (B, 1, T, S) with "
            f"T={T} queries and S={S} keys; pass e.g. a (B, 1, 1, S) key mask"
        ) from e
    own = torch.arange(T, device=device)
    mask[..., own, own + S - T] = True  # a query always sees itself: no empty softmax row
    return mask


# %%
#| export
class Attention(nn.Module):
    """Causal self-attention with RoPE, grouped-query heads and an optional KV cache.

    Defined in 03_attention. ``n_heads`` query heads share ``n_kv_heads`` key/value heads
    (``n_heads % n_kv_heads == 0``; equal numbers give plain multi-head attention).
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"need dim % n_heads == 0 and n_heads % n_kv_heads == 0, got "
                f"dim={dim}, n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.n_rep = n_heads // n_kv_heads
        self.head_dim = dim // n_heads
        self.wq = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.attn_dropout = nn.Dropout(dropout)  # its p is passed to SDPA as dropout_p
        self.resid_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None = None,
        start_pos: int = 0,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``x``: ``(B, T, C)`` at positions ``start_pos .. start_pos + T - 1``; returns
        ``(B, T, C)``

        ``cos``, ``sin``: ``(T, head_dim // 2)`` for those positions. With ``cache``, keys and
        values of earlier positions come from the cache (``S = start_pos + T`` keys, else
        ``S = T``).
        ``mask``: the *complete* bool mask, broadcastable to ``(B, 1, T, S)``, True = may attend,
        causality included (build it once per forward with ``build_attn_mask``). Without one the
        layer is causal by itself: ``is_causal=True`` for ``T == S``, nothing for ``T == 1``, an
        offset causal mask otherwise. On CUDA only the mask-free calls can use FlashAttention.
        """
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, H_kv, D)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)  # (B, S, H_kv, D), S = start_pos + T
        S = k.shape[1]
        q = q.transpose(1, 2)  # (B, H, T, D)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H_kv, S, D): shared by n_rep heads each
        if mask is None and T not in (1, S):
            # A chunk after cached positions, called on its own: the offset diagonal (section 8).
            # A model passes this mask ready-made, built once for all its layers.
            mask = causal_mask(T, S, x.device)  # (T, S)
        causal = False  # a plain bool: under torch.compile with varying T, `mask is None and
        if mask is None and T > 1:  # T > 1` would be a symbolic one, which SDPA cannot take
            causal = True  # then T == S: the training path, no mask at all
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout.p if self.training else 0.0,
            is_causal=causal,
            enable_gqa=self.n_rep > 1,  # query head j uses kv head j // n_rep, no repeat_kv copy
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H * D)
        return self.resid_dropout(self.wo(out))  # (B, T, C)


# %% [markdown]
# Checks. The new layer has exactly the original's four weights, so the original-style draft can
# load its state dict (`strict=True`) and must compute the same outputs. Then the cache: a prompt
# of 5 tokens, then 7 steps of one token, must reproduce the full causal forward; so must a
# chunked prefill (4 tokens, then 8 at `start_pos = 4`) and the draft's `torch.cat` cache.

# %%
torch.manual_seed(6)
dim, n_heads, n_kv_heads, max_len = 64, 8, 2, 32
attn = Attention(dim, n_heads, n_kv_heads).eval()
cos, sin = precompute_rope(dim // n_heads, max_len)
x = torch.randn(2, 12, dim)  # (B, T, C)
full = attn(x, cos[:12], sin[:12])  # (B, T, C)
print(sorted(attn.state_dict()))
original = OriginalStyleAttention(dim, n_heads, n_kv_heads, max_len)
original.load_state_dict(attn.state_dict())  # strict: same keys, same shapes
torch.testing.assert_close(original(x, cos[:12], sin[:12])[0], full)

# %%
cache = KVCache(batch_size=2, max_seq_len=max_len, n_kv_heads=n_kv_heads, head_dim=dim // n_heads)
outs = [attn(x[:, :5], cos[:5], sin[:5], cache=cache, start_pos=0)]  # prefill the prompt
for t in range(5, 12):  # then one token at a time
    outs.append(attn(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache=cache, start_pos=t))
torch.testing.assert_close(torch.cat(outs, dim=1), full)

cache = KVCache(2, max_len, n_kv_heads, dim // n_heads)
chunks = [
    attn(x[:, :4], cos[:4], sin[:4], cache, 0),
    attn(x[:, 4:], cos[4:12], sin[4:12], cache, 4),
]
torch.testing.assert_close(torch.cat(chunks, dim=1), full)

past, outs = None, []
for t in range(12):
    y, past = original(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], past)
    outs.append(y)
torch.testing.assert_close(torch.cat(outs, dim=1), full)
print("cached decoding == chunked prefill == original-style cache == full causal forward")

# %% [markdown]
# And the finished layer is the last skeleton step, with the same weights:

# %%
step4 = AttentionStep4(dim, n_heads, n_kv_heads)
step4.load_state_dict(attn.state_dict())
torch.testing.assert_close(step4(x, cos[:12], sin[:12]), full)
print("Attention == skeleton step 4:", tuple(full.shape))

# %% [markdown]
# A full cache refuses more positions:

# %%
try:
    attn(x[:, :1], cos[:1], sin[:1], cache=cache, start_pos=max_len)
except ValueError as e:
    print("ValueError:", e)

# %% [markdown]
# ### Which SDPA kernel runs
#
# On a CPU, SDPA runs PyTorch's own implementation whatever the inputs. On a CUDA GPU it picks, at
# every call, one of three implementations that the PyTorch documentation of
# [`scaled_dot_product_attention`](https://docs.pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html)
# lists (FlashAttention-2, memory-efficient attention, and a C++ "math" implementation of the
# formula; recent releases add a cuDNN backend), and each fused kernel has input limits:
#
# * **FlashAttention** takes fp16 or bf16 inputs only, and **no `attn_mask`**: causality only
#   through `is_causal` (forced with a mask, it refuses with the warning "Flash Attention does not
#   support non-null attn_mask"). It supports `enable_gqa`.
# * **Memory-efficient attention** also takes float32 and an arbitrary mask, but **not GQA**: the
#   same page says that `enable_gqa` "currently works only for Flash_attention and math kernel on
#   CUDA tensor".
# * **Math** runs everything, storing the whole `(T, S)` score matrix: the fallback.
#
# [`torch.nn.attention.sdpa_kernel`](https://docs.pytorch.org/docs/stable/generated/torch.nn.attention.sdpa_kernel.html)
# restricts the choice, and a forced kernel that cannot run raises an error (the course's
# `tests/test_cuda.py` forces FlashAttention on the training path). What that means for our layer
# (MHA = `n_kv_heads == n_heads`; with GQA the memory-efficient kernel is out):
#
# | path | mask SDPA gets | bf16 (autocast or bf16 weights) | float32 |
# |---|---|---|---|
# | training, unpadded prefill (`T == S`) | none, `is_causal=True` | FlashAttention | memory-efficient (MHA), math (GQA) |
# | decoding one token, no padding (`T == 1`) | none | FlashAttention | memory-efficient (MHA), math (GQA) |
# | chunked prefill (`1 < T < S`) | bool `(T, S)` | memory-efficient (MHA), math (GQA) | same |
# | padded batch, prefill or decoding | bool `(B, 1, T, S)` | memory-efficient (MHA), math (GQA) | same |
#
# That is why the training path must pass no mask at all: an explicit causal mask gives the same
# numbers but rules FlashAttention out. The check: `build_attn_mask` returns `None` for the
# training and decoding shapes, and the mask-free call equals the explicit-mask call.

# %%
assert build_attn_mask(12, 12) is None and build_attn_mask(1, 30) is None  # SDPA needs no mask
assert torch.equal(build_attn_mask(4, 12), causal_mask(4, 12))  # a chunk: the offset diagonal
torch.testing.assert_close(
    attn(x, cos[:12], sin[:12]), attn(x, cos[:12], sin[:12], mask=causal_mask(12, 12))
)
print("is_causal (no mask) == explicit causal mask")

# %% [markdown]
# ## 10. Batches of different lengths: left padding
#
# To generate for several prompts at once, they are stacked into one `(B, T)` tensor. Padding on
# the *left* keeps every prompt's last token in the last column, so all rows generate their next
# token at the same position. The padding must be invisible: a key mask marks padded keys False,
# and `build_attn_mask` combines it with causality into the complete mask (a model does this once
# per forward, for all its layers). The real tokens then sit at shifted positions, but RoPE only
# sees relative positions, so their outputs are those of the unpadded prompts, up to float
# rounding.

# %%
torch.manual_seed(7)
prompts = [torch.randn(3, dim), torch.randn(6, dim)]  # two prompts, 3 and 6 tokens
T = 6
xb = torch.zeros(2, T, dim)
keep = torch.zeros(2, T, dtype=torch.bool)  # True on real tokens
for b, p in enumerate(prompts):
    xb[b, T - len(p) :], keep[b, T - len(p) :] = p, True
pad_mask = build_attn_mask(T, T, keep[:, None, None, :])  # key mask (B, 1, 1, S) -> (B, 1, T, S)
out = attn(xb, cos[:T], sin[:T], mask=pad_mask)
for b, p in enumerate(prompts):
    alone = attn(p[None], cos[: len(p)], sin[: len(p)])[0]
    torch.testing.assert_close(out[b, T - len(p) :], alone)
print(keep.int())
print("real tokens: same outputs as each prompt alone")

# %% [markdown]
# ## 11. Looking inside: attention weights per head
#
# SDPA returns only the output, never the weights (the fused kernels never hold them). For
# pictures we recompute them the slow way; chapter 06 uses the same function on the trained model.


# %%
#| export
def attention_weights(
    attn: Attention, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None
) -> Tensor:
    """The softmax weights ``(B, H, T, T)`` of ``attn`` on ``x`` (no cache), for plots.

    Defined in 03_attention. Recomputed in float32 the explicit way, since SDPA does not return
    them; ``mask`` as in ``Attention.forward`` (complete, from ``build_attn_mask``; None = causal).
    """
    B, T, _ = x.shape
    q = apply_rope(attn.wq(x).view(B, T, attn.n_heads, attn.head_dim), cos, sin)
    k = apply_rope(attn.wk(x).view(B, T, attn.n_kv_heads, attn.head_dim), cos, sin)
    q = q.float().transpose(1, 2)  # (B, H, T, D)
    k = repeat_kv(k, attn.n_rep).float().transpose(1, 2)  # (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)  # (B, H, T, T)
    mask = causal_mask(T, T, x.device) if mask is None else mask.to(x.device)
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


# %% [markdown]
# Check: weighting the values by these weights and applying `wo` must give the layer's output.

# %%
w = attention_weights(attn, x, cos[:12], sin[:12])  # (B, H, T, T)
v_all = repeat_kv(attn.wv(x).view(2, 12, n_kv_heads, dim // n_heads), attn.n_rep).transpose(1, 2)
torch.testing.assert_close(attn.wo((w @ v_all).transpose(1, 2).reshape(2, 12, dim)), full)
print(tuple(w.shape))

# %% [markdown]
# A plotting helper goes to `spongebob.viz` (the package's home for pictures):


# %%
#| export: viz
def plot_attention_heads(weights, labels=None, title=None, ncols=4, size=2.4):
    """Heatmaps of attention weights, one panel per head; returns the figure.

    Defined in 03_attention. ``weights``: ``(H, T, S)`` tensor or array (one sample of
    ``attention_weights``), rows = queries, columns = keys; ``labels``: optional token strings.
    """
    w = weights.detach().float().cpu().numpy() if hasattr(weights, "detach") else weights
    n_heads = w.shape[0]
    ncols = min(ncols, n_heads)
    nrows = -(-n_heads // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= n_heads:
            ax.axis("off")
            continue
        ax.imshow(w[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=9)
        ticks = range(len(labels)) if labels is not None else []
        ax.set_xticks(ticks, labels if labels is not None else [], fontsize=6, rotation=90)
        ax.set_yticks(ticks, labels if labels is not None else [], fontsize=6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# %% [markdown]
# Random weights give blurry patterns. To see what heads *learn*, train a tiny attention-only model
# (2 layers of our `Attention`, 4 heads each, no MLP) for a few seconds on a task that needs
# attention: sequences that repeat with a random period, e.g. `a b c d e a b c d e a ...`. Once a
# token has occurred before, the next token is predictable: find the earlier occurrence of the
# current token and copy what followed it. This is the classic *induction head* circuit.


# %%
class TinyAttentionModel(torch.nn.Module):
    """Draft, not exported: embeddings -> 2 x (LayerNorm -> Attention, residual) -> logits."""

    def __init__(self, vocab=24, dim=64, n_layers=2, n_heads=4, max_len=32):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(dim) for _ in range(n_layers))
        self.layers = torch.nn.ModuleList(Attention(dim, n_heads, n_heads) for _ in range(n_layers))
        self.out = torch.nn.Linear(dim, vocab)
        cos, sin = precompute_rope(dim // n_heads, max_len, theta=1e4)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, ids):  # ids (B, T) -> logits (B, T, vocab), inputs of each attention
        T, h, inputs = ids.shape[1], self.emb(ids), []
        for norm, layer in zip(self.norms, self.layers):
            inputs.append(norm(h))
            h = h + layer(inputs[-1], self.cos[:T], self.sin[:T])
        return self.out(h), inputs


def periodic_batch(B, T=32, vocab=24, period=None):
    """Token ids (B, T) repeating with a period in 5..15, and where the next token is predictable.

    Each period is a random permutation's first tokens, so no token repeats within a period.
    """
    L = torch.randint(5, 16, (B, 1)) if period is None else torch.full((B, 1), period)
    period_ids = torch.stack([torch.randperm(vocab)[:15] for _ in range(B)])  # (B, 15), distinct
    ids = period_ids.gather(1, torch.arange(T) % L)  # (B, T)
    return ids, torch.arange(T - 1) >= L  # (B, T - 1): targets after the first period


# %%
torch.manual_seed(8)
model = TinyAttentionModel()
opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
for _ in range(250):
    ids, known = periodic_batch(64)
    logits, _ = model(ids[:, :-1])
    loss = F.cross_entropy(logits[known], ids[:, 1:][known])
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    ids, known = periodic_batch(512)
    acc = (model(ids[:, :-1])[0].argmax(-1) == ids[:, 1:])[known].float().mean().item()
assert acc > 0.9, acc
print("accuracy on predictable tokens > 0.9 (chance: 1/24)")

# %% [markdown]
# Explore the heads of both layers on one sequence with period 7, shown as letters (rows: the
# query token, columns: the keys it attends to):
#
# :::{admonition} Live only in a notebook
# :class: widget-note
# The two sliders pick a layer and a head only in a running notebook (JupyterLab). On a
# static page they keep their saved state; the figures after them show every head.
# :::

# %%
torch.manual_seed(9)
ids = periodic_batch(1, period=7)[0][:, :21]  # (1, 21): three periods
labels = [chr(ord("a") + i) for i in ids[0].tolist()]  # tokens shown as letters
with torch.no_grad():
    _, inputs = model(ids)
    weights = [
        attention_weights(layer, inp, model.cos[:21], model.sin[:21])[0]
        for layer, inp in zip(model.layers, inputs)
    ]  # per layer: (H, T, T)


def show_head(layer=0, head=0):
    plt.figure(figsize=(5.5, 4.8))
    plt.imshow(weights[layer][head], cmap="viridis", vmin=0, vmax=1)
    plt.colorbar(label="attention weight", shrink=0.8)
    plt.xticks(range(len(labels)), labels, fontsize=9)
    plt.yticks(range(len(labels)), labels, fontsize=9)
    plt.xlabel("key (attended to)")
    plt.ylabel("query (attending)")
    plt.title(f"layer {layer}, head {head}")
    plt.show()


# %%
# NBVAL_IGNORE_OUTPUT
ui = widgets.interactive(show_head, layer=(0, 1), head=(0, 3))
display(ui)
assert [c.description for c in ui.children[:2]] == ["layer", "head"]

# %% [markdown]
# The static view of every head. In layer 0, heads attend to the token itself or the one before
# it (a bright diagonal just below the main one). In layer 1, heads attend one period back, to
# the token *after* the previous occurrence of the current token: diagonals 6 and 13 positions
# back, exactly what the copy rule needs.

# %%
for layer in range(2):
    plot_attention_heads(weights[layer], labels, title=f"layer {layer}", size=2.6)
    plt.show()

# %%
T, period = 21, 7
t = torch.arange(period, T)  # queries whose token occurred one period earlier
induction = torch.stack([weights[1][h, t, t - period + 1].mean() for h in range(4)])
previous = torch.stack([weights[0][h, t, t - 1].mean() for h in range(4)])
assert induction.max() > 0.3 and previous.max() > 0.3
print("some layer-1 head puts > 0.3 of its weight on position t - period + 1")
print("some layer-0 head puts > 0.3 of its weight on position t - 1")

# %% [markdown]
# ## 12. KV-cache memory: MHA vs GQA
#
# Per layer the cache holds `2 (k and v) x T x n_kv_heads x head_dim` numbers per sequence. For the
# original's configuration (`dim=512`, 8 layers, 8 heads of 64, bf16) that is 16 KiB per token
# with multi-head attention, and a quarter of it with `n_kv_heads=2`. The `KVCache` class itself
# reports the sizes (on PyTorch's `meta` device, which allocates nothing):


# %%
def model_cache_bytes(n_kv_heads, seq_len, n_layers=8, head_dim=64, batch_size=1):
    caches = [KVCache(batch_size, seq_len, n_kv_heads, head_dim, torch.bfloat16, "meta")] * n_layers
    return sum(c.nbytes for c in caches)


for n_kv in (8, 2):
    print(f"n_kv_heads={n_kv}: {model_cache_bytes(n_kv, 1024) / 2**20:.0f} MiB at 1024 tokens")
assert model_cache_bytes(8, 1024) == 8 * 2 * 1024 * 8 * 64 * 2  # layers, k+v, T, heads, D, bytes

# %%
lengths = [2**p for p in range(7, 16)]  # 128 .. 32768 tokens
weights_mib = 28_975_616 * 2 / 2**20  # the original model's weights in bf16
plt.figure(figsize=(6, 3.2))
for n_kv, name in ((8, "MHA, n_kv_heads=8"), (2, "GQA, n_kv_heads=2")):
    plt.loglog(lengths, [model_cache_bytes(n_kv, n) / 2**20 for n in lengths], "o-", label=name)
plt.axhline(weights_mib, color="gray", ls="--", lw=1, label="model weights (bf16)")
plt.xlabel("context length (tokens)")
plt.ylabel("KV cache (MiB), batch 1")
plt.title("KV cache, dim 512, 8 layers, bf16")
plt.legend()
plt.show()
for n_kv in (8, 2):
    tokens = round(weights_mib * 2**20 / model_cache_bytes(n_kv, 1), -2)  # / bytes per token
    print(f"n_kv_heads={n_kv}: the cache outgrows the weights at about {tokens:,.0f} tokens")

# %% [markdown]
# At batch size 1 the multi-head cache outgrows the model itself at about 3,500 tokens; with GQA at
# about 14,100. Multiply by the batch size when serving many users.

# %% [markdown]
# ## Putting it together
#
# The exported names, imported back from the package: one layer of the original model's size with
# GQA, a batch of 2 prompts prefilled together, then 4 decoding steps, against the full forward.
# Its weight count explains the original's two sizes: with `n_kv_heads=2`, `wk` and `wv` shrink
# from `512 x 512` to `128 x 512`, which saves 393,216 parameters per layer, and
# 28,975,616 - 8 x 393,216 = 25,829,888.

# %%
from spongebob.attention import Attention, KVCache, build_attn_mask
from spongebob.rope import precompute_rope
from spongebob.viz import plot_attention_heads  # noqa: F401  (used in chapter 06)

torch.manual_seed(10)
mha, gqa = Attention(512, 8, 8).eval(), Attention(512, 8, 2).eval()
n_mha, n_gqa = (sum(p.numel() for p in m.parameters()) for m in (mha, gqa))
print(f"parameters per layer: MHA {n_mha:,}, GQA {n_gqa:,}")
print(f"GQA saves {n_mha - n_gqa:,} parameters per layer")
assert 28_975_616 - 8 * (n_mha - n_gqa) == 25_829_888

cos, sin = precompute_rope(64, 1024, theta=1e6)
x = torch.randn(2, 20, 512)  # (B, T, C)
with torch.no_grad():
    assert build_attn_mask(20, 20) is None  # the full forward: SDPA's is_causal, no mask
    full = gqa(x, cos[:20], sin[:20])
    cache = KVCache(2, 1024, n_kv_heads=2, head_dim=64)
    steps = [gqa(x[:, :16], cos[:16], sin[:16], cache, 0)]
    steps += [gqa(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache, t) for t in range(16, 20)]
torch.testing.assert_close(torch.cat(steps, dim=1), full)
print(tuple(full.shape), f"cache: {cache.nbytes / 2**20:.0f} MiB for one layer, float32")

# %% [markdown]
# ## Summary
#
# - Attention is a softmax-weighted average of values, weights from query-key dot products; the
#   $1/\sqrt{d}$ scale keeps scores at unit variance so the softmax does not saturate.
# - The causal mask hides the future; many heads run as one batched product over `(B, H, T, D)`.
# - GQA shares each key/value head among `n_rep` query heads: fewer weights and a cache `n_rep`
#   times smaller, at almost no quality cost. `repeat_kv` writes the sharing out (with a copy);
#   SDPA's `enable_gqa=True` does it inside the kernel, without one.
# - `F.scaled_dot_product_attention` computes the same numbers with fused kernels and without a
#   stored `max_seq_len x max_seq_len` mask.
# - A preallocated KV cache makes each decoding step cost one token's work; chunks of new tokens
#   need a causal mask offset by `start_pos`, and left padding is hidden by a key mask;
#   `build_attn_mask` builds the combined mask once per forward, and the training path passes
#   none at all, so that SDPA can pick FlashAttention on a GPU.
#
# | exported to `spongebob.attention` | what it does |
# |---|---|
# | `repeat_kv(x, n_rep)` | `(B, T, H_kv, D) -> (B, T, H_kv * n_rep, D)` (a copy), kv head `j // n_rep` for head `j` |
# | `causal_mask(T, S)` | bool `(T, S)`: the last `T` of `S` positions, causal |
# | `build_attn_mask(T, S, attn_mask)` | the complete mask, built once per forward, or `None` when SDPA's `is_causal` suffices |
# | `KVCache(batch_size, max_seq_len, n_kv_heads, head_dim, dtype, device)` | preallocated k/v; `update`, `nbytes` |
# | `Attention(dim, n_heads, n_kv_heads, dropout)` | RoPE + GQA (SDPA `enable_gqa`) + cache + optional complete `mask`; keys `wq, wk, wv, wo` |
# | `attention_weights(attn, x, cos, sin)` | the `(B, H, T, T)` weights, for plots |
# | `viz.plot_attention_heads(weights, labels)` | one heatmap per head |
#
# Next: [04 · The model](04_model.ipynb) stacks this layer with RMSNorm and SwiGLU into the full
# model and generates text with the cache.

# %% [markdown]
# ## Predict, then verify
#
# **A.** With a causal mask, how much weight does the *first* token put on itself? And the last
# of 4 tokens, if all scores are equal?
#
# **B.** Without the $1/\sqrt{d}$ scaling, do the attention weights of random 256-dimensional
# queries and keys get sharper or flatter than with it?

# %%
scores = torch.zeros(4, 4).masked_fill(torch.ones(4, 4).triu(1).bool(), float("-inf"))
w = scores.softmax(-1)
print("first row:", [round(x, 3) for x in w[0].tolist()])
print("last row: ", [round(x, 3) for x in w[3].tolist()])

torch.manual_seed(0)
qq, kk = torch.randn(64, 256), torch.randn(64, 256)
for name, s in [("unscaled", qq @ kk.T), ("scaled", qq @ kk.T / 256**0.5)]:
    print(f"{name:9} mean largest weight per row: {s.softmax(-1).max(-1).values.mean().item():.3f}")


# %% [markdown]
# ## Exercises
#
# Edit the stub, run its check cell. Solutions: `solutions/03_attention_solutions.ipynb`.
#
# **Exercise 1 (easy).** Write `kv_cache_bytes(n_layers, n_kv_heads, head_dim, seq_len,
# batch_size, bytes_per_value)`, the memory of a whole model's KV cache, without creating tensors.


# %%
def kv_cache_bytes(n_layers, n_kv_heads, head_dim, seq_len, batch_size=1, bytes_per_value=2):
    raise NotImplementedError


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
# **Exercise 2 (medium).** How focused is a head? Write `attention_entropy(weights)` for weights
# `(B, H, T, S)`: the entropy $-\sum_s w_s \log w_s$ of every query row, averaged over batch and
# queries, one value per head `(H,)`. Masked keys have weight 0 and contribute 0.


# %%
def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


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
# **Exercise 3 (medium).** Sliding-window attention (used by Mistral) lets each query see only the
# last `window` positions, itself included. Write `sliding_window_mask(T, S, window)`: bool
# `(T, S)` for the last `T` of `S` positions, like `causal_mask`. The check passes it to
# `Attention` as its complete `mask`.


# %%
def sliding_window_mask(T: int, S: int, window: int) -> torch.Tensor:
    raise NotImplementedError


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
# **Exercise 4 (hard).** The trick inside FlashAttention: compute `softmax(q k^T / sqrt(d)) v` for
# one head without ever holding all `S` scores, by visiting the keys in chunks and keeping a
# running maximum `m`, a running sum of exponentials `l` and a running weighted sum of values `acc`
# (rescale `l` and `acc` by `exp(m_old - m_new)` when the maximum grows). Write
# `chunked_attention(q, k, v, chunk)` for `q (T, d)`, `k, v (S, d)`, no mask.


# %%
def chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int):
    raise NotImplementedError


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
