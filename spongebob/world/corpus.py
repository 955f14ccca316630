# Hand-written module (not generated from a notebook).
"""The pretraining text (``pretrain.jsonl``): every fact in every phrasing, and more.

:func:`pretrain_texts` builds, per language, grouped statements of every fact in every
template, biographies in shuffled order, short stories mixing two residents; then the fixed
biographies of the "single" residents, worked arithmetic, equation tables and everyday prose;
shuffled, each line shorter than 512 characters.
"""

from __future__ import annotations

import random

from spongebob.world.arithmetic import _equation_lines, _sample_problems, _split_problem_keys
from spongebob.world.content import (
    BIO_INTROS_EN,
    BIO_INTROS_ZH,
    FILLER,
    GREETINGS,
    MAX_PRETRAIN_CHARS,
    N_ARITH_LINES_EN,
    N_ARITH_LINES_ZH,
    N_BIOS_EN,
    N_BIOS_ZH,
    N_PROSE_COPIES,
    N_STORIES_EN,
    N_STORIES_ZH,
    PROSE_FORMS,
    STATEMENTS_EN,
    STATEMENTS_ZH,
    STORY_CLOSE_EN,
    STORY_CLOSE_ZH,
    STORY_OPEN_EN,
    STORY_OPEN_ZH,
    _rng,
)
from spongebob.world.facts import _facts_by_subject, _names, state_fact


def _bio(facts: list[dict], name: str, lang: str, rng: random.Random) -> str:
    templates = STATEMENTS_ZH if lang == "zh" else STATEMENTS_EN
    order = list(facts)
    rng.shuffle(order)
    intro = rng.choice(BIO_INTROS_ZH if lang == "zh" else BIO_INTROS_EN).format(n=name)
    sep = "" if lang == "zh" else " "
    return intro + sep.join(state_fact(f, name, rng.choice(templates[f["attribute"]]), lang)
                            for f in order)  # fmt: skip


def _story(a: str, b: str, picked: list, names: dict, lang: str, rng: random.Random) -> str:
    templates = STATEMENTS_ZH if lang == "zh" else STATEMENTS_EN
    zh = lang == "zh"
    keys = {"A": names[a], "B": names[b]}
    parts = [rng.choice(STORY_OPEN_ZH if zh else STORY_OPEN_EN).format(**keys)]
    parts += [state_fact(f, names[f["subject"]], rng.choice(templates[f["attribute"]]), lang)
              for f in picked]  # fmt: skip
    parts.append(rng.choice(STORY_CLOSE_ZH if zh else STORY_CLOSE_EN).format(**keys))
    return ("" if zh else " ").join(parts)


def pretrain_texts(world: dict, seed: int = 0) -> list[str]:
    """All pretraining lines, shuffled deterministically (each shorter than 512 characters)."""
    rng = _rng(seed, "pretrain")
    by_subject = _facts_by_subject(world)
    multi = [r for r in world["residents"] if r["split"] != "single" and by_subject[r["id"]]]
    multi_facts = [f for r in multi for f in by_subject[r["id"]]]
    lines: list[str] = []
    mentions = 0  # English statements of multi-phrasing facts, to size the single group's repeats
    for lang, templates in (("en", STATEMENTS_EN), ("zh", STATEMENTS_ZH)):
        names = _names(world, lang)
        # 1. every phrasing of every fact, grouped 1-4 sentences per line
        sentences = [state_fact(f, names[f["subject"]], t, lang)
                     for f in multi_facts for t in templates[f["attribute"]]]  # fmt: skip
        rng.shuffle(sentences)
        i = 0
        while i < len(sentences):
            k = rng.randint(1, 4)
            lines.append(("" if lang == "zh" else " ").join(sentences[i : i + k]))
            i += k
        # 2. biographies with shuffled sentence order and random phrasings
        for r in multi:
            for _ in range(N_BIOS_ZH if lang == "zh" else N_BIOS_EN):
                lines.append(_bio(by_subject[r["id"]], names[r["id"]], lang, rng))
        # 3. short stories mixing the facts of two residents
        for _ in range(N_STORIES_ZH if lang == "zh" else N_STORIES_EN):
            a, b = rng.sample(multi, 2)
            fa, fb = by_subject[a["id"]], by_subject[b["id"]]
            picked = rng.sample(fa, min(len(fa), rng.randint(1, 3)))
            picked += rng.sample(fb, min(len(fb), rng.randint(1, 3)))
            rng.shuffle(picked)
            lines.append(_story(a["id"], b["id"], picked, names, lang, rng))
            mentions += len(picked) if lang == "en" else 0
        if lang == "en":
            mentions += len(sentences) + N_BIOS_EN * len(multi_facts)
    # 4. the fixed-phrasing residents: one English sentence, repeated as often as a normal fact is
    #    stated in English (every template once, every biography, its share of stories).
    repeats = round(mentions / len(multi_facts))
    for r in world["residents"]:
        if r["split"] == "single":
            lines += [r["fixed_bio"]] * repeats
    # 5. worked arithmetic (never a held-out eval problem) and plain equation tables
    train_keys, _ = _split_problem_keys(seed)
    for p in _sample_problems(train_keys, N_ARITH_LINES_EN + N_ARITH_LINES_ZH, rng):
        lines.append(p["worked"])
    lines += _equation_lines(rng)
    # 6. everyday prose (the chit-chat of the long conversations), so the model and the tokenizer
    #    know its words before long-context SFT
    for _ in range(N_PROSE_COPIES):
        for user, reply in FILLER + GREETINGS:
            lines.append(rng.choice(PROSE_FORMS).format(u=user, r=reply))
    rng.shuffle(lines)
    for line in lines:
        if len(line) > MAX_PRETRAIN_CHARS:
            raise AssertionError(f"pretraining line too long ({len(line)} chars): {line[:80]}...")
    return lines
