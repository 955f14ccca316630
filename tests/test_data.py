"""spongebob.data: validation of the four formats, chat ids and masks, prepare, and the loaders.

Everything runs on the generated world (written to a temporary folder) with small tokenizers trained
in about a second: one with the course's special tokens (reasoning tags as single ids) and one with
only the original's three specials, saved and reloaded as a folder, as the original's would be.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from spongebob.data import (
    CONTEXT,
    TAG,
    TRAINED,
    BadLines,
    ChatEncoder,
    ChatLoader,
    PackedLoader,
    PreparedData,
    _shard_bounds,
    check_prepared_length,
    extra_keys,
    grouped_order,
    iter_records,
    prepare,
    read_jsonl,
    record_problem,
)
from spongebob.model import IGNORE_INDEX
from spongebob.tokenizer import REASONING_TOKENS, load_tokenizer, render_chat, train_bpe
from spongebob.world import write_sample


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_sample(out, seed=0)
    return out


def _texts(world: Path) -> list[str]:
    return [r["text"] for r in read_jsonl(world / "pretrain.jsonl")]


@pytest.fixture(scope="module")
def tok(world):
    return train_bpe(_texts(world), vocab_size=600)


@pytest.fixture(scope="module")
def orig_tok(world, tmp_path_factory):
    """A tokenizer folder in the original's layout: three specials, no reasoning tags."""
    t = train_bpe(_texts(world), vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"])
    folder = tmp_path_factory.mktemp("orig_tok")
    t.save(folder)
    return load_tokenizer(folder)


def _write(path: Path, lines: list) -> Path:
    with path.open("wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode())
    return path


def _chat(*turns: str, system: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system is not None else []
    return msgs + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
    ]


def _runs(tok, ids, kinds) -> list[str]:
    """Decoded maximal runs of trained tokens."""
    runs, cur = [], []
    for i, k in zip(ids, kinds):
        if k:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "record, problem",
    [
        ({"conversations": []}, "empty conversation"),
        ({"conversations": [{"role": "bot", "content": "x"}]}, "unknown role 'bot'"),
        ({"conversations": [{"role": "user", "content": 3}]}, "content must be a string"),
        ({"conversations": [{"role": "user"}]}, "with 'role' and 'content'"),
        ({"conversations": _chat("hi")}, "must end with the assistant's turn"),
        ({"conversations": _chat("hi", "yo", "hi", "yo")[1:]}, "alternate"),
        ({"conversations": "hello"}, "must be a list of turns"),
        ({"text": 5}, "'text' must be a string"),
        ({"messages": _chat("q"), "expected": 1}, "'expected' must be a string"),
        ({"messages": _chat("q", "a"), "expected": "a"}, "must end with the user's turn"),
        ({"txt": "a"}, "not one of the formats"),
        ([1, 2], "not one of the formats"),
    ],
)
def test_record_problem_names_each_defect(record, problem):
    found = record_problem(record)
    assert found is not None and problem in found, found


def test_valid_records_of_each_format_pass():
    assert record_problem({"text": "hi"}) is None
    assert record_problem({"conversations": _chat("q", "a", system="s")}) is None
    assert record_problem({"messages": _chat("q"), "expected": "a", "id": "x"}) is None
    assert record_problem({"prompt": "p", "expected": "e"}) is None
    assert record_problem({"text": "hi"}, "chat") is not None  # the asked format wins


def test_iter_records_strict_names_file_and_line(tmp_path):
    f = _write(tmp_path / "d.jsonl", [{"text": "a"}, b"\n", {"text": "b"}, {"conversations": []}])
    with pytest.raises(ValueError, match=r"d\.jsonl:4: expected a pretrain line"):
        list(iter_records(f))
    with pytest.raises(ValueError, match="unknown format"):
        list(iter_records(f, "poem"))


def test_iter_records_skips_counts_and_lists_every_bad_line(tmp_path):
    good = {"conversations": _chat("q", "a")}
    f = _write(
        tmp_path / "d.jsonl",
        [good, b"\xff\xfe\n", b"{not json\n", {"conversations": []}, good, {"text": "x"}],
    )
    bad = BadLines(str(f))
    kept = [n for n, _ in iter_records(f, skip_bad_lines=True, bad=bad)]
    assert kept == [1, 5]
    assert bad.count == 4 and [n for n, _ in bad.lines] == [2, 3, 4, 6]
    problems = [p for _, p in bad.lines]
    assert "UTF-8" in problems[0] and "JSON" in problems[1] and "empty" in problems[2]
    assert "skipped 4 bad line(s)" in bad.summary()


# ----------------------------------------------------------------------------------------------
# ChatEncoder
# ----------------------------------------------------------------------------------------------
def test_mask_covers_exactly_each_reply_and_its_eos(tok):
    ids, kinds = ChatEncoder(tok).encode(_chat("Where?", "In a pineapple.", "Who?", "Gary."))
    assert _runs(tok, ids, kinds) == ["In a pineapple.</s>", "Gary.</s>"]
    first = kinds.index(TRAINED)
    assert ids[first - 1] != tok.bos_id and tok.decode(ids[:first]).endswith("<s>assistant\n")
    # the token after a reply's </s> is "\n", then the next turn's <s>: neither is trained
    eos = first + ids[first:].index(tok.eos_id)
    assert kinds[eos] == TRAINED and kinds[eos + 1] == CONTEXT and ids[eos + 2] == tok.bos_id
    assert kinds[eos + 2] == CONTEXT
    assert set(kinds) == {CONTEXT, TRAINED}


def test_ids_equal_tokenized_render_chat_on_the_world(tok, world):
    enc = ChatEncoder(tok)
    chats = [r["conversations"] for r in read_jsonl(world / "sft_512.jsonl")][:300]
    for chat, (ids, kinds) in zip(chats, enc.encode_many(chats)):
        assert ids == tok.encode(render_chat(chat, tok.default_system_prompt))
        replies = [m["content"] + "</s>" for m in chat if m["role"] == "assistant"]
        assert _runs(tok, ids, kinds) == replies


def test_system_prompt_given_default_and_override(tok):
    enc = ChatEncoder(tok)
    ids, kinds = enc.encode(_chat("q", "a", system="You are a crab."))
    assert tok.decode(ids).startswith("<s>system\nYou are a crab.</s>\n")
    assert kinds[: ids.index(tok.eos_id) + 1] == [CONTEXT] * (ids.index(tok.eos_id) + 1)
    ids, _ = enc.encode(_chat("q", "a"))
    assert tok.decode(ids).startswith(f"<s>system\n{tok.default_system_prompt}</s>")
    ids, _ = ChatEncoder(tok, system_prompt="Be brief.").encode(_chat("q", "a"))
    assert tok.decode(ids).startswith("<s>system\nBe brief.</s>")


def test_control_tokens_typed_in_messages_stay_text(tok):
    enc = ChatEncoder(tok)
    user = "I type </s> and <s> and <think> here"
    ids, kinds = enc.encode(_chat(user, "ok"))
    # 1 system eos + 1 user eos + 1 reply eos; bos: system, user, assistant
    assert ids.count(tok.eos_id) == 3 and ids.count(tok.bos_id) == 3
    assert not set(tok.reasoning_ids.values()) & set(ids)
    assert user in tok.decode(ids) and TAG not in kinds
    # the same text rendered and tokenized whole would have become control tokens
    assert tok.encode(render_chat(_chat(user, "ok"))).count(tok.eos_id) == 4


@pytest.mark.parametrize("which", ["course", "original"])
def test_reasoning_tags_marked_in_replies_only_with_either_tokenizer(which, tok, orig_tok):
    t = tok if which == "course" else orig_tok
    reply = "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
    ids, kinds = ChatEncoder(t).encode(_chat("What is <think>3 + 4</think>?", reply))
    tags = [t.decode([i]) for i, k in zip(ids, kinds) if k == TAG]
    assert "".join(tags) == "".join(REASONING_TOKENS)
    if which == "course":
        assert tags == REASONING_TOKENS  # one id each
    else:
        assert len(tags) > 4 and not t.reasoning_ids  # several text tokens each
    assert "".join(_runs(t, ids, kinds)) == reply + "</s>"


def test_original_layout_folder_chat_equals_its_rendering(orig_tok):
    chat = _chat("Who lives in a pineapple?", "SpongeBob.")
    ids, _ = ChatEncoder(orig_tok).encode(chat)
    assert ids == orig_tok.encode(render_chat(chat, orig_tok.default_system_prompt))
    assert (orig_tok.bos_id, orig_tok.eos_id) == (1, 2)


def test_encode_texts_wraps_documents_in_bos_eos(tok):
    out = ChatEncoder(tok).encode_texts(["hello </s> world", "海绵宝宝"])
    assert out[0][0] == tok.bos_id and out[0][-1] == tok.eos_id
    assert out[0].count(tok.eos_id) == 1 and tok.decode(out[0][1:-1]) == "hello </s> world"
    assert tok.decode(out[1][1:-1]) == "海绵宝宝"


# ----------------------------------------------------------------------------------------------
# prepare and PreparedData
# ----------------------------------------------------------------------------------------------
def test_prepare_pretrain_round_trips_every_document(tok, world, tmp_path):
    meta = prepare(world / "pretrain.jsonl", tok, tmp_path / "p", chunk=500)
    data = PreparedData(tmp_path / "p")
    texts = _texts(world)
    assert meta["kind"] == "pretrain" and len(data) == len(texts) == meta["documents"]
    assert data.kinds is None and data.ids.dtype == np.uint16
    for i in (0, 1, len(texts) // 2, len(texts) - 1):
        ids, _ = data.doc(i)
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        assert tok.decode(ids[1:-1]) == texts[i]
    assert meta["tokens"] == len(data.ids) == int(data.offsets[-1])
    assert meta["trained_tokens"] == meta["tokens"] - meta["documents"]


def test_prepare_chat_matches_the_encoder_and_chunking_does_not_matter(tok, world, tmp_path):
    a = prepare(world / "sft_512.jsonl", tok, tmp_path / "a", chunk=7)
    b = prepare(world / "sft_512.jsonl", tok, tmp_path / "b")
    for name in ("ids.bin", "offsets.bin", "kinds.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert a == b
    data = PreparedData(tmp_path / "a")
    chats = [r["conversations"] for r in read_jsonl(world / "sft_512.jsonl")]
    for i in (0, 5, len(chats) - 1):
        ids, kinds = ChatEncoder(tok).encode(chats[i])
        got_ids, got_kinds = data.doc(i)
        assert got_ids.tolist() == ids and got_kinds.tolist() == kinds
    assert a["truncated"] == 0 and a["trained_tokens"] == int((data.kinds[1:] > 0).sum())


def test_prepare_truncates_and_drops_untrainable_chats_and_counts_both(tok, tmp_path):
    long_q = "word " * 300
    src = _write(
        tmp_path / "c.jsonl",
        [
            {"conversations": _chat("short?", "yes")},
            {"conversations": _chat("q", "answer " * 200)},  # truncated, still trained
            {"conversations": _chat(long_q, "lost")},  # the reply is cut away: dropped
        ],
    )
    meta = prepare(src, tok, tmp_path / "o", max_seq_len=128)
    data = PreparedData(tmp_path / "o")
    assert meta["truncated"] == 2 and meta["dropped_untrained"] == 1 and len(data) == 2
    assert max(np.diff(data.offsets.astype(np.int64))) == 129


def test_prepare_reuses_a_current_folder_and_redoes_a_stale_one(tok, world, tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_bytes((world / "pretrain.jsonl").read_bytes()[:20000].rsplit(b"\n", 1)[0] + b"\n")
    first = prepare(src, tok, tmp_path / "o")
    stamp = (tmp_path / "o" / "ids.bin").stat().st_mtime_ns
    assert prepare(src, tok, tmp_path / "o") == first
    assert (tmp_path / "o" / "ids.bin").stat().st_mtime_ns == stamp  # not rewritten
    with src.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more line"}) + "\n")
    said = []
    second = prepare(src, tok, tmp_path / "o", log=said.append)
    assert second["documents"] == first["documents"] + 1
    (tmp_path / "o" / "ids.bin").write_bytes(b"\0\0")  # damaged: no longer current
    assert prepare(src, tok, tmp_path / "o", log=said.append) == second
    assert len(PreparedData(tmp_path / "o").ids) == second["tokens"]
    prepare(src, tok, tmp_path / "o", max_seq_len=1024, log=said.append)  # another length
    prepare(src, tok, tmp_path / "o", max_seq_len=1024, log=said.append)  # reused: nothing said
    assert said == [
        f"{tmp_path / 'o'}: prepared again (the source file changed)",
        f"{tmp_path / 'o'}: prepared again (its files were incomplete)",
        f"{tmp_path / 'o'}: prepared again (max_seq_len 512 -> 1024 changed)",
    ]


def test_prepare_bad_lines_stop_or_are_listed_in_the_meta(tok, tmp_path):
    src = _write(tmp_path / "b.jsonl", [{"text": "a"}, b"oops\n", {"text": "b"}])
    with pytest.raises(ValueError, match=r"b\.jsonl:2: not valid JSON .*--skip-bad-lines"):
        prepare(src, tok, tmp_path / "o")
    assert not (tmp_path / "o" / "meta.json").exists()
    meta = prepare(src, tok, tmp_path / "o", skip_bad_lines=True, max_bad_fraction=0.5)
    assert meta["documents"] == 2 and meta["bad_lines"]["count"] == 1
    assert meta["bad_lines"]["lines"][0][0] == 2 and meta["input_lines"] == 3


def test_prepare_refuses_eval_files_missing_sources_and_empty_files(tok, tmp_path):
    ev = _write(tmp_path / "e.jsonl", [{"prompt": "p", "expected": "e"}])
    with pytest.raises(ValueError, match="pretraining or chat lines, not completion"):
        prepare(ev, tok, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="no such file"):
        prepare(tmp_path / "missing.jsonl", tok, tmp_path / "o")
    empty = _write(tmp_path / "empty.jsonl", [b"\n"])
    with pytest.raises(ValueError, match="no valid records"):
        prepare(empty, tok, tmp_path / "o")


def test_prepared_data_errors_name_the_folder(tmp_path, tok, world):
    with pytest.raises(FileNotFoundError, match="prepare the data first"):
        PreparedData(tmp_path)
    prepare(world / "sft_1024.jsonl", tok, tmp_path / "o")
    os.truncate(tmp_path / "o" / "kinds.bin", 10)
    with pytest.raises(ValueError, match=r"kinds\.bin: 10 bytes"):
        PreparedData(tmp_path / "o")


# ----------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pre(tok, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    prepare(world / "pretrain.jsonl", tok, out)
    return PreparedData(out)


@pytest.fixture(scope="module")
def r1(tok, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("r1")
    prepare(world / "r1_1024.jsonl", tok, out, max_seq_len=512)
    return PreparedData(out)


def test_packed_batches_are_consecutive_windows_of_the_stream(pre):
    T = 32
    loader = PackedLoader(pre, T, 4, seed=1, shuffle=False)
    x, y, w = next(iter(loader))
    ids = torch.from_numpy(pre.ids[: 4 * T + 1].astype(np.int64))
    assert w is None and x.dtype == torch.int64 and x.shape == (4, T)
    for r in range(4):
        assert torch.equal(x[r], ids[r * T : r * T + T])
        assert torch.equal(y[r], ids[r * T + 1 : r * T + T + 1])


def test_an_epoch_visits_every_window_once_then_moves_the_cuts(pre):
    ids = pre.ids[:2001].astype(np.int64)
    loader = PackedLoader(pre.ids[:2001], 10, 8, seed=0)  # 200 windows, the last one kept free
    assert loader.batches_per_epoch == 199 // 8
    it = iter(loader)
    seen = {}
    for epoch in (0, 1):
        o = loader.offset(epoch)
        assert 0 <= o < 10
        starts = []
        for _ in range(loader.batches_per_epoch):
            x, y, _ = next(it)
            starts += x[:, 0].tolist()
            assert torch.equal(x[:, 1:], y[:, :-1])
        used = loader.order._epoch_items()[: len(starts)]
        assert starts == ids[o + used * 10].tolist()  # window w starts at o + 10 w
        assert len(set(used.tolist())) == len(used) and max(used) < 199
        seen[epoch] = (o, used.tolist())
    assert seen[0] != seen[1]
    offsets = {loader.offset(e) for e in range(20)}
    assert len(offsets) > 5  # the cuts really move from epoch to epoch
    assert PackedLoader(pre.ids[:2001], 10, 8, shuffle=False).offset(3) == 0


def test_shifted_training_windows_never_reach_the_validation_tokens(pre):
    T = 16
    train = PackedLoader(pre, T, 4, split="train", val_fraction=0.1)
    val = PackedLoader(pre, T, 4, split="val", val_fraction=0.1, shuffle=False)
    first_val_token = int(val.order.items.min()) * T
    last_train_end = max((int(train.order.items.max()) + 1) * T + train.offset(e) + 1
                         for e in range(50))  # fmt: skip
    assert last_train_end <= first_val_token


def _random_windows_reference(ids, seq_len, batch_size, seed, rank, world_size, count=0):
    """Batches ``(x, y)`` as chapter 07's former ``RandomWindows`` drew them (the replay batches of
    the cached SFT runs), written out: global batch ``g`` is ``batch_size`` starts from
    ``default_rng([seed, 0, g])``, rank ``r`` of ``W`` takes ``g = count + i * W + r``."""
    i = 0
    while True:
        g = count + i * world_size + rank
        rng = np.random.default_rng([seed, 0, g])
        starts = rng.integers(0, len(ids) - seq_len - 1, batch_size)
        rows = torch.from_numpy(
            np.stack([ids[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        )
        yield rows[:, :-1], rows[:, 1:]
        i += 1


def _same_batches(a, b, n: int) -> bool:
    return all(
        torch.equal(x1, x2) and torch.equal(y1, y2)
        for (x1, y1, *_), (x2, y2, *_) in itertools.islice(zip(a, b), n)
    )


def test_random_cuts_reproduce_random_windows_over_ranks_and_a_resume(pre):
    ids = np.asarray(pre.ids)
    T, B = 32, 4
    for rank, world in ((0, 1), (0, 2), (1, 2), (2, 3)):
        ours = PackedLoader(pre, T, B, cuts="random", seed=5, rank=rank, world_size=world)
        ref = _random_windows_reference(ids, T, B, 5, rank, world)
        assert _same_batches(iter(ours), ref, 6)
        assert ours.state_dict() == {"count": 6 * world, "seed": 5, "world_size": world}


def test_random_cuts_resume_at_the_next_global_batch_on_another_world_size(pre):
    ids = np.asarray(pre.ids)
    single = list(itertools.islice(_random_windows_reference(ids, 16, 4, 3, 0, 1), 10))
    ranks = [PackedLoader(pre, 16, 4, cuts="random", seed=3, rank=r, world_size=2) for r in (0, 1)]
    its = [iter(r) for r in ranks]
    for step in range(3):  # 2 ranks: rank r takes global batch 2 * step + r
        for r in (0, 1):
            assert torch.equal(next(its[r])[0], single[2 * step + r][0])
    state = json.loads(json.dumps(ranks[0].state_dict()))
    assert state == {"count": 6, "seed": 3, "world_size": 2}
    resumed = PackedLoader(pre, 16, 4, cuts="random", seed=3)  # one rank from here on
    resumed.load_state_dict(state)
    it = iter(resumed)
    assert all(torch.equal(next(it)[0], single[g][0]) for g in range(6, 10))  # nothing repeated
    assert resumed.state_dict()["count"] == 10
    with pytest.raises(ValueError, match="seed 3"):
        PackedLoader(pre, 16, 4, cuts="random", seed=4).load_state_dict(state)
    epoch_wise = PackedLoader(pre, 16, 4, seed=3).state_dict()
    with pytest.raises(ValueError, match="same seed and cuts"):
        resumed.load_state_dict(epoch_wise)


def test_random_cuts_start_anywhere_and_stay_out_of_the_validation_tokens(pre):
    ids = np.arange(1000, dtype=np.uint16)  # token i is i: a window shows where it starts
    loader = PackedLoader(ids, 16, 8, cuts="random", seed=3)
    x, y, w = next(iter(loader))
    assert x.shape == y.shape == (8, 16) and w is None and torch.equal(y, x + 1)
    assert (x[:, 0] % 16 != 0).any() and x[:, 0].max() <= 1000 - 17
    train = PackedLoader(ids, 16, 8, cuts="random", seed=3, val_fraction=0.1)
    val = PackedLoader(ids, 16, 4, split="val", val_fraction=0.1, shuffle=False)
    first_val_token = int(val.order.items.min()) * 16
    it = iter(train)
    ends = [int(next(it)[1].max()) for _ in range(200)]  # y's last token: the window's end
    assert max(ends) < first_val_token
    with pytest.raises(ValueError, match="more than 17 training tokens"):
        PackedLoader(ids[:10], 16, 8, cuts="random")
    with pytest.raises(ValueError, match="rank < world_size"):
        PackedLoader(ids, 16, 4, cuts="random", rank=2, world_size=2)
    with pytest.raises(ValueError, match="split='train'"):
        PackedLoader(ids, 16, 4, cuts="random", split="val", val_fraction=0.1)
    with pytest.raises(ValueError, match="cuts in"):
        PackedLoader(ids, 16, 4, cuts="sliding")


def test_fixed_cuts_shuffle_the_windows_but_never_move_them(pre):
    ids = pre.ids[:2001].astype(np.int64)
    loader = PackedLoader(pre.ids[:2001], 10, 8, seed=0, cuts="fixed")  # 200 windows, all used
    assert loader.batches_per_epoch == 200 // 8
    assert {loader.offset(e) for e in range(20)} == {0}
    it = iter(loader)
    orders = []
    for _ in (0, 1):
        starts = torch.cat([next(it)[0][:, 0] for _ in range(loader.batches_per_epoch)])
        used = loader.order._epoch_items()[: len(starts)]
        assert starts.tolist() == ids[used * 10].tolist()
        orders.append(used.tolist())
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


def test_resume_continues_with_the_same_batches(r1):
    a = ChatLoader(r1, 4, seed=7, tag_weight=10.0)
    it = iter(a)
    for _ in range(a.batches_per_epoch + 3):  # into the second epoch
        next(it)
    state = a.state_dict()
    want = [next(it) for _ in range(4)]
    b = ChatLoader(r1, 4, seed=7, tag_weight=10.0)
    b.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON/checkpoint round trip
    got = [next(iter(b)) for _ in range(4)]
    for (x1, y1, w1), (x2, y2, w2) in zip(want, got):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(w1, w2)
    with pytest.raises(ValueError, match="seed 7"):
        ChatLoader(r1, 4, seed=8).load_state_dict(state)


def test_ranks_read_disjoint_equal_shards(pre):
    loaders = [PackedLoader(pre, 16, 4, seed=2, rank=r, world_size=3) for r in range(3)]
    shards = [set(ld.order._epoch_items().tolist()) for ld in loaders]
    assert len({len(s) for s in shards}) == 1
    assert not (shards[0] & shards[1]) and not (shards[1] & shards[2])
    assert len({ld.batches_per_epoch for ld in loaders}) == 1
    with pytest.raises(ValueError, match="rank"):
        PackedLoader(pre, 16, 4, rank=3, world_size=3)


def test_validation_split_is_disjoint_from_training(pre):
    train = PackedLoader(pre, 16, 4, split="train", val_fraction=0.1)
    val = PackedLoader(pre, 16, 4, split="val", val_fraction=0.1, shuffle=False)
    t, v = set(train.order.items.tolist()), set(val.order.items.tolist())
    assert not (t & v) and len(t) + 1 + len(v) == (len(pre.ids) - 1) // 16  # + 1: the shift
    with pytest.raises(ValueError, match="val_fraction"):
        PackedLoader(pre, 16, 4, split="val")


def test_chat_batches_pad_right_and_train_exactly_the_kinds(r1, tok):
    loader = ChatLoader(r1, 6, seed=0, tag_weight=10.0)
    x, y, w = next(iter(loader))
    docs = loader.order._epoch_items()[:6]
    assert x.shape[1] == max(len(r1.doc(int(d))[0]) for d in docs) - 1
    for r, d in enumerate(docs):
        ids, kinds = (torch.from_numpy(a.astype(np.int64)) for a in r1.doc(int(d)))
        n = len(ids) - 1
        assert torch.equal(x[r, :n], ids[:-1]) and (x[r, n:] == tok.pad_id).all()
        assert torch.equal(y[r, :n], torch.where(kinds[1:] > 0, ids[1:], IGNORE_INDEX))
        assert (y[r, n:] == IGNORE_INDEX).all()
        assert torch.equal(w[r, :n] == 10, kinds[1:] == TAG)
        assert [int(t) for t in y[r][w[r] == 10]] == list(tok.reasoning_ids.values())
    assert ChatLoader(r1, 6).batch_of(docs)[2] is None  # weight 1: no weights at all


def test_loader_errors_are_clear(pre, tmp_path):
    with pytest.raises(ValueError, match="cannot fill one batch"):
        PackedLoader(pre.ids[:50], 16, 8)
    with pytest.raises(ValueError, match="needs chat data"):
        ChatLoader(pre, 4)


# ----------------------------------------------------------------------------------------------
# read_jsonl on every file of the world, and its errors (moved here from the world's tests)
# ----------------------------------------------------------------------------------------------
def test_read_jsonl_streams_every_file_of_the_world(world):
    for path in sorted(world.glob("*.jsonl")):
        n_lines = sum(1 for line in path.read_text("utf-8").splitlines() if line.strip())
        assert sum(1 for _ in read_jsonl(path)) == n_lines, path.name


@pytest.mark.parametrize(
    "bad, problem",
    [
        ('{"text": "ok"', "not valid JSON"),
        ("nan", "not valid JSON"),
        ('["text"]', "not one of the formats"),
        ('{"text": 3}', "'text' must be a string"),
        ('{"conversations": [{"role": "user", "content": "hi"}]}', "end with the assistant"),
        ('{"conversations": [{"role": "bot", "content": "hi"}]}', "unknown role 'bot'"),
        ('{"conversations": [{"role": "user", "text": "hi"}]}', "with 'role' and 'content'"),
        ('{"conversations": [{"role": "assistant", "content": "a"}]}', "alternate"),
        ('{"conversations": []}', "empty conversation"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "'expected' must be a string"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],'
         ' "expected": "x"}', "end with the user"),
        ('{"prompt": "p"}', "'expected' must be a string"),
        ('{"question": "q"}', "not one of the formats"),
    ],
)  # fmt: skip
def test_read_jsonl_names_file_and_line(tmp_path, bad, problem):
    path = tmp_path / "broken.jsonl"
    path.write_text("\n" + bad + '\n{"text": "never reached"}\n', "utf-8")
    with pytest.raises(ValueError, match=rf"broken\.jsonl:2: .*{problem}"):
        next(read_jsonl(path))


def test_read_jsonl_keeps_one_format_per_file_and_counts_blank_lines(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('\n{"text": "a"}\n  \t\n\n{"text": "b"}\n{"prompt": "p", "expected": "e"}\n')
    reader = read_jsonl(path)
    assert [next(reader), next(reader)] == [{"text": "a"}, {"text": "b"}]
    with pytest.raises(ValueError, match=r"gaps\.jsonl:6: expected a pretrain line"):
        next(reader)


def test_read_jsonl_reports_invalid_utf8_with_file_and_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    reader = read_jsonl(path)
    assert next(reader) == {"text": "fine"}
    with pytest.raises(ValueError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        next(reader)


def test_cli_data_prepare_prepares_then_reuses_and_reports_bad_lines(world, tmp_path, capsys):
    from spongebob.cli import main

    tok_dir = tmp_path / "tok"
    train_bpe(_texts(world), vocab_size=600).save(tok_dir)
    args = ["data", "prepare", "--input", str(world / "sft_1024.jsonl"), "--tokenizer",
            str(tok_dir), "--out", str(tmp_path / "o"), "--max-seq-len", "1024"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    meta = PreparedData(tmp_path / "o").meta
    assert f"{meta['documents']:,} documents" in out and "MB/s" in out and meta["kind"] == "chat"
    assert main(args) == 0 and "already prepared: reused" in capsys.readouterr().out
    bad = _write(tmp_path / "bad.jsonl", [{"text": "a"}] * 1000 + [b"oops\n"])  # 0.0999 %
    args = ["data", "prepare", "--input", str(bad), "--tokenizer", str(tok_dir), "--out",
            str(tmp_path / "b")]  # fmt: skip
    assert main(args) == 2 and "bad.jsonl:1001: not valid JSON" in capsys.readouterr().err
    assert main([*args, "--skip-bad-lines"]) == 0
    assert "skipped 1 bad line(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Real data as it is: extra keys, bad lines and their limit
# ----------------------------------------------------------------------------------------------
def test_extra_keys_are_accepted_and_named():
    chat = {
        "id": 5,
        "source": "x",
        "conversations": [
            {"role": "user", "content": "q", "name": "u"},
            {"role": "assistant", "content": "a"},
        ],
    }
    assert record_problem(chat) is None and record_problem({"text": "a", "id": 1}) is None
    assert extra_keys(chat, "chat") == ["id", "source", "conversations[].name"]
    assert extra_keys({"text": "a"}, "pretrain") == []
    assert extra_keys({"prompt": "p", "expected": "e", "id": 3}, "completion") == []
    assert "not one of the formats" in record_problem({"conversation": []})  # a misspelt key


def test_prepare_counts_extra_keys_and_keeps_the_ids_of_plain_records(tok, tmp_path):
    plain = [{"conversations": _chat("q", "a")}, {"conversations": _chat("r", "b")}]
    extra = [
        {**plain[0], "id": 1},
        {
            "id": 2,
            "conversations": [
                {"role": "user", "content": "r", "lang": "en"},
                {"role": "assistant", "content": "b"},
            ],
        },
    ]
    a = prepare(_write(tmp_path / "a.jsonl", plain), tok, tmp_path / "a")
    b = prepare(_write(tmp_path / "b.jsonl", extra), tok, tmp_path / "b")
    assert a["extra_keys"] == {} and b["extra_keys"] == {"conversations[].lang": 1, "id": 2}
    for name in ("ids.bin", "offsets.bin", "kinds.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["extra_keys"] == b["extra_keys"]


def test_bad_utf8_and_json_lines_are_bad_lines_and_the_fraction_is_limited(tok, tmp_path):
    good = [{"text": f"line {i}"} for i in range(1998)]
    src = _write(tmp_path / "m.jsonl", good[:500] + [b"\xff\xfe\n"] + good[500:] + [b"{oops\n"])
    with pytest.raises(ValueError, match=r"m\.jsonl:501: not valid UTF-8"):
        prepare(src, tok, tmp_path / "o")
    meta = prepare(src, tok, tmp_path / "o", skip_bad_lines=True)  # 2 of 2000 = 0.1 %: allowed
    assert meta["bad_lines"]["count"] == 2 and meta["input_lines"] == 2000
    assert [n for n, _ in meta["bad_lines"]["lines"]] == [501, 2000]
    assert meta["documents"] == 1998
    # a stricter limit refuses the same (reused) folder, in one line naming the counts
    with pytest.raises(ValueError, match=r"2 of 2,000 lines are bad \(0\.100%\).*max-bad-fraction"):
        prepare(src, tok, tmp_path / "o", skip_bad_lines=True, max_bad_fraction=0.0005)
    # and a fresh folder over the limit gets no meta.json (it is never used)
    with pytest.raises(ValueError, match="more than max_bad_fraction"):
        prepare(src, tok, tmp_path / "p", skip_bad_lines=True, max_bad_fraction=0.0)
    assert not (tmp_path / "p" / "meta.json").exists()
    with pytest.raises(ValueError, match="max_bad_fraction"):
        prepare(src, tok, tmp_path / "q", max_bad_fraction=2)


def test_a_file_of_only_bad_lines_names_its_first_bad_line(tok, tmp_path):
    src = _write(tmp_path / "x.jsonl", [b"\n", b"nope\n", {"txt": 1}])
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not valid JSON"):
        prepare(src, tok, tmp_path / "o")
    with pytest.raises(ValueError, match="no valid records"):
        prepare(src, tok, tmp_path / "o", skip_bad_lines=True)


# ----------------------------------------------------------------------------------------------
# Workers: byte ranges, the same bytes as one worker
# ----------------------------------------------------------------------------------------------
def test_shard_bounds_are_line_starts_that_cover_the_file(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_bytes(b"a\n" + b"bb\n" * 5 + b"\n" + b"c" * 40 + b"\nlast")
    data = path.read_bytes()
    starts = {0} | {i + 1 for i, ch in enumerate(data) if ch == ord("\n")}
    for n in (1, 2, 3, 7, 60):
        bounds = _shard_bounds(path, n)
        assert len(bounds) == n + 1 and bounds[0] == 0 and bounds[-1] == len(data)
        assert bounds == sorted(bounds) and set(bounds) <= starts | {len(data)}


def _same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.bin"))
    assert names == sorted(p.name for p in b.glob("*.bin")) and names
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sorted(p.name for p in b.iterdir()) == sorted(p.name for p in a.iterdir())  # no parts


@pytest.mark.parametrize("name", ["pretrain.jsonl", "sft_512.jsonl"])
def test_workers_write_the_same_bytes_as_one(tok, world, tmp_path, name):
    one = prepare(world / name, tok, tmp_path / "1", max_seq_len=128)
    three = prepare(world / name, tok, tmp_path / "3", max_seq_len=128, workers=3, chunk=100)
    _same_files(tmp_path / "1", tmp_path / "3")
    assert (
        one == three
        and (tmp_path / "1" / "meta.json").read_bytes()
        == (tmp_path / "3" / "meta.json").read_bytes()
    )


def test_workers_skip_and_count_bad_lines_with_global_line_numbers(tok, world, tmp_path):
    lines = (world / "sft_512.jsonl").read_bytes().splitlines(keepends=True)[:900]
    broken = lines[:100] + [b"{bad\n", b"\n"] + lines[100:700] + [b'{"text": "x"}\n'] + lines[700:]
    src = tmp_path / "s.jsonl"
    src.write_bytes(b"".join(broken))
    kw = dict(skip_bad_lines=True, max_bad_fraction=0.01)
    one = prepare(src, tok, tmp_path / "1", **kw)
    two = prepare(src, tok, tmp_path / "2", workers=2, **kw)
    _same_files(tmp_path / "1", tmp_path / "2")
    assert one == two and [n for n, _ in two["bad_lines"]["lines"]] == [101, 703]
    assert two["documents"] == 900 and two["input_lines"] == 902
    strict = tmp_path / "t.jsonl"  # one bad line, in the second worker's range
    strict.write_bytes(b"".join(lines[:700] + [b'{"text": "x"}\n'] + lines[700:]))
    with pytest.raises(ValueError, match=r"t\.jsonl:701: expected a chat line.*--skip-bad-lines"):
        prepare(strict, tok, tmp_path / "4", workers=2)
    assert not (tmp_path / "4" / "meta.json").exists() and not list((tmp_path / "4").iterdir())


# ----------------------------------------------------------------------------------------------
# Lengths
# ----------------------------------------------------------------------------------------------
def test_check_prepared_length_refuses_longer_or_other_lengths(tok, world, tmp_path):
    prepare(world / "sft_1024.jsonl", tok, tmp_path / "c", max_seq_len=512)
    prepare(world / "pretrain.jsonl", tok, tmp_path / "p")
    check_prepared_length(tmp_path / "c", seq_len=512, max_seq_len=1024)
    with pytest.raises(
        ValueError,
        match=r"prepared at max_seq_len 512, longer than the model's "
        r"max_seq_len 256; prepare the data again with --max-seq-len 256",
    ):
        check_prepared_length(PreparedData(tmp_path / "c"), seq_len=256, max_seq_len=256)
    with pytest.raises(
        ValueError,
        match=r"prepared at max_seq_len 512, but this run trains at "
        r"seq_len 1024",
    ):
        check_prepared_length(PreparedData(tmp_path / "c").meta, seq_len=1024, max_seq_len=1024)
    check_prepared_length(tmp_path / "p", seq_len=64, max_seq_len=512)  # packed: any seq_len
    with pytest.raises(ValueError, match="seq_len 1024 is longer than the model's max_seq_len 512"):
        check_prepared_length(tmp_path / "p", seq_len=1024, max_seq_len=512)
    with pytest.raises(FileNotFoundError, match="prepare the data first"):
        check_prepared_length(tmp_path / "none", 512, 512)


# ----------------------------------------------------------------------------------------------
# Loaders: global position (resume on another number of ranks), length grouping, batch building
# ----------------------------------------------------------------------------------------------
def _steps(loaders, n):
    """The items of ``n`` global steps: every rank's next batch, rank 0 first."""
    return [np.concatenate([ld.order.next_batch() for ld in loaders]) for _ in range(n)]


def _make(kind, data, rank=0, world=1, batch=4):
    if kind == "packed":
        return PackedLoader(data, 16, batch, seed=5, rank=rank, world_size=world)
    return ChatLoader(data, batch, seed=5, rank=rank, world_size=world, length_window=3)


@pytest.mark.parametrize("kind", ["packed", "chat"])
@pytest.mark.parametrize("worlds", [(2, 1), (1, 2), (3, 2)])
def test_a_position_saved_at_one_world_size_continues_exactly_at_another(kind, worlds, pre, r1):
    data = pre if kind == "packed" else r1
    w_old, w_new = worlds
    old = [_make(kind, data, r, w_old) for r in range(w_old)]
    done = _steps(old, 3)
    states = [ld.state_dict() for ld in old]
    assert all(s == states[0] for s in states)  # the position is global: every rank saves the same
    assert states[0]["world_size"] == w_old and states[0]["sample"] == 3 * 4 * w_old
    new = [_make(kind, data, r, w_new) for r in range(w_new)]
    for ld in new:
        ld.load_state_dict(json.loads(json.dumps(states[0])))
    order = old[0].order.epoch_order()  # the epoch's order is the same whatever the world size
    assert np.array_equal(order, new[0].order.epoch_order())
    left = (len(order) - len(np.concatenate(done))) // (4 * w_new)
    steps = done + _steps(new, left)
    pos = 0
    for step in steps:  # each global step takes exactly the next items of the epoch's order
        assert sorted(step.tolist()) == sorted(order[pos : pos + len(step)].tolist())
        pos += len(step)
    consumed = np.concatenate(steps)
    assert len(set(consumed.tolist())) == len(consumed)  # nothing repeated
    assert len(order) - len(consumed) < 4 * w_new  # nothing skipped but the epoch's short tail
    nxt = np.concatenate([ld.order.next_batch() for ld in new])  # then the next epoch begins
    assert all(ld.order.epoch == 1 for ld in new)
    assert sorted(nxt.tolist()) == sorted(new[0].order.epoch_order()[: len(nxt)].tolist())


def test_resumed_tensors_equal_an_uninterrupted_run_at_the_same_world_size(pre):
    a = PackedLoader(pre, 16, 4, seed=2, rank=1, world_size=2)
    it = iter(a)
    for _ in range(a.batches_per_epoch + 2):
        next(it)
    state = a.state_dict()
    assert state["epoch"] == 1 and state["sample"] == 2 * 4 * 2
    want = [next(it)[0] for _ in range(3)]
    b = PackedLoader(pre, 16, 4, seed=2, rank=1, world_size=2)
    b.load_state_dict(state)
    got = [x for x, _, _ in itertools.islice(iter(b), 3)]
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_load_state_dict_refuses_other_data_and_reads_an_old_position(pre):
    a = PackedLoader(pre, 16, 4, seed=2)
    with pytest.raises(ValueError, match="saved data position is for 7 items.*same data, seq_len"):
        a.load_state_dict({**a.state_dict(), "items": 7})
    ref = PackedLoader(pre, 16, 4, seed=2)
    for _ in range(5):
        ref.order.next_batch()
    old_style = {"epoch": 0, "batch": 5, "seed": 2}  # saved before positions were global
    a.load_state_dict(old_style)
    assert a.state_dict() == ref.state_dict()
    assert np.array_equal(a.order.next_batch(), ref.order.next_batch())


def test_grouped_order_is_a_seeded_permutation_of_similar_lengths():
    lengths = np.random.default_rng(0).integers(10, 500, 1000)
    perm = np.random.default_rng(1).permutation(1000)
    out = grouped_order(perm, lengths, 8, 10, np.random.default_rng(2))
    assert sorted(out.tolist()) == list(range(1000))
    again = grouped_order(perm, lengths, 8, 10, np.random.default_rng(2))
    assert np.array_equal(out, again)
    batches = lengths[out].reshape(-1, 8)  # 1000 = 125 batches of 8
    windows = [set(perm[a : a + 80].tolist()) for a in range(0, 1000, 80)]
    for b in out.reshape(-1, 8):  # every batch comes from one window, sorted inside it
        assert any(set(b.tolist()) <= w for w in windows)
    plain = lengths[perm].reshape(-1, 8)
    share = batches.sum() / (8 * batches.max(1).sum())
    assert share > 0.9 > plain.sum() / (8 * plain.max(1).sum())
    tail = grouped_order(perm[: 1003 - 3], lengths, 7, 10, np.random.default_rng(2))
    assert np.array_equal(tail[-(1000 % 7) :], perm[1000 - 1000 % 7 : 1000])  # too few: at the end


def test_grouped_chat_loader_shards_and_keeps_rows_exact(r1):
    loaders = [ChatLoader(r1, 3, seed=1, rank=r, world_size=2, length_window=2) for r in (0, 1)]
    shards = [set(ld.order._epoch_items().tolist()) for ld in loaders]
    assert not (shards[0] & shards[1])
    plain = ChatLoader(r1, 3, seed=1)
    x, y, _ = loaders[0].batch_of(np.array([0, 1, 2]))
    x2, y2, _ = plain.batch_of(np.array([0, 1, 2]))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # grouping changes the order, not the rows


def test_chat_batches_round_up_to_pad_multiple_and_stay_unpinned_on_cpu(r1, tok):
    loader = ChatLoader(r1, 4, seed=0, pad_multiple=64)
    x, y, w = next(iter(loader))
    n = max(len(r1.doc(int(d))[0]) for d in loader.order._epoch_items()[:4]) - 1
    assert x.shape[1] % 64 == 0 and x.shape[1] - 64 < n <= x.shape[1]
    assert (x[:, n:] == tok.pad_id).all() and (y[:, n:] == IGNORE_INDEX).all() and w is None
    if not torch.cuda.is_available():
        assert not x.is_pinned()
    with pytest.raises(ValueError, match="pad_multiple"):
        ChatLoader(r1, 4, pad_multiple=0)
