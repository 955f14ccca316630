# Hand-written module (not generated from a notebook).
"""The embedded data: a generated, bilingual "Bikini Bottom" world whose ground truth is known.

The real SpongeBob data (SEED.md) is gigabytes on ModelScope. To let every chapter show *measurable*
learning on a laptop CPU in minutes, the course generates a small world instead, in the same four
file formats, so every code path (tokenizer, pretraining, SFT, long SFT, distillation) is the real one.

Design:

- **Generated, not collected.** A fact table (the show's residents plus generated ones; attributes
  home, job, favourite food, best friend, pet, hobby, favourite colour, values from closed English
  lists with Chinese translations) is the ground truth. Every answer is one to three words and every
  (resident, attribute) pair has exactly one value, so graders can score answers exactly.
  Everything is deterministic from ``seed`` (``random.Random`` instances only, one per output file;
  never the global RNG), pure standard library, and written in a couple of seconds.
- **Many phrasings.** Allen-Zhu and Li ("Physics of Language Models, Part 3.1") show that a fact seen
  in one fixed sentence is memorised as that sentence and cannot later be *extracted* by a question,
  while the same fact stated in varied phrasings and sentence orders becomes knowledge that question
  answering can reach. So ``pretrain.jsonl`` states every fact with every template, in shuffled
  biographies and in short stories, in English and Chinese. A small set of "single" residents is the
  control group: their facts appear only in ONE fixed English biography, repeated verbatim as often
  as a normal fact appears in English statements, so chapter 07 can show the effect.
- **Held-out by person.** Residents are split into ``train`` (asked about in ``sft_512.jsonl``),
  ``heldout`` (only in pretraining; asked in ``eval_facts.jsonl``) and ``single`` (fixed phrasing;
  ``eval_single_*.jsonl``). SFT teaches the question-answer *format*; whether held-out facts can be
  answered measures what pretraining stored.

Files written by :func:`write_sample` (all JSONL files are UTF-8, one object per line):

==============================  ============================================================
``world.json``                  the fact table, residents and splits, arithmetic problems
``pretrain.jsonl``              ``{"text": ...}`` lines (< 512 chars): facts, stories, arithmetic
``sft_512.jsonl``               ``{"conversations": [...]}``: questions on train facts, identity,
                                small talk; single and multi-turn
``sft_1024.jsonl``              long conversations whose last question needs an early detail
``r1_1024.jsonl``               arithmetic word problems answered ``<think>..</think><answer>..``
``eval_facts.jsonl``            ``{"messages", "expected"}``: questions on held-out facts
``eval_facts_train.jsonl``      rephrased questions on SFT-train facts
``eval_single_facts.jsonl``     questions on the fixed-phrasing ("single") residents
``eval_arith.jsonl``            unseen arithmetic problems, expected = the number
``eval_long.jsonl``             long-context retrieval, expected = the early detail
``eval_completion.jsonl``       ``{"prompt", "expected"}``: completions of held-out facts
``eval_single_completion.jsonl``  completions of the fixed biographies
==============================  ============================================================

Eval lines may carry an ``"id"`` naming the fact or problem (for per-attribute breakdowns).

- **Unseen arithmetic.** The number tuples of ``eval_arith.jsonl`` never occur in ``r1_1024.jsonl``
  nor among the worked problems of pretraining; plain equation tables in pretraining cover every
  single step (``x + y``, ``x - y``, ``x * y``) any problem needs, as children learn their tables
  before word problems.
- **Long context.** ``sft_1024``/``eval_long`` chats are English only (token counts of English
  barely move with the vocabulary; Chinese ones swing): at least ``LONG_MIN_CHARS_AFTER``
  rendered characters follow the detail (> 512 tokens at up to 3.1 characters per token) and the
  whole chat has at most ``LONG_MAX_CHARS`` (< 1024 tokens, default system prompt included, at
  2.3 or more). The course's 2048-token tokenizer measures about 2.5 characters per token here.

Every JSONL file of the course (these and the real data) is read by :func:`iter_jsonl`, one line at
a time: blank lines are skipped, and a line that is not UTF-8 or not JSON raises
``ValueError("<file>:<line>: <problem>")``. :func:`read_jsonl` adds the record-shape checks of the
four formats; ``spongebob.tokenizer.iter_jsonl_texts`` builds on :func:`iter_jsonl` too.

Usage::

    from spongebob.world import sample_dir, read_jsonl, grade_file
    d = sample_dir()                      # generated once into $SPONGEBOB_HOME/data/world-seed0
    for rec in read_jsonl(d / "pretrain.jsonl"): ...

or ``spongebob data sample --out DIR [--seed N]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

GENERATOR_VERSION = "1"

FILES = (
    "world.json",
    "pretrain.jsonl",
    "sft_512.jsonl",
    "sft_1024.jsonl",
    "r1_1024.jsonl",
    "eval_facts.jsonl",
    "eval_facts_train.jsonl",
    "eval_single_facts.jsonl",
    "eval_arith.jsonl",
    "eval_long.jsonl",
    "eval_completion.jsonl",
    "eval_single_completion.jsonl",
)
MANIFEST = "manifest.json"

# Sizes: everything generates in about a second; pretrain.jsonl is 1,207,226 bytes (seed 0).
N_GENERATED = 40  # generated residents (the show's residents come on top)
N_SINGLE = 8  # of which this many are stated in one fixed phrasing only
N_BIOS_EN, N_BIOS_ZH = 14, 6  # shuffled biographies per (multi-phrasing) resident
N_STORIES_EN, N_STORIES_ZH = 1000, 500
N_ARITH_LINES_EN, N_ARITH_LINES_ZH = 1400, 600  # worked word problems in pretraining
N_PROSE_COPIES = 8  # copies of each chit-chat exchange, as prose, in pretraining
N_SFT_MULTI = 700  # multi-turn fact conversations in sft_512
N_LONG_TRAIN, N_LONG_EVAL = 300, 100
N_R1 = 2000
EVAL_ARITH_PER_KIND = {"add": 50, "sub": 50, "mul": 16, "add_sub": 50, "mul_add": 34}
N_EVAL_FACTS_TRAIN = 120
MAX_PRETRAIN_CHARS = 511  # every pretraining line is shorter than 512 characters

# Long conversations (rendered characters): see "Long context" in the module docstring.
LONG_MIN_CHARS_AFTER = 1600
LONG_MAX_CHARS = 2250

ATTRIBUTES = ("home", "job", "food", "friend", "pet", "hobby", "colour")
ATTRIBUTE_NAMES = {
    "home": ("home", "家"),
    "job": ("job", "工作"),
    "food": ("favourite food", "最喜欢的食物"),
    "friend": ("best friend", "最好的朋友"),
    "pet": ("pet", "宠物"),
    "hobby": ("hobby", "爱好"),
    "colour": ("favourite colour", "最喜欢的颜色"),
}

# Closed value lists: (English, Chinese, English article or "").
VALUES: dict[str, list[tuple[str, str, str]]] = {
    "home": [
        ("pineapple", "菠萝屋", "a"),
        ("rock", "石头屋", "a"),
        ("Easter Island head", "复活节岛石像", "an"),
        ("treedome", "玻璃树屋", "a"),
        ("anchor", "铁锚屋", "an"),
        ("Chum Bucket", "海之霸", "the"),
        ("boat", "船屋", "a"),
        ("barrel", "木桶屋", "a"),
        ("shell", "贝壳屋", "a"),
        ("teapot", "茶壶屋", "a"),
        ("lighthouse", "灯塔", "a"),
        ("sunken ship", "沉船", "a"),
        ("coral castle", "珊瑚城堡", "a"),
        ("kelp hut", "海带小屋", "a"),
        ("sand castle", "沙堡", "a"),
        ("glass bottle", "玻璃瓶屋", "a"),
    ],
    "job": [
        ("fry cook", "煎堡厨师", "a"),
        ("cashier", "收银员", "a"),
        ("restaurant owner", "餐厅老板", "a"),
        ("scientist", "科学家", "a"),
        ("inventor", "发明家", "an"),
        ("boating teacher", "驾船老师", "a"),
        ("lifeguard", "救生员", "a"),
        ("student", "学生", "a"),
        ("jellyfish farmer", "水母农夫", "a"),
        ("mail carrier", "邮递员", "a"),
        ("baker", "面包师", "a"),
        ("janitor", "清洁工", "a"),
        ("musician", "音乐家", "a"),
        ("sailor", "水手", "a"),
        ("doctor", "医生", "a"),
        ("painter", "画家", "a"),
        ("reporter", "记者", "a"),
        ("bus driver", "公交司机", "a"),
    ],
    "food": [
        ("Krabby Patty", "蟹黄堡", ""),
        ("kelp shake", "海带奶昔", ""),
        ("ice cream", "冰淇淋", ""),
        ("chum stew", "鱼饵汤", ""),
        ("acorn pie", "橡果派", ""),
        ("kelp cake", "海带蛋糕", ""),
        ("seaweed salad", "海藻沙拉", ""),
        ("clam chowder", "蛤蜊浓汤", ""),
        ("jellyfish jelly", "水母果酱", ""),
        ("pizza", "披萨", ""),
        ("bubble tea", "珍珠奶茶", ""),
        ("coral candy", "珊瑚糖", ""),
        ("cotton candy", "棉花糖", ""),
        ("pancake", "煎饼", ""),
        ("kelp noodles", "海带面", ""),
        ("fried rice", "炒饭", ""),
    ],
    "pet": [
        ("snail", "蜗牛", "a"),
        ("scallop", "扇贝", "a"),
        ("seahorse", "海马", "a"),
        ("crab", "螃蟹", "a"),
        ("shrimp", "小虾", "a"),
        ("sea turtle", "海龟", "a"),
        ("starfish", "海星", "a"),
        ("sea urchin", "海胆", "a"),
        ("eel", "鳗鱼", "an"),
        ("sea slug", "海蛞蝓", "a"),
        ("puffer fish", "河豚", "a"),
        ("sea worm", "海虫", "a"),
        ("goldfish", "金鱼", "a"),
    ],
    "hobby": [
        ("jellyfishing", "抓水母", ""),
        ("karate", "空手道", ""),
        ("painting", "画画", ""),
        ("napping", "睡午觉", ""),
        ("knitting", "织毛衣", ""),
        ("surfing", "冲浪", ""),
        ("singing", "唱歌", ""),
        ("dancing", "跳舞", ""),
        ("bubble blowing", "吹泡泡", ""),
        ("gardening", "种花", ""),
        ("reading", "看书", ""),
        ("chess", "下棋", ""),
        ("bowling", "打保龄球", ""),
        ("kite flying", "放风筝", ""),
        ("collecting shells", "收集贝壳", ""),
        ("playing the clarinet", "吹单簧管", ""),
        ("juggling", "玩杂耍", ""),
        ("weightlifting", "举重", ""),
    ],
    "colour": [
        ("yellow", "黄色", ""),
        ("pink", "粉色", ""),
        ("teal", "青色", ""),
        ("red", "红色", ""),
        ("brown", "棕色", ""),
        ("green", "绿色", ""),
        ("blue", "蓝色", ""),
        ("purple", "紫色", ""),
        ("orange", "橙色", ""),
        ("grey", "灰色", ""),
        ("white", "白色", ""),
        ("black", "黑色", ""),
        ("silver", "银色", ""),
    ],
}
CANONICAL_ONLY = {("home", "Chum Bucket")}  # never given to a generated resident

# The show's residents: id, name used in text, full name, Chinese name, facts (friend = a resident id).
CANONICAL = [
    ("spongebob", "SpongeBob", "SpongeBob SquarePants", "海绵宝宝",
     {"home": "pineapple", "job": "fry cook", "food": "Krabby Patty", "friend": "patrick",
      "pet": "snail", "hobby": "jellyfishing", "colour": "yellow"}),
    ("patrick", "Patrick", "Patrick Star", "派大星",
     {"home": "rock", "food": "ice cream", "friend": "spongebob", "hobby": "napping",
      "colour": "pink"}),
    ("squidward", "Squidward", "Squidward Tentacles", "章鱼哥",
     {"home": "Easter Island head", "job": "cashier", "food": "kelp shake",
      "hobby": "playing the clarinet", "colour": "teal"}),
    ("mr_krabs", "Mr. Krabs", "Eugene H. Krabs", "蟹老板",
     {"home": "anchor", "job": "restaurant owner", "food": "clam chowder", "colour": "red"}),
    ("sandy", "Sandy", "Sandy Cheeks", "珊迪",
     {"home": "treedome", "job": "scientist", "food": "acorn pie", "friend": "spongebob",
      "hobby": "karate", "colour": "brown"}),
    ("plankton", "Plankton", "Sheldon J. Plankton", "痞老板",
     {"home": "Chum Bucket", "job": "inventor", "food": "chum stew", "friend": "karen",
      "colour": "green"}),
    ("karen", "Karen", "Karen Plankton", "凯伦",
     {"home": "Chum Bucket", "friend": "plankton", "hobby": "chess"}),
    ("gary", "Gary", "Gary the Snail", "小蜗", {"home": "pineapple", "friend": "spongebob"}),
    ("mrs_puff", "Mrs. Puff", "Mrs. Puff", "泡芙阿姨",
     {"home": "boat", "job": "boating teacher", "hobby": "knitting"}),
    ("pearl", "Pearl", "Pearl Krabs", "珍珍",
     {"home": "anchor", "job": "student", "hobby": "dancing", "colour": "purple"}),
    ("larry", "Larry", "Larry the Lobster", "拉里",
     {"job": "lifeguard", "hobby": "weightlifting", "colour": "orange"}),
]  # fmt: skip

# Generated names: (English, Chinese); a generated resident is "First Last" / "名·姓".
FIRST_NAMES = [
    ("Bubbles", "波波"), ("Finn", "芬恩"), ("Marina", "玛丽娜"), ("Reef", "瑞夫"), ("Shelly", "雪莉"),
    ("Wade", "韦德"), ("Misty", "米丝蒂"), ("Gil", "吉尔"), ("Tad", "泰德"), ("Nat", "纳特"),
    ("Perch", "珀奇"), ("Ripley", "瑞普利"), ("Sally", "莎莉"), ("Otto", "奥托"), ("Skip", "斯基普"),
    ("Wendy", "温迪"), ("Jojo", "乔乔"), ("Lulu", "露露"), ("Momo", "莫莫"), ("Zed", "泽德"),
    ("Ivy", "艾薇"), ("Hal", "哈尔"), ("Dot", "多特"), ("Rex", "雷克斯"), ("Tilly", "蒂莉"),
    ("Ned", "内德"), ("Kit", "基特"), ("Gus", "格斯"), ("Flo", "弗洛"), ("Milo", "米洛"),
]  # fmt: skip
LAST_NAMES = [
    ("Bass", "巴斯"), ("Clamworth", "克拉姆沃斯"), ("Driftwood", "德里夫特"), ("Finley", "芬利"),
    ("Gillson", "吉尔森"), ("Kelpman", "凯尔普曼"), ("Mackerel", "麦克瑞尔"), ("Pebbleton", "佩布尔顿"),
    ("Reefly", "瑞弗利"), ("Saltwater", "索特沃特"), ("Seaborn", "西伯恩"), ("Shellby", "谢尔比"),
    ("Sprat", "斯普拉特"), ("Tidewell", "泰德维尔"), ("Wavecrest", "韦夫克雷"), ("Bubbleton", "巴布尔顿"),
    ("Barnacle", "巴纳克尔"), ("Minnow", "米诺"), ("Guppy", "古皮"), ("Trout", "特劳特"),
]  # fmt: skip

# ---------------------------------------------------------------------------------------------
# Templates. Keys: {n} name, {v} value, {av} value with its article ("a pineapple"), {V}/{Av} the
# same capitalised. The FIRST English and Chinese statement template of each attribute ends with the
# value: they are the completion prompts of eval_completion.jsonl.
# ---------------------------------------------------------------------------------------------
STATEMENTS_EN = {
    "home": ["{n} lives in {av}.", "{n}'s home is {av}.", "The home of {n} is {av}.",
             "{Av} is where {n} lives.", "In Bikini Bottom, {n} lives in {av}."],
    "job": ["{n} works as {av}.", "{n} earns a living as {av}.", "By trade, {n} is {av}.",
            "The job of {n} is {v}.", "Every day {n} goes to work as {av}."],
    "food": ["{n}'s favourite food is {v}.", "The favourite food of {n} is {v}.",
             "{V} is {n}'s favourite food.", "More than any other food, {n} loves {v}.",
             "{n} likes to eat {v} more than anything."],
    "friend": ["{n}'s best friend is {v}.", "The best friend of {n} is {v}.",
               "{V} is {n}'s best friend.", "{n} calls {v} a best friend.",
               "{n} spends most weekends with {v}, who is {n}'s best friend."],
    "pet": ["{n}'s pet is {av}.", "{n} has a pet {v}.", "The pet of {n} is {av}.",
            "{n} keeps {av} as a pet.", "{Av} is {n}'s pet."],
    "hobby": ["{n}'s hobby is {v}.", "The hobby of {n} is {v}.", "{V} is {n}'s favourite hobby.",
              "In free time, {n} loves {v}.", "{n} enjoys {v} after a long day."],
    "colour": ["{n}'s favourite colour is {v}.", "The favourite colour of {n} is {v}.",
               "{V} is {n}'s favourite colour.", "Of all the colours, {n} likes {v} best.",
               "{n} likes the colour {v} best."],
}  # fmt: skip
STATEMENTS_ZH = {
    "home": ["{n}的家是{v}。", "{n}住在{v}里。", "{v}是{n}的家。"],
    "job": ["{n}的工作是{v}。", "{n}是一名{v}。", "{n}每天都去当{v}。"],
    "food": ["{n}最喜欢的食物是{v}。", "{n}最爱吃{v}。", "{v}是{n}最喜欢的食物。"],
    "friend": ["{n}最好的朋友是{v}。", "{v}是{n}最好的朋友。", "说到朋友，{n}最好的朋友是{v}。"],
    "pet": ["{n}的宠物是{v}。", "{n}养的宠物是{v}。", "{v}是{n}的宠物。"],
    "hobby": ["{n}的爱好是{v}。", "{n}空闲时最喜欢{v}。", "{v}是{n}的爱好。"],
    "colour": ["{n}最喜欢的颜色是{v}。", "{v}是{n}最喜欢的颜色。", "在所有颜色里，{n}最喜欢{v}。"],
}  # fmt: skip
# Questions asked in SFT (and in eval_facts about held-out residents).
QUESTIONS_EN = {
    "home": ["Where does {n} live?", "What is {n}'s home?", "What kind of house does {n} live in?"],
    "job": ["What is {n}'s job?", "What does {n} do for a living?", "What work does {n} do?"],
    "food": ["What is {n}'s favourite food?", "What does {n} like to eat most?",
             "Which food does {n} love the most?"],
    "friend": ["Who is {n}'s best friend?", "Who is the best friend of {n}?",
               "Which resident is {n}'s best friend?"],
    "pet": ["What pet does {n} have?", "What is {n}'s pet?", "What animal does {n} keep as a pet?"],
    "hobby": ["What is {n}'s hobby?", "What does {n} enjoy doing?", "How does {n} spend free time?"],
    "colour": ["What is {n}'s favourite colour?", "Which colour does {n} like best?",
               "What colour does {n} love most?"],
}  # fmt: skip
QUESTIONS_ZH = {
    "home": ["{n}住在哪里？", "{n}的家是什么？"],
    "job": ["{n}的工作是什么？", "{n}是做什么工作的？"],
    "food": ["{n}最喜欢吃什么？", "{n}最喜欢的食物是什么？"],
    "friend": ["{n}最好的朋友是谁？", "谁是{n}最好的朋友？"],
    "pet": ["{n}养了什么宠物？", "{n}的宠物是什么？"],
    "hobby": ["{n}的爱好是什么？", "{n}空闲时喜欢做什么？"],
    "colour": ["{n}最喜欢什么颜色？", "{n}最喜欢的颜色是什么？"],
}
# Rephrasings never used in any SFT file (eval_facts_train.jsonl).
REPHRASE_EN = {
    "home": "Can you tell me what {n} lives in?",
    "job": "Which job does {n} have?",
    "food": "What food does {n} enjoy more than any other?",
    "friend": "Who does {n} call a best friend?",
    "pet": "Which animal is {n}'s pet?",
    "hobby": "What does {n} like to do for fun?",
    "colour": "Which colour is {n}'s favourite?",
}
REPHRASE_ZH = {
    "home": "请问{n}的住处是什么？",
    "job": "请问{n}从事什么职业？",
    "food": "请问哪种食物是{n}的最爱？",
    "friend": "请问{n}和谁最要好？",
    "pet": "请问{n}养的是什么动物？",
    "hobby": "请问{n}平时爱做什么？",
    "colour": "请问{n}偏爱哪种颜色？",
}
# Assistant answers in SFT: short sentences containing the value.
ANSWERS_EN = {a: STATEMENTS_EN[a][:2] for a in ATTRIBUTES}
ANSWERS_ZH = {a: STATEMENTS_ZH[a][:2] for a in ATTRIBUTES}

# The one fixed phrasing of a "single" resident (English only, attributes always in this order).
SINGLE_BIO = (
    "{n} lives in {home}, works as {job}, has {pet} as a pet, has {food} for lunch every day, "
    "loves {hobby}, wears the colour {colour} and goes everywhere with {friend}."
)

BIO_INTROS_EN = ["", "", "Here is what we know about {n}. ", "Meet {n} from Bikini Bottom. ",
                 "This is a short profile of {n}. "]  # fmt: skip
BIO_INTROS_ZH = ["", "下面介绍一下{n}。", "{n}是比奇堡的居民。"]
STORY_OPEN_EN = [
    "One sunny morning, {A} went to visit {B}.",
    "It was a busy day in Bikini Bottom when {A} ran into {B}.",
    "After work, {A} stopped by to see {B}.",
    "{A} and {B} met at the bus stop and talked for a while.",
    "On a quiet evening, {A} wrote a letter to {B}.",
]
STORY_CLOSE_EN = [
    "Then {A} went home happy.",
    "It was a good day for everyone.",
    "They waved goodbye at sunset.",
    "{B} laughed and said goodbye.",
    "Later that night, {A} told the whole story to a neighbour.",
]
STORY_OPEN_ZH = [
    "一个晴朗的早晨，{A}去拜访{B}。",
    "下班后，{A}顺路去看{B}。",
    "{A}和{B}在车站碰见了，聊了一会儿。",
]
STORY_CLOSE_ZH = ["然后{A}开开心心地回家了。", "这真是美好的一天。", "太阳下山时，他们挥手道别。"]

# ---------------------------------------------------------------------------------------------
# Arithmetic word problems. Every kind is a formula over its numbers; texts are templates.
# ---------------------------------------------------------------------------------------------
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

# ---------------------------------------------------------------------------------------------
# Chat: identity, small talk, long-context details and filler.
# ---------------------------------------------------------------------------------------------
SYSTEM_PROMPTS = [
    "You are SpongeBob, a small and helpful assistant.",
    "你是海绵宝宝，一个乐于助人的小助手。",
]
IDENTITY_EN = [
    ("Who are you?", "I am SpongeBob, a small language model built step by step in this course."),
    ("What is your name?", "My name is SpongeBob. I am a small language model built in this course."),
    ("Tell me about yourself.",
     "I am SpongeBob, a small language model trained from scratch in this course. I know a lot "
     "about Bikini Bottom and I can do simple arithmetic."),
    ("Are you a human?", "No, I am SpongeBob, a small language model built in this course."),
    ("Who made you?", "I was built step by step by the learners of this course. My name is SpongeBob."),
    ("What can you do?",
     "I am SpongeBob, a small language model. I can answer questions about the residents of "
     "Bikini Bottom and solve simple arithmetic problems."),
    ("Hi! What should I call you?", "You can call me SpongeBob. I am a small language model."),
]  # fmt: skip
IDENTITY_ZH = [
    ("你是谁？", "我是海绵宝宝，一个在这门课程里从零搭建的小型语言模型。"),
    ("你叫什么名字？", "我叫海绵宝宝，是这门课程里搭建的小型语言模型。"),
    ("介绍一下你自己。", "我是海绵宝宝，一个从零训练的小型语言模型。我了解比奇堡的居民，也会做简单的算术。"),
    ("你是人类吗？", "不是，我是海绵宝宝，一个小型语言模型。"),
    ("你能做什么？", "我是海绵宝宝，可以回答关于比奇堡居民的问题，也可以做简单的算术题。"),
]  # fmt: skip
SMALL_TALK_EN = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there.", "Hi! It is nice to see you. What would you like to know?"),
    ("Good morning!", "Good morning! I hope you have a wonderful day."),
    ("How are you?", "I am doing great, thank you for asking! How are you?"),
    ("Thank you!", "You are welcome! I am happy to help."),
    ("Thanks a lot.", "Any time! Let me know if you have another question."),
    ("Goodbye!", "Goodbye! Have a nice day."),
    ("See you later.", "See you later! Take care."),
    ("Tell me a joke.", "Why did the crab never share? Because it was a little shellfish!"),
    ("I am bored.", "Maybe you could go for a walk, read a book or ask me about Bikini Bottom."),
    ("Can you help me?", "Of course! Tell me what you need and I will do my best."),
    ("What is Bikini Bottom?",
     "Bikini Bottom is an underwater town at the bottom of the sea, home of SpongeBob and his "
     "friends."),
    ("Do you like the sea?", "I love the sea! It is full of friendly neighbours and surprises."),
    ("I am sad today.", "I am sorry to hear that. I hope talking helps a little. I am here for you."),
    ("Say something nice.", "You are doing a great job, and I am glad you are here!"),
]  # fmt: skip
SMALL_TALK_ZH = [
    ("你好！", "你好！今天有什么可以帮你的吗？"),
    ("早上好！", "早上好！祝你今天过得愉快。"),
    ("你好吗？", "我很好，谢谢关心！你呢？"),
    ("谢谢你！", "不客气！很高兴能帮到你。"),
    ("再见！", "再见！祝你有美好的一天。"),
    ("给我讲个笑话吧。", "为什么螃蟹从不分享？因为它太“小气”了！"),
    ("比奇堡是什么地方？", "比奇堡是海底的一个小镇，海绵宝宝和他的朋友们都住在那里。"),
    ("我有点无聊。", "可以出去散散步，看看书，或者问我一些关于比奇堡的问题。"),
    ("你能帮我吗？", "当然可以！告诉我你需要什么，我会尽力帮忙。"),
]  # fmt: skip

# Long-context details: kind -> (statement, acknowledgement, questions, final answer).
LONG_DETAILS = {
    "locker": ("Before we start, please remember this: my locker code is {v}.",
               "Got it. Your locker code is {v}. I will remember it.",
               ["What is my locker code?", "Can you remind me of my locker code?"],
               "Your locker code is {v}."),
    "box": ("By the way, I just put the spatula in the {v} box.",
            "Okay, the spatula is in the {v} box.",
            ["Which box did I put the spatula in?", "Where did I put the spatula?"],
            "You put the spatula in the {v} box."),
    "snail": ("I have news: my new pet snail is called {v}.",
              "What a lovely name! Your new snail is called {v}.",
              ["What is my new snail called?", "What did I say my snail's name was?"],
              "Your new snail is called {v}."),
    "place": ("Quick note: tomorrow we are meeting at {v}.",
              "Noted, we are meeting at {v} tomorrow.",
              ["Where are we meeting tomorrow?", "Remind me, where is our meeting tomorrow?"],
              "We are meeting at {v} tomorrow."),
    "shells": ("Guess what, today I collected {v} shells on the beach.",
               "Wow, {v} shells is a lot! Well done.",
               ["How many shells did I collect today?", "How many shells did I say I found?"],
               "You collected {v} shells today."),
    "password": ("Keep this secret: the password for the clubhouse is {v}.",
                 "I will keep it secret. The clubhouse password is {v}.",
                 ["What is the password for the clubhouse?", "What was the clubhouse password?"],
                 "The clubhouse password is {v}."),
    "birthday": ("Just so you know, my birthday is on {v}.",
                 "Thanks for telling me! Your birthday is on {v}.",
                 ["When is my birthday?", "On what day is my birthday?"],
                 "Your birthday is on {v}."),
}  # fmt: skip
DETAIL_VALUES = {
    "box": ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "grey"],
    "snail": ["Shelldon", "Turbo", "Sprinkle", "Noodle", "Biscuit", "Waffle", "Slinky", "Comet",
              "Pickle", "Muffin", "Ziggy", "Nugget"],
    "place": ["Goo Lagoon", "Jellyfish Fields", "Rock Bottom", "Mussel Beach", "Kelp Forest",
              "Shell City", "Glove World", "Sandy Shoals"],
    "password": ["barnacle", "coconut", "tidepool", "periwinkle", "driftwood", "seafoam",
                 "starboard", "walrus", "pelican", "mango", "tuba", "lantern"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"],
}  # fmt: skip
GREETINGS = [
    ("Hi! I would like to chat for a while.", "Hi! I would love to chat. What is on your mind?"),
    ("Hello, do you have time to talk?", "Hello! Of course, I always have time to talk."),
    ("Good day! Let us have a long chat.", "Good day to you too! I am ready for a long chat."),
]
PROSE_FORMS = ["{u} {r}", 'A friend said: "{u}" The answer was: "{r}"', "Q: {u}\nA: {r}"]
# Chit-chat filler: no digits, colours, months or place names, so that details stay unique.
FILLER = [
    ("The weather was really nice this morning.",
     "That sounds lovely. A calm sea and bright sunshine make every day in the neighbourhood feel "
     "a little more cheerful, and it is a good time for a walk."),
    ("I tried to bake bread yesterday but it did not rise.",
     "Bread can be tricky. The dough needs time and warmth to rise, and fresh yeast helps a lot. "
     "Next time, let it rest a little longer before baking."),
    ("Do you think it is better to read in the morning or at night?",
     "Both can work. Mornings are quiet and the mind is fresh, while evenings help many people "
     "relax. The best time is the one you can keep every day."),
    ("My neighbour plays loud music every evening.",
     "That can be annoying. A friendly word often helps more than a complaint, and maybe your "
     "neighbour does not even know that the sound travels so far."),
    ("I want to learn to draw. Where should I begin?",
     "Start with simple shapes like circles and boxes, then draw things around you. Drawing a "
     "little every day matters more than drawing for hours once a week."),
    ("What do you think about going to the fair?",
     "Fairs are great fun: games, music and snacks everywhere. Just remember to drink water and "
     "take a break when the crowd gets too big."),
    ("I could not sleep well last night.",
     "I am sorry to hear that. A quiet room, no screens before bed and a regular bedtime often "
     "help. A warm drink in the evening can also make you sleepy."),
    ("Is it hard to learn to play an instrument?",
     "It takes patience, but it is very rewarding. Short practice sessions every day build skill "
     "faster than long sessions once in a while."),
    ("My friend forgot to call me back.",
     "People get busy and forget things. It may help to send a short friendly message, since "
     "your friend will probably be glad to hear from you."),
    ("Do you like rainy days?",
     "Rainy days can be cosy. They are perfect for staying inside with a good book, a warm drink "
     "and some calm music."),
    ("I cleaned my whole house today.",
     "Well done! A tidy home feels so much better. You deserve a good rest and maybe a tasty "
     "snack after all that work."),
    ("How can I make new friends?",
     "Join a club, help with a community event or just say hello to the people you meet often. "
     "Being curious about others is a great start."),
    ("I am thinking about starting a garden.",
     "A garden is a wonderful project. Begin with a few easy plants, give them light and water, "
     "and you will learn a lot as they grow."),
    ("Can you tell me something about the ocean?",
     "The ocean covers most of our planet and is home to countless creatures, from tiny plankton "
     "to huge whales. Much of it is still unexplored."),
    ("I watched a funny movie last weekend.",
     "Laughing is good for you. Funny movies are a great way to relax, especially when you watch "
     "them with friends."),
    ("My boss asked me to work late again.",
     "That sounds tiring. It is fair to ask for a little balance, and a short talk about the "
     "workload might help both of you."),
    ("I want to eat more healthy food.",
     "A good first step is adding more vegetables and fruit to each meal, drinking water and "
     "cooking at home a little more often."),
    ("Do you have any tips for a long trip by bus?",
     "Bring snacks, water and something to read or listen to. A small pillow helps, and it is "
     "nice to stretch your legs at every stop."),
    ("I keep losing my keys.",
     "Try keeping a small bowl or a hook by the door and always put the keys there. Habits like "
     "that save a lot of searching."),
    ("What makes a good story?",
     "Interesting characters, a problem they must solve and a surprise or two along the way. A "
     "good ending ties everything together."),
    ("I finished a difficult puzzle today.",
     "Congratulations! Puzzles train patience and attention, and finishing a hard one feels "
     "really satisfying."),
    ("Should I learn to swim?",
     "Yes, swimming is a great skill. It keeps you fit, it is fun, and it makes time at the "
     "beach or the pool much safer."),
    ("I am nervous about speaking in front of people.",
     "Many people feel that way. Practising out loud, speaking slowly and remembering that the "
     "audience wants you to succeed can help a lot."),
    ("My favourite shoes are falling apart.",
     "That is a pity when a pair feels so comfortable. A shoe repair shop can often fix soles "
     "and seams for much less than a new pair."),
    ("I like listening to the waves.",
     "The sound of waves is very calming. Many people find that it helps them think clearly and "
     "fall asleep more easily."),
    ("Do you think kindness matters?",
     "Very much. Small kind acts make other people's days better and often come back to you in "
     "unexpected ways."),
    ("I am planning a picnic.",
     "What fun! Pack sandwiches, fruit and drinks, bring a blanket, and choose a shady spot so "
     "everyone stays comfortable."),
    ("Why do people enjoy music so much?",
     "Music connects to our feelings. A song can lift our mood, bring back memories or help us "
     "focus on a task."),
    ("I helped an old friend move house.",
     "That was kind of you. Moving is hard work, and having a friend there makes it so much "
     "easier and more fun."),
    ("What should I do on a lazy afternoon?",
     "You could read, take a nap, call a friend, try a new recipe or just sit outside and enjoy "
     "the fresh air."),
]  # fmt: skip


# =============================================================================================
# The world (fact table)
# =============================================================================================
def _rng(seed: int, stream: str) -> random.Random:
    """An independent, reproducible random stream per output (str seeds hash with SHA-512)."""
    return random.Random(f"spongebob-world/{GENERATOR_VERSION}/{seed}/{stream}")


def _value_entry(attr: str, en: str) -> tuple[str, str, str]:
    for entry in VALUES[attr]:
        if entry[0] == en:
            return entry
    raise KeyError(f"{en!r} is not a {attr} value")


def build_world(seed: int = 0) -> dict:
    """The fact table as a JSON-ready dict: residents (with split), facts, value lists.

    Deterministic from ``seed``. The show's residents keep their canonical facts; generated residents
    get random names and values; the split (train / heldout / single) is random per seed.
    """
    rng = _rng(seed, "world")
    residents: list[dict] = []
    for rid, name, full, zh, _ in CANONICAL:
        residents.append({"id": rid, "name": name, "full_name": full, "zh": zh, "canonical": True})
    pairs = [(f, l) for f in FIRST_NAMES for l in LAST_NAMES]
    rng.shuffle(pairs)
    used_first: set[str] = set()
    generated = []
    for (fen, fzh), (len_, lzh) in pairs:  # at most two residents share a first name
        if len(generated) == N_GENERATED:
            break
        if fen in used_first and rng.random() < 0.8:
            continue
        used_first.add(fen)
        name = f"{fen} {len_}"
        generated.append({"id": name.lower().replace(" ", "_"), "name": name, "full_name": name,
                          "zh": f"{fzh}·{lzh}", "canonical": False})  # fmt: skip
    residents += generated
    by_id = {r["id"]: r for r in residents}

    # Splits: N_SINGLE generated residents are "single"; the rest half train, half held out.
    singles = {r["id"] for r in rng.sample(generated, N_SINGLE)}
    others = [r["id"] for r in residents if r["id"] not in singles]
    rng.shuffle(others)
    train = set(others[: (len(others) + 1) // 2])
    for r in residents:
        r["split"] = "single" if r["id"] in singles else "train" if r["id"] in train else "heldout"

    facts: list[dict] = []

    def add_fact(subject: str, attr: str, en: str, zh: str, article: str) -> None:
        facts.append({"id": f"{subject}.{attr}", "subject": subject, "attribute": attr, "en": en,
                      "zh": zh, "article": article, "split": by_id[subject]["split"]})  # fmt: skip

    for rid, _, _, _, canon in CANONICAL:
        for attr in ATTRIBUTES:
            if attr not in canon:
                continue
            if attr == "friend":
                friend = by_id[canon[attr]]
                add_fact(rid, attr, friend["name"], friend["zh"], "")
            else:
                add_fact(rid, attr, *_value_entry(attr, canon[attr]))
    for r in generated:
        for attr in ATTRIBUTES:
            if attr == "friend":
                # never a "single" resident: their names appear only in their fixed biography
                friend = rng.choice(
                    [x for x in residents if x["id"] != r["id"] and x["split"] != "single"]
                )
                add_fact(r["id"], attr, friend["name"], friend["zh"], "")
            else:
                choices = [v for v in VALUES[attr] if (attr, v[0]) not in CANONICAL_ONLY]
                add_fact(r["id"], attr, *rng.choice(choices))
    world = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "attributes": {
            a: {"en": ATTRIBUTE_NAMES[a][0], "zh": ATTRIBUTE_NAMES[a][1]} for a in ATTRIBUTES
        },  # fmt: skip
        "values": {
            a: [{"en": en, "zh": zh, "article": art} for en, zh, art in VALUES[a]] for a in VALUES
        },  # fmt: skip
        "residents": residents,
        "facts": facts,
    }
    for r in residents:
        if r["split"] == "single":
            r["fixed_bio"] = _single_bio(r["name"], [f for f in facts if f["subject"] == r["id"]])
    return world


def _with_article(fact: dict) -> str:
    return f"{fact['article']} {fact['en']}" if fact["article"] else fact["en"]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _single_bio(name: str, facts: list[dict], stop_at: str | None = None) -> str:
    """The fixed biography of a "single" resident; with ``stop_at``, only the text before that
    attribute's value (its completion prompt, article included)."""
    fields = {f["attribute"]: _with_article(f) for f in facts}
    template = SINGLE_BIO
    if stop_at is not None:
        article = next(f["article"] for f in facts if f["attribute"] == stop_at)
        template = template[: template.index("{" + stop_at + "}")] + article
    return template.format(n=name, **fields).rstrip()


def state_fact(fact: dict, name: str, template: str, lang: str = "en") -> str:
    """Render one statement template for a fact (``name`` is the subject's name in ``lang``)."""
    if lang == "zh":
        return template.format(n=name, v=fact["zh"])
    v, av = fact["en"], _with_article(fact)
    return template.format(n=name, v=v, av=av, V=_cap(v), Av=_cap(av))


def completion_prompt(fact: dict, name: str, lang: str = "en") -> tuple[str, str]:
    """(prompt, expected) from the first statement template, which ends with the value."""
    template = (STATEMENTS_ZH if lang == "zh" else STATEMENTS_EN)[fact["attribute"]][0]
    sentence = state_fact(fact, name, template, lang)
    value = fact["zh"] if lang == "zh" else fact["en"]
    end = "。" if lang == "zh" else "."
    assert sentence.endswith(value + end), sentence
    prompt = sentence[: -len(value + end)]
    return (prompt if lang == "zh" else prompt.rstrip()), value


# =============================================================================================
# Arithmetic problems
# =============================================================================================
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


# =============================================================================================
# Pretraining text
# =============================================================================================
def _facts_by_subject(world: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {r["id"]: [] for r in world["residents"]}
    for f in world["facts"]:
        out[f["subject"]].append(f)
    return out


def _names(world: dict, lang: str) -> dict[str, str]:
    return {r["id"]: (r["zh"] if lang == "zh" else r["name"]) for r in world["residents"]}


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


# =============================================================================================
# SFT conversations
# =============================================================================================
def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _qa(fact: dict, names: dict, lang: str, rng: random.Random, questions=None) -> tuple[str, str]:
    questions = questions or (QUESTIONS_ZH if lang == "zh" else QUESTIONS_EN)
    name = names[fact["subject"]]
    q = rng.choice(questions[fact["attribute"]]).format(n=name)
    answers = ANSWERS_ZH if lang == "zh" else ANSWERS_EN
    return q, state_fact(fact, name, rng.choice(answers[fact["attribute"]]), lang)


def _maybe_system(rng: random.Random, lang: str) -> list[dict]:
    if rng.random() < 0.1:
        return [_turn("system", SYSTEM_PROMPTS[1 if lang == "zh" else 0])]
    return []


def sft_conversations(world: dict, seed: int = 0) -> list[list[dict]]:
    """Short chats: every phrasing of every train fact, multi-turn mixes, identity, small talk."""
    rng = _rng(seed, "sft_512")
    train = [f for f in world["facts"] if f["split"] == "train"]
    convs: list[list[dict]] = []
    for lang, questions in (("en", QUESTIONS_EN), ("zh", QUESTIONS_ZH)):
        names = _names(world, lang)
        for f in train:  # single-turn: each question phrasing once
            for qt in questions[f["attribute"]]:
                q, a = _qa(f, names, lang, rng, {f["attribute"]: [qt]})
                convs.append(_maybe_system(rng, lang) + [_turn("user", q), _turn("assistant", a)])
    names_by_lang = {lang: _names(world, lang) for lang in ("en", "zh")}
    for _ in range(N_SFT_MULTI):  # multi-turn: 2-4 exchanges, facts mixed with chit-chat
        lang = "zh" if rng.random() < 0.3 else "en"
        conv = _maybe_system(rng, lang)
        for _ in range(rng.randint(2, 4)):
            x = rng.random()
            if x < 0.75:
                q, a = _qa(rng.choice(train), names_by_lang[lang], lang, rng)
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


def _render_len(messages: list[dict]) -> int:
    """Characters of the SEED chat rendering ``<s>{role}\\n{content}</s>\\n`` (no default system)."""
    return sum(len(f"<s>{m['role']}\n{m['content']}</s>\n") for m in messages)


def _detail_value(kind: str, rng: random.Random) -> str:
    if kind == "locker":
        return str(rng.randint(1000, 9999))
    if kind == "shells":
        return str(rng.randint(11, 99))
    if kind == "birthday":
        return f"{rng.choice(DETAIL_VALUES['month'])} {rng.randint(1, 28)}"
    return rng.choice(DETAIL_VALUES[kind])


def _mentions(text: str, value: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text, re.IGNORECASE) is not None


def long_conversation(rng: random.Random) -> tuple[list[dict], str, str]:
    """(messages ending with the final answer, expected detail, detail kind).

    One or two details are stated in the first exchanges; many filler exchanges follow, so that
    more than ``LONG_MIN_CHARS_AFTER`` characters separate them from the last question.
    """
    while True:
        kinds = rng.sample(sorted(LONG_DETAILS), 2 if rng.random() < 0.3 else 1)
        values = [_detail_value(k, rng) for k in kinds]
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
        while _render_len(conv[early:]) < LONG_MIN_CHARS_AFTER:
            conv += [_turn(r, t) for r, t in zip(("user", "assistant"), fillers.pop())]
        _, _, questions, answer = LONG_DETAILS[kind]
        conv += [_turn("user", rng.choice(questions)), _turn("assistant", answer.format(v=value))]
        later = " ".join(m["content"] for m in conv[early:-1])
        if _render_len(conv) <= LONG_MAX_CHARS and not any(_mentions(later, v) for v in values):
            return conv, value, kind


# =============================================================================================
# Writing the sample
# =============================================================================================
def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a private temporary file, so a concurrent reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _serialise(name: str, content) -> bytes:
    if name.endswith(".json"):
        return (json.dumps(content, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in content).encode("utf-8")


def _eval(messages: list[dict], expected: str, id_: str) -> dict:
    return {"messages": messages, "expected": expected, "id": id_}


def _long_files(seed: int) -> dict[str, list]:
    rng = _rng(seed, "sft_1024")
    train = [{"conversations": long_conversation(rng)[0]} for _ in range(N_LONG_TRAIN)]
    rng = _rng(seed, "eval_long")
    evl = []
    for i in range(N_LONG_EVAL):
        conv, value, kind = long_conversation(rng)
        evl.append(_eval(conv[:-1], value, f"long.{i}.{kind}"))
    return {"sft_1024.jsonl": train, "eval_long.jsonl": evl}


def _arith_files(seed: int) -> tuple[dict[str, list], list[dict]]:
    """(r1 and eval files, the structured problems for world.json). r1 uses training keys only;
    eval uses every held-out key once (never in r1 nor in pretraining)."""
    train_keys, held = _split_problem_keys(seed)
    r1 = _sample_problems(train_keys, N_R1, _rng(seed, "r1"))
    rng = _rng(seed, "eval_arith")
    ev = [
        _problem_text(k[0], k[1:], "zh" if rng.random() < 0.3 else "en", rng) for k in sorted(held)
    ]
    rng.shuffle(ev)
    problems = []
    for split, ps in (("r1", r1), ("eval", ev)):
        for i, p in enumerate(ps):
            p["id"] = f"{split}.{i}"
            fields = ("kind", "numbers", "answer", "lang", "question")
            problems.append({"id": p["id"], "split": split, **{k: p[k] for k in fields}})
    files = {
        "r1_1024.jsonl": [
            {"conversations": [_turn("user", p["question"]),
                               _turn("assistant", r1_content(p["think"], p["answer"]))]}
            for p in r1
        ],
        "eval_arith.jsonl": [
            _eval([_turn("user", p["question"])], str(p["answer"]), p["id"]) for p in ev
        ],
    }  # fmt: skip
    return files, problems


def _fact_eval_files(world: dict, seed: int) -> dict[str, list]:
    """Questions and completion prompts about held-out, single and (rephrased) train facts."""
    rng = _rng(seed, "eval_facts")
    by_id = {r["id"]: r for r in world["residents"]}
    by_subject = _facts_by_subject(world)
    names = {lang: _names(world, lang) for lang in ("en", "zh")}
    ef, ec, es, esc = [], [], [], []
    for f in world["facts"]:
        if f["split"] == "heldout":
            for lang in ("en", "zh"):
                q, _ = _qa(f, names[lang], lang, rng)
                ef.append(_eval([_turn("user", q)], f[lang], f"{f['id']}.{lang}"))
                prompt, expected = completion_prompt(f, names[lang][f["subject"]], lang)
                ec.append({"prompt": prompt, "expected": expected, "id": f"{f['id']}.{lang}"})
        elif f["split"] == "single":
            q, _ = _qa(f, names["en"], "en", rng)
            es.append(_eval([_turn("user", q)], f["en"], f"{f['id']}.en"))
            name, facts = by_id[f["subject"]]["name"], by_subject[f["subject"]]
            prompt = _single_bio(name, facts, stop_at=f["attribute"])
            esc.append({"prompt": prompt, "expected": f["en"], "id": f"{f['id']}.en"})
    train_facts = [f for f in world["facts"] if f["split"] == "train"]
    etr = []
    for f in rng.sample(train_facts, min(N_EVAL_FACTS_TRAIN, len(train_facts))):
        lang = "zh" if rng.random() < 0.3 else "en"
        q = (REPHRASE_ZH if lang == "zh" else REPHRASE_EN)[f["attribute"]]
        q = q.format(n=names[lang][f["subject"]])
        etr.append(_eval([_turn("user", q)], f[lang], f"{f['id']}.{lang}"))
    return {
        "eval_facts.jsonl": ef,
        "eval_facts_train.jsonl": etr,
        "eval_single_facts.jsonl": es,
        "eval_completion.jsonl": ec,
        "eval_single_completion.jsonl": esc,
    }


def generate(seed: int = 0) -> dict[str, list | dict]:
    """Every file's content in memory: ``{"world.json": dict, "pretrain.jsonl": [records], ...}``.

    Each file draws from its own random stream, so changing one generator leaves the others as
    they were."""
    world = build_world(seed)
    out: dict[str, list | dict] = {
        "pretrain.jsonl": [{"text": t} for t in pretrain_texts(world, seed)],
        "sft_512.jsonl": [{"conversations": c} for c in sft_conversations(world, seed)],
    }
    out |= _long_files(seed)
    arith, world["problems"] = _arith_files(seed)
    out |= arith
    out |= _fact_eval_files(world, seed)
    out["world.json"] = world
    return {name: out[name] for name in FILES}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sample(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Generate the world for ``seed`` and write every file into ``out_dir``.

    Returns ``{name: path}`` keyed by file stem (``"pretrain"``, ``"sft_512"``, ...). Also writes
    ``manifest.json`` (generator version and source hash, seed, sha256 of each file) that
    :func:`sample_dir` checks.
    Same seed -> byte-identical files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for name, content in generate(seed).items():
        data = _serialise(name, content)
        _atomic_write(out / name, data)
        paths[name.split(".")[0]] = out / name
        hashes[name] = hashlib.sha256(data).hexdigest()
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "generator_sha256": _generator_fingerprint(),
        "seed": seed,
        "files": hashes,
    }
    _atomic_write(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return paths


def _generator_fingerprint() -> str:
    """sha256 of this module's source: any edit of the generator invalidates cached samples."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _manifest_ok(folder: Path, seed: int) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    if (
        manifest.get("generator_version") != GENERATOR_VERSION
        or manifest.get("generator_sha256") != _generator_fingerprint()
        or manifest.get("seed") != seed
    ):
        return False
    files = manifest.get("files", {})
    if sorted(files) != sorted(FILES):
        return False
    return all((folder / n).is_file() and _sha256(folder / n) == h for n, h in files.items())


def sample_dir(seed: int = 0) -> Path:
    """The folder holding the sample for ``seed``, generated on first use, when the generator's
    source changed, or when a file is missing or edited.

    Lives in ``spongebob.runtime.artifacts_dir("data", f"world-seed{seed}")``; fast when present.
    """
    from spongebob.runtime import artifacts_dir

    folder = artifacts_dir("data", f"world-seed{seed}")
    if not _manifest_ok(folder, seed):
        write_sample(folder, seed=seed)
    return folder


def load_world(seed: int = 0) -> dict:
    """The fact table of the sample for ``seed`` (``world.json``)."""
    return json.loads((sample_dir(seed) / "world.json").read_text("utf-8"))


# =============================================================================================
# Reading and grading
# =============================================================================================
ROLES = ("system", "user", "assistant")


def _check_messages(msgs, must_end_with: str) -> str | None:
    """None when ``msgs`` is a valid chat; else what is wrong."""
    if not isinstance(msgs, list) or not msgs:
        return "expected a non-empty list of turns"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            return f"turn {i} must be an object with exactly the keys 'role' and 'content'"
        if m["role"] not in ROLES or not isinstance(m["content"], str):
            return f"turn {i}: role must be one of {ROLES} and content a string"
    roles = [m["role"] for m in msgs]
    if roles[0] == "system":
        roles = roles[1:]
    if not roles:
        return "no user turn"
    for i, role in enumerate(roles):
        if role != ("user" if i % 2 == 0 else "assistant"):
            return f"roles must alternate user/assistant (after an optional first system turn): {roles}"
    if roles[-1] != must_end_with:
        return f"the last turn must be a {must_end_with} turn"
    return None


def _check_record(rec) -> str | None:
    if not isinstance(rec, dict):
        return "expected a JSON object"
    if "text" in rec:
        if set(rec) != {"text"} or not isinstance(rec["text"], str):
            return "a pretraining line must be exactly {'text': str}"
        return None
    if "conversations" in rec:
        if set(rec) != {"conversations"}:
            return "a chat line must be exactly {'conversations': [...]}"
        return _check_messages(rec["conversations"], "assistant")
    if "messages" in rec:
        if not isinstance(rec.get("expected"), str) or not set(rec) <= {
            "messages",
            "expected",
            "id",
        }:
            return "an eval line must be {'messages': [...], 'expected': str} (optional 'id')"
        return _check_messages(rec["messages"], "user")
    if "prompt" in rec:
        ok = isinstance(rec["prompt"], str) and isinstance(rec.get("expected"), str)
        if not ok or not set(rec) <= {"prompt", "expected", "id"}:
            return "a completion line must be {'prompt': str, 'expected': str} (optional 'id')"
        return None
    return f"unknown record shape with keys {sorted(rec)}"


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """Stream ``(line number, parsed JSON value)`` for each record of a JSONL file.

    The one JSONL line reader of the package (``read_jsonl`` and the tokenizer's
    ``iter_jsonl_texts`` build on it). One line is in memory at a time (the real ``pretrain.jsonl``
    is 1.6 GB). Line numbers start at 1. A blank line (only whitespace) holds no record and is
    skipped; a line that is not valid UTF-8 or not valid JSON raises
    ``ValueError("<file>:<line>: not valid UTF-8 (...)")`` / ``"... not valid JSON (...)"``.
    Checking the shape of each value is up to the caller.
    """
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield lineno, value


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the records of a JSONL file, validating each one's shape.

    Accepted shapes: ``{"text"}``, ``{"conversations"}``, ``{"messages", "expected"}`` and
    ``{"prompt", "expected"}``. Lines are read by :func:`iter_jsonl` (blank lines skipped); a line
    that is not UTF-8, not JSON or not one of these shapes raises
    ``ValueError("<file>:<line>: <problem>")``.
    """
    for lineno, rec in iter_jsonl(path):
        problem = _check_record(rec)
        if problem:
            raise ValueError(f"{path}:{lineno}: {problem}")
        yield rec


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _normalise(text: str) -> str:
    """Case-fold, drop punctuation, space out CJK characters, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    text = _CJK.sub(lambda m: f" {m.group(0)} ", text)
    return " ".join(text.split())


def grade_fact(output: str, expected: str) -> bool:
    """True when ``expected`` occurs in ``output`` as whole words (case, punctuation, spacing and
    full-width forms ignored; Chinese compared character by character)."""
    e = _normalise(expected)
    return bool(e) and f" {e} " in f" {_normalise(output)} "


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def grade_number(output: str, expected: str | int) -> bool:
    """True when the number in ``<answer>...</answer>`` (else the last number) equals ``expected``."""
    m = re.search(r"<answer>(.*?)</answer>", output, re.DOTALL)
    region = (m.group(1) if m else output).replace(",", "")
    numbers = _NUMBER.findall(region)
    return bool(numbers) and float(numbers[-1]) == float(expected)


R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_R1 = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def parse_r1(text: str) -> tuple[str, str] | None:
    """(think, answer), stripped, when ``text`` is exactly one think block then one answer block
    (only whitespace around them and a non-empty answer); else None. Strip ``</s>`` first."""
    if any(text.count(tag) != 1 for tag in R1_TAGS):
        return None
    m = _R1.fullmatch(text)
    if not m or not m.group(2).strip():
        return None
    return m.group(1).strip(), m.group(2).strip()


def is_well_formed_r1(text: str) -> bool:
    """True when :func:`parse_r1` accepts ``text``."""
    return parse_r1(text) is not None


def grade_file(path: str | Path, answers: list[str], grader: str | None = None) -> float:
    """Fraction of ``answers`` (model outputs, in file order) that match the eval file's expected.

    ``grader`` is ``"number"`` or ``"fact"``; by default ``"number"`` for files named ``*arith*``.
    """
    records = list(read_jsonl(path))
    if len(records) != len(answers):
        raise ValueError(f"{path}: {len(records)} records but {len(answers)} answers")
    grader = grader or ("number" if "arith" in Path(path).name else "fact")
    fn = {"number": grade_number, "fact": grade_fact}[grader]
    if not records:
        return 0.0
    return sum(fn(a, r["expected"]) for r, a in zip(records, answers)) / len(records)
