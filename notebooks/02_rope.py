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
# Draft: the exported component first; the chapter around it follows.

# %%
#| default_exp rope

# %%
#| export
"""Rotary position embeddings (RoPE) with interleaved pairs, in real arithmetic.

Defined in 02_rope. Dims ``2i`` and ``2i+1`` of every head form a 2-D pair that is rotated by the
angle ``pos * theta ** (-2i / head_dim)``: the same numbers as the original's complex-number
formulation, but with cos/sin tables instead of complex tensors, so it runs in bf16 and under
``torch.compile``.
"""

from __future__ import annotations

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
    to the positions of ``x`` by the caller. Computes in float32, returns ``x``'s dtype and shape.
    """
    B, T, H, D = x.shape
    if cos.shape != (T, D // 2) or sin.shape != (T, D // 2):
        raise ValueError(
            f"cos/sin must have shape {(T, D // 2)} for x of shape {tuple(x.shape)}, "
            f"got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    xf = x.float().reshape(B, T, H, D // 2, 2)  # split the head dim into pairs
    x1, x2 = xf[..., 0], xf[..., 1]  # (B, T, H, D/2) each
    c = cos.float()[None, :, None, :]  # (1, T, 1, D/2), broadcast over batch and heads
    s = sin.float()[None, :, None, :]
    out = torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1)  # (B, T, H, D/2, 2)
    return out.flatten(-2).to(x.dtype)  # (B, T, H, D)


# %%
cos, sin = precompute_rope(64, 16)
assert cos.shape == sin.shape == (16, 32) and cos.dtype == torch.float32
x = torch.randn(2, 16, 4, 64)
y = apply_rope(x, cos, sin)
torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
