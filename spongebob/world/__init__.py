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
- **Answers that open with the attribute.** SFT's answers read "The home of Patrick is a rock." and
  "说到家，派大星的家是石头屋。": the words the question decides come first, then the name, then a
  pretraining statement. Answers that open with the name make a small model pick the resident at
  its reply's first token, where it rarely copies the asked one (chapter 07's control group).

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

Rendered characters are those of :func:`spongebob.tokenizer.render_chat`, the one home of the chat
format; the reasoning tags are the tokenizer's ``REASONING_TOKENS``.

Every JSONL file of the course (these and the real data) is read by
:func:`spongebob.files.iter_jsonl`, one line at a time: blank lines are skipped, and a line that is
not UTF-8 or not JSON raises ``ValueError("<file>:<line>: <problem>")``.
``spongebob.data.read_jsonl`` (chapter 05) adds the record-shape checks of the four formats;
``spongebob.tokenizer.iter_jsonl_texts`` builds on :func:`~spongebob.files.iter_jsonl` too. Files are written atomically by :mod:`spongebob.files`.

The package, one concern per module (all hand-written):

=====================  ====================================================================
``content``            sizes, closed value lists, residents, fact and chat templates
``facts``              the fact table (:func:`build_world`) and how a fact is stated
``arithmetic``         word problems, their reasoning, the held-out number tuples
``corpus``             the pretraining lines (:func:`pretrain_texts`)
``chats``              short SFT chats and long-context chats
``sample``             :func:`generate`, :func:`write_sample`, the cache :func:`sample_dir`
``course``             :func:`course_tokenizer`, the cached tokenizer trained on the sample
=====================  ====================================================================

The cache of :func:`sample_dir` is keyed by the code of the first six (and ``spongebob.files``):
editing the course tokenizer keeps the cached data. The graders that score a model's answers live
in :mod:`spongebob.evaluate` (chapter 07), with the evaluation harness.

Usage::

    from spongebob.data import read_jsonl
    from spongebob.evaluate import grade_file
    from spongebob.world import sample_dir
    d = sample_dir()                      # generated once into $SPONGEBOB_HOME/data/world-seed0
    for rec in read_jsonl(d / "pretrain.jsonl"): ...
    grade_file(d / "eval_arith.jsonl", outputs, grader="number")

or ``spongebob data sample --out DIR [--seed N]``.
"""

from spongebob.files import iter_jsonl
from spongebob.world.arithmetic import PROBLEM_KINDS, r1_content
from spongebob.world.chats import detail_value_count, long_conversation, sft_conversations
from spongebob.world.content import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    EVAL_ARITH_PER_KIND,
    GENERATOR_VERSION,
    LONG_DETAILS,
    LONG_MAX_CHARS,
    LONG_MIN_CHARS_AFTER,
    MAX_PRETRAIN_CHARS,
    N_EVAL_FACTS_TRAIN,
    N_GENERATED,
    N_LONG_EVAL,
    N_LONG_TRAIN,
    N_R1,
    N_SFT_MULTI,
    N_SINGLE,
    VALUES,
)
from spongebob.world.corpus import pretrain_texts
from spongebob.world.course import course_tokenizer
from spongebob.world.facts import build_world, completion_prompt, state_fact
from spongebob.world.sample import (
    FILES,
    GENERATOR_MODULES,
    MANIFEST,
    generate,
    load_world,
    sample_dir,
    write_sample,
)

__all__ = [
    "ATTRIBUTES",
    "ATTRIBUTE_NAMES",
    "EVAL_ARITH_PER_KIND",
    "FILES",
    "GENERATOR_MODULES",
    "GENERATOR_VERSION",
    "LONG_DETAILS",
    "LONG_MAX_CHARS",
    "LONG_MIN_CHARS_AFTER",
    "MANIFEST",
    "MAX_PRETRAIN_CHARS",
    "N_EVAL_FACTS_TRAIN",
    "N_GENERATED",
    "N_LONG_EVAL",
    "N_LONG_TRAIN",
    "N_R1",
    "N_SFT_MULTI",
    "N_SINGLE",
    "PROBLEM_KINDS",
    "VALUES",
    "build_world",
    "completion_prompt",
    "course_tokenizer",
    "generate",
    "iter_jsonl",
    "load_world",
    "detail_value_count",
    "long_conversation",
    "pretrain_texts",
    "r1_content",
    "sample_dir",
    "sft_conversations",
    "state_fact",
    "write_sample",
]
