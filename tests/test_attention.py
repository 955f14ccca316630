"""spongebob.attention against a manual softmax(QK^T / sqrt(d) + mask) V, and the KV cache's contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spongebob.attention import (
    Attention,
    KVCache,
    attention_weights,
    build_attn_mask,
    causal_mask,
    repeat_kv,
)
from spongebob.rope import apply_rope, precompute_rope


def manual_attention(attn: Attention, x, cos, sin, allowed=None):
    """Reference written out by hand: explicit projections, per-head loop, masked softmax.

    ``allowed``: optional bool (B, T, T) on top of causality, True = may attend.
    """
    B, T, C = x.shape
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ attn.wq.weight.T).view(B, T, H, D)
    k = (x @ attn.wk.weight.T).view(B, T, Hkv, D)
    v = (x @ attn.wv.weight.T).view(B, T, Hkv, D)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    mask = torch.ones(T, T).tril().bool().expand(B, T, T)
    if allowed is not None:
        mask = mask & allowed
    heads = []
    for h in range(H):
        g = h // (H // Hkv)  # the kv head that query head h shares
        scores = q[:, :, h] @ k[:, :, g].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(scores, dim=-1) @ v[:, :, g])  # (B, T, D)
    return torch.cat(heads, dim=-1) @ attn.wo.weight.T  # (B, T, C)


def make(dim=32, n_heads=4, n_kv_heads=2, max_len=24, seed=0):
    torch.manual_seed(seed)
    attn = Attention(dim, n_heads, n_kv_heads).eval()
    cos, sin = precompute_rope(dim // n_heads, max_len)
    return attn, cos, sin


@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (4, 1), (8, 2)])
def test_sdpa_attention_equals_manual_attention(n_heads, n_kv_heads):
    attn, cos, sin = make(n_heads=n_heads, n_kv_heads=n_kv_heads)
    x = torch.randn(3, 11, 32)
    got = attn(x, cos[:11], sin[:11])
    assert got.shape == x.shape
    torch.testing.assert_close(got, manual_attention(attn, x, cos[:11], sin[:11]))


def test_output_is_causal():
    attn, cos, sin = make()
    x = torch.randn(1, 10, 32)
    y = attn(x, cos[:10], sin[:10])
    x2 = x.clone()
    x2[:, 6:] = torch.randn(1, 4, 32)  # change the future
    y2 = attn(x2, cos[:10], sin[:10])
    torch.testing.assert_close(y2[:, :6], y[:, :6])
    assert not torch.allclose(y2[:, 6:], y[:, 6:])


def test_repeat_kv_matches_an_explicit_loop():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 4)  # (B, T, H_kv, D)
    for n_rep in (1, 2, 4):
        got = repeat_kv(x, n_rep)
        assert got.shape == (2, 5, 3 * n_rep, 4)
        for j in range(3 * n_rep):
            assert torch.equal(got[:, :, j], x[:, :, j // n_rep])


def test_causal_mask_offsets_queries_to_the_last_positions():
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4).tril().bool())


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_cached_decoding_equals_the_full_forward(n_kv_heads):
    attn, cos, sin = make(n_kv_heads=n_kv_heads)
    x = torch.randn(2, 12, 32)
    full = attn(x, cos[:12], sin[:12])
    # prefill 5 tokens, then one token at a time
    cache = KVCache(2, 24, n_kv_heads, 8)
    outs = [attn(x[:, :5], cos[:5], sin[:5], cache=cache, start_pos=0)]
    for t in range(5, 12):
        outs.append(attn(x[:, t : t + 1], cos[t : t + 1], sin[t : t + 1], cache, t))
    torch.testing.assert_close(torch.cat(outs, dim=1), full)
    # chunked prefill: chunks of 4, 3 and 5 tokens (start_pos > 0 with T > 1)
    cache = KVCache(2, 12, n_kv_heads, 8)
    outs, s = [], 0
    for n in (4, 3, 5):
        outs.append(attn(x[:, s : s + n], cos[s : s + n], sin[s : s + n], cache, s))
        s += n
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


def test_kv_cache_update_writes_in_place_and_returns_the_prefix():
    cache = KVCache(2, 6, 3, 4)
    k, v = torch.randn(2, 4, 3, 4), torch.randn(2, 4, 3, 4)
    buf = cache.k.data_ptr()
    k_all, v_all = cache.update(k, v, 0)
    assert k_all.shape == (2, 4, 3, 4) and torch.equal(k_all, k) and torch.equal(v_all, v)
    k2 = torch.randn(2, 2, 3, 4)
    k_all, _ = cache.update(k2, k2, 4)
    assert k_all.shape == (2, 6, 3, 4) and torch.equal(k_all[:, 4:], k2)
    assert torch.equal(k_all[:, :4], k) and cache.k.data_ptr() == buf  # no reallocation
    assert cache.nbytes == 2 * 2 * 6 * 3 * 4 * 4  # k and v, float32
    assert KVCache(1, 10, 2, 8, dtype=torch.bfloat16).nbytes == 2 * 10 * 2 * 8 * 2


def test_kv_cache_overflow_raises_a_clear_error():
    cache = KVCache(1, 8, 2, 4)
    cache.update(torch.zeros(1, 6, 2, 4), torch.zeros(1, 6, 2, 4), 0)
    with pytest.raises(ValueError, match="overflow"):
        cache.update(torch.zeros(1, 3, 2, 4), torch.zeros(1, 3, 2, 4), 6)
    attn, cos, sin = make()
    with pytest.raises(ValueError, match="overflow"):
        attn(torch.randn(1, 1, 32), cos[8:9], sin[8:9], cache=KVCache(1, 8, 2, 8), start_pos=8)


def left_pad(seqs, pad_value=0.0):
    """Stack (T_i, C) sequences into (B, T_max, C) with padding on the left, plus a key mask."""
    T = max(s.shape[0] for s in seqs)
    x = torch.full((len(seqs), T, seqs[0].shape[1]), pad_value)
    keep = torch.zeros(len(seqs), T, dtype=torch.bool)
    for b, s in enumerate(seqs):
        x[b, T - len(s) :] = s
        keep[b, T - len(s) :] = True
    return x, keep


def test_left_padding_mask_gives_the_unpadded_outputs():
    attn, cos, sin = make()
    seqs = [torch.randn(n, 32) for n in (7, 4, 1)]
    x, keep = left_pad(seqs, pad_value=3.0)  # junk in the pads must not leak
    mask = build_attn_mask(7, 7, keep[:, None, None, :])  # key mask (B, 1, 1, T) -> (B, 1, T, T)
    out = attn(x, cos[:7], sin[:7], mask=mask)
    # A padding query has no real key to see; it attends to its own position only, so its output
    # is finite and defined (its value vector through wo) on every torch version and backend.
    v = (x @ attn.wv.weight.T).view(3, 7, 2, 8)
    own = repeat_kv(v, 2).flatten(2) @ attn.wo.weight.T  # (B, T, C)
    torch.testing.assert_close(out[~keep], own[~keep])
    for b, s in enumerate(seqs):
        # RoPE depends only on relative positions, so a shifted start changes nothing
        ref = attn(s[None], cos[: len(s)], sin[: len(s)])
        torch.testing.assert_close(out[b, 7 - len(s) :], ref[0])


def test_left_padding_with_a_cache_then_decoding():
    attn, cos, sin = make()
    seqs = [torch.randn(n, 32) for n in (9, 5)]
    x, keep = left_pad([s[:-3] for s in seqs])  # prefill all but the last 3 tokens
    T0 = x.shape[1]
    cache = KVCache(2, 24, 2, 8)
    outs = [attn(x, cos[:T0], sin[:T0], cache, 0, build_attn_mask(T0, T0, keep[:, None, None, :]))]
    for i in range(3):
        t = T0 + i
        step = torch.stack([s[-3 + i] for s in seqs])[:, None]  # (B, 1, C)
        keep = torch.cat([keep, torch.ones(2, 1, dtype=torch.bool)], dim=1)
        mask = build_attn_mask(1, t + 1, keep[:, None, None, :])  # (B, 1, 1, t + 1)
        outs.append(attn(step, cos[t : t + 1], sin[t : t + 1], cache, t, mask))
    out = torch.cat(outs, dim=1)
    for b, s in enumerate(seqs):
        ref = attn(s[None], cos[: len(s)], sin[: len(s)])[0]
        torch.testing.assert_close(out[b, out.shape[1] - len(s) :], ref)


def test_a_general_attn_mask_is_combined_with_causality():
    attn, cos, sin = make()
    torch.manual_seed(5)
    x = torch.randn(2, 9, 32)
    allowed = torch.rand(2, 9, 9) > 0.3
    allowed |= torch.eye(9, dtype=torch.bool)  # every query keeps at least itself
    got = attn(x, cos[:9], sin[:9], mask=build_attn_mask(9, 9, allowed[:, None]))
    torch.testing.assert_close(got, manual_attention(attn, x, cos[:9], sin[:9], allowed))
    # The layer uses a given mask as the complete mask: causality is the caller's (the builder's).
    complete = causal_mask(9, 9) & allowed[:, None]
    torch.testing.assert_close(attn(x, cos[:9], sin[:9], mask=complete), got)


def test_build_attn_mask_returns_none_when_sdpa_needs_no_mask():
    assert build_attn_mask(12, 12) is None  # training / full prefill: SDPA's is_causal
    assert build_attn_mask(1, 30) is None  # one query decoding: it sees every cached key
    assert torch.equal(build_attn_mask(4, 10), causal_mask(4, 10))  # a chunk: offset diagonal
    keys = torch.tensor([[False, True, True, True], [True, True, True, True]])[:, None, None, :]
    m = build_attn_mask(4, 4, keys)  # (B, 1, T, S)
    assert m.shape == (2, 1, 4, 4) and m.dtype == torch.bool
    assert torch.equal(m[1, 0], causal_mask(4, 4))
    assert m[0, 0].int().tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 1, 1, 1]]
    step = build_attn_mask(1, 4, keys)  # decoding with padding: one query row
    assert step.shape == (2, 1, 1, 4) and step[0].flatten().tolist() == [False, True, True, True]


def test_build_attn_mask_rejects_bad_masks_with_a_clear_message():
    with pytest.raises(ValueError, match="attn_mask must be a bool tensor"):
        build_attn_mask(3, 3, torch.ones(1, 1, 1, 3))
    with pytest.raises(ValueError, match=r"does not broadcast to \(B, 1, T, S\)"):
        build_attn_mask(3, 3, torch.ones(2, 1, 1, 5, dtype=torch.bool))


def test_no_mask_equals_the_explicit_causal_mask_and_sdpa_gets_is_causal(monkeypatch):
    attn, cos, sin = make()
    x = torch.randn(2, 10, 32)
    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    fused = attn(x, cos[:10], sin[:10])
    explicit = attn(x, cos[:10], sin[:10], mask=causal_mask(10, 10))
    assert calls[0] == (None, True)  # the training path: no mask at all, fused kernels allowed
    assert calls[1][0] is not None and calls[1][1] is False
    torch.testing.assert_close(fused, explicit)
    torch.testing.assert_close(fused, manual_attention(attn, x, cos[:10], sin[:10]))


def test_state_dict_keys_are_the_originals():
    attn = Attention(64, 8, 2)
    sd = attn.state_dict()
    assert sorted(sd) == ["wk.weight", "wo.weight", "wq.weight", "wv.weight"]
    assert sd["wq.weight"].shape == (64, 64) and sd["wo.weight"].shape == (64, 64)
    assert sd["wk.weight"].shape == sd["wv.weight"].shape == (16, 64)  # 2 kv heads of dim 8


def test_invalid_head_counts_are_rejected():
    with pytest.raises(ValueError):
        Attention(64, 8, 3)
    with pytest.raises(ValueError):
        Attention(60, 8, 8)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    attn = Attention(32, 4, 2, dropout=0.5)
    cos, sin = precompute_rope(8, 6)
    x = torch.randn(1, 6, 32)
    attn.eval()
    torch.testing.assert_close(attn(x, cos, sin), attn(x, cos, sin))
    attn.train()
    assert not torch.allclose(attn(x, cos, sin), attn(x, cos, sin))


def test_bfloat16_forward_is_close_to_float32():
    attn, cos, sin = make()
    x = torch.randn(2, 8, 32)
    want = attn(x, cos[:8], sin[:8])
    got = attn.to(torch.bfloat16)(x.bfloat16(), cos[:8], sin[:8])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)


def test_attention_traces_without_graph_breaks():
    attn, cos, sin = make()
    compiled = torch.compile(attn, fullgraph=True, backend="eager")  # capture only, no kernels
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(compiled(x, cos[:6], sin[:6]), attn(x, cos[:6], sin[:6]))
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[0, ..., :2] = False  # left padding in row 0
    mask = build_attn_mask(6, 6, keep)
    c1, c2 = KVCache(2, 16, 2, 8), KVCache(2, 16, 2, 8)
    got = compiled(x, cos[:6], sin[:6], c1, 0, mask)
    torch.testing.assert_close(got, attn(x, cos[:6], sin[:6], c2, 0, mask))


def test_attention_weights_reproduce_the_layer_output():
    attn, cos, sin = make(n_heads=4, n_kv_heads=2)
    x = torch.randn(2, 7, 32)
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[1, ..., :3] = False
    for mask in (None, build_attn_mask(7, 7, keep)):
        w = attention_weights(attn, x, cos[:7], sin[:7], mask=mask)  # (B, H, T, T)
        assert w.shape == (2, 4, 7, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 7))
        assert torch.all(w.triu(1) == 0)  # nothing from the future
        v = repeat_kv((x @ attn.wv.weight.T).view(2, 7, 2, 8), 2).transpose(1, 2)
        out = (w @ v).transpose(1, 2).reshape(2, 7, 32) @ attn.wo.weight.T
        torch.testing.assert_close(out, attn(x, cos[:7], sin[:7], mask=mask))
