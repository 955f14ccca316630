# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Rotary position embeddings (RoPE)
#
# **Give a transformer a sense of word order by rotating its queries and keys, so that attention
# scores depend on how far apart two tokens are.**
#
# Runs in under a minute on a laptop CPU. Prerequisites: [01 · Tokenizer](01_tokenizer.ipynb)
# (text becomes token ids), basic linear algebra (a dot product, a 2-D rotation matrix) and
# PyTorch tensors.
#
# What you will build:
#
# 1. token embeddings, and a proof that attention alone cannot tell word order;
# 2. the classic sinusoidal position embedding, for comparison;
# 3. RoPE, derived from a 2-D rotation: `precompute_rope` and `apply_rope`, exported to
#    `spongebob.rope`, checked against the original's complex-number formulation;
# 4. the two pairings of dimensions (interleaved vs rotate-half) and the row permutation of `wq`
#    and `wk` that converts between them (`interleaved_to_half_rows`, `half_to_interleaved_rows`);
# 5. how `rope_theta` sets the wavelengths, and what that means for longer contexts.
#
# ![RoPE: token ids to embeddings x; wq and wk give q and k; the angles of position m (cos, sin) rotate pairs of q and k; q_m · k_n then depends only on m − n](../book/figures/rope_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 注意力本身不知道词元的位置。本章从二维旋转推导旋转位置编码（RoPE）：把查询和键的维度两两配对，按位置旋转，使得两者的点积只取决于相对位置；并测量这一点。还比较了原项目的交错配对与 Hugging Face 的“半旋转”配对（两者只差一个固定的行置换），以及 `rope_theta` 对长上下文的影响。导出模块：`spongebob.rope`。
# :::

# %% [markdown]
# ## Setup
#
# This chapter needs only PyTorch; the tokenizer of chapter 01 is not needed, because token ids
# are just integers here.
#
# **If you edit an exported cell.** The cells marked `#| export` are copied into the `spongebob`
# package only by `make export`; until then, `from spongebob... import` keeps the old code. To
# re-export and reload from here, run `!cd .. && python tools/nbexport.py`, then restart the kernel
# (Kernel → Restart), or use `%load_ext autoreload` and `%autoreload 2` once at the top.

# %%
#| default_exp rope

# %%
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from spongebob.runtime import seed_everything

seed_everything(1337)
plt.rcParams["figure.dpi"] = 80

# %% tags=["remove-cell"]
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)
assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 1)

# %% [markdown]
# ## 1. Token embeddings
#
# The tokenizer turns text into integer ids. The model's first layer, `tok_embeddings`, is a
# table with one learned row of `dim` numbers per id: looking up row `i` is the same as multiplying
# a one-hot vector by the table. A batch of ids of shape `(B, T)` becomes activations of shape
# `(B, T, C)` with `C = dim`.

# %%
vocab_size, dim = 6400, 512  # the original model's sizes
tok_embeddings = torch.nn.Embedding(vocab_size, dim)
ids = torch.tensor([[1, 42, 7, 42]])  # (B, T) = (1, 4); id 42 appears twice
x = tok_embeddings(ids)  # (B, T, C)
print(tuple(ids.shape), "->", tuple(x.shape))

one_hot = torch.nn.functional.one_hot(ids, vocab_size).float()  # (B, T, vocab_size)
torch.testing.assert_close(one_hot @ tok_embeddings.weight, x)
assert torch.equal(x[0, 1], x[0, 3])  # same token, same vector: no position information yet

# %% [markdown]
# ## 2. Why position matters
#
# The last line above is the problem: the embedding of token 42 is the same at position 1 and at
# position 3. Attention (chapter 03) mixes the vectors of a sequence with weights computed from
# dot products between them, and nothing in that computation looks at *where* a vector sits. It is
# **permutation-equivariant**: shuffle the input tokens and the outputs are shuffled the same way,
# otherwise unchanged. "dog bites man" and "man bites dog" would look alike. (The causal mask of
# chapter 03 helps only partly: within a layer, each token still sees its past as an unordered
# set.)
#
# A minimal attention layer (no mask, one head) shows it:


# %%
def plain_attention(x, wq, wk, wv):
    """softmax(x Wq (x Wk)^T / sqrt(d)) x Wv for x of shape (T, C); no positions, no mask."""
    q, k, v = x @ wq, x @ wk, x @ wv  # (T, d) each
    weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)  # (T, T)
    return weights @ v  # (T, d)


torch.manual_seed(0)
C, d, T = 16, 8, 5
wq, wk, wv = torch.randn(C, d), torch.randn(C, d), torch.randn(C, d)
x = torch.randn(T, C)
perm = torch.tensor([3, 0, 4, 1, 2])  # a shuffle of the 5 tokens
out, out_shuffled = plain_attention(x, wq, wk, wv), plain_attention(x[perm], wq, wk, wv)
torch.testing.assert_close(out_shuffled, out[perm])
print("shuffling the input only shuffles the output: attention ignores order")

# %% [markdown]
# ## 3. Sinusoidal position embeddings (the 2017 answer)
#
# The original Transformer added a fixed vector to each token embedding: for position $m$ and
# pair $i$ of dimensions, $\sin(m\,\omega_i)$ and $\cos(m\,\omega_i)$ with frequencies
# $\omega_i = 10000^{-2i/C}$, from one radian per position down to a very slow wave. Adding it
# breaks the symmetry: the same token now has a different vector at every position.


# %%
def sinusoidal_embedding(T: int, C: int, base: float = 10000.0) -> torch.Tensor:
    """(T, C) table: column 2i is sin(m * base**(-2i/C)), column 2i+1 is cos of the same angle."""
    omega = base ** (-torch.arange(0, C, 2) / C)  # (C/2,)
    angles = torch.arange(T)[:, None] * omega[None, :]  # (T, C/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, C)


pe = sinusoidal_embedding(64, 32)
pe_T = sinusoidal_embedding(T, C)  # (T, C): one vector per position, added to the tokens
out_pos = plain_attention(x + pe_T, wq, wk, wv)
out_pos_shuffled = plain_attention(x[perm] + pe_T, wq, wk, wv)  # shuffled tokens, same positions
assert not torch.allclose(out_pos_shuffled, out_pos[perm], atol=1e-3)  # order matters now

plt.figure(figsize=(6, 2.6))
plt.imshow(pe.T, aspect="auto", cmap="RdBu")
plt.xlabel("position m")
plt.ylabel("dimension")
plt.title("sinusoidal position embedding (fast pairs at the top)")
plt.colorbar()
plt.show()

# %% [markdown]
# Adding positions works, but it mixes "what" and "where" into one vector, and the score between
# two tokens depends on their *absolute* positions in a tangled way. What language mostly needs is
# the *relative* position: "the previous word", "three tokens back". Rotary embeddings (RoFormer,
# Su et al. 2021) get exactly that.
#
# ## 4. RoPE from a 2-D rotation
#
# Take a 2-D vector and rotate it by an angle: $R(\alpha) = \begin{pmatrix}\cos\alpha &
# -\sin\alpha\\ \sin\alpha & \cos\alpha\end{pmatrix}$. Rotations keep lengths, and the dot product
# of two rotated vectors only depends on the *difference* of their angles:
#
# $$(R(m\theta)\,q)\cdot(R(n\theta)\,k) = q^\top R(m\theta)^\top R(n\theta)\,k
#   = q^\top R((n-m)\theta)\,k .$$
#
# So: rotate the query of the token at position $m$ by $m\theta$ and the key at position $n$ by
# $n\theta$; their score then depends on $m - n$ only. Let us check it in 2-D.


# %%
def rotation(alpha: float) -> torch.Tensor:
    """The 2x2 matrix that turns a vector counter-clockwise by alpha radians."""
    c, s = math.cos(alpha), math.sin(alpha)
    return torch.tensor([[c, -s], [s, c]])


q2, k2, theta2 = torch.tensor([1.0, 0.5]), torch.tensor([0.3, -1.2]), 0.7
for m, n in [(3, 1), (10, 8), (52, 50)]:  # always two positions apart
    score = (rotation(m * theta2) @ q2) @ (rotation(n * theta2) @ k2)
    print(f"m={m:2d} n={n:2d}  q_m . k_n = {score.item():.4f}")

# %% [markdown]
# A head has `head_dim = D` dimensions, not 2. RoPE splits them into $D/2$ pairs and rotates
# pair $i$ by its own angle $m\,\theta_i$, with frequencies falling geometrically like the
# sinusoids above:
#
# $$\theta_i = b^{-2i/D}, \qquad i = 0, \dots, D/2 - 1 ,$$
#
# where the base $b$ is the model's `rope_theta` ($10^6$ in the original, $10^4$ in the RoFormer
# paper). In code the base is the `theta` argument of `precompute_rope` (the original's name); in
# prose and plots this chapter writes $b$ or `rope_theta` for the base and $\theta_i$ for the
# frequency of pair $i$.
#
# The full rotation is a block-diagonal $D \times D$ matrix $R_m$ with one $2 \times 2$ block per
# pair; the dot product still only sees $R_m^\top R_n = R_{n-m}$. Following the original model, the
# pairs are **interleaved**: dimensions $(2i, 2i+1)$ rotate together. A naive draft builds the
# matrix explicitly (a $D \times D$ matmul per position: wasteful, but easy to trust):


# %%
def rope_matrix(m: int, D: int, theta: float = 1e6) -> torch.Tensor:
    """Draft: the (D, D) block-diagonal rotation R_m of position m (interleaved pairs)."""
    R = torch.zeros(D, D)
    for i in range(D // 2):
        R[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = rotation(m * theta ** (-2 * i / D))
    return R


D = 8
R3, R5 = rope_matrix(3, D), rope_matrix(5, D)
torch.testing.assert_close(R3.T @ R5, rope_matrix(2, D), atol=1e-6, rtol=0)  # R_m^T R_n = R_{n-m}
torch.testing.assert_close(R3 @ R3.T, torch.eye(D), atol=1e-6, rtol=0)  # a rotation: lengths kept

# %% [markdown]
# ## 5. The exported version
#
# The block-diagonal matrix is mostly zeros. Written out, pair $(x_{2i}, x_{2i+1})$ at position
# $m$ becomes
#
# $$\big(x_{2i}\cos m\theta_i - x_{2i+1}\sin m\theta_i,\;\; x_{2i}\sin m\theta_i +
#   x_{2i+1}\cos m\theta_i\big),$$
#
# a handful of element-wise operations. The cos and sin tables depend only on the position and
# the frequency, so they are computed once per model (`precompute_rope`) and sliced per call.
#
# Precision, in two places. `precompute_rope` computes the angles $m\,\theta_i$ in float64 (an
# angle of 30000 radians is only known to about $10^{-3}$ in float32) and stores the tables in
# float32. `apply_rope` multiplies in float32 for bf16, fp16 and float32 inputs (in float64 for
# float64 ones), then casts back. In bf16 a table value keeps only about 3 significant digits, and
# just below 1 the bf16 values are $2^{-8} \approx 0.004$ apart, so the cosine of a slow pair's
# small angle, $\cos 0.05 = 0.99875$, would become exactly 1: no rotation at all (printed below).

# %%
#| export
"""Rotary position embeddings (RoPE) with interleaved pairs, in real arithmetic.

Defined in 02_rope. Dims ``2i`` and ``2i+1`` of every head form a 2-D pair that is rotated by the
angle ``pos * theta ** (-2i / head_dim)``: the same numbers as the original's complex-number
formulation, but with real cos/sin tables instead of complex tensors: no complex dtype, and
``torch.compile(fullgraph=True)`` captures it as one graph of ordinary float operations. Any float
input dtype; the arithmetic is float32 (float64 for float64 inputs). `interleaved_to_half_rows` and
`half_to_interleaved_rows` convert ``wq``/``wk`` rows to and from Hugging Face Llama's rotate-half
pairing (dims ``i`` and ``i + head_dim // 2``).
"""

import torch
from torch import Tensor


def precompute_rope(head_dim: int, max_seq_len: int, theta: float = 1e6) -> tuple[Tensor, Tensor]:
    """Cos and sin tables for every position and frequency. Defined in 02_rope.

    Frequency ``i`` (``0 <= i < head_dim // 2``) is ``theta ** (-2i / head_dim)``; the angle of
    position ``m`` is ``m * freq_i``. Computed in float64 for accuracy, returned as float32.
    Returns ``(cos, sin)``, each of shape ``(max_seq_len, head_dim // 2)``.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim must be even, got {head_dim}")
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    freqs = theta ** (-2.0 * i / head_dim)  # (D/2,)
    pos = torch.arange(max_seq_len, dtype=torch.float64)  # (T,)
    angles = torch.outer(pos, freqs)  # (T, D/2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate interleaved pairs ``(x[..., 2i], x[..., 2i+1])`` of ``x`` by the position's angles.

    Defined in 02_rope. ``x``: ``(B, T, H, D)``; ``cos``, ``sin``: ``(T, D // 2)``, already sliced
    to the positions of ``x`` by the caller. Computes in float32, or float64 for a float64 ``x``
    (low-precision tables would erase small rotations); returns ``x``'s dtype and shape.
    """
    B, T, H, D = x.shape
    if cos.shape != (T, D // 2) or sin.shape != (T, D // 2):
        raise ValueError(
            f"cos/sin must have shape {(T, D // 2)} for x of shape {tuple(x.shape)}, "
            f"got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    dtype = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 input
    xf = x.to(dtype).reshape(B, T, H, D // 2, 2)  # split the head dim into pairs
    x1, x2 = xf.unbind(-1)  # (B, T, H, D/2) each; unbind, not xf[..., 0]: its backward is one
    # stack, where two selects would each zero-fill a full-size gradient (40 % slower fwd+bwd)
    c = cos.to(dtype)[None, :, None, :]  # (1, T, 1, D/2), broadcast over batch and heads
    s = sin.to(dtype)[None, :, None, :]
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)  # (B, T, H, D/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, T, H, D)


# %% [markdown]
# Check against the explicit matrix, on a tensor laid out as attention uses it:
# `(B, T, H, D)` = (batch, positions, heads, head_dim).

# %%
torch.manual_seed(1)
B, T, H, D = 2, 6, 3, 8
x = torch.randn(B, T, H, D)
cos, sin = precompute_rope(D, max_seq_len=T)
print("cos/sin tables:", tuple(cos.shape), cos.dtype)
y = apply_rope(x, cos, sin)  # (B, T, H, D)
y_matrix = torch.stack([x[:, m] @ rope_matrix(m, D).T for m in range(T)], dim=1)
torch.testing.assert_close(y, y_matrix, atol=1e-5, rtol=1e-5)
torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # rotations keep lengths
print("cos(0.05) stored in bf16:", torch.tensor(math.cos(0.05)).bfloat16().item())

# %% [markdown]
# ### The original's formulation: complex numbers
#
# A 2-D rotation is a multiplication by $e^{i\alpha}$ in the complex plane. The original code
# viewed each pair as one complex number and multiplied by `torch.polar(1, angle)`. It computes the
# same numbers, and like ours it upcasts a bf16 input to float32 first, so both accept bf16. The
# difference is the complex dtype: `torch.compile`'s code generator (Inductor) generates no
# kernels for complex operations and falls back to slower eager ones, while real cos/sin tables
# need only ordinary float operations and compile as one graph (`tests/test_rope.py` checks
# `fullgraph=True`). A draft of the complex version (not
# exported) must agree with ours:


# %%
def apply_rope_complex(x: torch.Tensor, theta: float = 1e6) -> torch.Tensor:
    """Draft, original style: pairs as complex numbers times e^(i m theta_i). x: (B, T, H, D)."""
    B, T, H, D = x.shape
    freqs = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)  # (D/2,)
    angles = torch.outer(torch.arange(T).float(), freqs)  # (T, D/2)
    rot = torch.polar(torch.ones_like(angles), angles)  # (T, D/2) complex, |rot| = 1
    xc = torch.view_as_complex(x.float().reshape(B, T, H, D // 2, 2))  # (B, T, H, D/2) complex
    out = torch.view_as_real(xc * rot[None, :, None, :])  # (B, T, H, D/2, 2)
    return out.flatten(3).type_as(x)


torch.manual_seed(2)
x = torch.randn(2, 100, 4, 64)  # the original head_dim: 512 / 8
cos, sin = precompute_rope(64, 100)
torch.testing.assert_close(apply_rope(x, cos, sin), apply_rope_complex(x), atol=1e-4, rtol=1e-4)
xb = x.bfloat16()
print("bf16 in ->", apply_rope(xb, cos, sin).dtype, "out")

# %% [markdown]
# The tolerance is $10^{-4}$, not exact equality: the draft computes the angles in float32 (at
# position 99, an angle of 99 radians is only known to about $10^{-5}$), ours in float64 before
# rounding the tables to float32.
#
# ## 6. Seeing the rotation
#
# Each pair turns at its own speed. The fastest pair ($i = 0$, $\theta_0 = 1$) turns one radian per
# position and wraps around every $2\pi \approx 6.3$ tokens; the slowest barely moves over
# thousands of tokens. Below, the same vector (all ones) rotated to positions 0 to 15; each panel
# follows one of its pairs (pairs 0, 4 and 16):

# %%
D, positions = 64, torch.arange(16)
cos, sin = precompute_rope(D, 16, theta=1e6)
v = torch.ones(1, 16, 1, D)  # the same vector at every position: only the rotation differs
rv = apply_rope(v, cos, sin)[0, :, 0]  # (16, D)
fig, axes = plt.subplots(1, 3, figsize=(9, 3))
for ax, i in zip(axes, [0, 4, 16]):
    ax.plot(rv[:, 2 * i], rv[:, 2 * i + 1], "-", color="lightgray")
    ax.scatter(rv[:, 2 * i], rv[:, 2 * i + 1], c=positions, cmap="viridis", zorder=2)
    ax.set_title(f"pair {i}: $\\theta_{{{i}}}$ = {1e6 ** (-2 * i / D):.3g}")
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
fig.suptitle("three pairs at positions 0..15, rope_theta 1e6 (colour = position)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The whole table of angles at once: $\cos(m\,\theta_i)$ for every position $m$ and pair $i$.
# The top rows (fast pairs) oscillate quickly and tell neighbouring tokens apart. The bottom rows
# (slow pairs) barely move over these 256 positions: with $b = 10^6$, pairs 17 to 31 keep
# $\cos(m\,\theta_i) > 0.97$ at every position (printed below). Only over much longer spans do
# they turn far enough to encode coarse distance.

# %%
cos, sin = precompute_rope(64, 256, theta=1e6)
plt.figure(figsize=(7, 3))
plt.imshow(cos.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
plt.xlabel("position m")
plt.ylabel("pair i")
plt.title(r"$\cos(m\,\theta_i)$, head_dim 64, rope_theta 1e6")
plt.colorbar()
plt.show()
barely = (cos.min(dim=0).values > 0.97).nonzero().flatten().tolist()
print(f"pairs {barely[0]}..{barely[-1]}: cos > 0.97 at all 256 positions")

# %% [markdown]
# ## 7. Relative position, measured
#
# Place the same query $q$ and key $k$ at every position, rotate them, and compute $q_m \cdot k_n$
# for many random pairs of positions. If RoPE does its job, every score is a function of
# $m - n$ alone: plotted against $m - n$, the points fall onto one curve.

# %%
torch.manual_seed(3)
D, L = 64, 128
q, k = torch.randn(D), torch.randn(D)
cos, sin = precompute_rope(D, L, theta=1e4)
rq = apply_rope(q.expand(1, L, 1, D), cos, sin)[0, :, 0]  # (L, D): q rotated to each position
rk = apply_rope(k.expand(1, L, 1, D), cos, sin)[0, :, 0]
scores = rq @ rk.T  # (L, L): scores[m, n] = q_m . k_n
m, n = torch.randint(0, L, (2, 600))
diagonals = [torch.diagonal(scores, -r) for r in range(-(L - 1), L)]  # all 255 values of m - n
spread = max((d.max() - d.min()).item() for d in diagonals)
assert spread < 1e-4
print(f"scores along each of the {len(diagonals)} diagonals m - n = const agree to within 1e-4")

# %% [markdown]
# The spread is rounding noise. On the left, 600 random pairs $(m, n)$ all sit on the gray curve
# $f(m - n)$, which shows no clear decay with distance. On the right, the same computation with
# $q = k$ (all ones): the score is largest at distance 0 and, with wiggles, falls as the tokens
# get further apart. This is the "long-term decay" of RoFormer, and it needs care: what they prove
# is that an *upper bound* on the score decays with distance, not that every score does. Equal,
# constant vectors show the effect; random ones (left) show no clear decay, and whether a trained
# model's q and k make use of it is an empirical question.

# %%
ones = torch.ones(1, L, 1, D)
r1 = apply_rope(ones, cos, sin)[0, :, 0]
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
r = torch.arange(-(L - 1), L)
curve = torch.stack([torch.diagonal(scores, -int(d))[0] for d in r])  # f(m - n)
axes[0].plot(r, curve, color="lightgray", lw=1)
axes[0].scatter(m - n, scores[m, n], s=6)
axes[0].set_xlabel("m - n")
axes[0].set_ylabel("q_m . k_n")
axes[0].set_title("random q, k: one curve f(m - n)")
axes[1].plot(torch.arange(L), (r1[0] @ r1.T) / D)
axes[1].set_xlabel("distance |m - n|")
axes[1].set_ylabel("q_m . k_n / D")
axes[1].set_title("q = k = ones: falls with distance")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. Interleaved or rotate-half: which dimensions form a pair?
#
# Nothing forces the pairs to be $(2i, 2i+1)$. Hugging Face's `LlamaForCausalLM` pairs dimension $i$
# with $i + D/2$: it splits the head into two halves and rotates them against each other
# ("rotate_half"). With the same frequencies this is **the same rotation on permuted coordinates**:
# reorder the dimensions as $(0, 2, 4, \dots, 1, 3, 5, \dots)$ and interleaved pairs become
# half-split pairs.


# %%
def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Draft, Hugging Face layout: pair (i, i + D/2). x: (B, T, H, D); cos, sin: (T, D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, T, H, D/2) each
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).type_as(x)


torch.manual_seed(4)
D = 8
x = torch.randn(1, 5, 2, D)
cos, sin = precompute_rope(D, 5)
perm = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])  # interleaved -> halves
print("perm:", perm.tolist())
assert not torch.allclose(apply_rope_half(x, cos, sin), apply_rope(x, cos, sin))
torch.testing.assert_close(
    apply_rope_half(x[..., perm], cos, sin), apply_rope(x, cos, sin)[..., perm]
)

# %% [markdown]
# A dot product does not care in which order the dimensions are listed, so scores are unchanged if
# *both* q and k use the permuted order. q and k come from `wq` and `wk`, so permuting the **rows**
# of `wq` (within each head) and of `wk` (within each kv head) turns our model into an exact
# Hugging Face model. `wv`, `wo` and everything else stay as they are. Both directions are
# exported, for any head size: `interleaved_to_half_rows` for an export to Hugging Face,
# `half_to_interleaved_rows` to import a Hugging Face checkpoint back.


# %%
#| export
def _half_order(head_dim: int, device=None) -> Tensor:
    """Row order 0, 2, 4, ..., 1, 3, 5, ...: interleaved pairs -> rotate-half pairs."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)]).to(device)


def _split_heads(w: Tensor, n_heads: int) -> Tensor:
    """View the rows of a ``(n_heads * head_dim, ...)`` weight as ``(n_heads, head_dim, ...)``."""
    rows = w.shape[0]
    if n_heads < 1 or rows % n_heads or (rows // n_heads) % 2:
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of an even head_dim")
    return w.reshape(n_heads, rows // n_heads, *w.shape[1:])


def interleaved_to_half_rows(w: Tensor, n_heads: int) -> Tensor:
    """Reorder a q or k projection's rows from interleaved to rotate-half RoPE pairs.

    Defined in 02_rope. ``w``: ``(n_heads * head_dim, dim)``, the ``wq`` weight (pass
    ``n_heads``) or the ``wk`` weight (pass ``n_kv_heads``). Within each head, row ``2i`` moves to
    ``i`` and row ``2i + 1`` to ``head_dim // 2 + i``. Attention with `apply_rope` and ``w`` gives
    the same scores as Hugging Face Llama's ``rotate_half`` RoPE with the result. Returns a copy.
    """
    heads = _split_heads(w, n_heads)  # (n_heads, head_dim, dim)
    return heads[:, _half_order(heads.shape[1], w.device)].reshape(w.shape)


def half_to_interleaved_rows(w: Tensor, n_heads: int) -> Tensor:
    """Inverse of `interleaved_to_half_rows`: rotate-half rows back to interleaved pairs.

    Defined in 02_rope. For importing a Hugging Face Llama ``q_proj`` (pass ``n_heads``) or
    ``k_proj`` (pass ``n_kv_heads``) weight of shape ``(n_heads * head_dim, dim)``. Returns a copy.
    """
    heads = _split_heads(w, n_heads)  # (n_heads, head_dim, dim)
    return heads[:, torch.argsort(_half_order(heads.shape[1], w.device))].reshape(w.shape)


# %% [markdown]
# Checked with grouped-query attention (chapter 03): 4 query heads share 2 key heads, so `wq` is
# permuted per query head and `wk` per kv head.

# %%
torch.manual_seed(5)
C, H, KV, D, T = 16, 4, 2, 8, 5  # dim, n_heads, n_kv_heads, head_dim, positions
wq, wk = torch.randn(H * D, C), torch.randn(KV * D, C)
x = torch.randn(1, T, C)
cos, sin = precompute_rope(D, T)


def head_scores(wq, wk, rope):
    q = rope((x @ wq.T).view(1, T, H, D), cos, sin)  # (1, T, H, D)
    k = rope((x @ wk.T).view(1, T, KV, D), cos, sin)  # (1, T, KV, D)
    k = k.repeat_interleave(H // KV, dim=2)  # (1, T, H, D): kv head j serves query heads 2j, 2j+1
    return torch.einsum("bthd,bshd->bhts", q, k)  # (1, H, T, T)


wq_hf, wk_hf = interleaved_to_half_rows(wq, H), interleaved_to_half_rows(wk, KV)
torch.testing.assert_close(
    head_scores(wq_hf, wk_hf, apply_rope_half), head_scores(wq, wk, apply_rope)
)
assert torch.equal(half_to_interleaved_rows(wq_hf, H), wq)  # and back, exactly
assert torch.equal(half_to_interleaved_rows(wk_hf, KV), wk)
print("same attention scores with permuted wq/wk rows and rotate-half RoPE")

# %% [markdown]
# ## 9. `rope_theta` and longer contexts
#
# Pair $i$ completes a full turn every $\lambda_i = 2\pi / \theta_i = 2\pi \, b^{2i/D}$ tokens
# ($b$ = `rope_theta`): its **wavelength**. The fast pairs wrap around after a few tokens and
# tell neighbours apart; the slow pairs turn so little that they act as a coarse "how far" signal.
#
# Pairs whose wavelength is longer than the training context never complete a turn during
# training, so beyond the trained length they reach angles the model has never seen. That is one
# main reason why a model trained on 512 tokens degrades on 1024 unless it is fine-tuned there
# (chapter 07) or its angles are rescaled: position interpolation (exercise 4), NTK-aware
# scaling or YaRN. `rope_theta` decides how many pairs are in that regime and how slowly they
# turn. The original uses $b = 10^6$ (as Qwen2 does), a hundred times RoFormer's $10^4$: more pairs
# are slow, and they change very little across the whole context. A larger base alone does not
# make a model extrapolate: the pairs it slows down still reach unseen angles past the trained
# length. Combined with training or fine-tuning at the longer length it does help: Xiong et al.
# (2023, "Effective Long-Context Scaling of Foundation Models") raise Llama 2's base from $10^4$
# to $5 \cdot 10^5$ ("adjusted base frequency") while continuing pretraining on long sequences.
# Which base is best is still studied empirically; the plot shows the quantity that matters, the
# wavelengths against the context lengths.

# %%
D, i = 64, torch.arange(32)
plt.figure(figsize=(6, 3))
for base in (1e4, 1e6):
    lam = 2 * math.pi * base ** (2 * i / D)  # wavelength: tokens per full turn of pair i
    long = int((lam > 1024).sum())
    print(f"rope_theta={base:.0e}: {long} of 32 pairs never complete a turn within 1024 tokens")
    plt.semilogy(i, lam, "o-", ms=3, label=f"rope_theta = {base:.0e}")
for ctx in (512, 1024):
    plt.axhline(ctx, color="gray", ls="--", lw=1)
plt.xlabel("pair i")
plt.ylabel("wavelength (tokens)")
plt.title("wavelengths, head_dim 64 (dashed: 512 and 1024 tokens)")
plt.legend()
plt.show()

# %% [markdown]
# ## 10. Explore: position and `rope_theta`
#
# Each arrow is one of the 32 pairs of a head (colour = pair index, fast = dark) rotated to
# position `m`. Move the sliders in a live notebook: small positions barely move the slow pairs;
# a smaller `rope_theta` makes every pair turn faster except pair 0, whose frequency is
# $\theta_0 = b^0 = 1$ whatever the base.


# %%
def plot_pair_angles(ax, position: int, log10_theta: float, D: int = 64) -> None:
    """Draw the D/2 unit vectors of one head's pairs at `position` on a polar axis."""
    freqs = (10.0**log10_theta) ** (-2 * torch.arange(D // 2) / D)
    angles = (position * freqs) % (2 * math.pi)
    colours = plt.cm.viridis(torch.linspace(0, 1, D // 2).numpy())
    for a, col in zip(angles.tolist(), colours):
        ax.annotate(
            "", xy=(a, 1.0), xytext=(0, 0), arrowprops={"color": col, "width": 0.5, "headwidth": 4}
        )
    ax.set_ylim(0, 1.1)
    ax.set_yticks([])
    ax.set_title(f"m = {position}, rope_theta = 1e{log10_theta:g}", fontsize=10)


def show_pairs(position: int = 10, log10_theta: float = 6.0) -> None:
    fig = plt.figure(figsize=(3.2, 3.2))
    plot_pair_angles(fig.add_subplot(projection="polar"), position, log10_theta)
    plt.show()


# %% [markdown]
# :::{admonition} Live only in a notebook
# :class: widget-note
# The sliders move the arrows only in a running notebook (JupyterLab). On a static page
# they keep their saved state; the figure after them shows the same view for four positions.
# :::

# %%
# NBVAL_IGNORE_OUTPUT
ui = widgets.interactive(
    show_pairs,
    position=widgets.IntSlider(value=10, min=0, max=2048),
    log10_theta=widgets.FloatSlider(value=6.0, min=3.0, max=7.0, step=0.5),
)
display(ui)
assert [c.description for c in ui.children[:2]] == ["position", "log10_theta"]

# %% [markdown]
# The same view, static, for a few positions at `rope_theta = 1e6`:

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 3), subplot_kw={"projection": "polar"})
for ax, position in zip(axes, [0, 1, 10, 1000]):
    plot_pair_angles(ax, position, 6.0)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Putting it together
#
# The exported functions, imported back from the package as chapter 03 will use them: one table
# for the whole model, sliced to the positions of the current tokens (here positions 100..109, as
# during generation with a cache), applied to queries and keys of shape `(B, T, H, D)`.

# %%
from spongebob.rope import (
    apply_rope,
    half_to_interleaved_rows,
    interleaved_to_half_rows,
    precompute_rope,
)

torch.manual_seed(6)
cos, sin = precompute_rope(head_dim=64, max_seq_len=1024, theta=1e6)  # once per model
q = torch.randn(2, 10, 8, 64, dtype=torch.bfloat16)  # (B, T, H, D)
start = 100
q_rot = apply_rope(q, cos[start : start + 10], sin[start : start + 10])
print(tuple(q_rot.shape), q_rot.dtype)
want = apply_rope_complex(torch.cat([torch.zeros(2, start, 8, 64), q.float()], 1))[:, start:]
torch.testing.assert_close(q_rot.float(), want, atol=3e-2, rtol=2e-2)  # bf16 rounding

wq = torch.randn(8 * 64, 512)  # the original's wq: n_heads 8, head_dim 64, dim 512
assert torch.equal(half_to_interleaved_rows(interleaved_to_half_rows(wq, 8), 8), wq)

# %% [markdown]
# ## Summary
#
# - Attention by itself is permutation-equivariant: without position information, word order is
#   invisible to it.
# - Sinusoidal embeddings add absolute positions to the input; RoPE instead **rotates** q and k, so
#   that $q_m \cdot k_n$ depends only on the relative position $m - n$.
# - RoPE rotates $D/2$ pairs of dimensions at geometrically spaced frequencies
#   $b^{-2i/D}$ ($b$ = `rope_theta`); it keeps vector lengths and adds no parameters.
# - Interleaved pairs (the original, complex-number style) and rotate-half pairs (Hugging Face)
#   differ by a fixed permutation of each head's dimensions: an export permutes rows of `wq` (per
#   head) and `wk` (per kv head), nothing else.
# - `rope_theta` sets the wavelengths. A larger base slows the slow pairs further; combined with
#   training or fine-tuning at the longer length it helps long contexts (Xiong et al. 2023,
#   adjusted base frequency), but on its own it does not make a model extrapolate.
#
# | exported to `spongebob.rope` | what it does |
# |---|---|
# | `precompute_rope(head_dim, max_seq_len, theta=1e6)` | cos and sin tables, `(max_seq_len, head_dim // 2)`, float32 |
# | `apply_rope(x, cos, sin)` | rotates the interleaved pairs of `x` `(B, T, H, D)`; any float dtype |
# | `interleaved_to_half_rows(w, n_heads)` | `wq`/`wk` rows to Hugging Face's rotate-half layout |
# | `half_to_interleaved_rows(w, n_heads)` | and back, to import a Hugging Face checkpoint |
#
# Next: [03 · Attention](03_attention.ipynb) uses these tables inside multi-head attention.

# %% [markdown]
# ## Predict, then verify
#
# **A.** Put a query at position 5 and a key at position 2. Now move both 100 positions later.
# Does the score $q \cdot k$ after RoPE change? And if only the key moves?

# %%
from spongebob.rope import apply_rope, precompute_rope

torch.manual_seed(0)
q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
cos, sin = precompute_rope(16, 256, theta=1e4)


def score(m: int, n: int) -> float:
    qm = apply_rope(q, cos[m : m + 1], sin[m : m + 1])
    kn = apply_rope(k, cos[n : n + 1], sin[n : n + 1])
    return (qm * kn).sum().item()


print(f"(5, 2): {score(5, 2):.4f}   (105, 102): {score(105, 102):.4f}")
print(f"(5, 102): {score(5, 102):.4f}")


# %% [markdown]
# ## Exercises
#
# Edit the stub, run its check cell. Solutions: `solutions/02_rope_solutions.ipynb`.
#
# **Exercise 1 (easy).** Write `wavelength(i, head_dim, theta)`: the number of tokens after which
# pair `i` has turned a full circle (`theta` is the base $b$, `rope_theta`).


# %%
def wavelength(i: int, head_dim: int, theta: float) -> float:
    raise NotImplementedError


# %%
try:
    got = [wavelength(i, 64, 1e6) for i in (0, 16, 31)]
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    for i, lam in zip((0, 16, 31), got):
        angle = lam * 1e6 ** (-2 * i / 64)  # how far pair i turns over lam tokens
        assert math.isclose(angle, 2 * math.pi, rel_tol=1e-9), (
            f"Exercise 1: pair {i} turns {angle:.3f} rad over {lam:.1f} tokens, not 2π. "
            "Hint: pair i turns by θ_i = theta ** (-2 * i / head_dim) per token"
        )
    print("Exercise 1: correct")

# %% [markdown]
# **Exercise 2 (medium).** Rotate-half RoPE without new trigonometry: write
# `apply_rope_half_via_perm(x, cos, sin)` that returns the same as the draft `apply_rope_half` of
# section 8, for any even head_dim, using only `apply_rope` and reorderings of the last dimension.
# (Section 8 showed that the order $(0, 2, 4, \dots, 1, 3, 5, \dots)$ turns interleaved pairs
# into half-split pairs; you will need its inverse too.)


# %%
def apply_rope_half_via_perm(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError


# %%
try:
    torch.manual_seed(7)
    x = torch.randn(2, 6, 3, 16)  # (B, T, H, D) with head_dim 16
    cos, sin = precompute_rope(16, 6)
    got = apply_rope_half_via_perm(x, cos, sin)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    torch.testing.assert_close(
        got,
        apply_rope_half(x, cos, sin),
        msg=lambda m: (
            f"Exercise 2: {m}\nHint: reorder x's last dimension with the inverse of "
            "(0, 2, 4, ..., 1, 3, 5, ...) (argsort gives it), apply_rope, then reorder back"
        ),
    )
    print("Exercise 2: correct")

# %% [markdown]
# **Exercise 3 (medium).** Check relative-position invariance at distances far beyond the
# examples above: write `score_at(q, k, m, n)` that rotates the vectors `q` and `k` (shape `(D,)`) to
# positions `m` and `n` with `apply_rope` (rope_theta 1e6) and returns their dot product.


# %%
def score_at(q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> float:
    raise NotImplementedError


# %%
try:
    torch.manual_seed(8)
    q, k = torch.randn(32), torch.randn(32)
    pairs = [(5, 2), (105, 102), (900, 897)]
    got = [score_at(q, k, m, n) for m, n in pairs]
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    assert max(got) - min(got) < 1e-3, (
        f"Exercise 3: scores differ across equal distances: {got}. Hint: rotate q by position m "
        "and k by position n (rows m and n of the tables), each as a (1, 1, 1, D) tensor"
    )
    assert abs(score_at(q, k, 5, 2) - score_at(q, k, 2, 5)) > 1e-4, (
        "Exercise 3: m - n and n - m should give different scores. Hint: are q and k rotated "
        "by different positions?"
    )
    print("Exercise 3: correct")

# %% [markdown]
# **Exercise 4 (hard).** *Position interpolation* (Chen et al. 2023) extends a model trained on
# `L` tokens to `scale * L` tokens by dividing every position by `scale`, so that no angle exceeds
# the trained range. Write `precompute_rope_interpolated(head_dim, max_seq_len, theta, scale)`
# returning float32 `(cos, sin)` like `precompute_rope`, for fractional positions `m / scale`.
# Computing the angles in float64, as `precompute_rope` does, matches it to about $10^{-7}$; the
# check accepts float32 angles too (to $10^{-4}$).


# %%
def precompute_rope_interpolated(
    head_dim: int, max_seq_len: int, theta: float = 1e6, scale: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    raise NotImplementedError


# %%
try:
    cos_i, sin_i = precompute_rope_interpolated(64, 2048, 1e6, scale=2.0)
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    cos, sin = precompute_rope(64, 1024, 1e6)
    assert cos_i.shape == (2048, 32) and cos_i.dtype == torch.float32, (
        f"Exercise 4: got {tuple(cos_i.shape)} {cos_i.dtype}, want (2048, 32) torch.float32"
    )
    hint = "Hint: the angles are outer(positions / scale, inv_freq), positions 0 .. max_seq_len - 1"
    tol = {"atol": 1e-4, "rtol": 1e-4, "msg": lambda m: f"Exercise 4: {m}\n{hint}"}
    torch.testing.assert_close(cos_i[::2], cos, **tol)  # position 2m now looks like position m
    torch.testing.assert_close(sin_i[::2], sin, **tol)  # (float32 angles, 4e-5 off, pass too)
    torch.testing.assert_close(cos_i[1, 0], torch.tensor(math.cos(0.5)), **tol)
    print("Exercise 4: correct")
