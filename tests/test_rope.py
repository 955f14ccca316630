"""spongebob.rope against an independent complex-number formulation, plus RoPE's invariants."""

from __future__ import annotations

import math

import pytest
import torch

from spongebob.rope import apply_rope, precompute_rope


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
