# Hand-written module (not generated from a notebook).
"""Arithmetic word problems: kinds, number ranges, templates, and the held-out split.

Every kind is a formula over its numbers (:data:`PROBLEM_KINDS`); a problem's question, its
reasoning (one equation per line, then a conclusion) and its worked statement for pretraining
are rendered from the same numbers. :func:`_split_problem_keys` holds out, per seed, the number
tuples of ``eval_arith.jsonl``: they never occur in ``r1_1024.jsonl`` nor in pretraining.
:func:`r1_content` is the exact assistant layout of ``r1_1024.jsonl``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from spongebob.world.content import EVAL_ARITH_PER_KIND, _rng

PROBLEM_PEOPLE = [
    ("SpongeBob", "海绵宝宝"), ("Patrick", "派大星"), ("Squidward", "章鱼哥"), ("Mr. Krabs", "蟹老板"),
    ("Sandy", "珊迪"), ("Plankton", "痞老板"), ("Mrs. Puff", "泡芙阿姨"), ("Pearl", "珍珍"),
    ("Larry", "拉里"),
]  # fmt: skip
PROBLEM_OBJECTS = [  # (English plural, Chinese, Chinese measure word)
    ("jellyfish", "水母", "只"), ("shells", "贝壳", "个"), ("coins", "硬币", "枚"),
    ("spatulas", "锅铲", "把"), ("pebbles", "鹅卵石", "颗"), ("balloons", "气球", "个"),
    ("sand dollars", "沙钱", "枚"), ("marbles", "弹珠", "颗"), ("stickers", "贴纸", "张"),
    ("cookies", "饼干", "块"), ("buttons", "纽扣", "颗"),
]  # fmt: skip

# kind -> (ranges of each number, answer function). Kept small so that a tiny model can succeed.
PROBLEM_KINDS: dict[str, Callable[..., int]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "add_sub": lambda a, b, c: a + b - c,
    "mul_add": lambda a, b, c: a * b + c,
}


def _all_problem_keys() -> dict[str, list[tuple[int, ...]]]:
    """Every allowed number tuple of each kind, in a fixed order."""
    r = range
    return {
        "add": [(a, b) for a in r(2, 21) for b in r(2, 21)],
        "sub": [(a, b) for a in r(5, 31) for b in r(2, a - 1)],
        "mul": [(a, b) for a in r(2, 10) for b in r(2, 10)],
        "add_sub": [(a, b, c) for a in r(2, 16) for b in r(2, 16) for c in r(2, a + b - 1)],
        "mul_add": [(a, b, c) for a in r(2, 6) for b in r(2, 6) for c in r(2, 11)],
    }


QUESTION_TEMPLATES_EN = {
    "add": ["{A} has {a} {o}. {A} finds {b} more {o}. How many {o} does {A} have now?",
            "{A} has {a} {o} and {B} has {b} {o}. How many {o} do they have together?"],
    "sub": ["{A} has {a} {o} and gives {b} of them to {B}. How many {o} does {A} have left?",
            "There are {a} {o} in a basket. {A} takes {b} of them. How many {o} are still in "
            "the basket?"],
    "mul": ["{A} has {a} boxes with {b} {o} in each box. How many {o} does {A} have in all?",
            "{A} makes {a} rows of {o} with {b} {o} in each row. How many {o} are there?"],
    "add_sub": ["{A} has {a} {o}, gets {b} more from {B}, then gives {c} to {C}. How many {o} "
                "does {A} have now?",
                "{A} collects {a} {o} in the morning and {b} in the afternoon, then loses {c}. "
                "How many {o} does {A} have at the end?"],
    "mul_add": ["{A} buys {a} bags with {b} {o} in each bag and then finds {c} more {o}. How many "
                "{o} does {A} have?",
                "{A} has {a} boxes of {b} {o} and {B} brings {c} more {o}. How many {o} are "
                "there in total?"],
}  # fmt: skip
QUESTION_TEMPLATES_ZH = {
    "add": ["{A}有{a}{m}{o}，又找到了{b}{m}。{A}现在有多少{m}{o}？",
            "{A}有{a}{m}{o}，{B}有{b}{m}{o}。他们一共有多少{m}{o}？"],
    "sub": ["{A}有{a}{m}{o}，送给{B}{b}{m}。{A}还剩多少{m}{o}？",
            "篮子里有{a}{m}{o}，{A}拿走了{b}{m}。篮子里还剩多少{m}{o}？"],
    "mul": ["{A}有{a}个盒子，每个盒子里有{b}{m}{o}。{A}一共有多少{m}{o}？",
            "{A}把{o}摆成{a}排，每排{b}{m}。一共有多少{m}{o}？"],
    "add_sub": ["{A}有{a}{m}{o}，{B}又给了{A}{b}{m}，然后{A}送给{C}{c}{m}。{A}现在有多少{m}{o}？",
                "{A}上午收集了{a}{m}{o}，下午又收集了{b}{m}，后来弄丢了{c}{m}。{A}最后有多少{m}{o}？"],
    "mul_add": ["{A}买了{a}袋{o}，每袋{b}{m}，后来又找到了{c}{m}。{A}一共有多少{m}{o}？",
                "{A}有{a}盒{o}，每盒{b}{m}，{B}又带来了{c}{m}。一共有多少{m}{o}？"],
}  # fmt: skip
# Reasoning steps: one line per operation, each an equation "x op y = z", then a conclusion.
THINK_EN = {
    "add": ["We start with {a} {o} and add {b} more.", "{a} + {b} = {r}"],
    "sub": ["We start with {a} {o} and take away {b}.", "{a} - {b} = {r}"],
    "mul": ["There are {a} groups with {b} {o} in each group.", "{a} * {b} = {r}"],
    "add_sub": ["We start with {a} {o} and add {b} more.", "{a} + {b} = {s}",
                "Then {c} are taken away.", "{s} - {c} = {r}"],
    "mul_add": ["There are {a} groups with {b} {o} in each group.", "{a} * {b} = {s}",
                "Then {c} more are added.", "{s} + {c} = {r}"],
}  # fmt: skip
THINK_ZH = {
    "add": ["一开始有{a}{m}{o}，又多了{b}{m}。", "{a} + {b} = {r}"],
    "sub": ["一开始有{a}{m}{o}，拿走了{b}{m}。", "{a} - {b} = {r}"],
    "mul": ["一共有{a}组，每组{b}{m}{o}。", "{a} * {b} = {r}"],
    "add_sub": ["一开始有{a}{m}{o}，又多了{b}{m}。", "{a} + {b} = {s}", "然后少了{c}{m}。",
                "{s} - {c} = {r}"],
    "mul_add": ["一共有{a}组，每组{b}{m}{o}。", "{a} * {b} = {s}", "然后又多了{c}{m}。",
                "{s} + {c} = {r}"],
}  # fmt: skip
CONCLUSION_EN = "So the answer is {r}."
CONCLUSION_ZH = "所以答案是{r}。"
# Worked problems for pretraining: the statement with its result.
WORKED_EN = {
    "add": "{A} has {a} {o} and finds {b} more. Now {A} has {r} {o}, because {a} + {b} = {r}.",
    "sub": "{A} has {a} {o} and gives {b} to {B}. Now {A} has {r} {o} left, because {a} - {b} = {r}.",
    "mul": "{A} has {a} boxes with {b} {o} in each box, so {A} has {a} * {b} = {r} {o}.",
    "add_sub": "{A} has {a} {o}, gets {b} more and gives away {c}. {a} + {b} = {s} and "
    "{s} - {c} = {r}, so {A} has {r} {o}.",
    "mul_add": "{A} buys {a} bags with {b} {o} in each bag and finds {c} more. {a} * {b} = {s} "
    "and {s} + {c} = {r}, so {A} has {r} {o}.",
}
WORKED_ZH = {
    "add": "{A}有{a}{m}{o}，又找到了{b}{m}。因为{a} + {b} = {r}，所以{A}现在有{r}{m}{o}。",
    "sub": "{A}有{a}{m}{o}，送给{B}{b}{m}。因为{a} - {b} = {r}，所以{A}还剩{r}{m}{o}。",
    "mul": "{A}有{a}个盒子，每个盒子里有{b}{m}{o}，所以{A}一共有{a} * {b} = {r}{m}{o}。",
    "add_sub": "{A}有{a}{m}{o}，又得到{b}{m}，送出{c}{m}。{a} + {b} = {s}，{s} - {c} = {r}，"
    "所以{A}有{r}{m}{o}。",
    "mul_add": "{A}买了{a}袋{o}，每袋{b}{m}，又找到了{c}{m}。{a} * {b} = {s}，{s} + {c} = {r}，"
    "所以{A}一共有{r}{m}{o}。",
}


def _problem_text(kind: str, nums: tuple[int, ...], lang: str, rng: random.Random) -> dict:
    """One problem: question, reasoning lines and worked statement, all from the same numbers."""
    people = rng.sample(PROBLEM_PEOPLE, 3)
    o_en, o_zh, m = rng.choice(PROBLEM_OBJECTS)
    a, b, c = (*nums, 0)[:3]
    r = PROBLEM_KINDS[kind](*nums)
    s = a * b if kind == "mul_add" else a + b  # intermediate result of two-step kinds
    zh = lang == "zh"
    names = [p[1] if zh else p[0] for p in people]
    keys = dict(A=names[0], B=names[1], C=names[2], a=a, b=b, c=c, r=r, s=s, m=m,
                o=o_zh if zh else o_en)  # fmt: skip
    q = rng.choice((QUESTION_TEMPLATES_ZH if zh else QUESTION_TEMPLATES_EN)[kind]).format(**keys)
    think = [line.format(**keys) for line in (THINK_ZH if zh else THINK_EN)[kind]]
    think.append((CONCLUSION_ZH if zh else CONCLUSION_EN).format(**keys))
    worked = (WORKED_ZH if zh else WORKED_EN)[kind].format(**keys)
    return {"kind": kind, "numbers": list(nums), "answer": r, "lang": lang, "question": q,
            "think": "\n".join(think), "worked": worked}  # fmt: skip


def r1_content(think: str, answer: int | str) -> str:
    """The exact assistant layout of r1_1024.jsonl."""
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def _split_problem_keys(seed: int) -> tuple[dict[str, list], set[tuple]]:
    """(keys usable for training, held-out eval keys as (kind, *numbers))."""
    rng = _rng(seed, "problem-keys")
    train, held = {}, set()
    for kind, keys in _all_problem_keys().items():
        keys = list(keys)
        rng.shuffle(keys)
        n = EVAL_ARITH_PER_KIND[kind]
        held |= {(kind, *k) for k in keys[:n]}
        train[kind] = sorted(keys[n:])
    return train, held


def _sample_problems(keys: dict[str, list], n: int, rng: random.Random, zh_share=0.3) -> list:
    kinds = sorted(keys)
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        lang = "zh" if rng.random() < zh_share else "en"
        out.append(_problem_text(kind, tuple(rng.choice(keys[kind])), lang, rng))
    return out


def _equation_lines(rng: random.Random) -> list[str]:
    """Plain equations covering every step any problem needs (the model must learn its tables)."""
    eqs = [f"{x} + {y} = {x + y}" for x in range(0, 41) for y in range(0, 21) if x + y <= 50]
    eqs += [f"{x} - {y} = {x - y}" for x in range(1, 41) for y in range(0, x + 1) if y <= 30]
    eqs += [f"{x} * {y} = {x * y}" for x in range(1, 11) for y in range(1, 11)]
    lines = []
    for _ in range(2):  # every equation twice, in different company
        rng.shuffle(eqs)
        for i in range(0, len(eqs), 8):
            lines.append(". ".join(eqs[i : i + 8]) + ".")
    return lines


# ``eval_arith_reworded.jsonl``: the held-out number tuples of ``eval_arith.jsonl`` asked with
# wordings, people and items that occur in no training file (tests/test_world.py checks it), so
# that a model that only pattern-matched the training templates shows it. The numbers appear in the
# question in the order the reasoning uses them, as in the training templates.
REWORDED_PEOPLE = [
    ("Greta", "格蕾塔"), ("Rosa", "罗莎"), ("Oskar", "奥斯卡"), ("Mabel", "梅布尔"), ("Hugo", "雨果"),
    ("Nora", "诺拉"), ("Ivan", "伊万"), ("Lena", "莲娜"), ("Bruno", "布鲁诺"),
]  # fmt: skip
REWORDED_OBJECTS = [
    ("lanterns", "灯笼", "盏"), ("postcards", "明信片", "张"), ("pencils", "铅笔", "支"),
    ("candles", "蜡烛", "根"), ("whistles", "哨子", "个"), ("ribbons", "丝带", "条"),
    ("teacups", "茶杯", "只"), ("umbrellas", "雨伞", "把"),
]  # fmt: skip
REWORDED_TEMPLATES_EN = {
    "add": ["On Monday {A} picked up {a} {o} at the market, and on Tuesday another {b}. What is "
            "the total number of {o} {A} picked up?"],
    "sub": ["{A} started the week with {a} {o}. By Friday {A} had handed out {b}. What number of "
            "{o} remained?"],
    "mul": ["A shelf holds {a} trays, and every tray carries {b} {o}. Count all the {o} on the "
            "shelf."],
    "add_sub": ["{A} owned {a} {o}. A neighbour named {B} added {b} to the pile, and later {A} "
                "traded away {c} to {C}. How many {o} are left with {A}?"],
    "mul_add": ["{A} packed {a} crates holding {b} {o} apiece, plus {c} loose {o}. What is the "
                "grand total of {o}?"],
}  # fmt: skip
REWORDED_TEMPLATES_ZH = {
    "add": ["星期一{A}在集市上买了{a}{m}{o}，星期二又买了{b}{m}。{A}总共买了几{m}{o}？"],
    "sub": ["{A}这周开始时有{a}{m}{o}，到周五分出去了{b}{m}。还剩下几{m}{o}？"],
    "mul": ["架子上放着{a}个托盘，每个托盘上有{b}{m}{o}。架子上总共有几{m}{o}？"],
    "add_sub": ["{A}原来有{a}{m}{o}，邻居{B}又添了{b}{m}，后来{A}拿{c}{m}换给了{C}。{A}手里还有几{m}{o}？"],
    "mul_add": ["{A}装了{a}箱{o}，每箱{b}{m}，另外还有{c}{m}散装的。一共是几{m}{o}？"],
}  # fmt: skip


def _reworded_problem(kind: str, nums: tuple[int, ...], lang: str, rng: random.Random) -> dict:
    """A held-out problem in a wording, with people and items, that training never uses."""
    people = rng.sample(REWORDED_PEOPLE, 3)
    o_en, o_zh, m = rng.choice(REWORDED_OBJECTS)
    a, b, c = (*nums, 0)[:3]
    zh = lang == "zh"
    names = [p[1] if zh else p[0] for p in people]
    keys = dict(A=names[0], B=names[1], C=names[2], a=a, b=b, c=c, m=m, o=o_zh if zh else o_en)
    q = rng.choice((REWORDED_TEMPLATES_ZH if zh else REWORDED_TEMPLATES_EN)[kind]).format(**keys)
    return {"kind": kind, "numbers": list(nums), "answer": PROBLEM_KINDS[kind](*nums),
            "lang": lang, "question": q}  # fmt: skip
