# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The model: from blocks to a chat-ready decoder
#
# **Assemble the whole SpongeBob language model from the pieces of chapters 02 and 03, count what
# it costs, load checkpoints safely, and make it talk: greedy decoding, sampling and a KV cache.**
#
# Runs in about 1 minute on a laptop CPU. Prerequisites: [02 · RoPE](02_rope.ipynb) (rotary
# position tables), [03 · Attention](03_attention.ipynb) (GQA attention and the `KVCache`) and
# [01 · Tokenizer](01_tokenizer.ipynb) (for the last section).
#
# What you will build:
#
# 1. `ModelConfig`: the hyper-parameters, with the original's names, validation and presets;
# 2. `RMSNorm`, the SwiGLU `FeedForward`, the pre-norm `Block` and the full `SpongeBob` model with
#    tied embeddings, a careful initialisation and a masked cross-entropy loss;
# 3. parameter and FLOP counts that reproduce the original's 28,975,616 and 25,829,888;
# 4. `load_checkpoint` (module `spongebob.checkpoint`): loading a downloaded file without letting
#    it run code;
# 5. `generate`: greedy decoding, temperature, top-k, top-p, a repetition penalty that is correct
#    for negative logits, a preallocated KV cache, batches with left padding, and streaming.
#
# ![The model: token ids, embeddings, n_layers pre-norm blocks (attention and SwiGLU, each with RMSNorm and a residual), final norm, tied output head, logits](../book/figures/model_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 把前几章的部件组装成完整的 Llama 风格解码器：RMSNorm、SwiGLU 前馈网络、预归一化（pre-norm）模块、绑定的词嵌入与输出层、初始化，以及与原项目一致的参数量（28,975,616）和 FLOPs 计算。然后安全地加载检查点（`weights_only=True`，严格检查键名），并实现文本生成：贪心、温度、top-k、top-p、正确的重复惩罚、流式输出、KV 缓存和批量生成。导出模块：`spongebob.config`、`spongebob.model`、`spongebob.checkpoint`、`spongebob.generate`。
# :::

# %% [markdown]
# ## Setup
#
# Components from earlier chapters are imported, never redefined: `precompute_rope` (chapter 02),
# `Attention` and `KVCache` (chapter 03) and `StreamDecoder` (chapter 01) are imported by the
# exported cells that use them, exactly as the package modules import them; the course tokenizer
# is needed at the end.
#
# **If you edit an exported cell.** The cells marked `#| export` are copied into the `spongebob`
# package only by `make export`; until then, `from spongebob... import` keeps the old code. To
# re-export and reload from here, run `!cd .. && python tools/nbexport.py`, then restart the kernel
# (Kernel → Restart), or use `%load_ext autoreload` and `%autoreload 2` once at the top.

# %%
#| default_exp model

# %%
import copy
import pickle
import time
from dataclasses import FrozenInstanceError, replace

import matplotlib.pyplot as plt
import torch

from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.world import course_tokenizer

seed_everything(1337)

# %% tags=["remove-cell"]
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__)
assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA enable_gqa

# %% [markdown]
# ## 1. The configuration
#
# Every size in the model comes from one small dataclass. Its field names and defaults are the
# original project's, so a configuration written for it means the same thing here. One field needs
# a word: `hidden_dim=None` asks for the feed-forward width to be derived. A classic MLP widens
# `dim` four times; SwiGLU (section 3) has *three* weight matrices instead of two, so the width is
# cut to two thirds of `4 * dim` to keep the parameter count, then rounded up to a multiple of
# `multiple_of` (64) so that matrix shapes suit the hardware:
# $\text{hidden} = 64 \cdot \lceil (2 \cdot 4 \cdot 512 / 3) / 64 \rceil = 64 \cdot 22 = 1408$.

# %%
#| export: config
"""The model's hyper-parameters: one dataclass with the original's field names, and presets.

Defined in 04_model. ``ModelConfig()`` is the original project's model (28,975,616 parameters);
``ModelConfig.preset("tiny")`` is the course's CPU model. A config round-trips through a plain dict
(``to_dict`` / ``from_dict``) so that checkpoints can store it.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

_POSITIVE_INTS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the SpongeBob decoder. Defined in 04_model.

    Names and defaults are the original's. ``hidden_dim=None`` derives the SwiGLU width as
    ``multiple_of * ceil((2 * 4 * dim / 3) / multiple_of)`` (1408 for ``dim=512``); read the value
    in use from ``ffn_hidden_dim``. An invalid combination raises ``ValueError`` naming the fields.
    Frozen: validated once, never changed afterwards (assignment raises
    ``dataclasses.FrozenInstanceError``); derive a variant with ``dataclasses.replace(cfg, ...)``,
    which validates the new config.
    """

    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 8
    vocab_size: int = 6400
    hidden_dim: int | None = None
    multiple_of: int = 64
    norm_eps: float = 1e-5
    max_seq_len: int = 1024
    rope_theta: float = 1e6
    dropout: float = 0.0

    def __post_init__(self) -> None:
        errors = config_problems(self)
        if errors:
            raise ValueError("invalid ModelConfig: " + "; ".join(errors) + "; fix these fields")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``dim // n_heads``."""
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """The feed-forward width in use: ``hidden_dim``, or the 2/3 * 4 * dim rule rounded up."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        # Exact integer ceil. It equals the original's int(8 * dim / 3) rounded up to a multiple of
        # multiple_of whenever multiple_of is a multiple of 8 (as 64 is).
        return self.multiple_of * -(-8 * self.dim // (3 * self.multiple_of))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named configuration from ``PRESETS`` (``"tiny"``, ``"seed"``, ``"seed-gqa"``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of ints, floats and None: safe to store in a ``weights_only`` checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        """Rebuild from ``to_dict()``; unknown keys are an error, missing keys take defaults."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(
                f"unknown ModelConfig field(s) {unknown}; remove them (known fields: {known})"
            )
        return cls(**d)


# %% [markdown]
# Validation turns a silent shape error deep inside attention into a sentence at construction
# time: the heads must split `dim` evenly, query heads must split into groups of key/value heads
# (GQA, chapter 03), and a head must have an even width because RoPE rotates pairs of dimensions.
# The dataclass is **frozen**: validated once, a config cannot be changed afterwards (a model
# built from it, or a checkpoint that stored it, would silently disagree with it). A variant is a
# new, validated config: `dataclasses.replace(cfg, max_seq_len=512)`.


# %%
#| export: config
def config_problems(cfg: ModelConfig) -> list[str]:
    """Every reason why ``cfg`` cannot build a model, as readable sentences. Defined in 04_model."""
    bad = []
    for name in (*_POSITIVE_INTS, "max_seq_len"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            bad.append(f"{name} must be a positive int, got {value!r}")
    if bad:  # the checks below divide by these fields
        return bad
    if cfg.dim % cfg.n_heads:
        bad.append(f"dim={cfg.dim} must be divisible by n_heads={cfg.n_heads}")
    elif cfg.head_dim % 2:
        bad.append(f"head_dim = dim / n_heads = {cfg.head_dim} must be even (RoPE rotates pairs)")
    if cfg.n_heads % cfg.n_kv_heads:
        bad.append(f"n_heads={cfg.n_heads} must be divisible by n_kv_heads={cfg.n_kv_heads} (GQA)")
    hd = cfg.hidden_dim
    if hd is not None and (isinstance(hd, bool) or not isinstance(hd, int) or hd < 1):
        bad.append(f"hidden_dim must be None or a positive int, got {hd!r}")
    if not cfg.norm_eps > 0:
        bad.append(f"norm_eps must be > 0, got {cfg.norm_eps!r}")
    if not cfg.rope_theta > 0:
        bad.append(f"rope_theta must be > 0, got {cfg.rope_theta!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        bad.append(f"dropout must be in [0, 1), got {cfg.dropout!r}")
    return bad


# %%
cfg = ModelConfig()
print(cfg)
print("head_dim", cfg.head_dim, "| ffn_hidden_dim", cfg.ffn_hidden_dim)
assert cfg.ffn_hidden_dim == 1408
try:
    ModelConfig(dim=500, n_kv_heads=3)
except ValueError as e:
    print(e)

# %% [markdown]
# ### Presets
#
# Two presets cover the course. **`seed`** is the original model (the dataclass defaults, 28.98 M
# parameters; `seed-gqa` is its 25.83 M grouped-query variant with `n_kv_heads=2`). It needs a GPU
# to train in reasonable time. **`tiny`** is what every chapter trains on a laptop CPU:
#
# | field | tiny | why |
# |---|---|---|
# | `vocab_size` | 2048 | the course tokenizer of chapter 01 has 2048 tokens |
# | `dim`, `n_heads` | 128, 4 | 4 heads of width 32 (seed: 8 of 64); 16 RoPE pairs per head still span wavelengths from 6 to millions of positions |
# | `n_kv_heads` | 2 | exercises the GQA path of chapter 03 and halves the KV cache |
# | `n_layers` | 4 | depth matters for composing facts; 4 layers keep a step well under a second |
# | `max_seq_len` | 1024 | the long-context SFT of chapter 07 (512 → 1024) must fit |
#
# That is about 1.05 M parameters and, at 256 positions, about 7.9 MFLOP per trained token
# (section 7: $6N = 6.3$ M for the weights, plus attention): a batch of 16 × 256 tokens is roughly
# 32 GFLOP, a fraction of a second on two laptop cores.

# %%
#| export: config
PRESETS: dict[str, dict[str, Any]] = {
    # The course's CPU model: vocab of the course tokenizer, 4 layers of width 128, GQA 4:2.
    "tiny": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048, max_seq_len=1024),
    # The original model: the dataclass defaults (28,975,616 parameters).
    "seed": {},
    # The original's grouped-query variant (MiniMind2-Small): 25,829,888 parameters.
    "seed-gqa": dict(n_kv_heads=2),
}

# %%
tiny = ModelConfig.preset("tiny")
print(tiny)
assert ModelConfig.from_dict(tiny.to_dict()) == tiny
try:
    tiny.max_seq_len = 512
except FrozenInstanceError as e:
    print("FrozenInstanceError:", e)
assert replace(tiny, max_seq_len=512).max_seq_len == 512 and tiny.max_seq_len == 1024
assert ModelConfig.preset("seed") == ModelConfig()
assert ModelConfig.preset("seed-gqa").n_kv_heads == 2

# %% [markdown]
# ## 2. RMSNorm
#
# Deep networks train badly when the scale of their activations drifts from layer to layer.
# LayerNorm fixes the scale by subtracting the mean and dividing by the standard deviation of each
# token's vector. RMSNorm (Zhang & Sennrich, 2019) keeps only the division, by the root mean square:
#
# $$\text{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac{1}{C}\sum_{i=1}^{C} x_i^2 + \varepsilon}} \odot g$$
#
# with a learned gain $g$ initialised to ones. It is cheaper (no mean, no bias) and works as well.
# Two details matter in practice: the sum of squares is computed in **float32** even when the model
# runs in bf16 (squares of bf16 values lose digits quickly), and the result is cast back to the
# input's dtype *before* the gain is applied. First the formula, written out by hand:


# %%
def rmsnorm_by_hand(x, weight, eps=1e-5):
    rms = (x.float() ** 2).mean(dim=-1, keepdim=True).add(eps).sqrt()  # (B, T, 1)
    return (x.float() / rms).to(x.dtype) * weight


torch.manual_seed(0)
x = 3.0 * torch.randn(2, 5, 8) + 1.0  # (B, T, C) with a scale far from 1
y = rmsnorm_by_hand(x, torch.ones(8))
print("rms before:", [round(v, 2) for v in x.pow(2).mean(-1).sqrt()[0, :3].tolist()])
print("rms after: ", [round(v, 3) for v in y.pow(2).mean(-1).sqrt()[0, :3].tolist()])

# %% [markdown]
# The exported module opens `spongebob/model.py`. PyTorch ships the same computation as
# `F.rms_norm` (one fused kernel instead of four passes over memory); we call it on the float32
# copy, which keeps the numerics above.

# %%
#| export
"""The SpongeBob decoder: RMSNorm, SwiGLU, pre-norm blocks, tied embeddings, a KV-cache factory.

Defined in 04_model. A Llama-style decoder whose state-dict keys are exactly the original project's,
so a released checkpoint (a bare ``torch.save(model.state_dict())``) loads with ``strict=True``
(``spongebob.checkpoint.load_checkpoint``)::

    model = SpongeBob(ModelConfig.preset("tiny"))
    out = model(input_ids, targets)          # out.logits (B, T, vocab_size), out.loss (scalar)

Attention, RoPE and the KV cache come from ``spongebob.attention`` and ``spongebob.rope``. The
attention mask is built once per forward (none on the training path, so that SDPA's
``is_causal`` keeps FlashAttention usable on a GPU); KV caches are allocated in the compute dtype.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spongebob.attention import Attention, KVCache, build_attn_mask
from spongebob.config import ModelConfig
from spongebob.rope import precompute_rope


class RMSNorm(nn.Module):
    """Root-mean-square normalisation over the last dimension. Defined in 04_model.

    ``x / sqrt(mean(x**2) + eps)`` computed in float32, cast back to ``x``'s dtype, times a learned
    ``weight`` initialised to ones. Shape-preserving: ``(..., dim) -> (..., dim)``.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # float32 statistics
        return normed.type_as(x) * self.weight


# %%
norm = RMSNorm(8)
torch.testing.assert_close(norm(x), rmsnorm_by_hand(x, norm.weight))
norm_bf16, xb = RMSNorm(8).to(torch.bfloat16), x.to(torch.bfloat16)  # a model cast to bf16
assert norm_bf16(xb).dtype == torch.bfloat16  # statistics in float32, result in bf16
torch.testing.assert_close(
    norm_bf16(xb).float(), rmsnorm_by_hand(x, norm.weight), atol=0.05, rtol=0.02
)
rms_out = norm(x).pow(2).mean(-1).sqrt()  # RMS of each output row: 1 (the gain is still 1)
print("RMS of each output row:", [round(r, 3) for r in rms_out.flatten().tolist()])

# %% [markdown]
# ## 3. The SwiGLU feed-forward
#
# After attention has mixed information *between* positions, the feed-forward network transforms
# each position on its own. Llama-style models use a **gated** MLP (Shazeer, 2020):
#
# $$\text{FFN}(x) = W_2\big(\operatorname{silu}(W_1 x) \odot W_3 x\big),\qquad
#   \operatorname{silu}(z) = z\,\sigma(z)$$
#
# One projection ($W_1$, through SiLU) decides *how much* of the other ($W_3$) passes, feature by
# feature; $W_2$ projects back to `dim`. SiLU is a smooth ReLU that lets small negative values
# through, so a negative input still passes a (small) gradient instead of exactly zero:

# %%
z = torch.linspace(-5, 5, 201)
fig, ax = plt.subplots(figsize=(4.5, 2.6), dpi=90)
ax.plot(z, F.relu(z), label="relu(z)", ls="--")
ax.plot(z, F.silu(z), label="silu(z) = z·σ(z)")
ax.axhline(0, color="grey", lw=0.5)
ax.set_xlabel("z")
ax.legend()
ax.set_title("SiLU: a smooth ReLU")
plt.show()
print("min of silu:", round(F.silu(z).min().item(), 3))


# %%
#| export
class FeedForward(nn.Module):
    """SwiGLU MLP ``w2(silu(w1(x)) * w3(x))``, no biases. Defined in 04_model.

    ``(B, T, dim) -> (B, T, dim)`` through a hidden width ``hidden_dim``; ``w1`` is the gate,
    ``w3`` the value, ``w2`` the projection back (names as in the original's state dict).
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))  # (B, T, dim)


# %%
ff = FeedForward(8, 24)
h = torch.randn(2, 5, 8)
expected = ff.w2.weight @ (F.silu(ff.w1.weight @ h[0, 0]) * (ff.w3.weight @ h[0, 0]))
torch.testing.assert_close(ff(h)[0, 0], expected)
print(ff(h).shape)

# %% [markdown]
# ## 4. The pre-norm block
#
# A block is attention followed by the feed-forward, each wrapped in a **residual** connection.
# *Where* the norm goes matters. The original Transformer normalised after adding (post-norm);
# GPT-2 and Llama normalise the *input* of each sub-layer and add its output to an untouched
# residual stream:
#
# $$h = x + \text{Attention}(\text{RMSNorm}(x)), \qquad \text{out} = h + \text{FFN}(\text{RMSNorm}(h))$$
#
# The residual path from the embeddings to the last layer is then a plain sum, so gradients reach
# every layer undiminished, and deep stacks train stably with much less dependence on a careful
# learning-rate warmup than post-norm ones (Xiong et al., 2020).


# %%
#| export
class Block(nn.Module):
    """One pre-norm decoder layer: attention then SwiGLU, each on a residual. Defined in 04_model.

    ``h = x + attention(attention_norm(x)); out = h + feed_forward(ffn_norm(h))``. Submodule names
    are the original's state-dict keys. Shapes: ``(B, T, dim) -> (B, T, dim)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.attention = Attention(c.dim, c.n_heads, c.n_kv_heads, c.dropout)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c.dim, c.ffn_hidden_dim, c.dropout)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None = None,
        start_pos: int = 0,
        mask: Tensor | None = None,
    ) -> Tensor:
        """``mask``: the complete attention mask shared by all layers (``build_attn_mask``)."""
        h = x + self.attention(self.attention_norm(x), cos, sin, cache, start_pos, mask)
        return h + self.feed_forward(self.ffn_norm(h))  # (B, T, dim)


# %%
torch.manual_seed(0)
block = Block(tiny)
cos, sin = precompute_rope(tiny.head_dim, 16, tiny.rope_theta)
x = torch.randn(2, 16, tiny.dim)  # (B, T, C)
print(block(x, cos, sin).shape)
# Causality: changing the last token must not change the outputs at earlier positions.
x2 = x.clone()
x2[:, -1] += 1.0
torch.testing.assert_close(block(x2, cos, sin)[:, :-1], block(x, cos, sin)[:, :-1])

# %% [markdown]
# ## 5. The full model
#
# The model is an embedding table, `n_layers` blocks, a final RMSNorm and an output projection back
# to the vocabulary. Three decisions deserve a sentence each.
#
# * **Tied embeddings.** The output head `output.weight` *is* `tok_embeddings.weight`: one
#   `vocab_size × dim` matrix (3.3 M numbers in the seed model, 11 % of it) used to read tokens in
#   and to score them on the way out. It saves parameters and ties the meaning of "token $i$" on
#   both ends. `state_dict()` still lists *both* names, pointing at the same tensor, which is
#   exactly what the original's released checkpoints contain, so they load with `strict=True`.
# * **RoPE tables as non-persistent buffers.** `cos` and `sin` move with `model.to(device)` but
#   are not saved (they are recomputed from the config) and stay float32 even if the weights are
#   cast to bf16: bf16 keeps 8 significant bits, so every rounded entry of the tables (all in
#   $[-1, 1]$) would move by up to $2^{-9} \approx 0.2\,\%$, for no gain (the tables are tiny).
#   The check below measures it.
# * **A small, named return type.** `forward` returns `ModelOutput(logits, loss)`; `loss` is
#   `None` without targets. Targets are already shifted: `targets[b, t]` is the token that should
#   follow `input_ids[b, t]`, and `-100` marks positions that do not count (padding, prompts).
#
# The loss is its own function, so that later chapters (distillation's weighted loss) can reuse it.

# %%
#| export
IGNORE_INDEX = -100  # target value of positions that carry no loss


def lm_loss(logits: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean next-token cross-entropy over positions whose target is not ``-100``.

    Defined in 04_model.

    ``logits``: ``(B, T, V)``; ``targets``: ``(B, T)`` int64; ``weights``: optional ``(B, T)`` float
    per-token weights (distillation). Returns the scalar ``sum(w * ce) / sum(w)`` over counted
    positions (``w = 1`` without weights), computed in float32; 0 if no position counts.
    """
    ce = F.cross_entropy(
        logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B*T,), 0 at ignored positions
    w = (targets.flatten() != IGNORE_INDEX).float()
    if weights is not None:
        w = w * weights.flatten().float()
    return (ce * w).sum() / w.sum().clamp_min(1e-12)


class ModelOutput(NamedTuple):
    """What ``SpongeBob.forward`` returns. Defined in 04_model.

    ``logits``: ``(B, T, vocab_size)`` (``(B, 1, vocab_size)`` with ``last_only=True``);
    ``loss``: scalar tensor, or ``None`` when no targets were given.
    """

    logits: Tensor
    loss: Tensor | None = None


# %%
torch.manual_seed(0)
logits = torch.randn(1, 4, 10)  # (B, T, V)
targets = torch.tensor([[3, -100, 7, -100]])  # two positions carry no loss
kept = F.cross_entropy(logits[0, [0, 2]], targets[0, [0, 2]])
torch.testing.assert_close(lm_loss(logits, targets), kept)
w = torch.tensor([[1.0, 5.0, 3.0, 5.0]])  # weights on ignored positions must not matter
by_hand = (
    3.0 * F.cross_entropy(logits[0, 2:3], targets[0, 2:3])
    + F.cross_entropy(logits[0, :1], targets[0, :1])
) / 4.0
torch.testing.assert_close(lm_loss(logits, targets, w), by_hand)
print("loss over kept positions:", round(lm_loss(logits, targets).item(), 4))

# %% [markdown]
# ### Initialisation
#
# PyTorch's default initialisers were designed for other networks: `nn.Embedding` draws from
# $\mathcal N(0, 1)$, which, tied to the output head, gives initial logits with a standard
# deviation of about $\sqrt{\text{dim}}$ (23 for the seed model): confidently wrong predictions.
# We follow GPT-2: every matrix from $\mathcal N(0, 0.02^2)$, norm gains at one, and the two
# projections that *write into* the residual stream (`attention.wo` and `feed_forward.w2`) scaled
# down by $1/\sqrt{2\,n_\text{layers}}$.
# Why: the residual stream ends as the sum of the embeddings and $2 n_\text{layers}$ contributions
# (one per sub-layer). Thanks to the pre-norms, each contribution has about the same size whatever
# the stream's; with roughly independent contributions their variances add, so unscaled, the final
# stream's standard deviation grows like $\sqrt{2 n_\text{layers}}$ with the depth of the model.
# Dividing each contribution's standard deviation by $\sqrt{2 n_\text{layers}}$ keeps their summed
# variance the same for any depth. The stream still grows from block to block *inside* a model; what
# the scaling buys is a **final** scale roughly independent of the number of layers. Section 6
# measures both.

# %%
#| export
RESIDUAL_PROJECTIONS = ("attention.wo.weight", "feed_forward.w2.weight")


def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """GPT-2 style initialisation of a ``SpongeBob`` in place. Defined in 04_model.

    Norm gains = 1; every other matrix ~ N(0, std^2), except the residual projections ``wo`` and
    ``w2``, which get ``std / sqrt(2 * n_layers)`` so that the residual stream's final scale is
    roughly independent of the number of layers (it still grows from block to block). The tied
    embedding/output matrix is one parameter, initialised once.
    """
    n_layers = len(model.layers)
    for name, p in model.named_parameters():  # tied weights appear once
        if name.endswith("norm.weight"):
            nn.init.ones_(p)
        elif name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * n_layers))
        else:
            nn.init.normal_(p, mean=0.0, std=std)


# %% [markdown]
# ### The model class, step by step
#
# The model class gathers many small decisions, so we build it in steps, each an unexported class
# that runs, marking what a step adds with `# New:`. Step 1 is the bare recipe: embeddings, the
# blocks, a final norm and an output head, with the RoPE tables computed once for every position.


# %%
class SpongeBobStep1(nn.Module):
    """Skeleton step 1 (not exported): embeddings -> blocks -> norm -> output head."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.cos, self.sin = precompute_rope(config.head_dim, config.max_seq_len, config.rope_theta)

    def forward(self, input_ids):  # (B, T) token ids
        T = input_ids.shape[1]
        h = self.tok_embeddings(input_ids)  # (B, T, C)
        for layer in self.layers:
            h = layer(h, self.cos[:T], self.sin[:T])  # (B, T, C)
        return self.output(self.norm(h))  # (B, T, V)


# %%
torch.manual_seed(0)
step1 = SpongeBobStep1(tiny)
ids = torch.randint(0, tiny.vocab_size, (2, 16))  # (B, T)
print("ids", tuple(ids.shape), "-> logits", tuple(step1(ids).shape))
n1 = sum(p.numel() for p in step1.parameters())
print(f"{n1:,} parameters, {tiny.vocab_size * tiny.dim:,} of them in the output head")

# %% [markdown]
# Step 2 adds the three decisions of this section and the initialisation: the output head *is*
# the embedding table (tied), the RoPE tables become non-persistent buffers, the weights get the
# GPT-2 initialisation, and `forward` computes the loss when given targets and returns a
# `ModelOutput`.


# %%
class SpongeBobStep2(nn.Module):
    """Skeleton step 2 (not exported): tied head, RoPE buffers, init, loss."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.output.weight = self.tok_embeddings.weight  # New: tied, one tensor, two names
        cos, sin = precompute_rope(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)  # New: moves with .to(), not saved
        self.register_buffer("sin", sin, persistent=False)  # New
        init_weights(self)  # New: std 0.02, residual projections scaled down

    def forward(self, input_ids, targets=None):  # New: targets (B, T), already shifted
        T = input_ids.shape[1]
        h = self.tok_embeddings(input_ids)  # (B, T, C)
        for layer in self.layers:
            h = layer(h, self.cos[:T], self.sin[:T])  # (B, T, C)
        logits = self.output(self.norm(h))  # (B, T, V)
        loss = None if targets is None else lm_loss(logits, targets)  # New
        return ModelOutput(logits, loss)  # New: a named pair


# %%
seed_everything(1337)
step2 = SpongeBobStep2(tiny)
n2 = sum(p.numel() for p in step2.parameters())  # a tied tensor counts once
out2 = step2(ids[:, :-1], ids[:, 1:])
print(f"{n2:,} parameters ({n1 - n2:,} saved by tying) | initial loss {out2.loss.item():.2f}")
print(
    f"ln(vocab_size) = {math.log(tiny.vocab_size):.2f} | cos saved: {'cos' in step2.state_dict()}"
)
assert step2.output.weight is step2.tok_embeddings.weight and n1 - n2 == tiny.vocab_size * tiny.dim

# %% [markdown]
# Step 3 adds generation's needs (section 12 uses them): one chapter-03 `KVCache` per layer,
# `start_pos` to pick the RoPE rows of the new positions, a padding mask combined with causality
# **once** by chapter 03's `build_attn_mask` and handed to every layer, and `last_only`, which
# runs the output head on the last position only.


# %%
class SpongeBobStep3(SpongeBobStep2):
    """Skeleton step 3 (not exported): KV caches, start_pos, a shared mask, last_only."""

    def make_caches(self, batch_size, max_len):  # New: one KVCache per layer
        c = self.config
        return [KVCache(batch_size, max_len, c.n_kv_heads, c.head_dim) for _ in self.layers]

    def forward(self, ids, targets=None, caches=None, start_pos=0, attn_mask=None, last_only=False):
        B, T = ids.shape
        S = start_pos + T if caches is not None else T  # New: keys each query may look at
        mask = build_attn_mask(T, S, attn_mask, ids.device)  # New: once for all layers
        h = self.tok_embeddings(ids)  # (B, T, C)
        cos, sin = self.cos[start_pos : start_pos + T], self.sin[start_pos : start_pos + T]  # New
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]  # New
            h = layer(h, cos, sin, cache, start_pos, mask)  # (B, T, C)
        h = self.norm(h)
        h = h[:, -1:] if last_only else h  # New: (B, 1, C), all that generation needs
        logits = self.output(h)  # (B, T, V)
        return ModelOutput(logits, None if targets is None else lm_loss(logits, targets))


# %%
step3 = SpongeBobStep3(tiny)
step3.load_state_dict(step2.state_dict())
with torch.no_grad():
    full = step3(ids).logits  # (B, 16, V)
    caches = step3.make_caches(batch_size=2, max_len=16)
    parts = [step3(ids[:, :12], caches=caches, last_only=True).logits]  # prefill
    parts += [step3(ids[:, t : t + 1], caches=caches, start_pos=t).logits for t in range(12, 15)]
torch.testing.assert_close(torch.cat(parts, dim=1), full[:, 11:15], atol=1e-5, rtol=1e-4)
print("prefill + 3 cached steps:", [tuple(p.shape) for p in parts])

# %% [markdown]
# ### The finished class
#
# `SpongeBob` is step 3 plus what makes it robust:
#
# * **clear errors** for positions beyond the RoPE tables (`max_seq_len`), for targets with
#   `last_only` (no logits to score) and for a list of caches that does not match the layers;
# * **caches in the compute dtype**: `make_caches` allocates them in the dtype the keys and values
#   will be computed in, bf16 under `torch.autocast(..., dtype=torch.bfloat16)` or for a bf16
#   model, not blindly the weights' dtype (a float32 cache under autocast would double its memory
#   and cast every step), and checks `max_len` against the context;
# * **RoPE tables kept in float32** when the model is cast (`_apply`, which `.to()`,
#   `.bfloat16()` and friends call), for the reason given at the start of this section;
# * embedding **dropout** (off by default, as in the original) and per-token **loss weights**
#   (`loss_weights`, used by distillation in chapter 08).
#
# As in step 3, the mask is built **once** per forward and handed to every layer; on the training
# path there is none, so SDPA gets `is_causal=True` (see chapter 03's table of kernels).


# %%
#| export
class SpongeBob(nn.Module):
    """The SpongeBob decoder-only language model. Defined in 04_model.

    State-dict keys are the original's: ``tok_embeddings``, ``layers.{i}.attention.{wq,wk,wv,wo}``,
    ``layers.{i}.{attention_norm,ffn_norm}``, ``layers.{i}.feed_forward.{w1,w2,w3}``, ``norm``,
    ``output`` (tied: the same tensor as ``tok_embeddings.weight``). The RoPE tables ``cos``,
    ``sin`` ``(max_seq_len, head_dim // 2)`` are non-persistent float32 buffers.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.output.weight = self.tok_embeddings.weight  # tied: one tensor, two names
        cos, sin = precompute_rope(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("cos", cos, persistent=False)  # (max_seq_len, head_dim // 2)
        self.register_buffer("sin", sin, persistent=False)
        init_weights(self)

    def _apply(self, fn, recurse=True):  # runs on .to(), .cuda(), .half(), .bfloat16(), ...
        super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32:  # a dtype cast must not round the RoPE angles
            c = self.config
            cos, sin = precompute_rope(c.head_dim, c.max_seq_len, c.rope_theta)
            self.cos, self.sin = cos.to(self.cos.device), sin.to(self.sin.device)
        return self

    def make_caches(self, batch_size: int, max_len: int | None = None, dtype=None, device=None):
        """One preallocated ``KVCache`` per layer, for up to ``max_len`` positions (default all).

        ``dtype`` defaults to the compute dtype of keys and values: autocast's dtype when autocast
        is on for the weights' device type (call this inside the same ``torch.autocast`` as the
        forward passes), else the weights' dtype. ``device`` defaults to the weights' device.
        """
        c, w = self.config, self.tok_embeddings.weight
        max_len = c.max_seq_len if max_len is None else max_len
        if not 0 < max_len <= c.max_seq_len:
            raise ValueError(
                f"max_len={max_len} must be in 1..max_seq_len={c.max_seq_len}: the cache holds "
                "prompt + new tokens, which must fit the model's context"
            )
        device = w.device if device is None else torch.device(device)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else w.dtype
        return [
            KVCache(batch_size, max_len, c.n_kv_heads, c.head_dim, dtype, device)
            for _ in self.layers
        ]

    def forward(
        self,
        input_ids: Tensor,
        targets: Tensor | None = None,
        *,
        loss_weights: Tensor | None = None,
        caches: list[KVCache] | None = None,
        start_pos: int = 0,
        attn_mask: Tensor | None = None,
        last_only: bool = False,
    ) -> ModelOutput:
        """Logits for ``input_ids`` ``(B, T)`` at positions ``start_pos .. start_pos + T - 1``.

        ``targets`` ``(B, T)`` (already shifted; ``-100`` = no loss) and optional ``loss_weights``
        give ``loss = lm_loss(logits, targets, loss_weights)``. ``caches`` (from ``make_caches``)
        hold earlier positions' keys and values; ``attn_mask`` (bool, broadcastable to
        ``(B, 1, T, S)`` with ``S = start_pos + T`` keys with caches, else ``T``; True = may
        attend) hides padding keys. It is combined with causality once, for all layers; without it
        (training) the layers pass no mask to SDPA at all.
        """
        B, T = input_ids.shape
        if start_pos + T > self.config.max_seq_len:
            raise ValueError(
                f"positions {start_pos}..{start_pos + T - 1} exceed max_seq_len="
                f"{self.config.max_seq_len}; shorten input_ids (or start_pos) to fit the context"
            )
        if targets is not None and last_only:
            raise ValueError("last_only=True computes no logits for the loss; drop targets")
        if caches is not None and len(caches) != len(self.layers):
            raise ValueError(
                f"caches has {len(caches)} entries for {len(self.layers)} layers; "
                "build them with model.make_caches(batch_size, max_len)"
            )
        S = start_pos + T if caches is not None else T  # keys each query may look at
        mask = build_attn_mask(T, S, attn_mask, input_ids.device)  # once; None when training
        h = self.dropout(self.tok_embeddings(input_ids))  # (B, T, C)
        cos, sin = self.cos[start_pos : start_pos + T], self.sin[start_pos : start_pos + T]
        for i, layer in enumerate(self.layers):
            cache = None if caches is None else caches[i]
            h = layer(h, cos, sin, cache, start_pos, mask)  # (B, T, C)
        h = self.norm(h)
        if last_only:
            h = h[:, -1:]  # (B, 1, C)
        logits = self.output(h)  # (B, T, V)
        loss = None if targets is None else lm_loss(logits, targets, loss_weights)
        return ModelOutput(logits, loss)


# %% [markdown]
# Two checks carry most of the weight: the state-dict keys are *exactly* the original's list from
# SEED.md (so a released checkpoint loads with `strict=True`), and the output head is the embedding
# table itself, not a copy.


# %%
def seed_keys(n_layers):
    keys = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    for i in range(n_layers):
        keys |= {f"layers.{i}.attention.{m}.weight" for m in ("wq", "wk", "wv", "wo")}
        keys |= {f"layers.{i}.feed_forward.{m}.weight" for m in ("w1", "w2", "w3")}
        keys |= {f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"}
    return keys


seed_everything(1337)
seed_model = SpongeBob(ModelConfig())
sd = seed_model.state_dict()
assert set(sd) == seed_keys(8), set(sd) ^ seed_keys(8)
assert seed_model.output.weight is seed_model.tok_embeddings.weight
assert sd["output.weight"].data_ptr() == sd["tok_embeddings.weight"].data_ptr()
assert "cos" not in sd and seed_model.cos.shape == (1024, 32)
print(len(sd), "state-dict keys, e.g.", sorted(sd)[:3])

# %% [markdown]
# A forward pass on random tokens: the shapes, and the initial loss. A model that knows nothing
# should spread its probability evenly, giving a loss of $\ln(\text{vocab\_size})$; a much larger
# value would mean over-confident random predictions (the symptom of a bad initialisation).

# %%
# The module cell of section 2 imported `ModelConfig` from the package (the exported copy of
# section 1); configs built from now on are instances of that class.
tiny = ModelConfig.preset("tiny")
seed_everything(1337)
model = SpongeBob(tiny)
ids = torch.randint(0, tiny.vocab_size, (2, 64))  # (B, T)
out = model(ids[:, :-1], ids[:, 1:])
print(
    "logits",
    tuple(out.logits.shape),
    "| loss",
    round(out.loss.item(), 2),
    "| ln(vocab)",
    round(math.log(tiny.vocab_size), 2),
)
assert abs(out.loss.item() - math.log(tiny.vocab_size)) < 0.1
half = copy.deepcopy(model).to(torch.bfloat16)  # .to() converts in place: cast a copy
assert half.cos.dtype == torch.float32 and half.norm.weight.dtype == torch.bfloat16
assert model.norm.weight.dtype == torch.float32
moved = (model.cos.bfloat16().float() - model.cos).abs().max().item()
print(f"bf16 would move the RoPE tables by up to {moved:.4f} (2^-9 = {2**-9:.4f})")
assert moved <= 2**-9

# %% [markdown]
# ## 6. Initialisation, measured
#
# We feed random tokens through the seed model and record the standard deviation of the residual
# stream after every block, once with the scaled residual projections and once with every matrix at
# std 0.02. Then the initial loss of a tied embedding left at `nn.Embedding`'s default N(0, 1).


# %%
def residual_stds(m, ids):
    h = m.tok_embeddings(ids)
    cos, sin = m.cos[: ids.shape[1]], m.sin[: ids.shape[1]]
    stds = [h.std().item()]
    for layer in m.layers:
        h = layer(h, cos, sin)
        stds.append(h.std().item())
    return stds


seed_everything(0)
ids = torch.randint(0, 6400, (2, 128))
with torch.no_grad():
    scaled = residual_stds(seed_model, ids)
    for name, p in seed_model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            p.normal_(0.0, 0.02)  # the same matrices, unscaled
    unscaled = residual_stds(seed_model, ids)
print("final residual std  scaled:", round(scaled[-1], 4), " unscaled:", round(unscaled[-1], 4))
assert unscaled[-1] > 1.2 * scaled[-1]

# %%
fig, ax = plt.subplots(figsize=(5, 2.8), dpi=90)
ax.plot(scaled, marker="o", label="wo, w2 scaled by 1/sqrt(2 n_layers)")
ax.plot(unscaled, marker="s", label="every matrix std 0.02")
ax.set_xlabel("after block (0 = embeddings)")
ax.set_ylabel("std of the residual stream")
ax.legend(fontsize=8)
ax.set_title("seed model at initialisation")
plt.show()

# %% [markdown]
# Both curves grow block by block. The scaling is about depth: it keeps the *final* scale of the
# stream roughly the same whatever the number of layers. The same measurement at the seed model's
# sizes with 8 and with 32 layers: with the scaling, four times the depth multiplies the final
# standard deviation by only 1.14; without it, by 2.28, roughly the doubling ($\sqrt{4}$) that four
# times as many equal contributions would give.


# %%
def final_std(n_layers, scaled):
    seed_everything(0)
    m = SpongeBob(ModelConfig(n_layers=n_layers))
    with torch.no_grad():
        if not scaled:
            for name, p in m.named_parameters():
                if name.endswith(RESIDUAL_PROJECTIONS):
                    p.normal_(0.0, 0.02)
        return residual_stds(m, torch.randint(0, 6400, (2, 128)))[-1]


depth = {s: [final_std(n, s) for n in (8, 32)] for s in (True, False)}  # {scaled: [8, 32]}
for s, (d8, d32) in depth.items():
    name = "scaled  " if s else "unscaled"
    print(f"{name} final std: 8 layers {d8:.3f}, 32 layers {d32:.3f} (x{d32 / d8:.2f})")
assert 0.8 < depth[True][1] / depth[True][0] < 1.25
assert depth[False][1] / depth[False][0] > 1.7

# %%
seed_everything(1337)
default = SpongeBob(tiny)
torch.nn.init.normal_(default.tok_embeddings.weight, 0.0, 1.0)  # nn.Embedding's own default
with torch.no_grad():
    ids = torch.randint(0, tiny.vocab_size, (2, 64))
    loss_default = default(ids[:, :-1], ids[:, 1:]).loss.item()
print(
    "initial loss, N(0, 1) tied embedding:",
    round(loss_default),
    "| ours:",
    round(out.loss.item(), 2),
)
assert loss_default > 3 * math.log(tiny.vocab_size)

# %% [markdown]
# ## 7. Counting parameters and FLOPs
#
# `model.parameters()` yields a shared tensor once, so the tied embedding/output matrix is counted
# once, as it should be. Per layer, attention has $2\,C^2 + 2\,C \cdot n_\text{kv}\,d_\text{head}$
# weights (wq and wo are $C \times C$, wk and wv shrink with GQA), the SwiGLU $3\,C\,H$, and the two
# norms $2C$. Add the $V \times C$ embedding and the final norm.


# %%
#| export
def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters; a tied tensor counts once. Defined in 04_model."""
    return sum(p.numel() for p in model.parameters())  # parameters() yields shared tensors once


def flops_per_token(config: ModelConfig, seq_len: int, training: bool = True) -> int:
    """Approximate floating-point operations to process one token of a ``seq_len`` sequence.

    Defined in 04_model. Every weight in a matrix product costs 2 FLOPs per token forward (the tied
    output head counts once; the embedding lookup and norms are free), and attention's scores and
    weighted sum cost ``4 * n_layers * dim * seq_len`` (all ``seq_len`` keys, the usual convention;
    a causal kernel can skip half). Training (forward + backward) costs 3x the forward pass:
    ``6 N + 12 n_layers dim seq_len``.
    """
    c = config
    kv_dim = c.n_kv_heads * c.head_dim
    per_layer = 2 * c.dim * c.dim + 2 * c.dim * kv_dim + 3 * c.dim * c.ffn_hidden_dim
    n_matmul = c.n_layers * per_layer + c.vocab_size * c.dim
    forward = 2 * n_matmul + 4 * c.n_layers * c.dim * seq_len
    return 3 * forward if training else forward


# %%
def breakdown(model):
    groups = {}
    for name, p in model.named_parameters():
        part = name.split(".")[-2] if name.startswith("layers.") else name.split(".")[0]
        part = "norms" if part.endswith("norm") else part
        groups[part] = groups.get(part, 0) + p.numel()
    return groups


seed_everything(1337)
gqa_model = SpongeBob(ModelConfig.preset("seed-gqa"))
rows = {
    "seed (n_kv_heads=8)": breakdown(seed_model),
    "seed-gqa (n_kv_heads=2)": breakdown(gqa_model),
}
print(f"{'part':<16}" + "".join(f"{k:>26}" for k in rows))
for part in rows["seed (n_kv_heads=8)"]:
    print(f"{part:<16}" + "".join(f"{r[part]:>26,}" for r in rows.values()))
print(f"{'total':<16}" + "".join(f"{sum(r.values()):>26,}" for r in rows.values()))
for name, g in rows.items():
    total = sum(g.values())
    ffn, attn = (sum(g[p] for p in ps) for ps in (("w1", "w2", "w3"), ("wq", "wk", "wv", "wo")))
    share = f"feed-forward {ffn / total:.0%}, attention {attn / total:.0%}"
    print(f"{name}: {share}, tied embedding {g['tok_embeddings'] / total:.0%}")
assert count_parameters(seed_model) == 28_975_616
assert count_parameters(gqa_model) == 25_829_888

# %%
fig, ax = plt.subplots(figsize=(6, 2.8), dpi=90)
names = list(rows)
left = [0, 0]
for part in rows[names[0]]:
    vals = [rows[n][part] / 1e6 for n in names]
    ax.barh(names, vals, left=left, label=part)
    left = [a + b for a, b in zip(left, vals)]
ax.set_xlabel("parameters (millions)")
ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
ax.set_title("where the parameters are")
plt.show()

# %% [markdown]
# The feed-forward matrices hold 60 % of the seed model, attention 29 % (20 % with GQA) and the
# tied embedding 11 %. The norms are a rounding error.
#
# **FLOPs.** A forward pass multiplies every weight by an activation and adds: 2 FLOPs per weight
# and token. The backward pass costs twice that (gradients for the activations *and* for the
# weights), so training costs about $6N$ per token, plus the attention term, which grows with the
# context length. This is how one predicts a training run's duration before starting it.

# %%
seed_cfg = ModelConfig()
for name, c, T in [("seed", seed_cfg, 512), ("seed", seed_cfg, 1024), ("tiny", tiny, 256)]:
    f = flops_per_token(c, T)
    n = count_parameters(SpongeBob(c)) if name == "tiny" else 28_975_616
    share = 12 * c.n_layers * c.dim * T / f
    print(
        f"{name:<5} T={T:<5} {f / 1e6:8.1f} MFLOP/token trained  (6N = {6 * n / 1e6:6.1f} M, "
        f"attention {share:.0%})"
    )
tokens_per_s = 1e12 / flops_per_token(seed_cfg, 512)
print(f"at a sustained 1 TFLOP/s the seed model trains on {tokens_per_s:,.0f} tokens/s")

# %% [markdown]
# ## 8. Loading checkpoints safely
#
# A checkpoint is a pickle file, and unpickling can call *any* Python function the file names. The
# original loads downloaded checkpoints with plain `torch.load` (SEED.md defect 8), and with
# `strict=False` (defect 7), so a file saved from a different configuration silently leaves part of
# the model random. Here is the danger, made harmless: an object whose unpickling calls `print`
# (it could as well call `os.system`).


# %%
class Surprise:
    def __reduce__(self):  # tells pickle: "to rebuild me, call print(...)"
        return (print, ("!!! this line ran while the checkpoint was being loaded !!!",))


folder = artifacts_dir("04_model")
torch.save({"model": model.state_dict(), "note": Surprise()}, folder / "surprise.pth")
_ = torch.load(folder / "surprise.pth", weights_only=False)  # the unsafe way: code runs
try:
    torch.load(folder / "surprise.pth", weights_only=True)  # the safe way: refused
except pickle.UnpicklingError:
    print("weights_only=True refused it (pickle.UnpicklingError)")
else:
    raise AssertionError("weights_only=True loaded a file that calls print")

# %% [markdown]
# `load_checkpoint` always loads with `weights_only=True` onto the CPU, accepts the original's
# release format (a bare state dict) and the course's own (a dict whose `"model"` entry is the state
# dict, next to e.g. `"config"` and `"step"`), and compares keys and shapes *before* loading, so the
# error names every missing, unexpected and mis-shaped key and the file. Reading and writing
# checkpoints is its own module, `spongebob.checkpoint` (chapter 06 adds saving and resuming to it);
# its first cell imports the model from the package, so from here on `SpongeBob` is the package's
# class (the same code as the cells above).


# %%
#| export: checkpoint
"""Checkpoints: read them safely, check them against the model, and build models from them.

Defined in 04_model. Every file is read with ``torch.load(weights_only=True)``, so a checkpoint
cannot run code; keys and shapes are compared before anything is loaded, and errors name the file
and every mismatch::

    model = load_model("ckpt.pth")                 # config from the file's "config" entry
    extras = load_checkpoint(model, "pretrain.pth")  # into an existing model; returns "step", ...
"""

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spongebob.config import ModelConfig
from spongebob.model import SpongeBob


class CheckpointError(ValueError):
    """A checkpoint that cannot (or must not) be loaded; the message says why.

    Defined in 04_model.
    """


def _listing(title: str, items: list[str], limit: int = 8) -> str:
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def _unwrap(sd: dict[str, Any]) -> dict[str, Any]:
    """Drop the key prefix of a ``torch.compile`` (``_orig_mod.``) or DDP (``module.``) wrapper."""
    for prefix in ("_orig_mod.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


# %%
#| export: checkpoint
def load_state_dict_checked(
    model: nn.Module, state_dict: Mapping[str, Any], source: str = "state dict"
) -> None:
    """Load ``state_dict`` into ``model`` with ``strict=True``, after checking it.

    Defined in 04_model.

    Raises ``CheckpointError`` naming ``source`` and every missing, unexpected and mis-shaped key
    (with both shapes), and a tied output head whose stored copy differs from the embedding.
    Prefixes left by ``torch.compile`` or DDP wrappers are removed first.
    """
    sd = _unwrap(dict(state_dict))
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    bad = []
    for k, want in expected.items():
        got = sd.get(k)
        if got is not None and not isinstance(got, Tensor):
            bad.append(f"{k} is a {type(got).__name__}, not a tensor")
        elif got is not None and got.shape != want.shape:
            bad.append(f"{k} {tuple(got.shape)} in the file vs {tuple(want.shape)} in the model")
    emb, out = sd.get("tok_embeddings.weight"), sd.get("output.weight")
    tied = getattr(getattr(model, "output", None), "weight", 0) is getattr(
        getattr(model, "tok_embeddings", None), "weight", 1
    )
    if tied and not bad and emb is not None and out is not None and not torch.equal(emb, out):
        bad.append("output.weight differs from tok_embeddings.weight, but this model ties them")
    if missing or unexpected or bad:
        config = getattr(model, "config", None)
        raise CheckpointError(
            f"cannot load {source} into {type(model).__name__}"
            + (f" ({config})" if config is not None else "")
            + _listing("missing keys", missing)
            + _listing("unexpected keys", unexpected)
            + _listing("mis-shaped keys", bad)
            + "\n  Was it saved from a model with another configuration?"
        )
    model.load_state_dict(sd, strict=True)


# %%
#| export: checkpoint
def read_checkpoint(path: str | Path, key: str = "model") -> tuple[dict[str, Tensor], dict]:
    """Read a checkpoint file safely: ``(state_dict, other_entries)``. Defined in 04_model.

    Uses ``torch.load(weights_only=True, map_location="cpu")``, so a file holding arbitrary Python
    objects is refused instead of executed (SEED.md defect 8). Accepts a bare state dict (the
    original's release format; ``other_entries`` is then empty) or a dict with a ``key`` entry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # permissions and the like: the usual exceptions, naming the file
        raise
    except Exception as e:  # the unpickler raises many types on a corrupt or foreign file
        if not (isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower()):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e!r})") from e
        raise CheckpointError(
            f"{path}: refused: it holds Python objects other than tensors and plain containers, "
            "and unpickling those can run arbitrary code (torch.load(weights_only=True)). "
            f"Only a trusted file may be loaded otherwise. Detail: {str(e).splitlines()[0]}"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        return dict(obj[key]), {k: v for k, v in obj.items() if k != key}
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj), {}
    found = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{path}: neither a state dict (name -> tensor) nor a dict with a {key!r} entry "
        f"(found {found}); pass key= to name the entry that holds the weights"
    )


# %% [markdown]
# Two entry points on top: load into an existing model, or build the model from the file.


# %%
#| export: checkpoint
def load_checkpoint(model: nn.Module, path: str | Path, key: str = "model") -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` (strict, checked); return the file's other
    entries (e.g. ``"config"``, ``"step"``; empty for a bare state dict). Defined in 04_model."""
    state, extras = read_checkpoint(path, key)
    load_state_dict_checked(model, state, source=str(path))
    return extras


def load_model(path: str | Path, config: ModelConfig | None = None) -> SpongeBob:
    """Build a ``SpongeBob`` from a checkpoint, on the CPU. Defined in 04_model.

    The configuration comes from ``config`` or else from the file's ``"config"`` entry (a dict from
    ``ModelConfig.to_dict()``); a bare state dict (the original's releases) needs ``config``.
    """
    state, extras = read_checkpoint(path)
    if config is None:
        if "config" not in extras:
            raise CheckpointError(
                f"{path}: a bare state dict carries no configuration; pass config=, e.g. "
                "ModelConfig.preset('seed') for the original's releases"
            )
        try:
            config = ModelConfig.from_dict(extras["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its 'config' entry is not a valid config: {e}") from e
    model = SpongeBob(config)
    load_state_dict_checked(model, state, source=str(path))
    return model


# %% [markdown]
# The original's release format, a bare `torch.save(model.state_dict())`, loads strictly into a
# fresh model; the course's format carries the configuration with it.


# %%
def short(e):  # messages name the file; hide this machine's folder
    return str(e).replace(str(folder), "<artifacts>")


torch.save(model.state_dict(), folder / "bare.pth")
fresh = SpongeBob(tiny)
assert load_checkpoint(fresh, folder / "bare.pth") == {}
torch.testing.assert_close(fresh.state_dict(), model.state_dict())
torch.save({"model": model.state_dict(), "config": tiny.to_dict(), "step": 0}, folder / "ckpt.pth")
again = load_model(folder / "ckpt.pth")
assert again.config == tiny and torch.equal(again.norm.weight, model.norm.weight)
try:
    load_checkpoint(model, folder / "surprise.pth")
except CheckpointError as e:
    print(short(e)[:150], "...")

# %% [markdown]
# And a file from a different configuration (here: 4 key/value heads instead of 2, and 3 layers)
# is refused with a precise list, instead of being half-loaded:

# %%
other = SpongeBob(ModelConfig.preset("tiny", n_kv_heads=4, n_layers=3))
torch.save(other.state_dict(), folder / "other.pth")
try:
    load_checkpoint(model, folder / "other.pth")
except CheckpointError as e:
    print(short(e))

# %% [markdown]
# ## 9. Generating text: greedy decoding, the naive way
#
# The model scores every possible next token; generating text is a loop that picks one, appends it
# and asks again. **Greedy** decoding always picks the highest score. The naive loop below feeds the
# *whole* sequence through the model at every step; section 12 removes that waste.


# %%
@torch.no_grad()
def greedy_naive(model, ids, max_new_tokens):
    for _ in range(max_new_tokens):
        logits = model(ids).logits[:, -1]  # (B, V): scores for the token after the last one
        nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        ids = torch.cat([ids, nxt], dim=1)  # (B, T + 1)
    return ids[:, -max_new_tokens:]


model.eval()
seed_everything(1337)
prompt = torch.randint(3, tiny.vocab_size, (1, 8))
print("prompt:", prompt[0].tolist())
print("greedy:", greedy_naive(model, prompt, 12)[0].tolist())

# %% [markdown]
# The freshly initialised model repeats the last prompt token forever. That is the tied
# embeddings at work: with small random weights, the blocks barely change the residual stream, so
# the final hidden state is still close to the last token's own embedding, and the output head
# (the same matrix) scores that token highest. Training breaks this echo. To watch decoding do
# something less monotonous, the rest of the chapter also uses a `lively` random model, whose
# weights are drawn with std 0.1: still nonsense, but varied nonsense.

# %%
seed_everything(1337)
lively = SpongeBob(tiny).eval()
init_weights(lively, std=0.1)
naive_ids = greedy_naive(lively, prompt, 12)
print("greedy:", naive_ids[0].tolist())

# %% [markdown]
# Even a trained model, decoded greedily, tends to fall into loops; chat models therefore *sample*.
#
# ## 10. Sampling: temperature, top-k and top-p
#
# Softmax turns logits $z$ into probabilities; **temperature** $\tau$ divides the logits first:
# $p_i \propto \exp(z_i / \tau)$. Below 1 it sharpens the distribution (at $\tau \to 0$ it becomes
# greedy, which is what `temperature=0` means here); above 1 it flattens it.

# %%
z = torch.tensor([3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0])  # hand-made logits
fig, axes = plt.subplots(1, 3, figsize=(8, 2.3), dpi=90, sharey=True)
for ax, tau in zip(axes, (0.5, 1.0, 2.0)):
    p = (z / tau).softmax(-1)
    ax.bar(range(len(z)), p)
    ax.set_title(f"temperature {tau}: p(most likely) = {p[0]:.2f}", fontsize=9)
    ax.set_xlabel("token (by logit)")
axes[0].set_ylabel("probability")
plt.show()
print([round((z / tau).softmax(-1)[0].item(), 3) for tau in (0.5, 1.0, 2.0)])

# %% [markdown]
# Sampling from the full distribution occasionally picks one of the thousands of tokens in the
# long tail, and one bad token derails the rest of the text. Two filters cut the tail:
#
# * **top-k** keeps the $k$ highest-scoring tokens;
# * **top-p** (nucleus sampling, Holtzman et al. 2019) keeps the smallest set of most likely
#   tokens whose probabilities add up to at least $p$: few tokens when the model is sure, many when
#   it is not. The tokens are sorted by probability (equal ones in token-id order), and a token is
#   dropped when the tokens ranked *before it* already reach $p$, so the most likely token always
#   survives, and of several equally likely tokens only as many as needed are kept.
#
# The filters set the removed logits to $-\infty$; softmax gives them probability zero. The
# order is: repetition penalty (section 11), temperature, top-k, top-p, then sampling. This cell
# opens `spongebob/generate.py`.

# %%
#| export: generate
"""Text generation: greedy and sampled decoding with a preallocated KV cache, batches, streaming.

Defined in 04_model. ``generate`` returns only the NEW token ids of every prompt, as a list of lists
(each ending with the eos id when one was produced); ``stream_generate`` yields the ids of one
prompt
as they are produced, and ``stream_text`` turns them into text without splitting a UTF-8 character::

    new_ids = generate(model, prompts, max_new_tokens=64, temperature=0, eos_token_id=tok.eos_id)
    for piece in stream_text(model, tok, ids, 64, **CHAT_SAMPLING, seed=0): print(piece, end="")

Sampling is reproducible with ``seed=`` (or a ``torch.Generator``). A model in training mode is
switched to eval mode (no dropout) while it generates, and every module's mode is restored after.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral

import torch
from torch import Tensor

from spongebob.tokenizer import StreamDecoder

CHAT_SAMPLING = {"temperature": 0.85, "top_p": 0.85, "repetition_penalty": 1.3}  # the original's


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 or None = off), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (None or 1 = off), got {top_p}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set the logits of tokens outside the top-k / top-p set to -inf. Defined in 04_model.

    ``logits``: ``(B, V)``. ``top_k``: keep the k largest (ties with the k-th are kept; ``None``
    or 0 = off). ``top_p`` in (0, 1]: keep the most likely tokens until their probability reaches
    ``top_p``. Tokens are ranked by probability, equal ones by token id; a token is dropped when
    the tokens ranked before it already sum to ``>= top_p`` (``None`` or 1 = off). Returns a new
    ``(B, V)`` tensor.
    """
    _check_filters(top_k, top_p)
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True, stable=True)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked before each one
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


# %% [markdown]
# Sampling one token per row puts the pieces together; `temperature=0` short-cuts to the argmax.


# %%
#| export: generate
def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick one token per row of ``logits`` ``(B, V)``; returns ``(B,)`` int64. Defined in 04_model.

    ``temperature=0`` is greedy (argmax); otherwise ``softmax(filter_logits(logits / temperature))``
    is sampled with ``generator`` (pass a seeded ``torch.Generator`` for reproducible samples). A
    generator draws on its own device, so the draw happens there: a CPU generator with CUDA
    logits samples on the CPU, and the result comes back to the logits' device.
    Invalid ``top_k`` / ``top_p`` raise ``ValueError`` even when ``temperature=0`` ignores them.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    _check_filters(top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)  # (B, V)
    if generator is not None and generator.device != probs.device:
        draw = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return draw.squeeze(-1).to(logits.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# %% [markdown]
# Checks on hand-made logits: with probabilities 0.5, 0.3, 0.15, 0.05, top-p 0.7 keeps two tokens
# (0.5 < 0.7, so the second is still needed) and top-p 0.85 keeps three.

# %%
hand = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
kept = lambda lg: torch.isfinite(lg)[0].tolist()  # noqa: E731
print("top_k=2  ", kept(filter_logits(hand, top_k=2)))
print("top_p=0.7", kept(filter_logits(hand, top_p=0.7)))
print("top_p=.85", kept(filter_logits(hand, top_p=0.85)))
assert kept(filter_logits(hand, top_p=0.7)) == [True, True, False, False]
assert kept(filter_logits(hand[:, [3, 1, 0, 2]], top_p=0.85)) == [False, True, True, True]
assert kept(filter_logits(torch.zeros(1, 4), top_p=0.5)) == [True, True, False, False]  # ties
gen = torch.Generator().manual_seed(0)
draws = sample_next(hand.expand(4000, 4), temperature=1.0, top_p=0.7, generator=gen)
freq = torch.bincount(draws, minlength=4) / 4000
print("sampled frequencies with top_p=0.7:", [round(f, 2) for f in freq.tolist()])  # 0.625, 0.375
assert abs(freq[0] - 0.625) < 0.03 and freq[2:].sum() == 0
assert torch.equal(sample_next(hand, temperature=0), torch.tensor([0]))

# %% [markdown]
# What top-p keeps depends on how sure the model is. Below, the same nucleus threshold $p = 0.85$
# applied to the hand-made logits at three temperatures: the sharp distribution keeps 2 tokens,
# the flat one 6.

# %%
fig, axes = plt.subplots(1, 3, figsize=(8, 2.3), dpi=90, sharey=True)
for ax, tau in zip(axes, (0.5, 1.0, 2.0)):
    p = (z / tau).softmax(-1)
    keep = torch.isfinite(filter_logits(z[None] / tau, top_p=0.85))[0]
    ax.bar(range(len(z)), p, color=["tab:blue" if k else "lightgrey" for k in keep])
    ax.plot(range(len(z)), p.cumsum(0), color="tab:orange", marker=".", lw=1)
    ax.axhline(0.85, color="tab:red", ls=":", lw=1)
    ax.set_title(f"τ={tau}: top-p 0.85 keeps {int(keep.sum())}", fontsize=9)
axes[0].set_ylabel("probability / cumulative")
plt.show()
print([int(torch.isfinite(filter_logits(z[None] / t, top_p=0.85)).sum()) for t in (0.5, 1.0, 2.0)])

# %% [markdown]
# ## 11. The repetition penalty, done right
#
# A repetition penalty $r > 1$ (Keskar et al., 2019) makes every token that already occurs in the
# text less likely. The original divides the logits of seen tokens by $r$. That works for a
# *positive* logit ($3 \to 2.3$), but a *negative* logit divided by $r$ moves towards zero, which
# makes the token **more** likely (SEED.md defect 9). The fix: divide positive logits, multiply
# negative ones, so the penalised logit always moves down.

# %%
logit = torch.tensor([3.0, -2.0, 0.5])  # token 1 has been seen and has a negative logit
seen = torch.tensor([False, True, False])
wrong = torch.where(seen, logit / 1.3, logit)
p_before, p_wrong = logit.softmax(-1)[1].item(), wrong.softmax(-1)[1].item()
print(f"p(seen token): before {p_before:.4f}, after dividing {p_wrong:.4f}  <- more likely!")
assert p_wrong > p_before


# %%
#| export: generate
def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """Make every already-seen token less likely, whatever its logit's sign. Defined in 04_model.

    ``logits``: ``(B, V)``; ``seen``: bool ``(B, V)``, True for tokens in the prompt or generated
    so far. Seen logits ``> 0`` are divided by ``penalty``, ``< 0`` multiplied by it (dividing a
    negative logit would raise it: the original's bug). ``penalty=1`` changes nothing.
    """
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {penalty}")
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


# %%
fixed = apply_repetition_penalty(logit[None], seen[None], 1.3)[0]
print(
    "penalised logits:",
    [round(v, 2) for v in fixed.tolist()],
    "| p(seen token):",
    round(fixed.softmax(-1)[1].item(), 4),
)
assert fixed[1] == -2.6 and fixed.softmax(-1)[1] < p_before
both = apply_repetition_penalty(torch.tensor([[3.0, -2.0]]), torch.tensor([[True, True]]), 2.0)
assert both.tolist() == [[1.5, -4.0]]

# %% [markdown]
# ## 12. The KV cache: prefill once, then one token per step
#
# The naive loop recomputes the keys and values of every earlier position at every step, although
# they never change (the mask is causal: position $t$ never sees the future). Chapter 03's
# `KVCache` stores them. Generation then has two phases:
#
# 1. **prefill**: the whole prompt in one forward pass, filling the caches of every layer;
# 2. **decode**: one forward pass per new token, of length 1, at position `start_pos`, attending to
#    everything cached.
#
# The cache is allocated once for `prompt + max_new_tokens` positions (the original grew it with
# `torch.cat`, copying it at every step). Correctness first: decoding with the cache must give the
# logits of a full forward pass over the same tokens.

# %%
seed_everything(0)
seq = torch.randint(0, tiny.vocab_size, (2, 24))  # (B, T)
with torch.no_grad():
    full = lively(seq).logits  # (B, 24, V), no cache
    caches = lively.make_caches(batch_size=2, max_len=24)
    steps = [lively(seq[:, :16], caches=caches).logits]  # prefill 16 positions
    for t in range(16, 24):  # then one position at a time
        steps.append(lively(seq[:, t : t + 1], caches=caches, start_pos=t).logits)
torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
gap = (torch.cat(steps, dim=1) - full).abs().max().item()
print(f"largest |cached - full| logit: {gap:.4f} | logits up to {full.abs().max().item():.1f}")
print("cache memory:", sum(c.nbytes for c in caches) // 1024, "KiB")

# %% [markdown]
# The cache is allocated in the dtype the keys and values are *computed* in. Under
# `torch.autocast` (the usual way to run a float32 model in bf16 on a GPU) the projections produce
# bf16, so the cache is bf16 too: half the memory of a float32 cache, and no cast at every step.
# `make_caches` asks autocast for the weights' device type (CPU autocast here):

# %%
with torch.autocast("cpu", dtype=torch.bfloat16):
    auto_caches = lively.make_caches(batch_size=2, max_len=24)
print("float32 weights:", caches[0].k.dtype, "| under bf16 autocast:", auto_caches[0].k.dtype)
assert caches[0].k.dtype == torch.float32 and auto_caches[0].k.dtype == torch.bfloat16

# %% [markdown]
# What the cache saves, counted rather than timed: without it, step $t$ of a generation pushes all
# $T_0 + t$ positions through every weight matrix; with it, one position. For a 64-token prompt and
# 128 new tokens on the seed model, with `flops_per_token` from section 7:

# %%
T0, new = 64, 128
no_cache = [(T0 + t) * flops_per_token(seed_cfg, T0 + t, training=False) for t in range(new)]
with_cache = [T0 * flops_per_token(seed_cfg, T0, training=False)] + [
    flops_per_token(seed_cfg, T0 + t, training=False) for t in range(1, new)
]
print(
    f"GFLOP without cache {sum(no_cache) / 1e9:.1f}, with cache {sum(with_cache) / 1e9:.2f} "
    f"({sum(no_cache) / sum(with_cache):.0f}x less work)"
)
fig, ax = plt.subplots(figsize=(5, 2.6), dpi=90)
ax.plot([f / 1e9 for f in no_cache], label="no cache: whole sequence each step")
ax.plot([f / 1e9 for f in with_cache], label="KV cache: prefill, then one token")
ax.set_xlabel("generation step")
ax.set_ylabel("GFLOP per step")
ax.set_yscale("log")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 13. Batches of prompts: left padding
#
# Prompts have different lengths, but a batch is a rectangle. We pad on the **left**, so that
# every prompt ends in the last column and every new token of every row is appended in the same
# column. Two things make padding invisible to the model:
#
# * an attention mask hides the pad *keys* from every real query (the model combines it with the
#   causal mask once per forward, with chapter 03's `build_attn_mask`, which also lets a pad query
#   see itself so that no row is empty);
# * RoPE only sees *differences* of positions (chapter 02), so shifting a prompt right by $p$ pad
#   positions changes no attention score, up to float rounding.
#
# Below, the mask of a batch of two prompts of lengths 3 and 6 (dark = may attend, the colours of
# chapter 03's causal mask).

# %%
valid = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)  # (B, S)
allowed = torch.ones(6, 6, dtype=torch.bool).tril() & valid[:, None, :]  # (B, T, S)
allowed |= torch.eye(6, dtype=torch.bool)  # a pad query sees itself
fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.6), dpi=90)
for ax, m, title in zip(axes, allowed, ("3 pads + 3 tokens", "6 tokens")):
    ax.imshow(m, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key position")
axes[0].set_ylabel("query position")
plt.show()
print(allowed[0].int().tolist())

# %% [markdown]
# ## 14. The exported `generate`
#
# First the prompts. `generate` accepts one prompt (a list of ids or a 1-D tensor), a list of
# prompts of any lengths (padded on the left for you), or a `(B, T)` tensor with an optional
# `attention_mask` (1 = real token) that must already be left-padded.
#
# Then the context limit. A prompt plus its new tokens must fit in `max_seq_len` (the RoPE tables
# and caches end there). We choose to keep the **end** of a too-long prompt (the most recent
# turns of a chat), the last `max_seq_len - max_new_tokens` tokens, and to warn; asking for
# `max_new_tokens >= max_seq_len` is an error. Generation therefore never runs past `max_seq_len`.

# %%
#| export: generate
PromptIds = Tensor | Sequence[int] | Sequence[Sequence[int]]


def prepare_prompts(
    input_ids: PromptIds,
    attention_mask: Tensor | None = None,
    pad_token_id: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Left-padded ``(ids, valid)``, both ``(B, T)`` (int64, bool). Defined in 04_model.

    ``input_ids``: one prompt (list of ids or 1-D tensor), a list of prompts (padded on the left
    with ``pad_token_id``), or a ``(B, T)`` tensor whose ``attention_mask`` (1 = real token; default
    all ones) must be left-padded. Raises ``ValueError`` on empty prompts or right padding.
    """
    if isinstance(input_ids, Tensor):
        ids = input_ids.to(device=device, dtype=torch.long)
        ids = ids[None] if ids.dim() == 1 else ids
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask)
        valid = mask.to(device=ids.device).bool()
        valid = valid[None] if valid.dim() == 1 else valid
        if ids.dim() != 2 or valid.shape != ids.shape:
            raise ValueError(
                f"input_ids {tuple(ids.shape)} and attention_mask {tuple(valid.shape)} must both "
                "be (B, T) (or both (T,) for one prompt)"
            )
    else:
        if attention_mask is not None:
            raise ValueError(
                "attention_mask= goes with a (B, T) tensor of input_ids; pass lists of prompts "
                "without it (they are padded on the left here)"
            )
        rows = list(input_ids)
        if rows and (isinstance(rows[0], Integral) or getattr(rows[0], "ndim", 1) == 0):
            rows = [rows]  # a single prompt
        rows = [[int(t) for t in r] for r in rows]
        T = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), T), pad_token_id, dtype=torch.long)
        valid = torch.zeros((len(rows), T), dtype=torch.bool)
        for b, r in enumerate(rows):
            if r:
                ids[b, T - len(r) :], valid[b, T - len(r) :] = torch.tensor(r), True
        ids, valid = ids.to(device), valid.to(device)
    if ids.numel() == 0 or not bool(valid.any(dim=1).all()):
        raise ValueError("every prompt in input_ids needs at least one token")
    if bool((valid[:, 1:] < valid[:, :-1]).any()):
        raise ValueError(
            "input_ids must be padded on the left (attention_mask like 0 0 1 1 1); move the "
            "padding of right-padded prompts to the left"
        )
    return ids, valid


# %% [markdown]
# And the context limit: cut the (left-padded) prompts from the left, warn when real tokens go.


# %%
#| export: generate
def fit_context(
    ids: Tensor, valid: Tensor, max_new_tokens: int, max_seq_len: int
) -> tuple[Tensor, Tensor]:
    """Cut the prompts so that ``prompt + max_new_tokens <= max_seq_len``. Defined in 04_model.

    Keeps the last ``max_seq_len - max_new_tokens`` columns (the end of each left-padded prompt)
    and warns when real tokens are dropped; raises ``ValueError`` if no prompt token would fit.
    """
    if max_new_tokens >= max_seq_len:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
            f"max_seq_len={max_seq_len}"
        )
    room = max_seq_len - max_new_tokens
    if ids.shape[1] > room:
        longest = int(valid.sum(dim=1).max())
        if longest > room:
            warnings.warn(
                f"prompt of {longest} tokens + max_new_tokens={max_new_tokens} exceeds "
                f"max_seq_len={max_seq_len}: keeping the last {room} prompt tokens",
                stacklevel=3,
            )
        ids, valid = ids[:, -room:], valid[:, -room:]
    return ids, valid


# %%
ids_, valid_ = prepare_prompts([[5, 6, 7], [8, 9, 10, 11, 12, 13]], pad_token_id=0)
print(ids_.tolist())
print(valid_.int().tolist())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    cut, _ = fit_context(ids_, valid_, max_new_tokens=6, max_seq_len=10)
print(cut.tolist(), "|", caught[0].message)
assert cut.tolist() == [[0, 5, 6, 7], [10, 11, 12, 13]]

# %% [markdown]
# The decoding loop itself is a Python generator that yields one column of new tokens per step;
# `generate` collects them, `stream_generate` hands them out as they come. Per step: penalise seen
# tokens, pick the next token (sequences that have produced `eos_token_id` get padding instead
# and are not reported), then run the model on that single token with the cache. A key mask is
# only passed when there is padding (the model then combines it with causality once per step). The
# loop stops when every sequence has finished or after `max_new_tokens` new tokens (the prompt
# does not count, unlike in the original).
#
# Two choices about the caller's state. **Randomness**: `seed=` builds a `torch.Generator` on the
# model's device, so the same seed gives the same tokens (on the same device and PyTorch version),
# without touching the global random state; a `generator=` of your own works too, on any device.
# **Training mode**: a model left in training mode would apply dropout while generating. Rather
# than refusing, the loop switches the model to eval mode for the call and restores every
# module's own mode afterwards (for a stream: when it ends or is closed), so generating a sample in
# the middle of a training run is safe.


# %%
#| export: generate
@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run the body with ``model`` in eval mode, then restore each module's own training flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def decode_steps(
    model: torch.nn.Module,
    ids: Tensor,
    valid: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int = 0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    logits_processor: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(next_ids (B,), active (B,) bool)`` per step for left-padded prompts.

    Defined in 04_model.

    ``ids``/``valid`` come from `prepare_prompts` and must fit (`fit_context`). ``active`` is False
    for rows that finished (produced an eos) at an earlier step; their ``next_ids`` are padding.
    ``seed``: sample with a fresh ``torch.Generator`` on ``ids``' device seeded with it (same seed,
    same tokens); or pass your own ``generator`` (not both). The model runs in eval mode; each
    module's training flag is restored when the loop ends or is closed.
    ``logits_processor(tokens (B, S), logits (B, V)) -> logits`` may edit the scores of each step.
    ``tokens`` is the whole left-padded batch so far: a shorter prompt's row starts with
    ``pad_token_id`` columns (``valid`` says which prompt columns are real), and a finished row
    continues with ``pad_token_id``; a processor that looks at the history must skip those.
    """
    B, T = ids.shape
    V, total = model.config.vocab_size, T + max_new_tokens
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= V:
        raise ValueError(
            f"input_ids must be token ids in 0..{V - 1} (the model's vocab_size is {V}), got ids "
            f"from {lo} to {hi}; was the prompt encoded with this model's tokenizer?"
        )
    if seed is not None:
        if generator is not None:
            raise ValueError("pass seed= or generator=, not both")
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        generator = torch.Generator(device=ids.device).manual_seed(int(seed))
    eos = None if eos_token_id is None else torch.tensor(eos_token_id, device=ids.device).flatten()
    tokens = torch.full((B, total), pad_token_id, dtype=torch.long, device=ids.device)
    tokens[:, :T] = ids
    keys = torch.ones((B, total), dtype=torch.bool, device=ids.device)  # which keys are real
    keys[:, :T] = valid
    padded = not bool(valid.all())
    seen = None  # how often each token occurs, kept only when a penalty needs it
    if repetition_penalty != 1.0:
        seen = torch.zeros(B, V, dtype=torch.long, device=ids.device)
        seen.scatter_add_(1, ids, valid.long())
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)

    def last_logits(start: int, end: int) -> Tensor:  # forward positions start..end-1
        mask = keys[:, None, None, :end] if padded else None  # (B, 1, 1, S) key mask
        x = tokens[:, start:end] if use_cache else tokens[:, :end]
        kw = dict(caches=caches, start_pos=start) if use_cache else {}
        return model(x, attn_mask=mask, last_only=True, **kw).logits[:, -1].float()  # (B, V)

    with _eval_mode(model):
        caches = model.make_caches(B, total) if use_cache else None  # in the compute dtype
        logits = last_logits(0, T)  # prefill
        for step in range(max_new_tokens):
            if seen is not None:
                logits = apply_repetition_penalty(logits, seen > 0, repetition_penalty)
            if logits_processor is not None:
                logits = logits_processor(tokens[:, : T + step], logits)
            nxt = sample_next(logits, temperature, top_k, top_p, generator).masked_fill(
                finished, pad_token_id
            )
            tokens[:, T + step] = nxt
            yield nxt, ~finished
            if eos is not None:
                finished = finished | torch.isin(nxt, eos)
            if step + 1 == max_new_tokens or bool(finished.all()):
                return
            if seen is not None:
                seen.scatter_add_(1, nxt[:, None], torch.ones_like(nxt[:, None]))
            logits = last_logits(T + step, T + step + 1)


# %%
#| export: generate
def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def generate(
    model: torch.nn.Module,
    input_ids: PromptIds,
    max_new_tokens: int,
    *,
    attention_mask: Tensor | None = None,
    pad_token_id: int = 0,
    **sampling,
) -> list[list[int]]:
    """Continue each prompt by up to ``max_new_tokens`` NEW tokens. Defined in 04_model.

    Returns one list of new ids per prompt (the prompt is not included), cut after the first
    ``eos_token_id`` (which is kept, so a caller can tell "stopped" from "ran out"). ``sampling``:
    ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``repetition_penalty``, ``eos_token_id``,
    ``seed`` or ``generator`` (reproducible sampling), ``use_cache``, ``logits_processor`` (see
    `decode_steps`: it sees the left padding). Prompts: see `prepare_prompts`; a prompt too long
    for ``max_seq_len`` keeps its end, with a warning. A model in training mode generates in eval
    mode and is left in its own mode afterwards.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    ids, valid = prepare_prompts(input_ids, attention_mask, pad_token_id, _model_device(model))
    out: list[list[int]] = [[] for _ in range(ids.shape[0])]
    if max_new_tokens == 0:  # nothing to generate: no context to fit, no warning
        return out
    ids, valid = fit_context(ids, valid, max_new_tokens, model.config.max_seq_len)
    steps = decode_steps(model, ids, valid, max_new_tokens, pad_token_id=pad_token_id, **sampling)
    for nxt, active in steps:
        for b, (token, alive) in enumerate(zip(nxt.tolist(), active.tolist())):
            if alive:
                out[b].append(token)
    return out


# %% [markdown]
# Streaming hands out the same ids one at a time, for one prompt (a chat answers one user), and
# the text version decodes them through chapter 01's `StreamDecoder`, which holds back the bytes of
# a character until the character is complete.


# %%
#| export: generate
def stream_generate(
    model: torch.nn.Module, input_ids: PromptIds, max_new_tokens: int, **kwargs
) -> Iterator[int]:
    """Like `generate` for ONE prompt, but yield each new id as soon as it exists.

    Defined in 04_model.

    The eos id, when produced, is yielded last. Same arguments as `generate`. The model is in eval
    mode while the stream runs; its own modes come back when the stream ends or is closed.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    mask = kwargs.pop("attention_mask", None)
    pad = kwargs.pop("pad_token_id", 0)
    ids, valid = prepare_prompts(input_ids, mask, pad, _model_device(model))
    if ids.shape[0] != 1:
        raise ValueError(
            f"stream_generate takes one prompt, got a batch of {ids.shape[0]}; use generate "
            "for batches"
        )
    if max_new_tokens == 0:
        return
    ids, valid = fit_context(ids, valid, max_new_tokens, model.config.max_seq_len)
    for nxt, _ in decode_steps(model, ids, valid, max_new_tokens, pad_token_id=pad, **kwargs):
        yield int(nxt[0])


# %%
#| export: generate
def stream_text(
    model: torch.nn.Module, tokenizer, prompt: str | Sequence[int], max_new_tokens: int, **kwargs
) -> Iterator[str]:
    """Stream the continuation of ``prompt`` as text pieces. Defined in 04_model.

    ``prompt``: text (encoded with ``tokenizer``, which must be the model's) or token ids. Pieces
    pass through ``StreamDecoder``, so no UTF-8 character is ever split across pieces; generation
    stops at the tokenizer's eos (default ``eos_token_id``), which is not printed.
    """
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
    kwargs.setdefault("eos_token_id", tokenizer.eos_id)
    kwargs.setdefault("pad_token_id", tokenizer.pad_id)
    eos = kwargs["eos_token_id"]
    stops = set() if eos is None else set(torch.tensor(eos).flatten().tolist())
    decoder = StreamDecoder(tokenizer)
    for token in stream_generate(model, ids, max_new_tokens, **kwargs):
        if token in stops:
            break
        piece = decoder.put(token)
        if piece:
            yield piece
    tail = decoder.flush()
    if tail:
        yield tail


# %% [markdown]
# The checks that matter, against the naive loop of section 9 as the independent reference:
# greedy `generate` (with its cache) reproduces it, `temperature=0` means greedy whatever the
# filters say, a batch of left-padded prompts gives each prompt's own continuation, and streaming
# yields the same ids.

# %%
greedy = generate(lively, prompt, 12, temperature=0)
assert greedy == naive_ids.tolist()
assert generate(lively, prompt[0].tolist(), 12, temperature=0, top_k=3, top_p=0.5) == greedy
assert list(stream_generate(lively, prompt, 12, temperature=0)) == greedy[0]

prompts = [[5, 6, 7], list(range(20, 34)), [9]]
batched = generate(lively, prompts, 10, temperature=0)
one_by_one = [generate(lively, p, 10, temperature=0)[0] for p in prompts]
print(batched)
assert batched == one_by_one

# %% [markdown]
# Stopping: `max_new_tokens` counts only new tokens, and a sequence that produces `eos_token_id`
# stops there (the eos is the last id returned), while the others carry on. We pretend that the
# third token of the second row is the end-of-sequence token.

# %%
eos = batched[1][2]
stopped = generate(lively, prompts, 10, temperature=0, eos_token_id=eos)
print("eos", eos, "| lengths", [len(r) for r in stopped], "| row 1:", stopped[1])
assert stopped == [r[: r.index(eos) + 1] if eos in r else r for r in batched]
assert len(stopped[1]) <= 3 and all(len(r) == 10 for r in batched)
gen_a = generate(lively, prompts, 10, **CHAT_SAMPLING, seed=7)
gen_b = generate(lively, prompts, 10, **CHAT_SAMPLING, generator=torch.Generator().manual_seed(7))
assert gen_a == gen_b == generate(lively, prompts, 10, **CHAT_SAMPLING, seed=7)  # reproducible

# %% [markdown]
# Training mode: generating from a model in the middle of training switches it to eval for the
# call (no dropout, so greedy decoding gives the eval-mode tokens) and leaves it training after.

# %%
seed_everything(3)
dropped = SpongeBob(replace(tiny, dropout=0.5))
init_weights(dropped, std=0.1)
want = generate(dropped.eval(), prompts, 6, temperature=0)
dropped.train()
assert generate(dropped, prompts, 6, temperature=0) == want and dropped.training
assert all(m.training for m in dropped.modules())  # every module back in training mode
print("eval-mode tokens:", want[0], "| training afterwards:", dropped.training)

# %% [markdown]
# A prompt longer than the context keeps its end, with a warning, and the result still fits:

# %%
long_prompt = torch.randint(3, tiny.vocab_size, (1, tiny.max_seq_len + 50))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    tail = generate(lively, long_prompt, 8, temperature=0)
print(caught[0].message)
assert tail == generate(lively, long_prompt[:, -(tiny.max_seq_len - 8) :], 8, temperature=0)

# %% [markdown]
# Finally, time. We stream 128 new tokens after a 64-token prompt, with and without the cache,
# and note the clock after every token. Wall-clock speed depends on the machine (and on whatever
# else it is running), so the numbers and the curve are yours; what is checked is that both paths
# produce the same tokens. `bench/bench_model.py` measures the seed model properly
# (`docs/benchmarks.md`).

# %%
# NBVAL_IGNORE_OUTPUT
seed_everything(0)
p64 = torch.randint(3, tiny.vocab_size, (1, 64))
clock, tokens = {}, {}
for use_cache in (False, True):
    start, clock[use_cache], tokens[use_cache] = time.perf_counter(), [], []
    for nxt in stream_generate(lively, p64, 128, temperature=0, use_cache=use_cache):
        tokens[use_cache].append(nxt)
        clock[use_cache].append(time.perf_counter() - start)  # seconds until this token
    print(f"use_cache={use_cache}: {128 / clock[use_cache][-1]:.0f} new tokens/s")
print(f"the cache is {clock[False][-1] / clock[True][-1]:.1f}x faster here")
assert tokens[True] == tokens[False]

fig, ax = plt.subplots(figsize=(5, 2.6), dpi=90)
for use_cache, name in ((False, "no cache"), (True, "KV cache")):
    ax.plot(range(1, 129), clock[use_cache], label=name)
ax.set_xlabel("new tokens generated")
ax.set_ylabel("seconds elapsed")
ax.set_title("greedy decoding, tiny model, 64-token prompt")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Once the cache is in place, what limits a decoding step at batch 1 is no longer arithmetic: every
# step reads *every weight* once, to multiply it by a single vector. On a CPU that is a question of
# memory bandwidth. For the seed model on the course's test machine, the weight reads alone take
# about 7 to 8 of the 9 to 10 ms per token (`docs/benchmarks.md`). Two ways past that limit:
# decode several prompts at once, so that they share each weight read (8 prompts: 3.4 to 3.9x the
# tokens/s), or store the weights in bf16, so there are half as many bytes to read.

# %% [markdown]
# ## Putting it together
#
# Everything above now lives in the package. We import it back from `spongebob`, build an
# untrained tiny model with the course tokenizer of chapter 01, render a chat prompt and stream the
# answer. The answer is nonsense (the model has learned nothing yet; chapter 06 changes that), but
# every piece of the real chat path runs: chat template, prefill, cached decoding with the
# original's sampling settings, and text streamed whole character by whole character.

# %%
# The package's copies replace the definitions made by this notebook's exported cells.
from spongebob.checkpoint import load_model
from spongebob.config import ModelConfig
from spongebob.generate import CHAT_SAMPLING, generate, stream_text  # noqa: F811
from spongebob.model import SpongeBob, count_parameters

tok = course_tokenizer()
seed_everything(1337)
lm = SpongeBob(ModelConfig.preset("tiny")).eval()
torch.save({"model": lm.state_dict(), "config": lm.config.to_dict()}, folder / "lm.pth")
lm = load_model(folder / "lm.pth").eval()  # the same weights, checked, from a weights_only file
assert lm.config.vocab_size == tok.vocab_size
chat = tok.apply_chat_template([{"role": "user", "content": "Who lives in a pineapple?"}])
chat_ids = tok.encode(chat)
print(f"{count_parameters(lm):,} parameters | prompt of {len(chat_ids)} tokens:")
print(chat)

# %% [markdown]
# The streamed text depends on the last bits of floating-point arithmetic of the machine, so this
# output is not compared; the check is that the streamed pieces add up to the decoded ids of
# `generate` with the same seed. The `�` marks are not split characters: the untrained model
# strings byte-level tokens together into invalid UTF-8 (a continuation byte with no lead byte),
# which a trained model learns not to do. A character that *is* valid but spread over several
# tokens is held back by `StreamDecoder` until its last byte arrives.

# %%
# NBVAL_IGNORE_OUTPUT
pieces = []
for piece in stream_text(lm, tok, chat_ids, 48, **CHAT_SAMPLING, seed=0):
    print(piece, end="", flush=True)
    pieces.append(piece)
new_ids = generate(
    lm,
    chat_ids,
    48,
    **CHAT_SAMPLING,
    eos_token_id=tok.eos_id,
    pad_token_id=tok.pad_id,
    seed=0,
)[0]
new_ids = new_ids[:-1] if new_ids and new_ids[-1] == tok.eos_id else new_ids
assert "".join(pieces) == tok.decode(new_ids)
print(f"\n\n{len(new_ids)} tokens -> {len(pieces)} text pieces")

# %% [markdown]
# ## Summary
#
# * A Llama-style decoder is a short recipe: embeddings, `n_layers` pre-norm blocks (RMSNorm →
#   GQA attention with RoPE → residual, RMSNorm → SwiGLU → residual), a final norm and an output
#   head tied to the embeddings. Keeping the original's names keeps its checkpoints loadable.
# * Initialisation decides where training starts: std 0.02 and residual projections scaled by
#   $1/\sqrt{2 n_\text{layers}}$ give an initial loss of $\ln V$ and a residual stream whose final
#   scale is roughly independent of the number of layers (it still grows block by block).
# * Parameter and FLOP counts are arithmetic: 28,975,616 (25,829,888 with GQA), about
#   $6N + 12\,n_\text{layers}\,C\,T$ FLOPs per trained token.
# * A checkpoint is a pickle: load it with `weights_only=True` and strict, checked keys
#   (`spongebob.checkpoint`). A `ModelConfig` is frozen: change one with `dataclasses.replace`.
# * Generation is a loop of forward passes; the KV cache turns it into one prefill and cheap
#   one-token steps. Sampling = repetition penalty (sign-aware) → temperature → top-k → top-p.
#   Batches are padded on the left and masked; the mask is built once per forward, and the
#   training path has none, so SDPA may use its fused kernels. Caches follow the compute dtype,
#   `seed=` makes sampling reproducible, and a training model generates in eval mode.
#
# | module | what it exports |
# |---|---|
# | `spongebob.config` | `ModelConfig` (`preset`, `to_dict`, `from_dict`), `PRESETS`, `config_problems` |
# | `spongebob.model` | `RMSNorm`, `FeedForward`, `Block`, `SpongeBob` (`make_caches`), `ModelOutput`, `lm_loss`, `IGNORE_INDEX`, `init_weights`, `count_parameters`, `flops_per_token` |
# | `spongebob.checkpoint` | `load_checkpoint`, `load_model`, `read_checkpoint`, `load_state_dict_checked`, `CheckpointError` |
# | `spongebob.generate` | `generate`, `stream_generate`, `stream_text`, `decode_steps`, `sample_next`, `filter_logits`, `apply_repetition_penalty`, `prepare_prompts`, `fit_context`, `CHAT_SAMPLING` |
#
# Next: [05 · Data](05_data.ipynb) turns the JSONL files into training batches, with the loss masks
# that `lm_loss` expects.

# %% [markdown]
# ## Predict, then verify
#
# **A.** Take the logits `[2.0, 1.0, 0.0]`. As the temperature goes from 0.5 to 1 to 2, does the
# probability of the first token rise or fall? What does a temperature near 0 turn sampling into?
#
# **B.** Top-p with p = 0.5 on these logits: how many tokens stay candidates?

# %%
logits = torch.tensor([2.0, 1.0, 0.0])
for t in (0.05, 0.5, 1.0, 2.0):
    probs_t = [round(p, 3) for p in (logits / t).softmax(-1).tolist()]
    print(f"temperature {t:4}: probabilities {probs_t}")
probs = logits.softmax(-1)
keep = (probs.cumsum(-1) - probs) < 0.5  # a token stays while the mass before it is below p
print("top-p 0.5 keeps", int(keep.sum()), "token(s)")


# %% [markdown]
# ## Exercises
#
# Each exercise has a stub to complete and a check cell that says "not attempted yet" until you do.
# Solutions: `notebooks/solutions/04_model_solutions.ipynb`.
#
# **1 (easy). Parameters by formula.** Write `param_count(cfg)` from the `ModelConfig` fields
# alone (no model), using the per-layer formula of section 7. It must match `count_parameters` for
# every preset and for an odd configuration.


# %%
def param_count(cfg: ModelConfig) -> int:
    raise NotImplementedError


# %%
try:
    odd = ModelConfig(dim=96, n_layers=3, n_heads=6, n_kv_heads=3, vocab_size=1000, hidden_dim=200)
    configs = (ModelConfig(), ModelConfig.preset("seed-gqa"), tiny, odd)
    got = [param_count(c) for c in configs]
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    for c, n in zip(configs, got):
        want = count_parameters(SpongeBob(c))
        assert n == want, (
            f"Exercise 1: {n:,} != {want:,} for {c}. Hint: count the tied embedding once, "
            "wk and wv with n_kv_heads * head_dim rows, and the norms' gains (2 per layer + 1)"
        )
    print("Exercise 1: correct")

# %% [markdown]
# **2 (easy). min-p sampling.** A newer alternative to top-p keeps every token whose probability
# is at least `min_p` times the probability of the most likely token. Write `min_p_filter(logits,
# min_p)` for `(B, V)` logits, returning logits with `-inf` where tokens are removed.


# %%
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    raise NotImplementedError


# %%
try:
    lg = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]).log()
    out = min_p_filter(lg, 0.4)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    kept = torch.isfinite(out).tolist()
    assert kept == [[True, True, False, False], [True] * 4], (
        f"Exercise 2: kept {kept}. Hint: compare softmax probabilities (not logits) with "
        "min_p * the largest probability of the same row (keepdim=True)"
    )
    torch.testing.assert_close(
        out[0, :2], lg[0, :2], msg=lambda m: f"Exercise 2: kept logits must not change. {m}"
    )
    print("Exercise 2: correct")

# %% [markdown]
# **3 (medium). Scoring an answer.** Evaluations (chapter 07) often ask: how likely is this
# *answer* after this *prompt*? Write `answer_loss(model, prompt_ids, answer_ids)`: the mean
# cross-entropy of the answer tokens only, given the prompt, in one forward pass (hint: targets
# of `-100` for the prompt positions, and `lm_loss`).


# %%
def answer_loss(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    raise NotImplementedError


# %%
try:
    p_ids, a_ids = [5, 9, 13, 2, 7], [40, 41, 42]
    got = answer_loss(model, p_ids, a_ids)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    with torch.no_grad():
        logp = model(torch.tensor([p_ids + a_ids])).logits[0].log_softmax(-1)  # (T, V)
    expected = -sum(logp[len(p_ids) - 1 + i, a].item() for i, a in enumerate(a_ids)) / len(a_ids)
    assert abs(got - expected) < 1e-4, (
        f"Exercise 3: {got:.4f} != {expected:.4f}. Hint: the token at position t is predicted "
        "from position t - 1, so targets are the inputs shifted by one, -100 over the prompt"
    )
    print("Exercise 3: correct")

# %% [markdown]
# **4 (harder). No repeated n-grams.** `generate` accepts a `logits_processor(tokens, logits)`
# called at every step with the tokens so far `(B, S)` and the next-token logits `(B, V)`. Write
# `no_repeat_ngram(n)` returning such a processor that forbids (sets to `-inf`) every token that
# would complete an n-gram already present in that row. The untrained model, decoded greedily,
# repeats itself; with the processor, no 3-gram may occur twice in prompt + answer.


# %%
def no_repeat_ngram(n: int):
    raise NotImplementedError


# %%
def has_repeated_ngram(seq, n):
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


try:
    start = [7, 8, 9, 7, 8]
    fixed = generate(model, start, 30, temperature=0, logits_processor=no_repeat_ngram(3))[0]
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    plain = generate(model, start, 30, temperature=0)[0]
    assert len(fixed) == 30 and not has_repeated_ngram(start + fixed, 3), (
        f"Exercise 4: a 3-gram repeats in {start + fixed}. Hint: for each row, look up the last "
        "n - 1 tokens among all earlier (n - 1)-grams and forbid each token that followed one"
    )
    print("repeats without the processor:", has_repeated_ngram(start + plain, 3))
    print("Exercise 4: correct")
