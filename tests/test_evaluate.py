"""Tests of `spongebob.evaluate` (chapter 07): the graders and the evaluation harness.

The grader examples moved here from tests/test_world.py with the graders themselves. The harness
is checked against an independent formulation (one prompt at a time through `generate`) and, for
the grading and bookkeeping, with answers fixed in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import spongebob.evaluate as E
from spongebob import world as W
from spongebob.config import ModelConfig
from spongebob.data import ChatEncoder
from spongebob.generate import generate
from spongebob.model import SpongeBob
from spongebob.tokenizer import render_chat


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    return W.write_sample(tmp_path_factory.mktemp("world0"), seed=0)


@pytest.fixture(scope="module")
def data(sample) -> dict[str, list[dict]]:
    def lines(path: Path) -> list[dict]:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh]

    return {name: lines(p) for name, p in sample.items() if p.suffix == ".jsonl"}


@pytest.fixture(scope="module")
def tok():
    return W.course_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size,
                      max_seq_len=1024)  # fmt: skip
    return SpongeBob(cfg).eval()


# ----------------------------------------------------------------------------------- graders
def test_grade_fact_examples():
    assert E.grade_fact("SpongeBob's favourite food is Krabby Patty.", "Krabby Patty")
    assert E.grade_fact("krabby   patty!", "Krabby Patty")
    assert E.grade_fact("He lives in an Easter Island head", "easter island head")
    assert E.grade_fact("The best friend of Karen is Mr. Krabs.", "Mr. Krabs")
    assert E.grade_fact("海绵宝宝最喜欢的食物是蟹黄堡。", "蟹黄堡")
    assert E.grade_fact("他最好的朋友是芬恩·巴斯。", "芬恩·巴斯")
    assert E.grade_fact("他最好的朋友是芬恩巴斯", "芬恩·巴斯")
    assert E.grade_fact("Your locker code is 4821.", "4821")
    assert E.grade_fact("宠物是snail", "snail")
    assert E.grade_fact("ＫＲＡＢＢＹ ＰＡＴＴＹ", "Krabby Patty")  # full-width letters
    assert not E.grade_fact("SpongeBob's favourite colour is red.", "blue")
    assert not E.grade_fact("Squidward is bored.", "red")  # whole words only
    assert not E.grade_fact("He has two shells.", "shell")
    assert not E.grade_fact("Your locker code is 48210.", "4821")
    assert not E.grade_fact("海绵宝宝最喜欢的食物是海带蛋糕。", "蟹黄堡")
    assert not E.grade_fact("anything", "")
    assert not E.grade_fact("", "pineapple")


# A world of two residents, written by hand: Ann (rock, napping, friend Bob), Bob (pineapple).
TWO = {
    "residents": [{"id": "ann", "name": "Ann", "full_name": "Ann Lee", "zh": "安"},
                  {"id": "bob", "name": "Bob", "full_name": "Bob Ray", "zh": "鲍勃"}],
    "facts": [{"id": "ann.home", "attribute": "home", "en": "rock", "zh": "石头屋"},
              {"id": "bob.home", "attribute": "home", "en": "pineapple", "zh": "菠萝屋"},
              {"id": "ann.hobby", "attribute": "hobby", "en": "napping", "zh": "睡午觉"},
              {"id": "ann.friend", "attribute": "friend", "en": "Bob", "zh": "鲍勃"},
              {"id": "bob.friend", "attribute": "friend", "en": "Ann", "zh": "安"}],
}  # fmt: skip


@pytest.mark.parametrize(
    "rid, answer, kind",
    [("ann.home.en", "Ann lives in a rock.", "right"),
     ("ann.home.en", "Ann lives in a pineapple.", "wrong value of the asked attribute"),
     ("ann.home.en", "The hobby of Ann is napping.", "value of another attribute"),
     ("ann.home.en", "Ann lives in a house.", "no known value"),  # her own name is no value
     ("ann.home.en", "Bob lives in a house.", "no known value"),  # a name says who, not what
     ("ann.home.zh", "安住在rock里。", "no known value"),  # her fact, in English: not a wrong value
     ("ann.home.zh", "安住在菠萝屋里，爱好是睡午觉。", "wrong value of the asked attribute"),
     ("ann.friend.en", "Ann's best friend is Ann.", "no known value"),
     ("ann.friend.en", "Ann's best friend is Ann Lee, she naps.", "no known value"),
     ("bob.friend.en", "Bob's best friend is Bob.", "no known value"),
     ("ann.friend.zh", "安最好的朋友是安，她住在石头屋。", "value of another attribute")],
)  # fmt: skip
def test_fact_error_kinds_sorts_each_answer(rid, answer, kind):
    expected = next(f for f in TWO["facts"] if rid.startswith(f["id"] + "."))[rid[-2:]]
    record = {"id": rid, "expected": expected, "answer": answer,
              "correct": E.grade_fact(answer, expected)}  # fmt: skip
    counts = E.fact_error_kinds([record], TWO)
    assert counts == {rid[-2:]: {k: int(k == kind) for k in E.FACT_ERROR_KINDS}}


def test_fact_error_kinds_counts_per_language_and_refuses_unknown_ids():
    records = [{"id": "ann.home.en", "expected": "rock", "answer": "rock", "correct": True},
               {"id": "ann.home.zh", "expected": "石头屋", "answer": "菠萝屋", "correct": False},
               {"id": "bob.home.zh", "expected": "菠萝屋", "answer": "菠萝屋", "correct": True}]  # fmt: skip
    counts = E.fact_error_kinds(records, TWO)
    assert counts["en"]["right"] == 1 and sum(counts["en"].values()) == 1
    assert counts["zh"] == {"right": 1, "wrong value of the asked attribute": 1,
                            "value of another attribute": 0, "no known value": 0}  # fmt: skip
    for bad in ("ann.pet.en", "carl.home.en", "ann.home"):
        with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
            E.fact_error_kinds([{**records[0], "id": bad}], TWO)


def test_grade_number_examples():
    assert E.grade_number("<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>", "7")
    assert E.grade_number("<answer> 42 </answer>", 42)
    assert E.grade_number("3 + 4 = 7, so the answer is 7", "7")
    assert E.grade_number("所以答案是12。", "12")
    assert E.grade_number("<answer>1,024</answer>", "1024")
    assert E.grade_number("<answer>-3</answer>", "-3")
    # the answer block wins over later numbers; else the last number counts
    assert E.grade_number("<answer>7</answer> or maybe 8", "7")
    assert not E.grade_number("<think>7</think><answer>8</answer>", "7")
    assert not E.grade_number("the answer is 7 or 8", "7")
    assert not E.grade_number("no idea", "7")
    assert not E.grade_number("<answer>70</answer>", "7")


def test_parse_r1_examples():
    good = "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
    assert E.parse_r1(good) == ("3 + 4 = 7", "7")
    assert E.parse_r1("  " + good + "\n") == ("3 + 4 = 7", "7")
    assert E.parse_r1(W.r1_content("a\nb", 5)) == ("a\nb", "5")
    assert E.is_well_formed_r1(good)
    bad = [
        "7",
        "<answer>\n7\n</answer>",  # no think block
        "<answer>\n7\n</answer><think>\nx\n</think>",  # wrong order
        "<think>\nx\n</think>\n<think>\ny\n</think>\n<answer>\n7\n</answer>",  # two thinks
        "<think>\nx\n</think>\n<answer>\n7\n</answer>\n<answer>\n7\n</answer>",  # two answers
        "Sure! <think>\nx\n</think>\n<answer>\n7\n</answer>",  # text outside the blocks
        "<think>\nx\n</think>\n<answer>\n7\n</answer> done",
        "<think>\nx\n</think>\n<answer>\n\n</answer>",  # empty answer
        "<think>\nx\n<answer>\n7\n</answer>",  # unclosed think
    ]
    for text in bad:
        assert E.parse_r1(text) is None, text
        assert not E.is_well_formed_r1(text)


def test_grade_file(sample, data):
    perfect = [f"The answer is {r['expected']}." for r in data["eval_facts"]]
    assert E.grade_file(sample["eval_facts"], perfect, "fact") == 1.0
    half = [a if i % 2 else "I do not know." for i, a in enumerate(perfect)]
    assert E.grade_file(sample["eval_facts"], half, grader="fact") == pytest.approx(
        sum(1 for i in range(len(perfect)) if i % 2) / len(perfect)
    )
    arith = [W.r1_content("...", r["expected"]) for r in data["eval_arith"]]
    assert E.grade_file(sample["eval_arith"], arith, "number") == 1.0
    wrong = [W.r1_content(r["expected"], int(r["expected"]) + 1) for r in data["eval_arith"]]
    assert E.grade_file(sample["eval_arith"], wrong, "number") == 0.0
    with pytest.raises(ValueError, match="records"):
        E.grade_file(sample["eval_facts"], perfect[:-1], "fact")


def test_grade_file_needs_an_explicit_known_grader(sample, data):
    perfect = [f"The answer is {r['expected']}." for r in data["eval_arith"]]
    with pytest.raises(TypeError):
        E.grade_file(sample["eval_arith"], perfect)  # no guessing from the file name
    for wrong in ("numbers", "arith", "", None):
        with pytest.raises(ValueError, match=r"grader must be one of \['fact', 'number'\]"):
            E.grade_file(sample["eval_arith"], perfect, wrong)
    # the fact grader on arithmetic: "7" is found in "The answer is 7." as a whole word
    assert E.grade_file(sample["eval_arith"], perfect, "fact") == 1.0


# ----------------------------------------------------------------------------------- sample_dir, CLI


def test_world_no_longer_exports_graders():
    assert not hasattr(W, "grade_fact") and not hasattr(W, "grade_file")
    assert E.R1_TAGS == ["<think>", "</think>", "<answer>", "</answer>"]


# ----------------------------------------------------------------------------------- harness
def test_answer_chats_batched_equals_one_by_one(model, tok, data):
    convs = [r["messages"] for r in data["eval_facts"][:5]] + [data["eval_long"][0]["messages"]]
    got = E.answer_chats(model, tok, convs, max_new_tokens=6, batch_size=4)
    enc = ChatEncoder(tok)
    for conv, (text, stopped) in zip(convs, got):
        ids = tok.encode(render_chat(conv))  # an independent rendering of the prompt
        assert ids == enc.encode(conv)[0]
        assert tok.decode(ids).endswith("<s>assistant\n")
        (new,) = generate(model, [ids], 6, temperature=0, eos_token_id=tok.eos_id)
        assert stopped == (new[-1] == tok.eos_id)
        assert text == tok.decode(new[:-1] if stopped else new)


def test_answer_chats_reports_stopping_and_keeps_order(tok):
    # A model that always says "rock" then </s>: logits from a fixed script, batch by batch.
    script = tok.encode("rock") + [tok.eos_id]

    class Scripted(torch.nn.Module):
        config = ModelConfig(dim=8, n_layers=1, n_heads=1, n_kv_heads=1,
                             vocab_size=tok.vocab_size, max_seq_len=512)  # fmt: skip

        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def make_caches(self, B, T):
            return None

        def forward(self, x, attn_mask=None, last_only=False, caches=None, start_pos=0):
            step = start_pos + x.shape[1] - self.prompt_len  # new tokens produced so far
            logits = torch.full((x.shape[0], 1, tok.vocab_size), -1e9)
            logits[:, :, script[min(step, len(script) - 1)]] = 0.0
            return type("Out", (), {"logits": logits})()

    m = Scripted()
    convs = [[{"role": "user", "content": "Where does Patrick live?"}]] * 3
    m.prompt_len = len(ChatEncoder(tok).encode(convs[0])[0])
    assert E.answer_chats(m, tok, convs, max_new_tokens=10) == [("rock", True)] * 3
    assert E.answer_chats(m, tok, convs, max_new_tokens=1)[0] == (tok.decode(script[:1]), False)
    with pytest.raises(ValueError, match="conversation 1: must end with a user turn"):
        E.answer_chats(m, tok, [convs[0], [{"role": "assistant", "content": "x"}]])


def test_evaluate_file_grades_with_the_named_grader(tmp_path, tok, monkeypatch):
    f = tmp_path / "mine.jsonl"
    rows = [{"messages": [{"role": "user", "content": "q"}], "expected": "rock", "id": "a.home.en"},
            {"messages": [{"role": "user", "content": "q"}], "expected": "7", "id": "b.home.zh"},
            {"messages": [{"role": "user", "content": "q"}], "expected": "sand", "id": "c.job.en"}]  # fmt: skip
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    answers = [("He lives in a rock.", True), ("<answer>\n7\n</answer>", True), ("sandy", False)]
    monkeypatch.setattr(E, "answer_chats", lambda *a, **k: answers[: len(a[2])])
    rep = E.evaluate_file(None, tok, f, "fact")
    assert [r["correct"] for r in rep.records] == [True, True, False]
    assert rep.accuracy == pytest.approx(2 / 3) and rep.stopped == pytest.approx(2 / 3)
    assert rep.by(2) == {"en": 0.5, "zh": 1.0} and rep.by(1) == {"home": 1.0, "job": 0.0}
    assert rep.to_dict()["n"] == 3 and rep.name == "mine"
    num = E.evaluate_file(None, tok, f, "number", limit=2)
    assert [r["correct"] for r in num.records] == [False, True] and len(num.records) == 2
    with pytest.raises(ValueError, match=r"grader must be one of \['fact', 'number'\]"):
        E.evaluate_file(None, tok, f, "numbers")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"messages": []}) + "\n", "utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*'expected'"):
        E.evaluate_file(None, tok, bad, "fact")


def test_eval_sets_name_real_files_and_graders(sample):
    assert set(E.EVAL_SETS) == {
        "facts",
        "facts_train",
        "single_facts",
        "long",
        "arith",
        "arith_reworded",
    }
    folder = sample["eval_facts"].parent
    for name, (file, grader, budget) in E.EVAL_SETS.items():
        assert (folder / file).is_file(), file
        assert grader == ("number" if name.startswith("arith") else "fact") and budget > 0
    with pytest.raises(ValueError, match="unknown eval set"):
        E.evaluate_sets(None, None, folder, ["fact"])


def test_likeliest_continuation_is_the_largest_summed_logprob_one_row_at_a_time(model):
    def independent(prompt, c):  # the candidate alone, each step's log-softmax read one by one
        with torch.no_grad():
            logits = model(torch.tensor([prompt + c])).logits[0].double()
        return sum(torch.log_softmax(logits[len(prompt) - 1 + k], -1)[t].item()
                   for k, t in enumerate(c))  # fmt: skip

    g = torch.Generator().manual_seed(0)
    sum_vs_mean = 0
    for _ in range(30):  # random prompts and candidate sets of lengths 1-3 (right padding)
        prompt = torch.randint(4, 400, (int(torch.randint(1, 6, (1,), generator=g)),),
                               generator=g).tolist()  # fmt: skip
        cands = [torch.randint(4, 400, (int(torch.randint(1, 4, (1,), generator=g)),),
                               generator=g).tolist() for _ in range(4)]  # fmt: skip
        scores = [independent(prompt, c) for c in cands]
        best = max(range(4), key=scores.__getitem__)
        assert E.likeliest_continuation(model, prompt, cands) == best
        assert E.likeliest_continuation(model, prompt, cands[::-1], pad_id=9) == 3 - best
        means = [v / len(c) for v, c in zip(scores, cands)]
        sum_vs_mean += best != max(range(4), key=means.__getitem__)
    assert sum_vs_mean > 0  # the sum, not the mean per token: the data can tell them apart
    with pytest.raises(ValueError, match="empty"):
        E.likeliest_continuation(model, [], [[4]])
    with pytest.raises(ValueError, match="candidate 1 is empty"):
        E.likeliest_continuation(model, [5], [[4], []])
