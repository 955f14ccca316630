"""Tests of spongebob.generate against independent reference loops and hand-made logits."""

import warnings

import pytest
import torch

from spongebob.config import ModelConfig
from spongebob.generate import (
    CHAT_SAMPLING,
    apply_repetition_penalty,
    filter_logits,
    generate,
    prepare_prompts,
    sample_next,
    stream_generate,
    stream_text,
)
from spongebob.model import SpongeBob, init_weights
from spongebob.tokenizer import byte_to_unicode, train_bpe

CFG = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=48)


@pytest.fixture(scope="module")
def model():
    """Random weights with std 0.2: nonsense, but a different argmax at most steps."""
    torch.manual_seed(0)
    m = SpongeBob(CFG).eval()
    init_weights(m, std=0.2)
    return m


@torch.no_grad()
def reference_loop(model, prompt, n, penalty=1.0):
    """Greedy decoding the slow, obvious way: full forward every step, no cache, no batching."""
    ids = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([ids])).logits[0, -1].tolist()  # plain Python floats
        for t in set(ids):
            logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
        ids.append(max(range(len(logits)), key=logits.__getitem__))
    return ids[len(prompt) :]


PROMPTS = [[5, 6, 7], list(range(20, 37)), [9], [100, 3, 100, 3]]


# ---- filters on hand-made logits -------------------------------------------------------------


def _kept(logits):
    return torch.isfinite(logits).tolist()


def test_top_k_keeps_the_k_largest():
    lg = torch.tensor([[1.0, 4.0, 3.0, 2.0], [0.0, -1.0, 5.0, 5.5]])
    assert _kept(filter_logits(lg, top_k=2)) == [
        [False, True, True, False],
        [False, False, True, True],
    ]
    assert _kept(filter_logits(lg, top_k=1)) == [
        [False, True, False, False],
        [False, False, False, True],
    ]
    out = filter_logits(lg, top_k=2)
    assert torch.equal(out[torch.isfinite(out)], lg[torch.isfinite(out)])  # kept values untouched


def test_top_k_keeps_ties_and_off_values():
    lg = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    assert _kept(filter_logits(lg, top_k=2)) == [[True, True, True, False]]
    for off in (None, 0, 4, 10):
        assert torch.equal(filter_logits(lg, top_k=off), lg)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    lg = probs.log()
    assert _kept(filter_logits(lg, top_p=0.4)) == [[False, True, False, False]]
    assert _kept(filter_logits(lg, top_p=0.7)) == [[False, True, False, True]]
    assert _kept(filter_logits(lg, top_p=0.9)) == [[False, True, True, True]]
    assert _kept(filter_logits(lg, top_p=0.99)) == [[True, True, True, True]]
    assert _kept(filter_logits(lg, top_p=1e-6)) == [[False, True, False, False]]  # never empty
    assert torch.equal(filter_logits(lg, top_p=1.0), lg)
    assert torch.equal(filter_logits(lg, top_p=None), lg)


def test_top_p_works_row_by_row_and_after_top_k():
    lg = torch.tensor([[0.5, 0.3, 0.2], [0.34, 0.33, 0.33]]).log()
    assert _kept(filter_logits(lg, top_p=0.6)) == [[True, True, False], [True, True, False]]
    # top-k first, then top-p on what is left, renormalised: the top two have p = 0.525, 0.475.
    lg = torch.tensor([[1.0, 0.9, 0.8, 0.7]])
    assert _kept(filter_logits(lg, top_p=0.5)) == [[True, True, False, False]]
    assert _kept(filter_logits(lg, top_k=2, top_p=0.5)) == [[True, False, False, False]]


def test_top_p_ranks_tied_tokens_by_token_id():
    # Four equal probabilities of 0.25: only as many as needed to reach top_p, lowest ids first.
    assert _kept(filter_logits(torch.zeros(1, 4), top_p=0.5)) == [[True, True, False, False]]
    assert _kept(filter_logits(torch.zeros(1, 4), top_p=0.51)) == [[True, True, True, False]]
    # Three tied favourites (p = 0.30 each) after a less likely token 0: tokens 1 and 2 reach 0.5.
    lg = torch.tensor([[0.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    assert _kept(filter_logits(lg, top_p=0.5)) == [
        [False, True, True, False],
        [True, True, False, False],
    ]


@pytest.mark.parametrize("kw", [dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)])
def test_filter_rejects_invalid_settings(kw):
    with pytest.raises(ValueError):
        filter_logits(torch.zeros(1, 3), **kw)


@pytest.mark.parametrize("kw", [dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)])
def test_temperature_zero_still_rejects_invalid_filters(model, kw):
    with pytest.raises(ValueError, match="top_"):
        sample_next(torch.zeros(2, 3), temperature=0, **kw)
    with pytest.raises(ValueError, match="top_"):
        generate(model, [1, 2], 3, temperature=0, **kw)


def test_chat_sampling_is_the_originals():
    assert CHAT_SAMPLING == {"temperature": 0.85, "top_p": 0.85, "repetition_penalty": 1.3}


def test_sample_next_temperature_zero_is_argmax_and_sampling_matches_probabilities():
    lg = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_next(lg, temperature=0).tolist() == [1, 0]
    assert sample_next(lg, temperature=1.0, top_k=1).tolist() == [1, 0]
    with pytest.raises(ValueError):
        sample_next(lg, temperature=-1)
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([0.6, 0.3, 0.1])
    draws = sample_next(probs.log().expand(20000, 3), temperature=1.0, generator=gen)
    freq = torch.bincount(draws, minlength=3) / 20000
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    hot = sample_next(probs.log().expand(20000, 3), temperature=2.0, generator=gen)
    flatter = probs.sqrt() / probs.sqrt().sum()  # p^(1/T), renormalised
    torch.testing.assert_close(
        torch.bincount(hot, minlength=3) / 20000, flatter, atol=0.015, rtol=0
    )


def test_sampling_is_reproducible_with_a_generator():
    lg = torch.randn(4, 50)
    a = sample_next(lg, 1.0, generator=torch.Generator().manual_seed(3))
    b = sample_next(lg, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


# ---- repetition penalty ---------------------------------------------------------------------


def test_repetition_penalty_lowers_positive_and_negative_logits():
    lg = torch.tensor([[2.0, -2.0, 0.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, True, False, False]])
    out = apply_repetition_penalty(lg, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 0.0, 1.0, -1.0]]
    assert (out <= lg).all()
    assert torch.equal(apply_repetition_penalty(lg, seen, 1.0), lg)
    with pytest.raises(ValueError):
        apply_repetition_penalty(lg, seen, 0.0)


def test_repetition_penalty_inside_generate_matches_the_reference(model):
    for prompt in PROMPTS:
        got = generate(model, prompt, 12, temperature=0, repetition_penalty=1.8)[0]
        assert got == reference_loop(model, prompt, 12, penalty=1.8)
    plain = generate(model, PROMPTS[3], 12, temperature=0)[0]
    assert plain != generate(model, PROMPTS[3], 12, temperature=0, repetition_penalty=1.8)[0]


def test_padding_is_never_penalised_even_when_the_pad_id_is_a_prompt_token(model):
    pad = generate(model, [9], 1, temperature=0)[0][0]  # the token the model wants first after [9]
    prompts = [[9], [pad, 6, 7, 8, 10, 11], [4, pad, 3]]  # [9] gets 5 pads of that very token
    kw = dict(temperature=0, repetition_penalty=1.8)
    batched = generate(model, prompts, 10, pad_token_id=pad, **kw)
    assert batched == [generate(model, p, 10, **kw)[0] for p in prompts]
    assert batched == [reference_loop(model, p, 10, penalty=1.8) for p in prompts]
    assert batched[0][0] == pad  # penalising the pads of row 0 would have changed this token


# ---- generate -------------------------------------------------------------------------------


def test_greedy_equals_the_argmax_loop_without_cache(model):
    distinct = []
    for prompt in PROMPTS:
        expected = reference_loop(model, prompt, 15)
        assert generate(model, prompt, 15, temperature=0)[0] == expected
        assert generate(model, prompt, 15, temperature=0, use_cache=False)[0] == expected
        distinct.append(len(set(expected)))
    assert max(distinct) > 5  # the references are not all trivial repetitions


def test_temperature_zero_ignores_the_filters(model):
    greedy = generate(model, PROMPTS[1], 10, temperature=0)
    assert generate(model, PROMPTS[1], 10, temperature=0, top_k=2, top_p=0.1) == greedy


def test_batched_left_padded_generation_equals_one_by_one(model):
    batched = generate(model, PROMPTS, 12, temperature=0)
    assert batched == [generate(model, p, 12, temperature=0)[0] for p in PROMPTS]
    ids, valid = prepare_prompts(PROMPTS, pad_token_id=0)
    assert generate(model, ids, 12, attention_mask=valid.long(), temperature=0) == batched


@torch.no_grad()
def _nucleus(model, context, temperature, top_p, penalty):
    """Token ids allowed by top-p after the penalty, from a full forward of one row (no cache)."""
    logits = model(torch.tensor([context])).logits[0, -1].double()
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen[context] = True
    logits = torch.where(seen & (logits > 0), logits / penalty, logits)
    logits = torch.where(seen & (logits < 0), logits * penalty, logits)
    probs = (logits / temperature).softmax(-1)
    order = probs.argsort(descending=True)
    before = probs[order].cumsum(0) - probs[order]
    return set(order[before < top_p + 1e-4].tolist())  # tolerance: batched vs single-row rounding


def test_sampled_batches_stay_in_each_rows_nucleus_and_repeat_with_a_seed(model):
    c = CHAT_SAMPLING
    sampled = generate(model, PROMPTS, 12, **c, generator=torch.Generator().manual_seed(0))
    again = generate(model, PROMPTS, 12, **c, generator=torch.Generator().manual_seed(0))
    assert again == sampled
    sizes = []
    for prompt, row in zip(PROMPTS, sampled):
        assert len(row) == 12
        for i, token in enumerate(row):
            allowed = _nucleus(
                model, prompt + row[:i], c["temperature"], c["top_p"], c["repetition_penalty"]
            )
            sizes.append(len(allowed))
            assert token in allowed, (prompt, i, token)
    assert max(sizes) < CFG.vocab_size / 2  # the nucleus really excludes tokens
    assert len({tuple(r) for r in sampled}) == 4


def test_pad_token_value_does_not_matter(model):
    a = generate(model, PROMPTS, 8, temperature=0, pad_token_id=0)
    b = generate(model, PROMPTS, 8, temperature=0, pad_token_id=299)
    assert a == b


def test_max_new_tokens_counts_new_tokens_only(model):
    for n in (1, 5, 20):
        out = generate(model, PROMPTS, n, temperature=0)
        assert [len(r) for r in out] == [n] * len(PROMPTS)
    assert generate(model, PROMPTS, 0) == [[], [], [], []]
    assert list(stream_generate(model, PROMPTS[0], 0)) == []
    too_long = list(range(1, CFG.max_seq_len + 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is generated, so nothing is cut: no warning
        assert generate(model, too_long, 0) == [[]]
        assert list(stream_generate(model, too_long, 0)) == []
    with pytest.raises(ValueError):
        generate(model, PROMPTS, -1)


def test_eos_stops_each_sequence(model):
    free = generate(model, PROMPTS, 10, temperature=0)
    eos = free[1][3]
    out = generate(model, PROMPTS, 10, temperature=0, eos_token_id=eos)
    assert out == [r[: r.index(eos) + 1] if eos in r else r for r in free]
    assert out[1][-1] == eos and len(out[1]) <= 4
    two = generate(model, PROMPTS, 10, temperature=0, eos_token_id=[free[0][1], eos])
    assert len(two[0]) <= 2 and two[0][-1] == free[0][1]


def test_generation_stops_as_soon_as_every_sequence_ended(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = generate(model, PROMPTS, 1, temperature=0)
        out = generate(model, PROMPTS, 30, temperature=0, eos_token_id=[r[0] for r in first])
    finally:
        handle.remove()
    assert out == first
    assert len(calls) == 2  # the prefill of each call, no decode step after every row stopped


def test_long_prompt_keeps_its_end_with_a_warning(model):
    torch.manual_seed(5)
    long = torch.randint(0, CFG.vocab_size, (60,)).tolist()  # max_seq_len is 48
    with pytest.warns(UserWarning, match="keeping the last 40 prompt tokens"):
        out = generate(model, long, 8, temperature=0)
    assert out[0] == reference_loop(model, long[-40:], 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exactly full: no warning
        assert len(generate(model, long[-40:], 8, temperature=0)[0]) == 8
    with pytest.raises(ValueError, match="no room"):
        generate(model, [1, 2], CFG.max_seq_len)


def test_a_batch_with_one_long_prompt_cuts_only_that_prompt(model):
    torch.manual_seed(6)
    long = torch.randint(0, CFG.vocab_size, (45,)).tolist()
    with pytest.warns(UserWarning):
        out = generate(model, [long, [5, 6, 7]], 10, temperature=0)
    assert out[0] == reference_loop(model, long[-38:], 10)
    assert out[1] == reference_loop(model, [5, 6, 7], 10)


@pytest.mark.parametrize(
    "prompts, mask, match",
    [
        ([[1, 2], []], None, "at least one token"),
        (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 0]]), "left"),
        (torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1]]), "attention_mask"),
        ([[1, 2, 300]], None, "0..299"),
    ],
)
def test_bad_prompts_raise(model, prompts, mask, match):
    with pytest.raises(ValueError, match=match):
        generate(model, prompts, 3, attention_mask=mask)


def test_input_forms_agree(model):
    expected = generate(model, [PROMPTS[0]], 6, temperature=0)
    assert generate(model, PROMPTS[0], 6, temperature=0) == expected
    assert generate(model, torch.tensor(PROMPTS[0]), 6, temperature=0) == expected
    assert generate(model, torch.tensor([PROMPTS[0]]), 6, temperature=0) == expected


def test_logits_processor_sees_the_tokens_so_far(model):
    seen = []

    def forbid_token_7(tokens, logits):
        seen.append(tokens.clone())
        logits[:, 7] = float("-inf")
        return logits

    prompt = [3, 4]
    free = generate(model, prompt, 6, temperature=0)[0]
    out = generate(model, prompt, 6, temperature=0, logits_processor=forbid_token_7)[0]
    assert 7 not in out
    assert [t.tolist() for t in seen] == [[prompt + out[:i]] for i in range(6)]
    if 7 not in free:
        assert out == free


def test_logits_processor_sees_the_left_padding(model):
    seen = []

    def record(tokens, logits):
        seen.append(tokens.clone())
        return logits

    out = generate(
        model, [[5, 6, 7], [8, 9]], 3, temperature=0, pad_token_id=299, logits_processor=record
    )
    assert [t.shape for t in seen] == [(2, 3), (2, 4), (2, 5)]
    assert seen[0].tolist() == [[5, 6, 7], [299, 8, 9]]  # the shorter prompt's pad column
    assert seen[-1].tolist() == [[5, 6, 7] + out[0][:2], [299, 8, 9] + out[1][:2]]


# ---- streaming --------------------------------------------------------------------------------


def test_stream_generate_yields_the_same_ids(model):
    for prompt in PROMPTS:
        assert (
            list(stream_generate(model, prompt, 9, temperature=0))
            == generate(model, prompt, 9, temperature=0)[0]
        )
    kw = dict(**CHAT_SAMPLING, eos_token_id=17)
    streamed = list(
        stream_generate(model, PROMPTS[1], 20, generator=torch.Generator().manual_seed(1), **kw)
    )
    batch = generate(model, PROMPTS[1], 20, generator=torch.Generator().manual_seed(1), **kw)
    assert streamed == batch[0]
    with pytest.raises(ValueError, match="one prompt"):
        list(stream_generate(model, PROMPTS[:2], 3))


def _script(tokens):
    """A logits processor that forces the model to emit `tokens`, one per step."""

    def force(prefix, logits):
        step = len(force.calls)
        force.calls.append(1)
        out = torch.full_like(logits, float("-inf"))
        out[:, tokens[min(step, len(tokens) - 1)]] = 0.0
        return out

    force.calls = []
    return force


def test_stream_text_never_splits_a_character(model):
    tok = train_bpe(["hello world, hello sea"] * 20, vocab_size=CFG.vocab_size)
    assert tok.vocab_size <= CFG.vocab_size
    byte_id = {b: tok.token_to_id(c) for b, c in byte_to_unicode().items()}
    text = "hé 世界🙂!"
    script = [byte_id[b] for b in text.encode("utf-8")] + [tok.eos_id]  # one token per byte
    pieces = list(
        stream_text(model, tok, "hi", 30, temperature=0, logits_processor=_script(script))
    )
    assert "".join(pieces) == text  # stopped at eos, which is not printed
    assert "\ufffd" not in "".join(pieces)
    assert "世" in pieces and "🙂" in pieces  # a 3-byte and a 4-byte character, each whole
    assert len(pieces) == len(text)


def test_bfloat16_model_generates_the_fp32_greedy_tokens():
    """A bf16 copy of the freshly initialised tiny model, batched with left padding, greedy.

    That model echoes its last prompt token by a wide logit margin, so its greedy tokens are
    decisive enough to compare exactly (checked first: margin far above the bf16 deviation).
    """
    torch.manual_seed(0)
    fp32 = SpongeBob(ModelConfig.preset("tiny")).eval()
    bf16 = SpongeBob(ModelConfig.preset("tiny")).eval()
    bf16.load_state_dict(fp32.state_dict())
    bf16.to(torch.bfloat16)
    assert bf16.tok_embeddings.weight.dtype == torch.bfloat16 and bf16.cos.dtype == torch.float32
    prompts = [[5, 17, 300, 42, 7], [1000, 3]]
    want = generate(fp32, prompts, 8, temperature=0)
    with torch.no_grad():
        for p, row in zip(prompts, want):
            ids = torch.tensor([p + row])
            logits = fp32(ids).logits[0, len(p) - 1 : -1]  # (8, V): the steps' scores
            deviation = (bf16(ids).logits[0, len(p) - 1 : -1].float() - logits).abs().max()
            top2 = logits.topk(2, dim=-1).values
            assert (top2[:, 0] - top2[:, 1]).min() > 10 * deviation
    dtypes = []

    def spy(tokens, logits):
        dtypes.append(logits.dtype)
        return logits

    assert generate(bf16, prompts, 8, temperature=0, logits_processor=spy) == want
    assert dtypes == [torch.float32] * 8  # sampling always sees float32 scores


def test_decoding_runs_without_autograd_and_without_cache_in_batches(model):
    grad_flags = []

    def spy(tokens, logits):
        grad_flags.append(torch.is_grad_enabled() or logits.requires_grad)
        return logits

    assert torch.is_grad_enabled()
    cached = generate(model, PROMPTS, 6, temperature=0, logits_processor=spy)
    assert grad_flags and not any(grad_flags)
    assert generate(model, PROMPTS, 6, temperature=0, use_cache=False) == cached


# ---- seeds, generators and training mode -------------------------------------------------------


def test_same_seed_same_tokens_and_seed_equals_a_seeded_generator(model):
    kw = dict(**CHAT_SAMPLING, eos_token_id=17)
    a = generate(model, PROMPTS, 12, seed=5, **kw)
    assert a == generate(model, PROMPTS, 12, seed=5, **kw)
    assert a == generate(model, PROMPTS, 12, generator=torch.Generator().manual_seed(5), **kw)
    others = [generate(model, PROMPTS, 12, seed=s, **kw) for s in (6, 7)]
    assert any(o != a for o in others)  # the seed matters
    one = generate(model, PROMPTS[1], 12, seed=5, **kw)[0]
    assert list(stream_generate(model, PROMPTS[1], 12, seed=5, **kw)) == one
    state = torch.get_rng_state()
    generate(model, PROMPTS, 4, seed=5, temperature=1.0)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is left alone


def test_seed_errors_name_the_argument(model):
    with pytest.raises(ValueError, match="seed= or generator=, not both"):
        generate(model, PROMPTS, 3, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="seed must be an int"):
        generate(model, PROMPTS, 3, seed=1.5)


def test_sample_next_draws_on_the_generators_device():
    lg = torch.randn(3, 40)
    gen = torch.Generator().manual_seed(2)
    got = sample_next(lg, 0.8, top_p=0.9, generator=gen)
    probs = filter_logits(lg / 0.8, top_p=0.9).softmax(-1)
    want = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(2)).squeeze(-1)
    assert torch.equal(got, want) and got.device == lg.device and got.dtype == torch.long


@pytest.fixture
def dropout_model():
    torch.manual_seed(1)
    m = SpongeBob(ModelConfig(**{**CFG.to_dict(), "dropout": 0.5}))
    init_weights(m, std=0.2)
    return m


def test_a_training_model_generates_in_eval_mode_and_keeps_training(dropout_model):
    m = dropout_model
    want = generate(m.eval(), PROMPTS, 8, temperature=0)
    m.train()
    m.layers[0].eval()  # a mixed state (e.g. a frozen submodule) must come back exactly
    modes = {name: mod.training for name, mod in m.named_modules()}
    seen = []

    def spy(tokens, logits):
        seen.append(m.training or any(mod.training for mod in m.modules()))
        return logits

    assert generate(m, PROMPTS, 8, temperature=0, logits_processor=spy) == want
    assert seen and not any(seen)  # no module was training while generating
    assert modes == {name: mod.training for name, mod in m.named_modules()}
    assert m.training and not m.layers[0].training


def test_a_closed_stream_restores_the_training_mode(dropout_model):
    m = dropout_model.train()
    stream = stream_generate(m, PROMPTS[1], 10, temperature=0)
    first = next(stream)
    assert not m.training  # generating
    stream.close()
    assert m.training and all(mod.training for mod in m.modules())
    assert first == generate(m, PROMPTS[1], 1, temperature=0)[0][0]
    assert m.training
