"""Tests of `spongebob.rl` (09_rl): GRPO's pieces against independent formulations, and a
policy that a reward preferring one answer moves toward that answer."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from spongebob.checkpoint import read_checkpoint, save_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import ChatEncoder
from spongebob.model import SpongeBob
from spongebob.rl import (
    RLConfig,
    RowSeeds,
    completion_batch,
    group_advantages,
    grpo_loss,
    grpo_step,
    read_problems,
    reward,
    rl_checkpoint,
    rl_config,
    row_seed,
    sample_answers,
    token_logprobs,
)
from spongebob.world import course_tokenizer

GOOD = "<think>\n3 + 4 = 7\nSo the answer is 7.\n</think>\n<answer>\n7\n</answer>"


def _tiny(vocab: int, seed: int = 0) -> SpongeBob:
    torch.manual_seed(seed)
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=vocab,
                      max_seq_len=128)  # fmt: skip
    return SpongeBob(cfg).eval()


def test_reward_needs_the_format_and_the_number():
    assert reward(GOOD, 7) == pytest.approx(1.1)
    assert reward(GOOD, "7", format_bonus=0.0) == 1.0
    assert reward(GOOD.replace("<answer>\n7", "<answer>\n8"), 7) == pytest.approx(0.1)
    assert reward("The answer is 7.", 7) == 0.0  # right number, no format: nothing
    assert reward(GOOD.replace("</think>\n", ""), 7) == 0.0


def test_advantages_equal_a_per_group_computation_and_equal_groups_get_zero():
    rewards = torch.tensor([[1.1, 0.1, 1.1, 0.0], [1.1, 1.1, 1.1, 1.1], [0.0, 0.0, 0.1, 0.0]])
    adv = group_advantages(rewards)
    for row_r, row_a in zip(rewards.tolist(), adv.tolist()):
        mean, sd = statistics.fmean(row_r), statistics.stdev(row_r)
        assert row_a == pytest.approx([(r - mean) / (sd + 1e-4) for r in row_r], abs=1e-5)
    assert torch.equal(adv[1], torch.zeros(4))
    assert adv.sum(dim=1).abs().max() < 1e-5  # advantages of a group sum to zero
    with pytest.raises(ValueError, match="group >= 2"):
        group_advantages(torch.ones(3, 1))


def test_loss_on_a_hand_computed_case():
    # two answers of 2 and 1 tokens (the third position of answer 2 is padding)
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.9, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 0.25, 0.9], [0.4, 0.9, 0.9]]))
    ref = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.2, 0.9, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip=0.2, beta=0.5)
    # answer 1: ratios 2 and 1, A = +1: min(2, 1.2) = 1.2 and 1; KL terms: ref/pi = 1 -> 0,
    # ref/pi = 2 -> 2 - ln 2 - 1
    k = 2 - math.log(2) - 1
    a1 = (-(1.2 - 0.0) - (1.0 - 0.5 * k)) / 2
    # answer 2: ratio 0.5, A = -1: min(-0.5, -0.8) = -0.8; KL 0
    a2 = 0.8  # minus the surrogate -0.8
    assert loss.item() == pytest.approx((a1 + a2) / 2, abs=1e-6)
    assert stats["kl"] == pytest.approx(k / 3, abs=1e-6)
    assert stats["clipped"] == pytest.approx(2 / 3, abs=1e-6)  # ratios 2 and 0.5 of 3 tokens


def test_kl_estimate_is_never_negative_and_its_mean_is_the_exact_kl():
    torch.manual_seed(0)
    pi = torch.softmax(torch.randn(50), 0)
    ref = torch.softmax(torch.randn(50), 0)
    exact = (pi * (pi.log() - ref.log())).sum()
    draws = torch.multinomial(pi, 200_000, replacement=True)
    lp, lr = pi.log()[draws][None], ref.log()[draws][None]
    mask = torch.ones_like(lp)
    _, stats = grpo_loss(lp, lp, lr, torch.zeros(1), mask, beta=1.0)
    assert stats["kl"] == pytest.approx(exact.item(), rel=0.03)
    loss, stats = grpo_loss(lp, lp, lp, torch.zeros(1), mask, beta=1.0)
    assert stats["kl"] == 0.0 and loss.item() == 0.0


def test_completion_batch_masks_the_answer_targets_only():
    ids, mask = completion_batch([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10, 11]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 6, 7, 0], [4, 5, 8, 9, 10, 11]]
    # targets are ids[:, 1:]: row 0 -> 2 3 6 7 0, row 1 -> 5 8 9 10 11
    assert mask.tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        completion_batch([[1], [2]], [[3]], pad_id=0)


def test_token_logprobs_equal_the_cross_entropy_of_each_target():
    model = _tiny(40)
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    lp = token_logprobs(model, ids)
    ce = torch.nn.functional.cross_entropy(
        model(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
    )
    assert torch.allclose(lp.flatten(), -ce, atol=1e-5)


def test_row_seeds_sample_the_softmax_and_a_row_does_not_depend_on_its_batch():
    logits = torch.tensor([[1.5, 0.0, -0.5, 0.7]])
    n = 20_000
    counts = torch.bincount(
        torch.cat([RowSeeds([s], 0.7)(None, logits).argmax(-1) for s in range(n)]), minlength=4
    )
    assert torch.allclose(counts / n, (logits / 0.7).softmax(-1)[0], atol=0.015)
    model = _tiny(40)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
    together = sample_answers(model, prompts, [11, 12, 13], eos_id=39, pad_id=0,
                              max_new_tokens=6)  # fmt: skip
    for i, p in enumerate(prompts):
        assert sample_answers(model, [p], [11 + i], eos_id=39, pad_id=0,
                              max_new_tokens=6)[0] == together[i]  # fmt: skip
    assert len({row_seed(0, s, r) for s in range(1, 50) for r in range(300)}) == 49 * 300
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RowSeeds([1], 0.0)


def test_a_reward_that_prefers_one_answer_moves_the_policy_toward_it():
    """One-token answers; the reward is 1 for token 7 only. The GRPO pieces, in a bare loop."""
    model = _tiny(16, seed=3)
    ref = _tiny(16, seed=3).requires_grad_(False)
    prompt = [1, 2, 3]

    def p_target(m) -> float:
        with torch.no_grad():
            return m(torch.tensor([prompt])).logits[0, -1].softmax(-1)[7].item()

    before = p_target(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.0)
    for step in range(40):
        prompts = [prompt] * 16
        answers = sample_answers(model, prompts, [row_seed(0, step, i) for i in range(16)],
                                 eos_id=15, pad_id=0, max_new_tokens=1)  # fmt: skip
        rewards = torch.tensor([[float(a[0] == 7) for a in answers]])
        if rewards.std() == 0:
            continue
        ids, mask = completion_batch(prompts, answers, pad_id=0)
        adv = group_advantages(rewards).flatten()
        model.train()
        lp = token_logprobs(model, ids)
        with torch.no_grad():
            ref_lp = token_logprobs(ref, ids)
        loss, _ = grpo_loss(lp, lp.detach(), ref_lp, adv, mask, beta=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
    assert before < 0.2 and p_target(model) > 0.8


def test_config_validation_and_presets():
    assert rl_config("tiny").to_dict() == RLConfig(**rl_config("tiny").to_dict()).to_dict()
    with pytest.raises(ValueError, match="group must be >= 2"):
        RLConfig(group=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        rl_config("tiny", lr=0.0)
    with pytest.raises(ValueError, match="unknown RLConfig field"):
        rl_config("tiny", stepz=3)
    with pytest.raises(ValueError, match="unknown RL preset"):
        rl_config("huge")


def test_read_problems_takes_r1_chats_and_eval_lines_and_names_bad_lines(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(
        json.dumps({"conversations": [{"role": "user", "content": "3 + 4?"},
                                      {"role": "assistant", "content": GOOD}]}) + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "2 + 2?"}], "expected": 4}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    assert read_problems(src) == [({"role": "user", "content": "3 + 4?"}, "7"),
                                  ({"role": "user", "content": "2 + 2?"}, "4")]  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text(src.read_text() + json.dumps({"conversations": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "no tags"}]}) + "\n")  # fmt: skip
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: no 'expected'"):
        read_problems(bad)
    bad.write_text('{"messages": [{"role": "assistant", "content": "hi"}], "expected": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: .*first turn is a user message"):
        read_problems(bad)


def _problems_file(tmp_path: Path) -> Path:
    src = tmp_path / "r1.jsonl"
    lines = [json.dumps({"conversations": [{"role": "user", "content": f"{a} + 1?"},
                                           {"role": "assistant", "content": GOOD}]})
             for a in range(6)]  # fmt: skip
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return src


def test_a_step_without_signal_leaves_the_weights_alone():
    tok = course_tokenizer()
    model, ref = _tiny(tok.vocab_size), _tiny(tok.vocab_size)
    start = [p.clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = RLConfig(problems=2, group=2, max_new_tokens=4)
    batch = [({"role": "user", "content": "1 + 1?"}, "2")] * 2
    stats = grpo_step(model, ref, opt, batch, ChatEncoder(tok), cfg, eos_id=tok.eos_id,
                      pad_id=tok.pad_id)  # fmt: skip
    assert stats["signal"] == 0 and stats["reward"] == 0.0  # a random model is never well-formed
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))


def test_rl_checkpoint_writes_its_log_and_checkpoint_and_is_found_again(tmp_path):
    tok = course_tokenizer()
    cfg_model = _tiny(tok.vocab_size).config
    init = save_checkpoint(tmp_path / "init.pt", {"model": _tiny(tok.vocab_size).state_dict(),
                                                  "config": cfg_model.to_dict()})  # fmt: skip
    src = _problems_file(tmp_path)
    cfg = rl_config("tiny", steps=3, problems=2, group=2, max_new_tokens=4)
    out = tmp_path / "run"
    ckpt = rl_checkpoint(src, tok, out, cfg, init=init, progress=False)
    _, extras = read_checkpoint(ckpt)
    assert extras["stage"] == "rl" and extras["step"] == 3
    assert extras["rl_config"] == cfg.to_dict()
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert {"reward", "accuracy", "well_formed", "length", "kl", "signal"} <= set(log[0])
    before = ckpt.stat().st_mtime_ns
    assert rl_checkpoint(src, tok, out, cfg, init=init, progress=False) == ckpt
    assert ckpt.stat().st_mtime_ns == before  # found, not retrained
    cfg2 = rl_config("tiny", steps=2, problems=2, group=2, max_new_tokens=4)
    rl_checkpoint(src, tok, out, cfg2, init=init, progress=False)
    assert read_checkpoint(ckpt)[1]["step"] == 2  # another recipe: retrained in place
    with pytest.raises(ValueError, match="fewer than the 8"):
        rl_checkpoint(src, tok, tmp_path / "x", rl_config("tiny", problems=8), init=init)
