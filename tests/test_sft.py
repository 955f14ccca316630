"""Tests of `spongebob.sft` (chapter 07): replay mixing, last-reply targets, the SFT stage.

The learning test fine-tunes a micro model for a few seconds on four questions and checks that
greedy answers come back right and end with </s>.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spongebob.checkpoint import read_checkpoint, save_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import ChatLoader, PackedLoader, PreparedData, prepare
from spongebob.evaluate import answer_chats, grade_fact
from spongebob.model import IGNORE_INDEX, SpongeBob
from spongebob.pretrain import induction_probe
from spongebob.sft import (
    Curriculum,
    LastReplyOnly,
    RepeatedSpans,
    ReplayMix,
    frequent_ids,
    last_reply_targets,
    sft,
    sft_checkpoint,
    sft_config,
)
from spongebob.train import TrainConfig
from spongebob.world import course_tokenizer

QA = [("Where does Pearl live?", "Pearl lives in an anchor."),
      ("What is Gary's job?", "Gary is a chef."),
      ("Who is Larry's best friend?", "Larry's best friend is Karen."),
      ("What does Plankton eat?", "Plankton eats kelp cake.")]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models train faster on one thread (and much faster on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return course_tokenizer()


@pytest.fixture(scope="module")
def chats(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("chats")
    lines = []
    for i in range(8):  # single questions and two-question chats
        q, a = QA[i % 4]
        conv = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if i >= 4:
            q2, a2 = QA[(i + 1) % 4]
            conv += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
        lines.append(json.dumps({"conversations": conv}))
    src = folder / "chats.jsonl"
    src.write_text("\n".join(lines) + "\n", "utf-8")
    text = folder / "text.jsonl"
    text.write_text("".join(json.dumps({"text": a}) + "\n" for _, a in QA * 40), "utf-8")
    prepare(src, tok, folder / "prepared")
    return src, text, PreparedData(folder / "prepared")


def test_replay_mix_pattern_weights_and_resume(chats):
    _, _, data = chats
    ids = np.arange(4000) % 50
    for fraction, every in ((0.5, 2), (0.25, 4), (0.0, None)):
        chat = ChatLoader(data, 2, seed=1)
        rep = PackedLoader(ids, 16, 2, seed=2) if fraction else None
        batches = iter(ReplayMix(chat, rep, fraction, replay_weight=0.25))
        kinds = [next(batches)[0].shape[1] == 16 and fraction > 0 for _ in range(12)]
        expected = [every is not None and (i + 1) % every == 0 for i in range(12)]
        assert kinds == expected, fraction
    mix = ReplayMix(ChatLoader(data, 2, seed=1), PackedLoader(ids, 16, 2, seed=2), 0.5, 0.25)
    it = iter(mix)
    first = [next(it) for _ in range(5)]
    x, y, w = first[1]
    assert w is not None and torch.all(w == 0.25) and w.shape == y.shape
    assert first[0][2] is None  # a chat batch keeps its own (absent) weights
    state = mix.state_dict()
    rest = [next(it) for _ in range(4)]
    again = ReplayMix(ChatLoader(data, 2, seed=1), PackedLoader(ids, 16, 2, seed=2), 0.5, 0.25)
    again.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON round trip
    for a, b in zip(rest, iter(again)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert mix.batches_per_epoch == 2 * ChatLoader(data, 2).batches_per_epoch
    with pytest.raises(ValueError, match="needs a replay loader"):
        ReplayMix(ChatLoader(data, 2), None, 0.5)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        ReplayMix(ChatLoader(data, 2), None, 1.0)


def test_replay_mix_records_a_world_size_only_when_both_loaders_do():
    ids = np.arange(1000, dtype=np.uint16)

    def windows(seed):  # the replay loader of the tiny recipes: windows that start anywhere
        return PackedLoader(ids, 16, 2, seed=seed, cuts="random")

    class PerRank:  # a loader whose position is its own rank's only
        def __init__(self, inner):
            self.inner = inner

        def __iter__(self):
            return iter(self.inner)

        def state_dict(self):
            return {k: v for k, v in self.inner.state_dict().items() if k != "world_size"}

    both = ReplayMix(windows(1), windows(2), 0.5)
    assert both.state_dict()["world_size"] == 1
    mixed = ReplayMix(PerRank(windows(1)), windows(2), 0.5)
    assert "world_size" not in mixed.state_dict()  # a resume on other ranks must refuse


def test_last_reply_targets_matches_a_loop(chats):
    _, _, data = chats
    x, y, _ = ChatLoader(data, 8, shuffle=False).batch_of(np.arange(8))
    got = last_reply_targets(y)
    for row, out in zip(y.tolist(), got.tolist()):  # independent: walk back from the end
        end = max(i for i, t in enumerate(row) if t != IGNORE_INDEX)
        start = end
        while start > 0 and row[start - 1] != IGNORE_INDEX:
            start -= 1
        want = [t if start <= i <= end else IGNORE_INDEX for i, t in enumerate(row)]
        assert out == want
    assert (got != IGNORE_INDEX).sum() < (y != IGNORE_INDEX).sum()  # two-question chats lost one
    wrapped = next(iter(LastReplyOnly(ChatLoader(data, 8, shuffle=False))))
    assert torch.equal(wrapped[1], got)


def test_sft_config_presets():
    cfg = sft_config("tiny", max_steps=7)
    assert isinstance(cfg, TrainConfig) and cfg.max_steps == 7 and cfg.seq_len == 512
    assert sft_config("tiny-long").seq_len == 2 * cfg.seq_len
    with pytest.raises(ValueError, match="unknown SFT preset"):
        sft_config("huge")


def test_sft_learns_the_answers_and_the_checkpoint_is_found(tmp_path, tok, chats):
    src, text, _ = chats
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                         max_seq_len=128)  # fmt: skip
    init = save_checkpoint(tmp_path / "init.pt",
                           {"model": SpongeBob(config).state_dict(), "config": config.to_dict()})  # fmt: skip
    cfg = TrainConfig(lr=3e-3, warmup_steps=5, max_steps=80, batch_size=4, seq_len=64,
                      grad_accum=2, log_every=10)  # fmt: skip
    out = tmp_path / "sft"
    kw = dict(init=init, replay_source=text, replay=0.5, replay_weight=0.5, random_windows=True)
    res = sft(src, tok, out, cfg, progress=False, **kw)
    assert res.step == 80 and res.history[-1]["loss"] < 0.3 * res.history[0]["loss"]
    from spongebob.checkpoint import load_model

    model = load_model(res.checkpoint)
    answers = answer_chats(model, tok, [[{"role": "user", "content": q}] for q, _ in QA],
                           max_new_tokens=24)  # fmt: skip
    assert all(stopped for _, stopped in answers), answers
    assert [text for text, _ in answers] == [a for _, a in QA]
    assert grade_fact(answers[0][0], "anchor")
    _, extras = read_checkpoint(res.checkpoint)
    assert extras["stage"] == "sft" and extras["recipe"]["replay"] == 0.5
    mtime = res.checkpoint.stat().st_mtime_ns
    assert sft_checkpoint(src, tok, out, cfg, **kw) == res.checkpoint
    assert res.checkpoint.stat().st_mtime_ns == mtime  # found, not retrained
    short = TrainConfig(**{**cfg.to_dict(), "max_steps": 3})
    other = sft_checkpoint(src, tok, tmp_path / "other", short, init=init, replay=0.0)
    assert read_checkpoint(other)[1]["recipe"]["replay"] == 0.0
    assert sft_checkpoint(src, tok, out, short, **kw) == res.checkpoint
    assert res.checkpoint.stat().st_mtime_ns != mtime  # a different recipe is retrained


# --- copying: the induction probe (06), copy drills and their alphabet (07) ---


class _Copier(torch.nn.Module):
    """A hand-built model for the probe: logits favour the token ``period`` positions back by
    ``margin`` (0 = uniform logits); it records every input it sees."""

    def __init__(self, vocab: int, period: int, margin: float) -> None:
        super().__init__()
        self.config = ModelConfig.preset("tiny", vocab_size=vocab)
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.period, self.margin, self.seen = period, margin, []

    def forward(self, x):
        self.seen.append(x.clone())
        logits = torch.zeros(*x.shape, self.config.vocab_size) + self.w
        t = torch.arange(x.shape[1])
        src = t + 1 - self.period  # the position whose token comes next in a repeated sequence
        ok = src >= 0
        rows = logits[:, t[ok], :]
        rows.scatter_(-1, x[:, src[ok]].unsqueeze(-1), self.margin)
        logits[:, t[ok], :] = rows
        return type("Out", (), {"logits": logits})()


def test_induction_probe_against_hand_computed_losses():
    V, L = 64, 10
    ratio, loss = induction_probe(_Copier(V, L, 0.0), length=L, batch=3, per_position=True)
    assert loss.shape == (2 * L - 1,) and ratio == pytest.approx(1.0)
    assert loss.numpy() == pytest.approx(np.full(2 * L - 1, np.log(V)), rel=1e-6)
    # a copier with margin m: on the second copy the loss is log(e^m + V - 1) - m
    m = 5.0
    ratio, loss = induction_probe(_Copier(V, L, m), length=L, batch=3, per_position=True)
    second = np.log(np.exp(m) + V - 1) - m
    assert loss[L:].numpy() == pytest.approx(np.full(L - 1, second), rel=1e-5)
    assert ratio == pytest.approx(second / np.log(V), rel=1e-5)


def test_induction_probe_draws_from_the_alphabet():
    model = _Copier(64, 8, 0.0)
    induction_probe(model, length=8, batch=4)
    assert model.seen[-1].min() >= 16 and model.seen[-1].max() < 64  # no special ids by default
    alphabet = torch.tensor([20, 33, 47])
    induction_probe(model, length=8, batch=4, ids=alphabet)
    x = model.seen[-1]
    assert set(x.unique().tolist()) <= {20, 33, 47} and torch.equal(x[:, 8:], x[:, :7])


def _check_drills(x, y, period_ok, alphabet):
    for b in range(len(x)):
        trained = (y[b] != IGNORE_INDEX).nonzero().flatten()
        first = int(trained[0])  # the first predictable target: the copy starts at k - 1
        k = first + 1
        assert period_ok(k)
        row = torch.cat([x[b], y[b, -1:]])
        assert torch.equal(row[k:], row[: len(row) - k])  # period k everywhere
        assert (y[b, :first] == IGNORE_INDEX).all() and (y[b, first:] != IGNORE_INDEX).all()
        assert set(x[b].tolist()) <= alphabet


def test_repeated_spans_are_copies_of_the_given_alphabet():
    alphabet = {17, 40, 41, 99, 120}
    drills = RepeatedSpans(128, 32, 6, k_min=3, k_max=9, seed=2, ids=sorted(alphabet))
    x, y, w = next(iter(drills))
    assert x.shape == y.shape == (6, 32) and w is None
    _check_drills(x, y, lambda k: 3 <= k <= 9, alphabet)
    x, y, _ = next(iter(RepeatedSpans(128, 32, 6, k_min=3, k_max=9, seed=2)))
    _check_drills(x, y, lambda k: 3 <= k <= 9, set(range(16, 128)))


def test_repeated_spans_resume_and_bad_alphabets():
    a = RepeatedSpans(100, 16, 2, k_min=2, k_max=4, seed=1, ids=[20, 30, 40])
    it = iter(a)
    next(it)
    b = RepeatedSpans(100, 16, 2, k_min=2, k_max=4, seed=1, ids=[20, 30, 40])
    b.load_state_dict(a.state_dict())
    assert torch.equal(next(it)[0], next(iter(b))[0])
    for bad in ([5], [[20, 30]], [20, 100], [-1, 20]):
        with pytest.raises(ValueError, match="alphabet of at least 2 ids below 100"):
            RepeatedSpans(100, 16, 2, k_min=2, k_max=4, ids=bad)


class _Ids:
    def __init__(self, ids, folder="corpus"):
        self.ids, self.folder = np.asarray(ids, dtype=np.uint16), folder


def test_frequent_ids_by_count_then_id():
    ids = [3] * 9 + [20] * 2 + [18] * 5 + [30] * 2 + [16] * 1 + [25] * 5
    assert frequent_ids(_Ids(ids), k=4).tolist() == [18, 25, 20, 30]  # 3 is special: excluded
    assert frequent_ids(_Ids(ids), k=2, low=19).tolist() == [25, 20]
    with pytest.raises(ValueError, match="corpus: fewer than 7 distinct token ids from 16 up"):
        frequent_ids(_Ids(ids), k=7)


class _Counter:
    """A resumable loader whose batches say where they come from."""

    def __init__(self, name: str) -> None:
        self.name, self.count = name, 0

    def __iter__(self):
        while True:
            self.count += 1
            yield (self.name, self.count)

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]


def test_curriculum_order_end_and_resume():
    stages = [(2, _Counter("a")), (3, _Counter("b")), (None, _Counter("c"))]
    got = [b for _, b in zip(range(8), Curriculum(stages))]
    assert got == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("c", 1), ("c", 2), ("c", 3)]
    assert list(Curriculum([(2, _Counter("a")), (1, _Counter("b"))])) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
    ]
    # stop after 4 batches, resume from the state: the same batches as one uninterrupted pass
    first = Curriculum([(2, _Counter("a")), (3, _Counter("b")), (None, _Counter("c"))])
    head = [b for _, b in zip(range(4), first)]
    again = Curriculum([(2, _Counter("a")), (3, _Counter("b")), (None, _Counter("c"))])
    again.load_state_dict(first.state_dict())
    assert head + [b for _, b in zip(range(4), again)] == got
    for bad in (
        [],
        [(0, _Counter("a")), (None, _Counter("b"))],
        [(2, _Counter("a")), (0, _Counter("b"))],
    ):
        with pytest.raises(ValueError, match="count|stages"):
            Curriculum(bad)
