# Hand-written module (not generated from a notebook).
"""The chats: short SFT conversations (``sft_512.jsonl``) and long ones (``sft_1024.jsonl``).

Chats are lists of ``{"role", "content"}`` turns in the SEED.md format. Lengths of long chats are
measured on the rendering of :func:`spongebob.tokenizer.render_chat`, the one home of the chat
format (see "Long context" in the package docstring).
"""

from __future__ import annotations

import random
import re

from spongebob.tokenizer import render_chat
from spongebob.world.content import (
    ANSWERS_EN,
    ANSWERS_ZH,
    ATTRIBUTES,
    DETAIL_VALUES,
    FILLER,
    GREETINGS,
    IDENTITY_EN,
    IDENTITY_ZH,
    LONG_DETAILS,
    LONG_MAX_AFTER,
    LONG_MAX_CHARS,
    LONG_MIN_CHARS_AFTER,
    N_SFT_MULTI,
    QUESTIONS_EN,
    QUESTIONS_ZH,
    SMALL_TALK_EN,
    SMALL_TALK_ZH,
    SYLLABLES,
    SYSTEM_PROMPTS,
    _rng,
)
from spongebob.world.facts import _names, state_fact


def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _qa(
    fact: dict, names: dict, lang: str, rng: random.Random, questions=None, answers=None
) -> tuple[str, str]:
    questions = questions or (QUESTIONS_ZH if lang == "zh" else QUESTIONS_EN)
    name = names[fact["subject"]]
    q = rng.choice(questions[fact["attribute"]]).format(n=name)
    answers = (answers or {}).get(lang) or (ANSWERS_ZH if lang == "zh" else ANSWERS_EN)
    return q, state_fact(fact, name, rng.choice(answers[fact["attribute"]]), lang)


def _maybe_system(rng: random.Random, lang: str) -> list[dict]:
    if rng.random() < 0.1:
        return [_turn("system", SYSTEM_PROMPTS[1 if lang == "zh" else 0])]
    return []


def sft_conversations(
    world: dict, seed: int = 0, answers: dict[str, dict[str, list[str]]] | None = None
) -> list[list[dict]]:
    """Short chats: every phrasing of every train fact, multi-turn mixes, identity, small talk.

    ``answers`` (``{"en": {attribute: [template, ...]}, "zh": ...}``, either language optional)
    replaces the answer templates of :data:`ANSWERS_EN` / :data:`ANSWERS_ZH`: chapter 07's control
    group of answers that open with the resident's name. Templates take the keys of
    ``state_fact`` (``{n}``, ``{v}``, ``{av}``...)."""
    for lang, table in (answers or {}).items():
        if lang not in ("en", "zh"):
            raise ValueError(f"answers: language {lang!r} is not 'en' or 'zh'")
        missing = sorted(set(ATTRIBUTES) - set(table))
        if missing or not all(table[a] for a in ATTRIBUTES):
            raise ValueError(f"answers[{lang!r}]: no template for attribute(s) "
                             f"{missing or [a for a in ATTRIBUTES if not table[a]]}")  # fmt: skip
    rng = _rng(seed, "sft_512")
    train = [f for f in world["facts"] if f["split"] == "train"]
    convs: list[list[dict]] = []
    for lang, questions in (("en", QUESTIONS_EN), ("zh", QUESTIONS_ZH)):
        names = _names(world, lang)
        for f in train:  # single-turn: each question phrasing once
            for qt in questions[f["attribute"]]:
                q, a = _qa(f, names, lang, rng, {f["attribute"]: [qt]}, answers)
                convs.append(_maybe_system(rng, lang) + [_turn("user", q), _turn("assistant", a)])
    names_by_lang = {lang: _names(world, lang) for lang in ("en", "zh")}
    for _ in range(N_SFT_MULTI):  # multi-turn: 2-4 exchanges, facts mixed with chit-chat
        lang = "zh" if rng.random() < 0.3 else "en"
        conv = _maybe_system(rng, lang)
        for _ in range(rng.randint(2, 4)):
            x = rng.random()
            if x < 0.75:
                q, a = _qa(rng.choice(train), names_by_lang[lang], lang, rng, answers=answers)
            elif x < 0.85:
                q, a = rng.choice(IDENTITY_ZH if lang == "zh" else IDENTITY_EN)
            else:
                q, a = rng.choice(SMALL_TALK_ZH if lang == "zh" else SMALL_TALK_EN)
            conv += [_turn("user", q), _turn("assistant", a)]
        convs.append(conv)
    for lang, identity, talk in (
        ("en", IDENTITY_EN, SMALL_TALK_EN),
        ("zh", IDENTITY_ZH, SMALL_TALK_ZH),
    ):
        for _ in range(6):  # identity and small talk, single-turn, a few copies each
            for q, a in identity + talk:
                convs.append(_maybe_system(rng, lang) + [_turn("user", q), _turn("assistant", a)])
    rng.shuffle(convs)
    return convs


def _chat_chars(messages: list[dict]) -> int:
    """Characters that ``messages`` (whole user/assistant exchanges) add to a chat rendered by
    :func:`spongebob.tokenizer.render_chat`: the rendering less its system block."""
    return len(render_chat(messages, system_prompt="")) - len(render_chat([], system_prompt=""))


def _detail_value(kind: str, rng: random.Random) -> str:
    if kind == "locker":
        return str(rng.randint(1000, 9999))
    if kind == "shells":
        return str(rng.randint(11, 99))
    if kind == "birthday":
        return f"{rng.choice(DETAIL_VALUES['month'])} {rng.randint(1, 28)}"
    return rng.choice(DETAIL_VALUES[kind])


def detail_value_count(kind: str) -> int:
    """How many values :func:`_detail_value` can draw for a detail ``kind``: a model that knows the
    kind but not the value guesses right once in that many (the chance line of long recall)."""
    if kind == "locker":
        return 9999 - 1000 + 1
    if kind == "shells":
        return 99 - 11 + 1
    if kind == "birthday":
        return len(DETAIL_VALUES["month"]) * 28
    return len(DETAIL_VALUES[kind])


def _mentions(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text, re.IGNORECASE) is not None


def _made_up_value(kind: str, rng: random.Random) -> str:
    """A value from an open set (a made-up word or a number nobody can memorise), for training."""
    if kind in ("locker", "shells", "birthday"):
        return _detail_value(kind, rng)  # numbers: open enough already
    word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
    return word if kind == "password" else word.capitalize()


def long_conversation(
    rng: random.Random, min_chars_after: int = LONG_MIN_CHARS_AFTER, open_values: bool = False
) -> tuple[list[dict], str, str]:
    """(messages ending with the final answer, expected detail, detail kind).

    One or two details are stated in the first exchanges; filler exchanges follow, so that
    more than ``min_chars_after`` characters separate them from the last question (the default:
    beyond the short context; training chats draw it from 0 to the whole length, so that every
    distance is practised). ``open_values``: half the details are made-up words (see
    :func:`_made_up_value`), so that recalling them needs copying, not memorising a list.
    """
    while True:
        kinds = rng.sample(sorted(LONG_DETAILS), 2 if rng.random() < 0.3 else 1)
        values = [
            _made_up_value(k, rng) if open_values and rng.random() < 0.5 else _detail_value(k, rng)
            for k in kinds
        ]
        if len(values) == 2 and (
            _mentions(values[0], values[1]) or _mentions(values[1], values[0])
        ):
            continue
        conv = []
        if rng.random() < 0.5:
            conv += [_turn(r, t) for r, t in zip(("user", "assistant"), rng.choice(GREETINGS))]
        for k, v in zip(kinds, values):
            say, ack, _, _ = LONG_DETAILS[k]
            conv += [_turn("user", say.format(v=v)), _turn("assistant", ack.format(v=v))]
        early = len(conv)
        asked = rng.randrange(len(kinds))
        kind, value = kinds[asked], values[asked]
        fillers = rng.sample(FILLER, len(FILLER))
        while _chat_chars(conv[early:]) < min_chars_after:
            conv += [_turn(r, t) for r, t in zip(("user", "assistant"), fillers.pop())]
        _, _, questions, answer = LONG_DETAILS[kind]
        conv += [_turn("user", rng.choice(questions)), _turn("assistant", answer.format(v=value))]
        later = " ".join(m["content"] for m in conv[early:-1])
        if _chat_chars(conv) <= LONG_MAX_CHARS and not any(_mentions(later, v) for v in values):
            return conv, value, kind


def long_training_chats(rng: random.Random, n: int) -> list[list[dict]]:
    """``n`` long training chats (those of ``sft_1024.jsonl``): the detail anywhere from right
    before the question to the whole length away (every distance practised), half the values
    made up (copying, not memorising)."""
    return [long_conversation(rng, rng.randint(0, LONG_MAX_AFTER), True)[0] for _ in range(n)]
