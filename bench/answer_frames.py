"""How SFT's answers open decides what a model can answer about residents it was never asked
about (issue 15, point 4). Chapter 07's SFT recipe, from chapter 06's pretrained model, on the
world's SFT chats with four sets of answer templates (the questions, residents and everything
else the same; ``sft_conversations(..., answers=...)`` writes them):

* ``name-first``: the first two pretraining statements of each attribute, the world's answers
  until 2026-12-07 ("Patrick lives in a rock.", "Patrick's home is a rock."): most open with
  the name; English food, friend, hobby and colour have one answer that opens with the attribute;
* ``mixed``: the first statement and the attribute-first answer of today's world, both languages;
* ``zh-attribute-first``: ``mixed`` in English, today's answers in Chinese;
* ``attribute-first``: today's answers ("The home of Patrick is a rock.", "说到家，派大星的家是石头屋。");
* ``attribute-first-two``: today's answers and a second attribute-first one per attribute
  ("As for home, Patrick lives in a rock.", "关于家，派大星住在石头屋里。").

For each: held-out facts (English, Chinese, per attribute, the kinds of error of
``fact_error_kinds``), and a forced choice among the residents' names
(``likeliest_continuation``): which resident the model finds likeliest at its reply's first
token, and after the attribute's opening words ("The home of", "说到家，"); and ``facts_train``,
the questions about SFT's own residents in wordings no training file uses.

    .venv/bin/python bench/answer_frames.py     # about 3 minutes a variant on 2 cores

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/answer-frames``).
Needs chapter 06's run (``runs/pretrain-tiny``) in the artifact folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spongebob.checkpoint import load_model
from spongebob.data import ChatEncoder, read_jsonl
from spongebob.evaluate import evaluate_sets, fact_error_kinds, likeliest_continuation
from spongebob.files import write_jsonl
from spongebob.runtime import artifacts_dir
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.world import course_tokenizer, sample_dir, sft_conversations
from spongebob.world.content import (
    ANSWERS_EN,
    ANSWERS_ZH,
    ATTRIBUTES,
    STATEMENTS_EN,
    STATEMENTS_ZH,
)

NAME_FIRST = {"en": {a: STATEMENTS_EN[a][:2] for a in ATTRIBUTES},
              "zh": {a: STATEMENTS_ZH[a][:2] for a in ATTRIBUTES}}  # fmt: skip
MIXED = {"en": {a: [STATEMENTS_EN[a][0], *ANSWERS_EN[a]] for a in ATTRIBUTES},
         "zh": {a: [STATEMENTS_ZH[a][0], *ANSWERS_ZH[a]] for a in ATTRIBUTES}}  # fmt: skip
# a second attribute-first answer per attribute and language: another opening ("As for home,",
# "关于家，") before one of the attribute's pretraining statements that opens with the name
SECOND_EN = {"home": "As for home, {n} lives in {av}.", "job": "As for work, {n} works as {av}.",
             "food": "As for food, {n}'s favourite food is {v}.",
             "friend": "As for friends, {n}'s best friend is {v}.",
             "pet": "As for pets, {n}'s pet is {av}.", "hobby": "As for hobbies, {n}'s hobby is {v}.",
             "colour": "As for colours, {n}'s favourite colour is {v}."}  # fmt: skip
SECOND_ZH = {"home": "关于家，{n}住在{v}里。", "job": "关于工作，{n}是一名{v}。",
             "food": "关于食物，{n}最爱吃{v}。", "friend": "关于朋友，{n}最好的朋友是{v}。",
             "pet": "关于宠物，{n}养的宠物是{v}。", "hobby": "关于爱好，{n}空闲时最喜欢{v}。",
             "colour": "关于颜色，{n}最喜欢的颜色是{v}。"}  # fmt: skip
VARIANTS = {
    "name-first": NAME_FIRST,
    "mixed": MIXED,
    "zh-attribute-first": {"en": MIXED["en"], "zh": ANSWERS_ZH},
    "attribute-first": {"en": ANSWERS_EN, "zh": ANSWERS_ZH},
    "attribute-first-two": {
        "en": {a: [*ANSWERS_EN[a], SECOND_EN[a]] for a in ATTRIBUTES},
        "zh": {a: [*ANSWERS_ZH[a], SECOND_ZH[a]] for a in ATTRIBUTES},
    },
}


def opening(attribute: str, lang: str) -> str:
    """The words today's answers put before the name ("The home of", "说到家，")."""
    template = (ANSWERS_ZH if lang == "zh" else ANSWERS_EN)[attribute][0]
    return template[: template.index("{n}")].rstrip(" ")


def named(model, tok, folder: Path, world: dict) -> dict[str, float]:
    """Share of held-out questions whose asked resident is the likeliest name, per language, at
    the reply's first token and after the attribute's opening words."""
    residents = [r["id"] for r in world["residents"]]
    names = {lang: [r["name" if lang == "en" else "zh"] for r in world["residents"]]
             for lang in ("en", "zh")}  # fmt: skip
    space = {"en": " ", "zh": ""}
    # the candidates' token ids, once per language: at the reply's start, and after a word
    first = {lang: [tok.encode(n) for n in ns] for lang, ns in names.items()}
    after = {lang: [tok.encode(space[lang] + n) for n in ns] for lang, ns in names.items()}
    encoder, hits = ChatEncoder(tok), {}
    for r in read_jsonl(folder / "eval_facts.jsonl"):
        subject, attribute, lang = r["id"].split(".")
        prompt, _ = encoder.encode(r["messages"])
        want = residents.index(subject)
        words = list(prompt) + tok.encode(opening(attribute, lang))
        for where, p, cands in (("first", list(prompt), first[lang]),
                                ("after_opening", words, after[lang])):  # fmt: skip
            hits.setdefault(f"{where}.{lang}", []).append(
                likeliest_continuation(model, p, cands, tok.pad_id) == want
            )
    return {k: round(sum(v) / len(v), 3) for k, v in hits.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=artifacts_dir("bench", "answer-frames"))
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS), help="these variants only")
    ap.add_argument("--seed", type=int, default=None, help="SFT seed (default: the recipe's)")
    args = ap.parse_args()
    tok, folder = course_tokenizer(), sample_dir(0)
    world = json.loads((folder / "world.json").read_text(encoding="utf-8"))
    pretrained = artifacts_dir("runs", "pretrain-tiny") / "last.pt"
    if not pretrained.exists():
        raise SystemExit(f"{pretrained}: missing; run chapter 06 (or `spongebob pipeline`) first")
    overrides = {} if args.seed is None else {"seed": args.seed}
    for name in args.only or VARIANTS:
        work = args.work / (name if args.seed is None else f"{name}-seed{args.seed}")
        work.mkdir(parents=True, exist_ok=True)
        chats = work / "sft_512.jsonl"
        write_jsonl(chats, ({"conversations": c}
                            for c in sft_conversations(world, 0, answers=VARIANTS[name])))  # fmt: skip
        t0 = time.time()
        ckpt = sft_checkpoint(chats, tok, work, sft_config("tiny", **overrides), init=pretrained,
                              replay_source=folder / "pretrain.jsonl", **sft_options("tiny"),
                              progress=False)  # fmt: skip
        minutes = (time.time() - t0) / 60
        model = load_model(ckpt).eval()
        reports = evaluate_sets(model, tok, folder, ["facts", "facts_train"])
        facts = reports["facts"]
        kinds = fact_error_kinds(facts.records, world)
        by_attr = {}
        for r in facts.records:
            _, attribute, lang = r["id"].split(".")
            by_attr.setdefault(f"{lang}.{attribute}", []).append(r["correct"])
        print(json.dumps({
            "variant": name, "facts": round(facts.accuracy, 3),
            **{lang: round(v, 3) for lang, v in facts.by(2).items()},
            "by_attribute": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(by_attr.items())},
            "kinds": kinds, "named": named(model, tok, folder, world),
            "facts_train": round(reports["facts_train"].accuracy, 3),
            "sft_minutes": round(minutes, 1),
        }, ensure_ascii=False), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
