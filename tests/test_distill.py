"""Tests of `spongebob.distill` (08_distill) and of the tag-weighted loss it trains with.

The weights are checked against an independent formulation: the character spans of the tags in
each reply, found with `str.find` on the conversation's text, mapped to token positions through
the tokenizer's offsets (not through `ChatEncoder`'s kinds), for the course tokenizer (one id per
tag) and for a tokenizer in the original's layout (tags spelt out in several pieces).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spongebob.checkpoint import read_checkpoint, save_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import TAG, ChatEncoder, ChatLoader, PreparedData, prepare
from spongebob.distill import (
    DISTILL_PRESETS,
    EQUATION_LINE,
    copies_question,
    distill,
    distill_checkpoint,
    distill_config,
    distill_options,
    drill_lines,
    drilled_text,
    format_problem,
    reasoning_numbers,
    write_chat_mix,
)
from spongebob.evaluate import R1_TAGS, parse_r1
from spongebob.files import sha256_file
from spongebob.model import IGNORE_INDEX, SpongeBob, lm_loss
from spongebob.tokenizer import SPECIAL_TOKENS, train_bpe
from spongebob.world import write_sample

REPLY = "<think>\n9 - 7 = 2\nSo 7 is smaller.\n</think>\n<answer>\nyes\n</answer>"
TRICKY_USER = "Is 7 < 9? I typed <think> and </answer> myself, and a<b>c."


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("world")
    write_sample(folder, seed=0)
    return folder


def _texts(world: Path) -> list[str]:
    lines = (world / "pretrain.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:1500]]


@pytest.fixture(scope="module")
def tokenizers(world):
    course = train_bpe(_texts(world), vocab_size=600)
    original = train_bpe(_texts(world), vocab_size=600, special_tokens=SPECIAL_TOKENS)
    return {"course": course, "original": original}


def _chat(user: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]


def _tag_positions_by_text(tok, ids: list[int]) -> set[int]:
    """Token positions that overlap a tag inside an assistant reply, found from the decoded text."""
    pieces = [tok.decode([i]) for i in ids]
    starts, pos = [], 0
    for p in pieces:
        starts.append(pos)
        pos += len(p)
    text = "".join(pieces)
    reply_at = text.rfind("assistant\n") + len("assistant\n")  # the reply is the last turn
    spans = []
    for tag in R1_TAGS:
        at = text.find(tag, reply_at)
        assert at >= 0
        spans.append((at, at + len(tag)))
    return {
        k
        for k, (s, p) in enumerate(zip(starts, pieces))
        if any(s < b and s + len(p) > a for a, b in spans)
    }


@pytest.mark.parametrize("which", ["course", "original"])
def test_tag_weights_only_on_reply_tags_with_either_tokenizer(which, tokenizers, tmp_path):
    tok = tokenizers[which]
    chat = _chat(TRICKY_USER, REPLY)
    ids, kinds = ChatEncoder(tok).encode(chat)
    want = _tag_positions_by_text(tok, ids)
    assert {k for k, kind in enumerate(kinds) if kind == TAG} == want
    # one id per tag, or several pieces per tag when the tokenizer spells the tags out
    assert len(want) == 4 if which == "course" else len(want) > 4
    # the loader's weights: 10 on exactly those targets (target k+1 -> input position k)
    src = tmp_path / "chats.jsonl"
    src.write_text(json.dumps({"conversations": chat}) + "\n", encoding="utf-8")
    prepare(src, tok, tmp_path / "prep", max_seq_len=512)
    x, y, w = ChatLoader(PreparedData(tmp_path / "prep"), 1, seed=0, tag_weight=10.0).batch_of([0])
    assert x[0].tolist() == ids[:-1]
    heavy = {k + 1 for k in range(w.shape[1]) if w[0, k] == 10.0}
    assert heavy == want
    assert all(y[0, k - 1] != IGNORE_INDEX for k in heavy)  # every weighted target is trained


@pytest.mark.parametrize("which", ["course", "original"])
def test_weighted_loss_equals_direct_sum(which, tokenizers, tmp_path):
    tok = tokenizers[which]
    chats = [_chat(TRICKY_USER, REPLY), _chat("What is 3 + 4?", REPLY.replace("yes", "7"))]
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(json.dumps({"conversations": c}) + "\n" for c in chats), "utf-8")
    prepare(src, tok, tmp_path / "prep", max_seq_len=512)
    x, y, w = ChatLoader(PreparedData(tmp_path / "prep"), 2, seed=0, tag_weight=10.0).batch_of(
        [0, 1]
    )
    torch.manual_seed(0)
    logits = torch.randn(*x.shape, tok.vocab_size)
    total, norm = 0.0, 0.0
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            if y[b, t] != IGNORE_INDEX:
                ce = -torch.log_softmax(logits[b, t].double(), -1)[y[b, t]].item()
                total += w[b, t].item() * ce
                norm += w[b, t].item()
    assert lm_loss(logits, y, w).item() == pytest.approx(total / norm, rel=1e-5)
    # weight 10 moves the loss towards the tags' cross-entropy; weight 1 is the plain mean
    plain = ChatLoader(PreparedData(tmp_path / "prep"), 2, seed=0).batch_of([0, 1])
    assert plain[2] is None
    assert lm_loss(logits, plain[1]).item() != pytest.approx(lm_loss(logits, y, w).item())


def test_format_problem_names_each_rule():
    assert format_problem(REPLY) is None
    assert format_problem("  " + REPLY + "\n") is None
    assert format_problem("The answer is 5.") == "<think> appears 0 times"
    assert format_problem(REPLY + REPLY) == "<think> appears 2 times"
    assert format_problem("x" + REPLY) == "text before <think>"
    assert format_problem(REPLY.replace("</think>\n", "</think>\nhm\n")) == (
        "text between </think> and <answer>"
    )
    assert format_problem(REPLY + " ok") == "text after </answer>"
    assert format_problem("<think>\n</think>\n<answer>\n \n</answer>") == "an empty answer"
    swapped = "<answer>\n1\n</answer>\n<think>\nx\n</think>"
    assert format_problem(swapped) == "the tags are out of order"


_alphabet = st.sampled_from(list(string.ascii_letters[:6] + " \n7") + R1_TAGS)


@settings(max_examples=400, deadline=None)
@given(st.lists(_alphabet, max_size=12))
def test_format_problem_agrees_with_parse_r1(parts):
    text = "".join(parts)
    assert (format_problem(text) is None) == (parse_r1(text) is not None)


def test_presets_and_validation():
    assert set(DISTILL_PRESETS) == {"tiny", "seed"}
    cfg = distill_config("tiny", max_steps=7)
    assert cfg.max_steps == 7 and cfg.lr == DISTILL_PRESETS["tiny"]["train"]["lr"]
    assert distill_options("tiny")["tag_weight"] == 10.0
    assert distill_options("seed", tag_weight=1.0)["tag_weight"] == 1.0
    assert distill_config("seed").seq_len == 1024  # the original's r1_1024 length
    with pytest.raises(ValueError, match="unknown distill preset 'x'"):
        distill_config("x")
    with pytest.raises(ValueError, match="unknown distill preset"):
        distill_options("x")


def _tiny_start(world: Path, tok, tmp_path: Path) -> tuple[Path, Path]:
    """A one-layer model's checkpoint and the first 24 reasoning chats of the world."""
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size,
                      max_seq_len=256)  # fmt: skip
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt",
                           {"model": SpongeBob(cfg).state_dict(), "config": cfg.to_dict()})  # fmt: skip
    src = tmp_path / "r1.jsonl"
    lines = (world / "r1_1024.jsonl").read_text(encoding="utf-8").splitlines()[:24]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return init, src


def test_distill_records_stage_and_weight_and_is_found_again(world, tokenizers, tmp_path):
    tok = tokenizers["course"]
    init, src = _tiny_start(world, tok, tmp_path)
    train_cfg = distill_config("tiny", max_steps=3, batch_size=4, warmup_steps=1, log_every=1)
    with pytest.raises(ValueError, match="tag_weight must be > 0"):
        distill(src, tok, tmp_path / "bad", train_cfg, init=init, tag_weight=0)
    out = tmp_path / "run"
    ckpt = distill_checkpoint(src, tok, out, train_cfg, init=init, progress=False)
    _, extras = read_checkpoint(ckpt)
    assert extras["stage"] == "distill" and extras["step"] == 3
    assert extras["recipe"]["tag_weight"] == 10.0 and extras["recipe"]["replay"] == 0.0
    before = ckpt.stat().st_mtime_ns
    assert distill_checkpoint(src, tok, out, train_cfg, init=init, progress=False) == ckpt
    assert ckpt.stat().st_mtime_ns == before  # found, not retrained
    # another tag weight is another recipe: retrained in place
    distill_checkpoint(src, tok, out, train_cfg, init=init, tag_weight=1.0, progress=False)
    assert read_checkpoint(ckpt)[1]["recipe"]["tag_weight"] == 1.0


def test_drill_lines_keeps_only_equation_lines(tmp_path):
    src = tmp_path / "pretrain.jsonl"
    texts = ["8 + 5 = 13. 20 - 3 = 17.", "Patrick has 3 shells, because 1 + 2 = 3.",
             "7 * 8 = 56", "9 - 12 = -3.", "SpongeBob lives in a pineapple.", "3 + 4 = "]  # fmt: skip
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = drill_lines(src, tmp_path / "drill" / "drill.jsonl")
    kept = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept == ["8 + 5 = 13. 20 - 3 = 17.", "7 * 8 = 56", "9 - 12 = -3."]
    assert EQUATION_LINE.fullmatch("1 + 1 = 2.") and not EQUATION_LINE.fullmatch("1 + 1")
    # reused while newer than its source
    stamp = out.stat().st_mtime_ns
    assert drill_lines(src, out) == out and out.stat().st_mtime_ns == stamp
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"text": "no numbers here"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="none.jsonl: no line's text is a drill line"):
        drill_lines(none, tmp_path / "empty.jsonl")
    assert not (tmp_path / "empty.jsonl").exists()


def test_write_chat_mix_takes_all_of_one_file_and_a_seeded_sample_of_another(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": f"a{i}"}]})
                         + "\n" for i in range(5)), encoding="utf-8")  # fmt: skip
    b.write_text("".join(json.dumps({"conversations": [{"role": "user", "content": f"b{i}"}]})
                         + "\n" for i in range(20)), encoding="utf-8")  # fmt: skip
    out = write_chat_mix(tmp_path / "m.jsonl", [(a, None), (b, 7)], seed=3)
    got = [json.loads(line)["conversations"][0]["content"] for line in out.open(encoding="utf-8")]
    assert sorted(x for x in got if x[0] == "a") == [f"a{i}" for i in range(5)]
    picked = [x for x in got if x[0] == "b"]
    assert len(picked) == len(set(picked)) == 7 and len(got) == 12
    assert got != sorted(got)  # shuffled together
    first = out.read_bytes()
    assert write_chat_mix(tmp_path / "m2.jsonl", [(a, None), (b, 7)], seed=3).read_bytes() == first
    assert write_chat_mix(tmp_path / "m3.jsonl", [(a, None), (b, 7)], seed=4).read_bytes() != first
    with pytest.raises(ValueError, match="b.jsonl: asked for 21 lines, it holds 20"):
        write_chat_mix(tmp_path / "m4.jsonl", [(b, 21)])


def test_reasoning_numbers_read_the_first_line_of_the_reasoning():
    reply = "<think>\nWe start with 7 lanterns and add 20 more.\n7 + 20 = 27\n</think>"
    assert reasoning_numbers(reply) == [7, 20]
    assert reasoning_numbers("<think>\n\n一开始有21根蜡烛，拿走了7根。\n21 - 7 = 14") == [21, 7]
    assert reasoning_numbers("no tags: 3 and 4\nthen 5") == [3, 4]
    assert reasoning_numbers("<think>\n</think>") == []
    assert copies_question(reply, [7, 20]) and copies_question(reply, [7, 20, 4])
    assert not copies_question(reply, [20, 7]) and not copies_question(reply, [11, 8])


def test_drilled_text_is_the_text_plus_repeated_drill_lines_shuffled_by_seed(tmp_path):
    src = tmp_path / "pretrain.jsonl"
    texts = ["SpongeBob lives in a pineapple.", "8 + 5 = 13. 20 - 3 = 17.", "Sandy has 3 acorns.",
             "7 * 8 = 56", "Patrick has 3 shells, because 1 + 2 = 3."]  # fmt: skip
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    out = drilled_text(src, tmp_path / "replay" / "text.jsonl", 3)
    got = [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()]
    # every line once, each whole-equation line 3 more times: counted independently
    want = Counter(texts) + Counter({"8 + 5 = 13. 20 - 3 = 17.": 3, "7 * 8 = 56": 3})
    assert Counter(got) == want and len(got) == 11
    unshuffled = texts + ["8 + 5 = 13. 20 - 3 = 17.", "7 * 8 = 56"] * 3
    assert got != unshuffled  # shuffled (the seeded order of these 11 lines is another one)
    # the same inputs give the same bytes; another seed another order of the same lines
    again = drilled_text(src, tmp_path / "again.jsonl", 3)
    assert again.read_bytes() == out.read_bytes()
    other = drilled_text(src, tmp_path / "other.jsonl", 3, seed=1)
    assert other.read_bytes() != out.read_bytes()
    assert sorted(other.read_text(encoding="utf-8").splitlines()) == sorted(
        out.read_text(encoding="utf-8").splitlines()
    )
    with pytest.raises(ValueError, match="copies must be >= 1, got 0"):
        drilled_text(src, tmp_path / "x.jsonl", 0)
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"text": "no numbers here"}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="none.jsonl: no line's text is a drill line"):
        drilled_text(none, tmp_path / "y.jsonl", 2)


def test_distill_replays_the_drilled_text_and_a_changed_replay_is_retrained(
    world, tokenizers, tmp_path
):
    tok = tokenizers["course"]
    init, src = _tiny_start(world, tok, tmp_path)
    text = tmp_path / "pretrain.jsonl"  # 150 story lines and every drill line of the world
    pre = [json.loads(line) for line in (world / "pretrain.jsonl").open(encoding="utf-8")]
    drills = [r for r in pre if EQUATION_LINE.fullmatch(r["text"])]
    stories = [r for r in pre if not EQUATION_LINE.fullmatch(r["text"])][:150]
    text.write_text("".join(json.dumps(r) + "\n" for r in stories + drills), encoding="utf-8")
    train_cfg = distill_config("tiny", max_steps=2, batch_size=4, warmup_steps=1, log_every=1)
    kw = dict(init=init, replay=0.5, replay_batch_size=2, replay_source=text, progress=False)
    out = tmp_path / "run"
    ckpt = distill_checkpoint(src, tok, out, train_cfg, drill_copies=2, **kw)
    replayed = [json.loads(line)["text"] for line in (out / "replay_text.jsonl").open()]
    assert Counter(replayed) == Counter(r["text"] for r in stories + drills * 3)
    assert read_checkpoint(ckpt)[1]["recipe"]["replay_sha256"] == sha256_file(
        out / "replay_text.jsonl"
    )
    stamp = ckpt.stat().st_mtime_ns
    assert distill_checkpoint(src, tok, out, train_cfg, drill_copies=2, **kw) == ckpt
    assert ckpt.stat().st_mtime_ns == stamp  # the same replayed bytes: found
    distill_checkpoint(src, tok, out, train_cfg, drill_copies=3, **kw)
    assert ckpt.stat().st_mtime_ns != stamp  # other replayed bytes: another run
    assert read_checkpoint(ckpt)[1]["recipe"]["replay_sha256"] == sha256_file(
        out / "replay_text.jsonl"
    )
    with pytest.raises(ValueError, match="drill_copies must be >= 0, got -1"):
        distill(src, tok, tmp_path / "bad", train_cfg, drill_copies=-1, **kw)
    folder = {**kw, "replay_source": out / "replay" / "data"}  # a prepared folder
    with pytest.raises(ValueError, match="drill_copies > 0 needs replay_source to be a pretrain"):
        distill(src, tok, tmp_path / "bad", train_cfg, drill_copies=2, **folder)
    # without replay the option has nothing to drill: the run is the plain recipe
    plain = {**kw, "replay": 0.0}
    ckpt = distill_checkpoint(src, tok, tmp_path / "plain", train_cfg, drill_copies=2, **plain)
    assert read_checkpoint(ckpt)[1]["recipe"]["replay_sha256"] is None
    assert not (tmp_path / "plain" / "replay_text.jsonl").exists()
