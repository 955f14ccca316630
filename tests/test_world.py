"""Tests of the embedded Bikini Bottom data (`spongebob.world`).

Formats are checked against SEED.md with checks written here (not with the module's own
validator); arithmetic is recomputed from the structured problems in world.json and by parsing
the reasoning; leaks between training and evaluation files are searched for in the text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spongebob import evaluate as E
from spongebob import world as W
from spongebob.tokenizer import REASONING_TOKENS, render_chat
from spongebob.world import sample as S

SEED_FORMAT_ROLES = {"system", "user", "assistant"}
THINK, THINK_END, ANSWER, ANSWER_END = (re.escape(t) for t in REASONING_TOKENS)
R1_LAYOUT = re.compile(rf"{THINK}\n(.+)\n{THINK_END}\n{ANSWER}\n(-?\d+)\n{ANSWER_END}", re.DOTALL)
CJK = re.compile(r"[\u4e00-\u9fff]")
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}
FORMULAS = {  # written independently of world.PROBLEM_KINDS
    "add": lambda n: n[0] + n[1],
    "sub": lambda n: n[0] - n[1],
    "mul": lambda n: n[0] * n[1],
    "add_sub": lambda n: n[0] + n[1] - n[2],
    "mul_add": lambda n: n[0] * n[1] + n[2],
}


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    return W.write_sample(tmp_path_factory.mktemp("world0"), seed=0)


def lines(path: Path) -> list[dict]:
    """Plain json.loads per line (independent of data.read_jsonl)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def data(sample) -> dict[str, list[dict] | dict]:
    out: dict = {name: lines(p) for name, p in sample.items() if p.suffix == ".jsonl"}
    out["world"] = json.loads(sample["world"].read_text("utf-8"))
    return out


def mentions(text: str, value: str) -> bool:
    """`value` in `text` as whole words (English, case-insensitive) or as a substring (Chinese)."""
    if CJK.search(value):
        return value in text
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE) is not None


def user_turns(records: list[dict], key: str = "conversations") -> list[str]:
    return [t["content"] for r in records for t in r[key] if t["role"] == "user"]


def render(messages: list[dict]) -> str:
    """The chat rendering of `spongebob.tokenizer.render_chat`, with an empty system prompt."""
    return render_chat(messages, system_prompt="")


def check_seed_chat(turns, last_role: str) -> None:
    assert isinstance(turns, list) and turns
    for t in turns:
        assert isinstance(t, dict) and list(t) == ["role", "content"], t
        assert t["role"] in SEED_FORMAT_ROLES and isinstance(t["content"], str) and t["content"]
    roles = [t["role"] for t in turns]
    if roles[0] == "system":
        roles = roles[1:]
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"] * (len(roles) % 2)
    assert roles[-1] == last_role


# ----------------------------------------------------------------------------------- files
def test_write_sample_returns_every_file(sample):
    assert list(sample) == [name.split(".")[0] for name in W.FILES]
    for path in sample.values():
        assert path.is_file() and path.stat().st_size > 0
    manifest = json.loads((sample["world"].parent / W.MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["generator_version"] == W.GENERATOR_VERSION
    assert sorted(manifest["files"]) == sorted(W.FILES)


def test_same_seed_byte_identical_other_seed_different(sample, tmp_path):
    again = W.write_sample(tmp_path / "again", seed=0)
    other = W.write_sample(tmp_path / "other", seed=1)
    for name, path in sample.items():
        assert path.read_bytes() == again[name].read_bytes(), name
    for name in ("world", "pretrain", "sft_512", "sft_1024", "r1_1024", "eval_facts", "eval_long"):
        assert sample[name].read_bytes() != other[name].read_bytes(), name


def test_independent_of_string_hash_randomisation(sample, tmp_path):
    """Nothing may depend on set or dict-of-str iteration order: a fresh interpreter with another
    PYTHONHASHSEED writes the same bytes."""
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    code = f"from spongebob.world import write_sample; write_sample({str(tmp_path)!r}, seed=0)"
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=Path(W.__file__).parents[2]
    )
    for name, path in sample.items():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), name


def test_pretrain_format_and_size(data):
    recs = data["pretrain"]
    assert all(list(r) == ["text"] and isinstance(r["text"], str) and r["text"] for r in recs)
    texts = [r["text"] for r in recs]
    assert max(len(t) for t in texts) < 512
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert 800_000 < n_bytes < 3_000_000  # sized for a few minutes of CPU pretraining
    zh_share = sum(bool(CJK.search(t)) for t in texts) / len(texts)
    assert 0.2 < zh_share < 0.4  # roughly 70/30 English/Chinese by line
    # worked arithmetic is there, and it is correct
    worked = [t for t in texts if "Now Patrick has" in t or "Now SpongeBob has" in t]
    assert worked
    for t in texts:
        for x, op, y, z in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", t):
            assert OPS[op](int(x), int(y)) == int(z), t


def test_chat_files_match_seed_format(data):
    for name in ("sft_512", "sft_1024", "r1_1024"):
        assert data[name], name
        for r in data[name]:
            assert list(r) == ["conversations"]
            check_seed_chat(r["conversations"], last_role="assistant")
    multi = [r for r in data["sft_512"] if len(r["conversations"]) > 3]
    single = [r for r in data["sft_512"] if len(r["conversations"]) == 2]
    assert multi and single
    # short conversations fit the 512-token context easily (even at 2 chars per token)
    assert max(len(render(r["conversations"])) for r in data["sft_512"]) < 1000


def test_eval_files_format(data):
    for name in ("eval_facts", "eval_facts_train", "eval_single_facts", "eval_arith", "eval_long"):
        assert data[name], name
        for r in data[name]:
            assert set(r) <= {"messages", "expected", "id"} and isinstance(r["expected"], str)
            assert r["expected"].strip()
            check_seed_chat(r["messages"], last_role="user")
    for name in ("eval_completion", "eval_single_completion"):
        for r in data[name]:
            assert set(r) <= {"prompt", "expected", "id"}
            assert isinstance(r["prompt"], str) and r["prompt"] and r["expected"]


def test_chinese_present_everywhere_but_long_context(data):
    for name in ("pretrain", "sft_512", "r1_1024"):
        assert any(CJK.search(json.dumps(r, ensure_ascii=False)) for r in data[name]), name
    for name in ("eval_facts", "eval_completion", "eval_arith"):
        assert any(
            CJK.search(r["expected"] + json.dumps(r, ensure_ascii=False)) for r in data[name]
        )
    assert any(CJK.search(f["zh"]) for f in data["world"]["facts"])


# ----------------------------------------------------------------------------------- facts
def test_fact_table_is_unambiguous_and_short(data):
    w = data["world"]
    residents = {r["id"]: r for r in w["residents"]}
    facts = w["facts"]
    assert len(facts) >= 300
    assert len({(f["subject"], f["attribute"]) for f in facts}) == len(facts)
    names_en = [r["name"] for r in w["residents"]]
    names_zh = [r["zh"] for r in w["residents"]]
    assert len(set(names_en)) == len(names_en) and len(set(names_zh)) == len(names_zh)
    assert {"SpongeBob", "Patrick", "Squidward", "Mr. Krabs", "Sandy", "Plankton"} <= set(names_en)
    closed = {a: {(v["en"], v["zh"]) for v in vs} for a, vs in w["values"].items()}
    for f in facts:
        assert f["subject"] in residents and f["split"] == residents[f["subject"]]["split"]
        if f["attribute"] == "friend":
            friend = next(r for r in w["residents"] if r["name"] == f["en"])
            assert friend["zh"] == f["zh"] and friend["id"] != f["subject"]
        else:
            assert (f["en"], f["zh"]) in closed[f["attribute"]], f
        assert 1 <= len(f["en"].split()) <= 3
    # No value or name hides inside another one, so that whole-word grading is exact.
    vocab_en = sorted({f["en"] for f in facts} | set(names_en))
    vocab_zh = sorted({f["zh"] for f in facts} | set(names_zh))
    for a in vocab_en:
        assert not [b for b in vocab_en if a != b and mentions(b, a)], a
    for a in vocab_zh:
        assert not [b for b in vocab_zh if a != b and a in b], a
    splits = [r["split"] for r in w["residents"]]
    assert splits.count("single") == W.N_SINGLE
    assert abs(splits.count("train") - splits.count("heldout")) <= 1


def test_heldout_facts_never_asked_in_sft(data):
    facts = data["world"]["facts"]
    residents = {r["id"]: r for r in data["world"]["residents"]}
    asked = {n: user_turns(data[n]) for n in ("sft_512", "sft_1024", "r1_1024")}
    hidden = [f for f in facts if f["split"] in ("heldout", "single")]
    assert hidden
    for f in hidden:
        r = residents[f["subject"]]
        for name, questions in asked.items():
            if name == "r1_1024" and f["attribute"] == "friend":
                continue  # word problems name two of the show's characters; no fact is asked
            for q in questions:
                assert not (mentions(q, r["name"]) and mentions(q, f["en"])), (name, q)
                assert not (mentions(q, r["zh"]) and mentions(q, f["zh"])), (name, q)
    # stronger, per person: no held-out resident is even named in a fact question of sft_512
    for q in asked["sft_512"]:
        for r in residents.values():
            if r["split"] != "train":
                assert not mentions(q, r["name"]) and not mentions(q, r["zh"]), q


def test_every_train_fact_is_asked_and_answered_in_sft(data):
    pairs = []
    for r in data["sft_512"]:
        turns = [t for t in r["conversations"] if t["role"] != "system"]
        pairs += [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]
    residents = {r["id"]: r for r in data["world"]["residents"]}
    for f in data["world"]["facts"]:
        if f["split"] != "train":
            continue
        for lang in ("en", "zh"):
            name = residents[f["subject"]]["name" if lang == "en" else "zh"]
            hits = [a for q, a in pairs if mentions(q, name) and mentions(a, name)]
            assert any(mentions(a, f[lang]) for a in hits), (f["id"], lang)


def test_heldout_facts_are_in_pretraining_in_the_completion_phrasing(data):
    corpus = "\n".join(r["text"] for r in data["pretrain"])
    heldout = [f for f in data["world"]["facts"] if f["split"] == "heldout"]
    assert len(data["eval_completion"]) == 2 * len(heldout)
    assert len(data["eval_facts"]) == 2 * len(heldout)
    for r in data["eval_completion"]:
        zh = bool(CJK.search(r["prompt"]))
        sentence = r["prompt"] + ("" if zh else " ") + r["expected"] + ("。" if zh else ".")
        assert sentence in corpus, sentence
    expected = {(f["id"], lang): f[lang] for f in heldout for lang in ("en", "zh")}
    for r in data["eval_facts"]:
        fid, lang = r["id"].rsplit(".", 1)
        assert expected[(fid, lang)] == r["expected"]


def test_single_phrasing_residents(data):
    texts = [r["text"] for r in data["pretrain"]]
    singles = [r for r in data["world"]["residents"] if r["split"] == "single"]
    assert len(singles) == W.N_SINGLE
    for r in singles:
        found = [t for t in texts if r["name"] in t or r["zh"] in t]
        assert len(found) >= 10 and set(found) == {r["fixed_bio"]}, r["name"]
    for rec in data["eval_single_completion"]:
        bio = next(r["fixed_bio"] for r in singles if rec["prompt"].startswith(r["name"]))
        assert bio.startswith(rec["prompt"] + " " + rec["expected"])
    assert len(data["eval_single_facts"]) == len(data["eval_single_completion"])


def test_eval_facts_train_are_rephrased_train_facts(data):
    asked = set(user_turns(data["sft_512"]))
    train = {f["id"]: f for f in data["world"]["facts"] if f["split"] == "train"}
    for r in data["eval_facts_train"]:
        fid, lang = r["id"].rsplit(".", 1)
        assert train[fid][lang] == r["expected"]
        assert r["messages"][-1]["content"] not in asked


# ----------------------------------------------------------------------------------- arithmetic
def check_reasoning(think: str, answer: int) -> None:
    equations = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", think)
    assert equations, think
    for x, op, y, z in equations:
        assert OPS[op](int(x), int(y)) == int(z), think
    assert int(equations[-1][3]) == answer


def test_r1_layout_and_answers_are_correct(data):
    problems = {p["question"]: p for p in data["world"]["problems"] if p["split"] == "r1"}
    assert len(data["r1_1024"]) == W.N_R1
    assert {p["kind"] for p in problems.values()} == set(FORMULAS)
    for r in data["r1_1024"]:
        (user, assistant) = r["conversations"]
        m = R1_LAYOUT.fullmatch(assistant["content"])
        assert m, assistant["content"]
        think, answer = m.group(1), int(m.group(2))
        assert "<" not in think and ">" not in think
        assert E.is_well_formed_r1(assistant["content"])
        p = problems[user["content"]]
        assert answer == p["answer"] == FORMULAS[p["kind"]](p["numbers"])
        assert [int(x) for x in re.findall(r"\d+", user["content"])] == p["numbers"]
        check_reasoning(think, answer)
        assert answer >= 0


def test_eval_arith_is_unseen_and_correct(data):
    r1_questions = set(user_turns(data["r1_1024"]))
    problems = data["world"]["problems"]
    r1_keys = {(p["kind"], *p["numbers"]) for p in problems if p["split"] == "r1"}
    by_id = {p["id"]: p for p in problems}
    assert len(data["eval_arith"]) == sum(W.EVAL_ARITH_PER_KIND.values())
    for r in data["eval_arith"]:
        q = r["messages"][-1]["content"]
        p = by_id[r["id"]]
        assert q == p["question"] and q not in r1_questions
        assert (p["kind"], *p["numbers"]) not in r1_keys
        assert int(r["expected"]) == FORMULAS[p["kind"]](p["numbers"])
        assert [int(x) for x in re.findall(r"\d+", q)] == p["numbers"]


def steps(kind: str, n: list[int]) -> list[str]:
    """The single-operation equations a problem needs, written independently of the generator."""
    if kind in ("add", "sub", "mul"):
        op = {"add": "+", "sub": "-", "mul": "*"}[kind]
        return [f"{n[0]} {op} {n[1]} = {FORMULAS[kind](n)}"]
    first, second = ("+", "-") if kind == "add_sub" else ("*", "+")
    s = OPS[first](n[0], n[1])
    return [f"{n[0]} {first} {n[1]} = {s}", f"{s} {second} {n[2]} = {OPS[second](s, n[2])}"]


def test_equation_tables_cover_every_step(data):
    table_line = re.compile(r"(\d+ [-+*] \d+ = \d+\. ?)+")
    tables = [r["text"] for r in data["pretrain"] if table_line.fullmatch(r["text"])]
    assert tables
    known = {e for t in tables for e in t.rstrip(".").split(". ")}
    for p in data["world"]["problems"]:
        for eq in steps(p["kind"], p["numbers"]):
            assert eq in known, (p["id"], eq)
    for r in data["r1_1024"]:
        think = r["conversations"][1]["content"]
        for eq in re.findall(r"\d+ [-+*] \d+ = \d+", think):
            assert eq in known, eq


# ----------------------------------------------------------------------------------- long context
def _detail_distances(convs):
    """Rendered characters between the last early mention of each chat's detail and its end."""
    out = []
    for messages, value in convs:
        where = [i for i, m in enumerate(messages) if mentions(m["content"], value)]
        assert where and max(where) <= 5, (value, where)
        assert len(render(messages)) <= 2250
        assert not CJK.search(render(messages))
        out.append(len(render(messages[max(where) + 1 :])))
    return out


def test_long_context_detail_only_early(data):
    evals = [(r["messages"], r["expected"]) for r in data["eval_long"]]
    assert len({v for _, v in evals}) > 50  # detail values are random
    # eval: > 512 tokens after the detail at up to 3.1 chars/token (the course's 2048-token BPE
    # measures about 2.5 on these chats); the whole chat < 1024 tokens at 2.3 or more.
    assert min(_detail_distances(evals)) >= 1600


def test_long_training_chats_span_every_distance_with_open_values(data):
    trains = []
    for r in data["sft_1024"]:
        *messages, last = r["conversations"]
        value = next(v for v in _long_values(messages[-1]["content"], last["content"]))
        trains.append((messages, value))
    distances = sorted(_detail_distances(trains))
    # from right before the question to beyond the short context, spread over the whole range
    assert distances[0] < 400 and distances[-1] > 1700
    quarters = [sum(lo <= d < lo + 475 for d in distances) for lo in range(0, 1900, 475)]
    assert min(quarters) > len(distances) / 10, quarters
    from spongebob.world import chats as chats_mod

    closed = {v for k in ("box", "snail", "place", "password") for v in chats_mod.DETAIL_VALUES[k]}
    word_values = [v for _, v in trains if not re.search(r"\d", v)]
    made_up = [v for v in word_values if v not in closed]
    assert len(made_up) > len(word_values) / 4  # about half are made up: copy, don't memorise


def test_detail_value_counts_match_the_generator():
    import random

    from spongebob.world import chats

    rng = random.Random(0)
    for kind in W.LONG_DETAILS:
        n = W.detail_value_count(kind)
        seen = {chats._detail_value(kind, rng) for _ in range(max(2000, 5 * n))}
        assert len(seen) <= n, kind
        if n <= 400:  # small sets are drawn whole within 5n draws
            assert len(seen) == n, (kind, len(seen), n)


def test_reworded_arith_is_the_held_out_problems_in_unseen_words(data):
    world_text = " ".join(
        json.dumps(r, ensure_ascii=False)
        for name in ("pretrain", "sft_512", "sft_1024", "r1_1024")
        for r in data[name]
    )
    from spongebob.world.arithmetic import REWORDED_OBJECTS, REWORDED_PEOPLE

    for en, zh, *_ in REWORDED_PEOPLE + REWORDED_OBJECTS:
        assert not mentions(world_text, en) and zh not in world_text, (en, zh)
    assert len(data["eval_arith_reworded"]) == len(data["eval_arith"])
    r1_questions = set(user_turns(data["r1_1024"]))
    for old, new in zip(data["eval_arith"], data["eval_arith_reworded"]):
        assert (new["id"], new["expected"]) == (old["id"], old["expected"])
        q = new["messages"][-1]["content"]
        assert q not in r1_questions and q != old["messages"][-1]["content"]
        assert [int(x) for x in re.findall(r"\d+", q)] == new["numbers"]
        assert [int(x) for x in re.findall(r"\d+", old["messages"][-1]["content"])] == new[
            "numbers"
        ]


def _long_values(question: str, answer: str):
    """The detail in a final answer of sft_1024 (the answer templates end with it)."""
    for _kind, (_, _, questions, template) in W.LONG_DETAILS.items():
        if question in questions:
            head, tail = template.split("{v}")
            assert answer.startswith(head) and answer.endswith(tail), answer
            yield answer[len(head) : len(answer) - len(tail)]


def test_sample_dir_caches_and_repairs(tmp_path, monkeypatch):
    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path))
    folder = W.sample_dir(seed=2)
    assert folder == tmp_path / "data" / "world-seed2"
    pretrain = folder / "pretrain.jsonl"
    original = pretrain.read_bytes()
    stamp = pretrain.stat().st_mtime_ns
    assert W.sample_dir(seed=2) == folder and pretrain.stat().st_mtime_ns == stamp  # cached
    pretrain.write_text('{"text": "tampered"}\n', "utf-8")
    assert W.sample_dir(seed=2) == folder
    assert pretrain.read_bytes() == original  # regenerated after the hash mismatch
    (folder / "eval_long.jsonl").unlink()
    W.sample_dir(seed=2)
    assert (folder / "eval_long.jsonl").is_file()


def test_cli_data_sample(tmp_path, capsys):
    from spongebob.cli import main

    assert main(["data", "sample", "--out", str(tmp_path), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "pretrain:" in printed and (tmp_path / "r1_1024.jsonl").is_file()
    assert json.loads((tmp_path / "world.json").read_text("utf-8"))["seed"] == 3


# ----------------------------------------------------------------------------------- golden bytes
# sha256 of each file's bytes for seed 0, measured on the single-module generator before it was
# split into a package: the split (and any refactoring) must not change one byte. Deliberate
# changes (issue 15): sft_1024.jsonl's training chats put the detail at every distance from the
# question (not only beyond the short context) with half their word values made up, so that long
# SFT practises copying at every distance; eval_arith_reworded.jsonl is new (the held-out problems
# in wordings, people and items no training file uses); sft_512.jsonl's answers open with the
# attribute ("The home of Patrick is a rock.", "说到家，派大星的家是石头屋。"), one template per
# attribute and language, instead of two statements that mostly opened with the name: held-out
# facts after chapter 07's SFT rose from 46 % to 83 % (docs/benchmarks.md, "Answers that open with
# the attribute"). Every other file kept its bytes.
GOLDEN_SEED0 = {
    "world.json": "f8994d7292cc1cfeecc3f8a8f1fc85033bdda4a95d367051deb930032f5fc137",
    "pretrain.jsonl": "17b017c43dc181387d74db53654184c58fe5437d2102338196965700b6a47d4a",
    "sft_512.jsonl": "0a5ead34a342ac4583ae38f9a858d50f9658ef2e39120666128679725113583a",
    "sft_1024.jsonl": "26f2bcbecbe92534b89763b41ad4269dc34451da42f780ff3cf00004486ef6a9",
    "r1_1024.jsonl": "73a65110af929de9d82f351b32d528c41d9b0bab78661f4b93101b6bd92db553",
    "eval_facts.jsonl": "f04b87907da259259414b5308677e54aee0c41e80fd729b1a5887f99eac3d486",
    "eval_facts_train.jsonl": "103a3982f99df86067f28b8ce129d00221fabe68150469b777e66e17d542d2a7",
    "eval_single_facts.jsonl": "2fd5c023e38f4b777fe8e47074e9023a2c492242a93a4e059310238d8cbd57c8",
    "eval_arith.jsonl": "a99dee92068a484eea745c41f36663dc86f71414d49c6c1b178b8b6cf209ae6c",
    "eval_arith_reworded.jsonl": "5182302c58887c14864c9fba4e3a5e4a94f29d09537e63560d77ffca7e5f88e8",
    "eval_long.jsonl": "0e474235865b13144346bdfcd92716feccfafc6f2f03e9a9919930b2f47f2ce4",
    "eval_completion.jsonl": "e3b6bd74fc751661f4b8fda826c6cf8fe2473df69790488057c057474cb8ce4e",
    "eval_single_completion.jsonl": (
        "7510fc465ba9a020e3a8ed421e24a79e899fd624c0fc7acacdcfe606faf9e566"
    ),
}
GOLDEN_SEED1_ALL = "cc07707f63320e5909f713f02ded312dc260862d2957517f6da4c70860fd87c9"


def test_generated_bytes_equal_the_golden_hashes():
    got = {n: hashlib.sha256(S._serialise(n, c)).hexdigest() for n, c in W.generate(0).items()}
    assert list(got) == list(W.FILES)
    assert got == GOLDEN_SEED0
    everything = hashlib.sha256()
    for name, content in W.generate(1).items():
        everything.update(S._serialise(name, content))
    assert everything.hexdigest() == GOLDEN_SEED1_ALL


# The answers of sft_512.jsonl before they opened with the attribute: each attribute's first two
# statements (chapter 07's control group). Written here from the statements, not read from a
# table of the module.
NAME_FIRST = {
    "en": {a: W.content.STATEMENTS_EN[a][:2] for a in W.content.ATTRIBUTES},
    "zh": {a: W.content.STATEMENTS_ZH[a][:2] for a in W.content.ATTRIBUTES},
}
SFT_512_NAME_FIRST = "23c46acdc0477115a016564930ae2ec12113297ff6894acaa5107d47404d4ab1"


def test_sft_answers_open_with_the_attribute_and_the_old_answers_can_be_rebuilt(data):
    replies = [t["content"] for r in data["sft_512"] for t in r["conversations"]
               if t["role"] == "assistant"]  # fmt: skip
    residents = {r["id"]: r for r in data["world"]["residents"]}
    for f in data["world"]["facts"]:
        if f["split"] != "train":
            continue
        en_name, zh_name = residents[f["subject"]]["name"], residents[f["subject"]]["zh"]
        attr_en, attr_zh = (data["world"]["attributes"][f["attribute"]][k] for k in ("en", "zh"))
        assert f"The {attr_en} of {en_name} is " in "\n".join(replies), f["id"]
        assert f"说到{attr_zh[-2:]}，{zh_name}" in "\n".join(replies), f["id"]
    for reply in replies:  # no fact answer opens with a name
        assert not any(reply.startswith(r["name"] + " ") for r in residents.values()), reply
    # the control group's chats are the earlier file, byte for byte
    chats = W.sft_conversations(W.build_world(0), 0, answers=NAME_FIRST)
    data_ = S._serialise("sft_512.jsonl", [{"conversations": c} for c in chats])
    assert hashlib.sha256(data_).hexdigest() == SFT_512_NAME_FIRST
    with pytest.raises(ValueError, match="'fr' is not"):
        W.sft_conversations(W.build_world(0), 0, answers={"fr": NAME_FIRST["en"]})
    with pytest.raises(
        ValueError, match=r"answers\['zh'\]: no template for attribute\(s\) \['pet'\]"
    ):
        W.sft_conversations(W.build_world(0), 0, answers={"zh": {**NAME_FIRST["zh"], "pet": []}})


def test_written_files_are_the_serialised_bytes(sample):
    manifest = json.loads((sample["world"].parent / W.MANIFEST).read_text())
    assert manifest["files"] == GOLDEN_SEED0
    for name, path in sample.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN_SEED0[path.name], name


# ----------------------------------------------------------------------------------- one home
def test_chat_lengths_are_measured_with_render_chat():
    from spongebob.world import chats

    rng = __import__("random").Random(7)
    for _ in range(20):
        conv, _, _ = W.long_conversation(rng)
        # whole exchanges add exactly their own turns to the rendering of an empty chat
        assert chats._chat_chars(conv) == len(render(conv)) - len(render([]))
        turns = "".join(
            f"<s>user\n{u['content']}</s>\n<s>assistant\n{a['content']}</s>\n"
            for u, a in zip(conv[::2], conv[1::2])
        )  # the SEED.md layout, written out once here as an independent check
        assert chats._chat_chars(conv) == len(turns)
        assert W.LONG_MIN_CHARS_AFTER < chats._chat_chars(conv) <= W.LONG_MAX_CHARS


def test_reasoning_tags_are_the_tokenizers():
    assert list(E.R1_TAGS) == REASONING_TOKENS
    t, te, a, ae = REASONING_TOKENS
    assert E.parse_r1(W.r1_content("x", 1)) == ("x", "1")
    assert W.r1_content("x", 1) == f"{t}\nx\n{te}\n{a}\n1\n{ae}"


# ------------------------------------------------------------------------------ package, cache
def test_world_package_modules_are_small_and_hand_written():
    folder = Path(W.__file__).parent
    modules = sorted(p.name for p in folder.glob("*.py"))
    assert {"content.py", "facts.py", "arithmetic.py", "corpus.py", "chats.py", "sample.py"} <= set(
        modules
    )
    assert {"course.py", "__init__.py"} <= set(modules)
    assert "grading.py" not in modules  # the graders live in spongebob.evaluate (chapter 07)
    assert "records.py" not in modules  # record validation lives in spongebob.data (chapter 05)
    for name in modules:
        lines = (folder / name).read_text("utf-8").splitlines()
        assert lines[0] == "# Hand-written module (not generated from a notebook).", name
        assert lines[1].startswith('"""'), name
        assert len(lines) <= 620, (name, len(lines))


def test_fingerprint_covers_the_generator_only():
    names = [p.name for p in S._source_files()]
    assert [f"{m}.py" for m in W.GENERATOR_MODULES] == names[:-1] and names[-1] == "files.py"
    assert {"content.py", "facts.py", "arithmetic.py", "corpus.py", "chats.py", "sample.py"} <= set(
        names
    )
    assert not {"course.py", "__init__.py"} & set(names)
    assert all(p.is_file() for p in S._source_files())


def test_fingerprint_changes_with_a_generator_module_only(tmp_path, monkeypatch):
    copies = []
    for path in S._source_files():
        copy = tmp_path / path.name
        copy.write_bytes(path.read_bytes())
        copies.append(copy)
    real = S._generator_fingerprint()
    monkeypatch.setattr(S, "_source_files", lambda: list(copies))
    assert S._generator_fingerprint() == real  # by name and content, not by folder
    (tmp_path / "course.py").write_text("# an edited tokenizer cache\n", "utf-8")  # not listed
    assert S._generator_fingerprint() == real
    corpus = tmp_path / "corpus.py"
    corpus.write_bytes(corpus.read_bytes() + b"\n# an edit\n")
    assert S._generator_fingerprint() != real


def test_sample_dir_regenerates_when_the_generator_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path))
    folder = W.sample_dir(seed=4)
    stamp = (folder / "pretrain.jsonl").stat().st_mtime_ns
    W.sample_dir(seed=4)
    assert (folder / "pretrain.jsonl").stat().st_mtime_ns == stamp  # cached
    monkeypatch.setattr(S, "_generator_fingerprint", lambda: "another generator")
    W.sample_dir(seed=4)
    assert (folder / "pretrain.jsonl").stat().st_mtime_ns != stamp  # regenerated
    manifest = json.loads((folder / W.MANIFEST).read_text())
    assert manifest["generator_sha256"] == "another generator"


def test_course_tokenizer_is_the_cached_tokenizer_on_the_sample(tmp_path, monkeypatch):
    from spongebob.world import course

    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(course, "cached_tokenizer", lambda *a, **k: calls.append((a, k)) or "tok")
    assert W.course_tokenizer() == "tok"
    assert W.course_tokenizer(vocab_size=300, seed=5) == "tok"
    assert calls == [
        ((tmp_path / "data" / "world-seed0" / "pretrain.jsonl", 2048), {"name": "world0-bpe2048"}),
        ((tmp_path / "data" / "world-seed5" / "pretrain.jsonl", 300), {"name": "world5-bpe300"}),
    ]
