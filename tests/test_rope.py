"""spongebob.rope against an independent complex-number formulation, plus RoPE's invariants."""

from __future__ import annotations

import math

import pytest
import torch

from spongebob.rope import (
    apply_rope,
    half_to_interleaved_rows,
    interleaved_to_half_rows,
    precompute_rope,
)


def complex_rope(x: torch.Tensor, theta: float, start: int = 0) -> torch.Tensor:
    """Reference: pair dims (2i, 2i+1) as a complex number and multiply by e^{i * pos * freq_i}."""
    B, T, H, D = x.shape
    freqs = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    pos = torch.arange(start, start + T, dtype=torch.float64)
    rot = torch.polar(torch.ones(T, D // 2, dtype=torch.float64), torch.outer(pos, freqs))
    xc = torch.view_as_complex(x.double().reshape(B, T, H, D // 2, 2).contiguous())
    out = torch.view_as_real(xc * rot[None, :, None, :]).reshape(B, T, H, D)
    return out.to(x.dtype)


@pytest.mark.parametrize(
    "shape, theta",
    [((2, 7, 3, 8), 1e6), ((1, 33, 2, 64), 1e4), ((3, 5, 1, 2), 10.0), ((2, 16, 4, 32), 5e5)],
)
def test_apply_rope_matches_complex_formulation_fp32(shape, theta):
    torch.manual_seed(0)
    B, T, H, D = shape
    x = torch.randn(shape)
    cos, sin = precompute_rope(D, T + 4, theta)
    got = apply_rope(x, cos[:T], sin[:T])
    assert got.shape == x.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, complex_rope(x, theta), atol=1e-5, rtol=1e-5)


def test_apply_rope_with_an_offset_slice_matches_positions_start_onwards():
    torch.manual_seed(1)
    x = torch.randn(2, 6, 3, 16)
    cos, sin = precompute_rope(16, 64)
    got = apply_rope(x, cos[40:46], sin[40:46])
    torch.testing.assert_close(got, complex_rope(x, 1e6, start=40), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_apply_rope_low_precision_keeps_dtype_and_is_close(dtype):
    torch.manual_seed(2)
    x = torch.randn(2, 12, 4, 32).to(dtype)
    cos, sin = precompute_rope(32, 12)
    got = apply_rope(x, cos, sin)
    assert got.dtype == dtype
    want = complex_rope(x.float(), 1e6)  # same rounded inputs, exact rotation in fp64
    # one rounding to the low-precision type at the end: relative error ~ 2^-8 (bf16)
    torch.testing.assert_close(got.float(), want, atol=2e-2, rtol=1e-2)


def test_precompute_rope_shapes_dtype_and_known_values():
    cos, sin = precompute_rope(8, 10, theta=100.0)
    assert cos.shape == sin.shape == (10, 4)
    assert cos.dtype == sin.dtype == torch.float32
    # position 0: no rotation at all
    assert torch.equal(cos[0], torch.ones(4)) and torch.equal(sin[0], torch.zeros(4))
    # frequencies 100 ** (-2i/8) = 1, 100**-0.25, 0.1, 100**-0.75; position 3
    freqs = [1.0, 100**-0.25, 0.1, 100**-0.75]
    torch.testing.assert_close(cos[3], torch.tensor([math.cos(3 * f) for f in freqs]))
    torch.testing.assert_close(sin[3], torch.tensor([math.sin(3 * f) for f in freqs]))
    # the fastest pair turns one radian per position
    torch.testing.assert_close(sin[:, 0], torch.sin(torch.arange(10.0)))


def test_precompute_rope_is_accurate_at_large_positions():
    # float64 angles: at position 30000 a float32 angle would be off by up to ~1e-3 radians
    D, theta = 64, 1e6
    cos, sin = precompute_rope(D, 30001, theta)
    for i in (0, 1, 7, 31):
        angle = 30000 * theta ** (-2 * i / D)  # Python floats are float64
        assert abs(cos[30000, i].item() - math.cos(angle)) < 1e-7
        assert abs(sin[30000, i].item() - math.sin(angle)) < 1e-7


def test_apply_rope_keeps_float64_inputs_in_float64():
    torch.manual_seed(5)
    x = torch.randn(1, 9, 2, 16, dtype=torch.float64)
    cos, sin = precompute_rope(16, 9)
    got = apply_rope(x, cos, sin)
    assert got.dtype == torch.float64
    # the same float32 table values as complex numbers, multiplied in float64: float64 arithmetic
    # agrees to ~1e-16; float32 arithmetic would be off by ~1e-7
    rot = torch.complex(cos.double(), sin.double())  # (T, D/2)
    xc = torch.view_as_complex(x.reshape(1, 9, 2, 8, 2))
    want = torch.view_as_real(xc * rot[None, :, None, :]).reshape(x.shape)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    torch.testing.assert_close(got, complex_rope(x, 1e6), atol=1e-6, rtol=0)  # exact angles


def test_precompute_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError):
        precompute_rope(7, 4)


def test_apply_rope_rejects_mismatched_tables():
    cos, sin = precompute_rope(8, 10)
    with pytest.raises(ValueError):
        apply_rope(torch.randn(1, 5, 2, 8), cos, sin)  # caller forgot to slice to T=5


def test_rotation_preserves_every_pair_norm():
    torch.manual_seed(3)
    x = torch.randn(2, 20, 3, 16)
    cos, sin = precompute_rope(16, 20)
    y = apply_rope(x, cos, sin)
    pair_norm = lambda t: t.reshape(*t.shape[:-1], -1, 2).norm(dim=-1)  # noqa: E731
    torch.testing.assert_close(pair_norm(y), pair_norm(x))


def test_q_dot_k_depends_only_on_relative_position():
    torch.manual_seed(4)
    D, L = 32, 64
    q, k = torch.randn(D), torch.randn(D)
    cos, sin = precompute_rope(D, L, theta=1e4)
    # the same q and k placed at every position: rq[m] = R_m q, rk[n] = R_n k
    rq = apply_rope(q.expand(1, L, 1, D), cos, sin)[0, :, 0]  # (L, D)
    rk = apply_rope(k.expand(1, L, 1, D), cos, sin)[0, :, 0]
    scores = rq.double() @ rk.double().T  # (L, L), scores[m, n] = q_m . k_n
    for delta in (-5, 0, 1, 17):
        diag = torch.diagonal(scores, offset=-delta)  # all (m, n) with m - n = delta
        torch.testing.assert_close(diag, diag[0].expand_as(diag), atol=1e-4, rtol=1e-4)
    # and it does depend on the distance (otherwise RoPE would carry no position at all)
    assert abs(scores[10, 10] - scores[10, 3]) > 1e-3


def test_apply_rope_traces_without_graph_breaks():
    # Real arithmetic only: dynamo captures the whole function (complex tensors would not run in
    # bf16). The eager backend checks the capture without compiling kernels, so this stays fast.
    cos, sin = precompute_rope(8, 16)
    x = torch.randn(2, 6, 3, 8, dtype=torch.bfloat16)
    compiled = torch.compile(apply_rope, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x, cos[:6], sin[:6]), apply_rope(x, cos[:6], sin[:6]))


# ---- Hugging Face layout: rotate-half pairs and the row permutation of wq / wk ----------------


def rotate_half_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Reference, written like Hugging Face Llama: dims i and i + D/2 form a pair, in float64."""
    B, T, H, D = x.shape
    freqs = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    angles = torch.outer(torch.arange(T, dtype=torch.float64), freqs)  # (T, D/2)
    emb = torch.cat([angles, angles], dim=-1)  # (T, D): the same angle for i and i + D/2
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
    x = x.double()
    rotated = torch.cat([-x[..., D // 2 :], x[..., : D // 2]], dim=-1)  # rotate_half(x)
    return x * cos + rotated * sin


def attention_scores(x, wq, wk, n_heads, n_kv_heads, rope):
    """q . k for every head and pair of positions, k heads repeated for GQA: (B, H, T, T)."""
    B, T, _ = x.shape
    D = wq.shape[0] // n_heads
    q = rope((x @ wq.T).view(B, T, n_heads, D))
    k = rope((x @ wk.T).view(B, T, n_kv_heads, D))
    k = k.repeat_interleave(n_heads // n_kv_heads, dim=2)  # kv head j serves query heads j*g ...
    return torch.einsum("bthd,bshd->bhts", q.double(), k.double())


@pytest.mark.parametrize(
    "n_heads, n_kv_heads, head_dim", [(2, 2, 8), (4, 2, 16), (8, 1, 4), (6, 3, 2)]
)
def test_permuted_weights_with_rotate_half_give_the_same_scores(n_heads, n_kv_heads, head_dim):
    torch.manual_seed(10)
    dim, T, theta = 24, 7, 1e4
    x = torch.randn(2, T, dim, dtype=torch.float64)
    wq = torch.randn(n_heads * head_dim, dim, dtype=torch.float64)
    wk = torch.randn(n_kv_heads * head_dim, dim, dtype=torch.float64)
    cos, sin = precompute_rope(head_dim, T, theta)
    ours = attention_scores(x, wq, wk, n_heads, n_kv_heads, lambda t: apply_rope(t, cos, sin))
    wq_hf = interleaved_to_half_rows(wq, n_heads)
    wk_hf = interleaved_to_half_rows(wk, n_kv_heads)
    hf = attention_scores(
        x, wq_hf, wk_hf, n_heads, n_kv_heads, lambda t: rotate_half_rope(t, theta)
    )
    torch.testing.assert_close(hf, ours, atol=1e-5, rtol=1e-5)
    # the unpermuted weights do not match (unless head_dim is 2, where both layouts coincide)
    plain = attention_scores(x, wq, wk, n_heads, n_kv_heads, lambda t: rotate_half_rope(t, theta))
    assert (head_dim == 2) == torch.allclose(plain, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_heads, head_dim", [(1, 2), (3, 8), (8, 64)])
def test_row_permutations_are_inverse_and_move_the_documented_rows(n_heads, head_dim):
    torch.manual_seed(11)
    w = torch.randn(n_heads * head_dim, 5)
    half = interleaved_to_half_rows(w, n_heads)
    assert torch.equal(half_to_interleaved_rows(half, n_heads), w)
    assert torch.equal(interleaved_to_half_rows(half_to_interleaved_rows(w, n_heads), n_heads), w)
    for h in range(n_heads):
        for i in range(head_dim // 2):
            assert torch.equal(half[h * head_dim + i], w[h * head_dim + 2 * i])
            assert torch.equal(half[h * head_dim + head_dim // 2 + i], w[h * head_dim + 2 * i + 1])


def test_row_permutations_reject_shapes_that_do_not_split_into_heads():
    with pytest.raises(ValueError, match="heads"):
        interleaved_to_half_rows(torch.randn(10, 4), 3)  # 10 rows, 3 heads
    with pytest.raises(ValueError, match="even"):
        half_to_interleaved_rows(torch.randn(9, 4), 3)  # head_dim 3 is odd
