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
# Draft: the exported component first; the chapter around it follows.

# %%
#| default_exp attention

# %%
#| export
"""Causal multi-head attention with grouped-query heads (GQA), RoPE and a preallocated KV cache.

Defined in 03_attention. Attention runs through ``F.scaled_dot_product_attention`` (fused kernels,
no stored ``max_seq_len x max_seq_len`` mask); the projections ``wq, wk, wv, wo`` have no biases and
keep the original's state-dict keys.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spongebob.rope import apply_rope


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Repeat each key/value head ``n_rep`` times so that GQA keys line up with the query heads.

    Defined in 03_attention. ``(B, T, H_kv, D) -> (B, T, H_kv * n_rep, D)``; output head ``j`` is
    kv head ``j // n_rep`` (copies are consecutive).
    """
    if n_rep == 1:
        return x
    B, T, H_kv, D = x.shape
    return x[:, :, :, None, :].expand(B, T, H_kv, n_rep, D).reshape(B, T, H_kv * n_rep, D)


def causal_mask(T: int, S: int, device: torch.device | str | None = None) -> Tensor:
    """Bool ``(T, S)`` mask, True where a query may attend to a key. Defined in 03_attention.

    The ``T`` queries are the *last* ``T`` of ``S`` positions (earlier ones come from a KV cache),
    so query ``i`` sits at position ``S - T + i`` and may see keys ``j <= S - T + i``.
    """
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


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
                f"max_seq_len={self.max_seq_len}"
            )
        if B > self.k.shape[0]:
            raise ValueError(f"batch {B} is larger than the cache's batch_size {self.k.shape[0]}")
        self.k[:B, start_pos:end] = k.to(self.k.dtype)
        self.v[:B, start_pos:end] = v.to(self.v.dtype)
        return self.k[:B, :end], self.v[:B, :end]

    @property
    def nbytes(self) -> int:
        """Memory held by the two buffers, in bytes."""
        return self.k.nbytes + self.v.nbytes


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
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """``x``: ``(B, T, C)`` at positions ``start_pos .. start_pos + T - 1``; returns ``(B, T, C)``

        ``cos``, ``sin``: ``(T, head_dim // 2)`` for those positions. With ``cache``, keys and
        values of earlier positions come from the cache. ``attn_mask``: optional bool, broadcastable to
        ``(B, 1, T, start_pos + T)``, True = may attend (e.g. False on left-padding keys); it is
        combined with the causal mask.
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
        k = repeat_kv(k, self.n_rep).transpose(1, 2)  # (B, H, S, D)
        v = repeat_kv(v, self.n_rep).transpose(1, 2)
        mask = None
        if attn_mask is not None or T not in (1, S):
            # One query (decoding) sees every cached key, and T == S is SDPA's own is_causal;
            # otherwise build the offset causal mask and combine it with the caller's mask.
            mask = causal_mask(T, S, x.device)  # (T, S)
            if attn_mask is not None:
                own = torch.arange(T, device=x.device)
                mask = mask & attn_mask  # (B, 1, T, S)
                # A query always sees its own position: a padding query whose keys are all
                # masked would otherwise get NaN, and NaN values poison later layers.
                mask[..., own, own + S - T] = True
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.attn_dropout.p if self.training else 0.0,
            is_causal=mask is None and T > 1,
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H * D)
        return self.resid_dropout(self.wo(out))  # (B, T, C)


# %%
from spongebob.rope import precompute_rope

torch.manual_seed(0)
attn = Attention(dim=64, n_heads=8, n_kv_heads=2).eval()
cos, sin = precompute_rope(8, 32)
x = torch.randn(2, 10, 64)
full = attn(x, cos[:10], sin[:10])
cache = KVCache(2, 32, 2, 8)
steps = [attn(x[:, :4], cos[:4], sin[:4], cache, 0), attn(x[:, 4:7], cos[4:7], sin[4:7], cache, 4)]
steps += [attn(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache, t) for t in range(7, 10)]
torch.testing.assert_close(torch.cat(steps, dim=1), full)
