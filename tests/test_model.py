"""Tests of spongebob.model: layers against hand formulas, the original's state-dict layout and
parameter counts, tied weights, the loss, cached decoding, the mask built once per forward, and the
KV caches' dtype. Checkpoint loading is tested in test_checkpoint.py."""

import math

import pytest
import torch
import torch.nn.functional as F

import spongebob.attention
from spongebob.config import ModelConfig
from spongebob.model import (
    Block,
    FeedForward,
    RMSNorm,
    SpongeBob,
    count_parameters,
    flops_per_token,
    init_weights,
    lm_loss,
)
from spongebob.rope import precompute_rope

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64)


def seed_keys(n_layers: int) -> set[str]:
    """The original's state-dict keys, as listed in SEED.md."""
    keys = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    for i in range(n_layers):
        for m in ("wq", "wk", "wv", "wo"):
            keys.add(f"layers.{i}.attention.{m}.weight")
        for m in ("w1", "w2", "w3"):
            keys.add(f"layers.{i}.feed_forward.{m}.weight")
        keys |= {f"layers.{i}.attention_norm.weight", f"layers.{i}.ffn_norm.weight"}
    return keys


@pytest.fixture(scope="module")
def seed_model():
    torch.manual_seed(0)
    return SpongeBob(ModelConfig())


@pytest.fixture(scope="module")
def small():
    """A small model with large random weights, so that outputs differ clearly between tokens."""
    torch.manual_seed(0)
    m = SpongeBob(SMALL).eval()
    init_weights(m, std=0.1)
    return m


# ---- parameter counts and layout -------------------------------------------------------------


def test_parameter_counts_match_the_original(seed_model):
    assert count_parameters(seed_model) == 28_975_616
    torch.manual_seed(0)
    assert count_parameters(SpongeBob(ModelConfig(n_kv_heads=2))) == 25_829_888


def test_state_dict_keys_are_exactly_the_originals(seed_model):
    sd = seed_model.state_dict()
    assert set(sd) == seed_keys(8)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["tok_embeddings.weight"] == shapes["output.weight"] == (6400, 512)
    assert shapes["layers.0.attention.wk.weight"] == (512, 512)
    assert shapes["layers.7.feed_forward.w1.weight"] == (1408, 512)
    assert shapes["layers.7.feed_forward.w2.weight"] == (512, 1408)


def test_gqa_shapes():
    torch.manual_seed(0)
    sd = SpongeBob(ModelConfig.preset("tiny")).state_dict()
    assert set(sd) == seed_keys(4)
    assert tuple(sd["layers.0.attention.wk.weight"].shape) == (64, 128)  # 2 kv heads x 32
    assert tuple(sd["layers.0.attention.wq.weight"].shape) == (128, 128)


def test_tied_weights_are_one_tensor(seed_model):
    assert seed_model.output.weight is seed_model.tok_embeddings.weight
    sd = seed_model.state_dict()
    assert sd["output.weight"].data_ptr() == sd["tok_embeddings.weight"].data_ptr()
    names = [n for n, _ in seed_model.named_parameters()]
    assert "output.weight" not in names and "tok_embeddings.weight" in names


def test_rope_tables_are_float32_non_persistent_buffers():
    torch.manual_seed(0)
    m = SpongeBob(SMALL)
    assert "cos" not in m.state_dict() and "sin" not in m.state_dict()
    cos, sin = precompute_rope(SMALL.head_dim, SMALL.max_seq_len, SMALL.rope_theta)
    m = m.to(torch.bfloat16)
    assert m.norm.weight.dtype == torch.bfloat16
    assert m.cos.dtype == torch.float32 and torch.equal(m.cos, cos) and torch.equal(m.sin, sin)


def test_flops_per_token_is_6n_plus_attention(seed_model):
    norms = sum(p.numel() for n, p in seed_model.named_parameters() if n.endswith("norm.weight"))
    n_matmul = count_parameters(seed_model) - norms  # the tied head is a matmul, counted once
    c = seed_model.config
    assert flops_per_token(c, 512) == 6 * n_matmul + 12 * c.n_layers * c.dim * 512
    assert flops_per_token(c, 512, training=False) * 3 == flops_per_token(c, 512)


# ---- layers -------------------------------------------------------------------------------


def test_rmsnorm_matches_the_formula():
    torch.manual_seed(0)
    norm = RMSNorm(16, eps=1e-5)
    assert torch.equal(norm.weight, torch.ones(16))
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 16))
    x = 4 * torch.randn(3, 7, 16) + 2
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), expected)


def test_rmsnorm_computes_in_float32_and_returns_the_input_dtype():
    torch.manual_seed(0)
    x = 300 * torch.randn(2, 4, 64)
    norm = RMSNorm(64).to(torch.bfloat16)
    y = norm(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    ref = x.to(torch.bfloat16).double()
    ref = ref / torch.sqrt((ref**2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(y.double(), ref, atol=1e-2, rtol=1e-2)


def test_feed_forward_is_swiglu():
    torch.manual_seed(0)
    ff = FeedForward(8, 20)
    x = torch.randn(3, 8)
    expected = (F.silu(x @ ff.w1.weight.T) * (x @ ff.w3.weight.T)) @ ff.w2.weight.T
    torch.testing.assert_close(ff(x), expected)


def test_block_is_pre_norm_with_residuals():
    torch.manual_seed(0)
    block = Block(SMALL)
    init_weights(torch.nn.ModuleDict({"layers": torch.nn.ModuleList([block])}), std=0.1)
    cos, sin = precompute_rope(SMALL.head_dim, 10)
    x = torch.randn(2, 10, SMALL.dim)
    h = x + block.attention(block.attention_norm(x), cos, sin)
    expected = h + block.feed_forward(block.ffn_norm(h))
    torch.testing.assert_close(block(x, cos, sin), expected)


def test_init_scales_residual_projections():
    torch.manual_seed(0)
    m = SpongeBob(ModelConfig(dim=256, n_layers=8, n_heads=4, n_kv_heads=4, vocab_size=2000))
    std = lambda t: t.detach().std().item()  # noqa: E731
    assert abs(std(m.tok_embeddings.weight) - 0.02) < 0.001
    assert abs(std(m.layers[3].attention.wq.weight) - 0.02) < 0.001
    target = 0.02 / math.sqrt(2 * 8)
    assert abs(std(m.layers[3].attention.wo.weight) - target) < 0.0005
    assert abs(std(m.layers[3].feed_forward.w2.weight) - target) < 0.0005
    assert torch.equal(m.layers[0].ffn_norm.weight, torch.ones(256))


def test_initial_loss_is_about_log_vocab():
    torch.manual_seed(0)
    m = SpongeBob(ModelConfig.preset("tiny"))
    ids = torch.randint(0, 2048, (2, 65))
    with torch.no_grad():
        loss = m(ids[:, :-1], ids[:, 1:]).loss.item()
    assert abs(loss - math.log(2048)) < 0.1


# ---- forward, loss, cache -----------------------------------------------------------------


def test_forward_shapes_and_last_only(small):
    ids = torch.randint(0, SMALL.vocab_size, (3, 11))
    out = small(ids)
    assert out.logits.shape == (3, 11, SMALL.vocab_size) and out.loss is None
    last = small(ids, last_only=True).logits
    assert last.shape == (3, 1, SMALL.vocab_size)
    torch.testing.assert_close(last[:, 0], out.logits[:, -1])
    with pytest.raises(ValueError, match="last_only"):
        small(ids, ids, last_only=True)


def test_forward_refuses_positions_beyond_max_seq_len(small):
    with pytest.raises(ValueError, match="max_seq_len=64"):
        small(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        small(torch.zeros(1, 2, dtype=torch.long), start_pos=63)


def test_loss_ignores_minus_100(small):
    torch.manual_seed(1)
    ids = torch.randint(0, SMALL.vocab_size, (2, 12))
    targets = torch.randint(0, SMALL.vocab_size, (2, 12))
    targets[0, :5] = -100
    targets[1, 7:] = -100
    out = small(ids, targets)
    keep = targets != -100
    expected = F.cross_entropy(out.logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, expected)
    # The ignored targets' values do not matter at all.
    targets2 = torch.where(keep, targets, torch.zeros_like(targets))
    targets2[~keep] = -100
    torch.testing.assert_close(small(ids, targets2).loss, out.loss)


def test_weighted_loss_is_a_weighted_mean_over_counted_positions():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[1, 0] = -100
    weights = torch.rand(2, 5) + 0.5
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten().clamp_min(0), reduction="none")
    w = weights.flatten() * (targets.flatten() != -100)
    torch.testing.assert_close(lm_loss(logits, targets, weights), (ce * w).sum() / w.sum())
    ones = torch.ones(2, 5)
    torch.testing.assert_close(lm_loss(logits, targets, ones), lm_loss(logits, targets))


def test_loss_with_no_counted_position_is_zero_not_nan():
    logits = torch.randn(1, 3, 5, requires_grad=True)
    loss = lm_loss(logits, torch.full((1, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_cached_decoding_equals_the_full_forward(small):
    torch.manual_seed(2)
    ids = torch.randint(0, SMALL.vocab_size, (2, 20))
    with torch.no_grad():
        full = small(ids).logits
        caches = small.make_caches(2, 20)
        parts = [small(ids[:, :7], caches=caches).logits]
        parts.append(small(ids[:, 7:9], caches=caches, start_pos=7).logits)  # a chunk of 2
        for t in range(9, 20):
            parts.append(small(ids[:, t : t + 1], caches=caches, start_pos=t).logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)


def test_left_padding_mask_leaves_real_positions_unchanged(small):
    torch.manual_seed(3)
    ids = torch.randint(0, SMALL.vocab_size, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], 1)  # 4 pads on the left
    keys = torch.tensor([[False] * 4 + [True] * 9])
    with torch.no_grad():
        ref = small(ids).logits
        out = small(padded, attn_mask=keys[:, None, None, :]).logits
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 4:], ref, atol=1e-5, rtol=1e-4)


def test_chunked_prefill_with_a_padding_mask_equals_the_full_forward(small):
    torch.manual_seed(4)
    ids = torch.randint(0, SMALL.vocab_size, (2, 14))
    keys = torch.ones(2, 14, dtype=torch.bool)
    keys[0, :5] = False  # row 0: 5 left pads
    mask = keys[:, None, None, :]  # (B, 1, 1, S)
    with torch.no_grad():
        full = small(ids, attn_mask=mask).logits
        caches = small.make_caches(2, 14)
        parts = [small(ids[:, :6], caches=caches, attn_mask=mask[..., :6]).logits]
        parts.append(
            small(ids[:, 6:11], caches=caches, start_pos=6, attn_mask=mask[..., :11]).logits
        )
        for t in range(11, 14):  # then single tokens, still masked
            step = small(
                ids[:, t : t + 1], caches=caches, start_pos=t, attn_mask=mask[..., : t + 1]
            )
            parts.append(step.logits)
        alone = small(ids[:1, 5:]).logits  # row 0 without its pads
    assert torch.isfinite(full).all()
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full[:1, 5:], alone, atol=1e-5, rtol=1e-4)


def test_make_caches(small):
    caches = small.make_caches(3, 10)
    assert len(caches) == SMALL.n_layers
    assert caches[0].k.shape == (3, 10, SMALL.n_kv_heads, SMALL.head_dim)
    assert caches[0].k.dtype == torch.float32
    assert len(small.make_caches(1)) == SMALL.n_layers
    assert small.make_caches(1)[0].k.shape[1] == SMALL.max_seq_len
    with pytest.raises(ValueError, match="max_len"):
        small.make_caches(1, SMALL.max_seq_len + 1)


def test_backward_reaches_every_parameter(small):
    m = SpongeBob(SMALL)
    ids = torch.randint(0, SMALL.vocab_size, (2, 8))
    m(ids, ids).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


# ---- the attention mask: built once per forward, none on the training path ----------------------


@pytest.fixture
def mask_spies(monkeypatch):
    """Count the causal masks built and record what every SDPA call received."""
    built, sdpa_calls = [], []
    causal, sdpa = spongebob.attention.causal_mask, F.scaled_dot_product_attention

    def counting_causal_mask(*args, **kwargs):
        built.append(args)
        return causal(*args, **kwargs)

    def spy(*args, **kwargs):
        sdpa_calls.append((kwargs.get("attn_mask"), kwargs.get("is_causal")))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(spongebob.attention, "causal_mask", counting_causal_mask)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return built, sdpa_calls


def test_training_forward_passes_no_mask_so_sdpa_gets_is_causal(small, mask_spies):
    built, sdpa_calls = mask_spies
    ids = torch.randint(0, SMALL.vocab_size, (2, 12))
    small.train()
    try:
        small(ids, ids).loss.backward()
    finally:
        small.eval()
        small.zero_grad(set_to_none=True)
    assert built == []  # no mask tensor at all
    assert sdpa_calls == [(None, True)] * SMALL.n_layers


def test_padding_and_chunk_masks_are_built_once_per_forward(small, mask_spies):
    built, sdpa_calls = mask_spies
    ids = torch.randint(0, SMALL.vocab_size, (2, 10))
    keys = torch.ones(2, 1, 1, 10, dtype=torch.bool)
    keys[0, ..., :3] = False
    with torch.no_grad():
        small(ids, attn_mask=keys)  # a padded batch
        assert len(built) == 1 and len(sdpa_calls) == SMALL.n_layers
        shared = sdpa_calls[0][0]
        assert shared.shape == (2, 1, 10, 10)
        assert all(m is shared and c is False for m, c in sdpa_calls)  # one tensor, every layer
        caches = small.make_caches(2, 10)
        small(ids[:, :4], caches=caches)  # T == S: no mask
        small(ids[:, 4:9], caches=caches, start_pos=4)  # a chunk after cached positions
        small(ids[:, 9:], caches=caches, start_pos=9)  # one token: no mask
    assert len(built) == 2  # the padded forward's and the chunk's, once each
    masks = [m for m, _ in sdpa_calls[SMALL.n_layers :]]
    assert masks[: SMALL.n_layers] == [None] * SMALL.n_layers
    assert all(m is masks[SMALL.n_layers] for m in masks[SMALL.n_layers : 2 * SMALL.n_layers])
    assert masks[2 * SMALL.n_layers :] == [None] * SMALL.n_layers


def test_no_mask_path_equals_the_explicit_causal_mask_path(small, mask_spies):
    built, sdpa_calls = mask_spies
    torch.manual_seed(5)
    ids = torch.randint(0, SMALL.vocab_size, (2, 16))
    with torch.no_grad():
        fused = small(ids).logits  # is_causal, no mask
        explicit = small(ids, attn_mask=torch.ones(1, 1, 1, 16, dtype=torch.bool)).logits
    assert sdpa_calls[0] == (None, True) and sdpa_calls[-1][0] is not None and len(built) == 1
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_forward_errors_name_the_argument():
    m = SpongeBob(SMALL)
    with pytest.raises(ValueError, match="exceed max_seq_len=64; shorten input_ids"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="caches has 1 entries for 2 layers"):
        m(torch.zeros(1, 3, dtype=torch.long), caches=m.make_caches(1)[:1])


# ---- KV caches in the compute dtype ------------------------------------------------------------


def test_caches_follow_cpu_autocast_and_a_bf16_model(small):
    assert small.make_caches(1, 8)[0].k.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        caches = small.make_caches(2, 12)
        assert all(c.k.dtype == c.v.dtype == torch.bfloat16 for c in caches)
        ids = torch.randint(0, SMALL.vocab_size, (2, 12))
        with torch.no_grad():
            full = small(ids).logits
            parts = [small(ids[:, :8], caches=caches).logits]
            parts += [small(ids[:, t : t + 1], caches=caches, start_pos=t).logits for t in (8, 9)]
    assert caches[0].k[:, :10].abs().sum() > 0  # filled in bf16, no cast back to float32
    torch.testing.assert_close(
        torch.cat(parts, 1).float(), full[:, :10].float(), atol=0.1, rtol=0.1
    )
    half = SpongeBob(SMALL).to(torch.bfloat16)
    assert half.make_caches(1, 8)[0].k.dtype == torch.bfloat16
    assert half.make_caches(1, 8, dtype=torch.float32)[0].k.dtype == torch.float32  # explicit wins
    with torch.autocast("cpu", enabled=False):
        assert small.make_caches(1, 8)[0].k.dtype == torch.float32
