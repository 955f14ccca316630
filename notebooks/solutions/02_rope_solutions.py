# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · RoPE: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../02_rope.ipynb) and runs the same self-check.

# %%
import math

import torch

from spongebob.rope import apply_rope, precompute_rope


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The chapter's draft (section 8), Hugging Face layout: pair (i, i + D/2)."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, T, H, D/2) each
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).type_as(x)


# %% [markdown]
# **Exercise 1.** Pair `i` turns by $\theta_i = b^{-2i/D}$ radians per token ($b$ = `rope_theta`,
# the `theta` argument), so a full turn takes $2\pi / \theta_i$ tokens.


# %%
def wavelength(i: int, head_dim: int, theta: float) -> float:
    return 2 * math.pi / theta ** (-2 * i / head_dim)


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
# **Exercise 2.** Section 8 showed `apply_rope_half(y[..., perm]) == apply_rope(y)[..., perm]` for
# `perm = (0, 2, 4, ..., 1, 3, 5, ...)`. Put `y = x[..., inverse]` with `inverse = argsort(perm)`:
# then `y[..., perm] = x`, so `apply_rope_half(x) = apply_rope(x[..., inverse])[..., perm]`.


# %%
def apply_rope_half_via_perm(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    D = x.shape[-1]
    perm = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])  # interleaved -> halves
    inverse = torch.argsort(perm)  # halves -> interleaved
    return apply_rope(x[..., inverse], cos, sin)[..., perm]


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
# **Exercise 3.** Lay the vector out as `(B, T, H, D) = (1, 1, 1, D)` and slice the tables at the
# one position wanted.


# %%
def score_at(q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> float:
    D = q.shape[0]
    cos, sin = precompute_rope(D, max(m, n) + 1, theta=1e6)
    qm = apply_rope(q.view(1, 1, 1, D), cos[m : m + 1], sin[m : m + 1])
    kn = apply_rope(k.view(1, 1, 1, D), cos[n : n + 1], sin[n : n + 1])
    return (qm.flatten() @ kn.flatten()).item()


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
# **Exercise 4.** The same computation as `precompute_rope` with positions `m / scale`, angles in
# float64 like `precompute_rope`.


# %%
def precompute_rope_interpolated(
    head_dim: int, max_seq_len: int, theta: float = 1e6, scale: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    freqs = theta ** (-2.0 * torch.arange(head_dim // 2, dtype=torch.float64) / head_dim)
    pos = torch.arange(max_seq_len, dtype=torch.float64) / scale  # fractional positions
    angles = torch.outer(pos, freqs)  # (T, D/2)
    return angles.cos().float(), angles.sin().float()


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
