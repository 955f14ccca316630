# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · SFT: from a text completer to a chat assistant
#
# **Teach the pretrained model to answer questions in the chat format, measure what that does and
# does not teach, stretch its context to 1024 tokens, and chat with it.**
#
# Runs in about 12 minutes on a laptop CPU (the six fine-tuning runs take most of it; a second
# run finds the checkpoints and takes about 1).
# Prerequisites: [05 · Data](05_data.ipynb) (chat rendering, the assistant-only loss mask, the
# loaders) and [06 · Pretraining](06_pretrain.ipynb) (the training loop and the pretrained
# checkpoint, which this chapter finds or re-creates).
#
# What you will build:
#
# 1. a first SFT run in a few lines: chapter 06's loop on chat batches; then graders and an
#    evaluation harness to count what it gets right: answer a file of held-out questions in
#    batches, grade each answer, count the answers that end with `</s>` (`spongebob.evaluate`);
# 2. supervised fine-tuning (SFT) with the loss on the assistant replies only, and **replay**:
#    pretraining batches mixed into every step, without which the tiny model forgets its facts
#    (`spongebob.sft`);
# 3. the experiment that separates *format* (what SFT teaches) from *knowledge* (what pretraining
#    stored), including the "single phrasing" control group of *Physics of Language Models 3.1*,
#    and a control group that shows how the wording of SFT's answers decides what can be asked;
# 4. long-context SFT at twice the length, with retrieval of an early detail measured before and
#    after, and a loss concentrated on the final answer;
# 5. a multi-turn chat, in the notebook and as `spongebob chat`.
#
# ![SFT: the pretrained model is fine-tuned on chats with replay batches of pretraining text into the SFT model that chapter 08 distils, then on long chats at 1024 tokens; held-out questions are answered greedily and graded](../book/figures/sft_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 在预训练模型上做有监督微调（SFT）：损失只算在助手回复上，并在每一步混入预训练文本（回放），否则小模型会忘掉它学到的事实。本章用从未在 SFT 中问过的事实来区分“格式”（SFT 教会的）与“知识”（预训练存下的），用“单一表述”对照组重现《Physics of Language Models 3.1》的现象，用另一个对照组说明 SFT 回答的措辞决定知识能否被问出来（回答先说属性、再说名字时，模型能从问题里照抄名字；回答以名字开头时，它很少选对要问的人），用归纳头探针（重复两遍的随机词元序列）诊断模型不会从上下文中复制任意序列，并用只含复制练习的对照训练证明探针能测出复制；把上下文扩展到 1024 个词元后，如实报告模型没能学会长上下文检索（召回率不高于随机猜测线，附 95% 置信区间），最后与模型多轮对话。导出模块：`spongebob.sft`、`spongebob.evaluate`。
# :::

# %% [markdown]
# ## Setup
#
# The chat format and loaders come from chapter 05, the training loop and the pretrained
# checkpoint from chapter 06, the embedded world (its SFT files and held-out question sets) from
# `spongebob.world`.

# %%
#| default_exp sft

# %%
import json
import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from spongebob.attention import attention_weights
from spongebob.checkpoint import load_model, read_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import (
    ChatEncoder,
    ChatLoader,
    PackedLoader,
    PreparedData,
    prepare,
    read_jsonl,
)
from spongebob.generate import generate
from spongebob.model import IGNORE_INDEX, SpongeBob
from spongebob.pretrain import induction_probe, open_pretraining_data, pretrained_checkpoint
from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.train import TrainConfig, evaluate_loss, train, trained_tokens
from spongebob.viz import plot_token_kinds
from spongebob.world import course_tokenizer, detail_value_count, sample_dir
from spongebob.world.content import FILLER, LONG_DETAILS

seed_everything(1337)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__, "| threads", torch.get_num_threads())

# %% [markdown]
# The pretrained model of chapter 06: `pretrained_checkpoint` finds it in the artifact folder, or
# runs that chapter's 900-step pretraining again (about 4 minutes) when it is missing.

# %%
# NBVAL_IGNORE_OUTPUT
world = sample_dir(0)
tok = course_tokenizer()
pretrained = pretrained_checkpoint(
    world / "pretrain.jsonl",
    tok,
    artifacts_dir("runs", "pretrain-tiny"),
    TrainConfig.preset("tiny", eval_every=150),
    progress=False,
    probes={"induction": induction_probe},  # section 8 reads its values back from the run's log
)
base = load_model(pretrained).eval()
print(f"pretrained model: {sum(p.numel() for p in base.parameters()):,} parameters, "
      f"context {base.config.max_seq_len} tokens")  # fmt: skip

# %% [markdown]
# ## 1. What SFT trains on
#
# `sft_512.jsonl` holds chats about the *training* residents (plus identity and small talk). The
# chat loader of chapter 05 renders each in the original's format and trains only the assistant
# replies and their closing `</s>` (green); the system prompt, the user turns and the
# `<s>assistant\n` header are context (grey).

# %%
chat_dir = artifacts_dir("runs", "sft-tiny", "data")
prepare(world / "sft_512.jsonl", tok, chat_dir, max_seq_len=512)
chats = PreparedData(chat_dir)
ids, kinds = chats.doc(2)
plot_token_kinds([tok.decode([i]) for i in ids], kinds, title="one SFT chat: green = trained",
                 per_row=18)  # fmt: skip
plt.show()
x, y, _ = ChatLoader(chats, batch_size=16, seed=0).batch_of(range(16))
share = trained_tokens(y).item() / y.numel()
print(f"{len(chats)} chats, {chats.meta['tokens']:,} tokens; a batch of 16 is {tuple(x.shape)} "
      f"and trains {trained_tokens(y).item():.0f} of its positions ({share:.0%})")  # fmt: skip
assert 0 < share < 0.5


# %% [markdown]
# ### A first SFT run
#
# SFT is chapter 06's training loop with other batches: chat batches instead of packed text,
# starting from the pretrained weights, at a third of pretraining's learning rate. Nothing else
# changes. A hundred steps (under half a minute on a laptop CPU; found again when it already
# ran):

# %%
# NBVAL_IGNORE_OUTPUT
from spongebob.checkpoint import finished_run  # noqa: E402
from spongebob.files import sha256_file  # noqa: E402

first_cfg = TrainConfig(lr=1e-3, warmup_steps=20, max_steps=100, batch_size=16, seq_len=512,
                        log_every=10)  # fmt: skip
first_dir = artifacts_dir("runs", "sft-first")
origin = {"init": sha256_file(pretrained), "chats": chats.meta["source_sha256"]}
want = {"train_config": first_cfg.to_dict(), "step": first_cfg.max_steps, **origin}
if not finished_run(first_dir / "last.pt", want):
    model = load_model(pretrained)  # the pretrained weights
    loader = ChatLoader(chats, first_cfg.batch_size, seed=0)  # loss on the replies only
    train(model, loader, first_cfg, out_dir=first_dir, extra=origin, progress=False)
first = load_model(first_dir / "last.pt").eval()
first_log = [json.loads(line) for line in open(first_dir / "metrics.jsonl")]
first_loss = [(r["step"], r["loss"]) for r in first_log if "loss" in r]
print(f"chat loss: {first_loss[0][1]:.2f} at step {first_loss[0][0]}, "
      f"{first_loss[-1][1]:.2f} at step {first_loss[-1][0]}")  # fmt: skip
assert first_loss[-1][1] < 0.7 * first_loss[0][1]

# %% [markdown]
# Its loss, from the run's own log (`metrics.jsonl`, read again when the run was found finished),
# and its answers to four questions about residents that no SFT chat asks about, next to the
# pretrained model's continuation of the same prompt:

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 2.6), dpi=90)
ax.plot(*zip(*first_loss), "o-", ms=3)
ax.set(xlabel="optimizer step", ylabel="loss on the replies", title="A first SFT run")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
encoder = ChatEncoder(tok)
asked = [r for r in read_jsonl(world / "eval_facts.jsonl")][:8:2]  # four English questions
for r in asked:
    prompt, _ = encoder.encode(r["messages"])  # ends with "<s>assistant\n"
    before = tok.decode(generate(base, [prompt], 20, eos_token_id=tok.eos_id, seed=0)[0])
    after = tok.decode(generate(first, [prompt], 20, eos_token_id=tok.eos_id, seed=0)[0])
    print(f"Q: {r['messages'][-1]['content']}   (expected: {r['expected']})")
    print(f"   pretrained: {before!r}\n   100 SFT steps: {after!r}")

# %% [markdown]
# The pretrained model continues the prompt as text, in no particular language. After 100 steps
# the fine-tuned one answers with one sentence in the chat format, most of the time ending with
# `</s>`, and the sentences have the shape of the training replies: "The hobby of ... is ...".
# Whether the answers are *right* is another matter: read the printed pairs against their
# expected values, and note any reply that answers another question than the one asked. Four
# examples cannot say how good a model is; the rest of the chapter needs to count. So before more
# training, two tools: graders that decide whether an answer is right, and a harness that answers
# a whole file of questions and grades them.


# %% [markdown]
# ## 2. Graders: is this answer right?
#
# Every held-out question has a known answer of one to three words, so grading can be exact and
# rule-based instead of a judge model. Two graders cover the course (they moved here from the
# world package; a grader is always *named* by the caller, never guessed from a file name):
#
# * `grade_fact`: the expected value occurs in the answer **as whole words**, ignoring case,
#   punctuation and full-width forms; Chinese is compared character by character. "red" is not
#   found in "bored", "4821" not in "48210".
# * `grade_number`: the number inside `<answer>...</answer>` (else the last number) equals the
#   expected one (chapter 08's arithmetic).


# %%
#| export: evaluate
"""Graders and the evaluation harness: how well a chat model answers held-out questions.

Defined in 07_sft. A grader decides whether one output answers one question, exactly and by rule:
:func:`grade_fact` finds a short fact as whole words, :func:`grade_number` compares the number of
an ``<answer>`` block, :func:`parse_r1` checks the reasoning layout. The harness answers a file of
``{"messages", "expected"}`` lines in batches (greedy by default) and grades every answer with the
grader the caller names (never guessed from a file name)::

    report = evaluate_file(model, tokenizer, "eval_facts.jsonl", grader="fact")
    report.accuracy, report.stopped          # share correct, share that ended with </s>
"""

import math  # noqa: F811
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path  # noqa: F811
from typing import Any

import torch

from spongebob.data import ChatEncoder, read_jsonl  # noqa: F811 (imported in the setup too)
from spongebob.generate import generate  # noqa: F811
from spongebob.tokenizer import REASONING_TOKENS

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _normalise(text: str) -> str:
    """Case-fold, drop punctuation, space out CJK characters, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    text = _CJK.sub(lambda m: f" {m.group(0)} ", text)
    return " ".join(text.split())


def grade_fact(output: str, expected: str) -> bool:
    """True when ``expected`` occurs in ``output`` as whole words (case, punctuation, spacing and
    full-width forms ignored; Chinese compared character by character). Defined in 07_sft."""
    e = _normalise(expected)
    return bool(e) and f" {e} " in f" {_normalise(output)} "


# %%
#| export: evaluate
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
R1_TAGS = REASONING_TOKENS  # the reasoning tags are the tokenizer's special tokens (their one home)
_THINK, _THINK_END, _ANSWER, _ANSWER_END = (re.escape(tag) for tag in REASONING_TOKENS)
_ANSWER_BLOCK = re.compile(rf"{_ANSWER}(.*?){_ANSWER_END}", re.DOTALL)
_R1 = re.compile(rf"\s*{_THINK}(.*?){_THINK_END}\s*{_ANSWER}(.*?){_ANSWER_END}\s*", re.DOTALL)


def grade_number(output: str, expected: str | int) -> bool:
    """True when the number in ``<answer>...</answer>`` (else the last number) equals ``expected``.
    Defined in 07_sft."""
    m = _ANSWER_BLOCK.search(output)
    region = (m.group(1) if m else output).replace(",", "")
    numbers = _NUMBER.findall(region)
    return bool(numbers) and float(numbers[-1]) == float(expected)


def parse_r1(text: str) -> tuple[str, str] | None:
    """(think, answer), stripped, when ``text`` is exactly one think block then one answer block
    (only whitespace around them and a non-empty answer); else None. Strip ``</s>`` first."""
    if any(text.count(tag) != 1 for tag in REASONING_TOKENS):
        return None
    m = _R1.fullmatch(text)
    if not m or not m.group(2).strip():
        return None
    return m.group(1).strip(), m.group(2).strip()


def is_well_formed_r1(text: str) -> bool:
    """True when :func:`parse_r1` accepts ``text``."""
    return parse_r1(text) is not None


# %%
#| export: evaluate
GRADERS = {"fact": grade_fact, "number": grade_number}


def grader_named(name: str):
    """The grader called ``name`` (``"fact"`` or ``"number"``); anything else raises ``ValueError``
    listing the choices. Defined in 07_sft."""
    if name not in GRADERS:
        raise ValueError(f"grader must be one of {sorted(GRADERS)}, got {name!r}")
    return GRADERS[name]


def grade_file(path: str | os.PathLike, answers: list[str], grader: str) -> float:
    """Fraction of ``answers`` (model outputs, in file order) that match the eval file's expected.

    Defined in 07_sft. ``grader`` names the grader, always explicitly: ``"fact"`` (the fact,
    long-context and completion files) or ``"number"`` (``eval_arith.jsonl``). A different number
    of answers than records raises ``ValueError``.
    """
    fn = grader_named(grader)
    records = list(read_jsonl(path))
    if len(records) != len(answers):
        raise ValueError(f"{path}: {len(records)} records but {len(answers)} answers")
    if not records:
        return 0.0
    return sum(fn(a, r["expected"]) for r, a in zip(records, answers)) / len(records)


# %%
assert grade_fact("Patrick lives in a rock.", "rock") and not grade_fact(
    "Squidward is bored.", "red"
)
assert grade_fact("派大星住在石头屋。", "石头屋")
assert grade_fact("ＲＯＣＫ!", "rock")
assert grade_number("<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>", "7")
assert not grade_number("<answer>70</answer>", "7")
print(
    grade_fact("The pet of Pearl is a sea worm.", "sea worm"),
    parse_r1("<think>a</think><answer>5</answer>"),
)


# %% [markdown]
# ## 3. The evaluation harness
#
# To grade a model we let it answer: each question is rendered as a chat prompt ending with
# `<s>assistant\n`, the prompts are answered in batches (left-padded, grouped by length so that
# little padding is computed), greedily by default so that a score is reproducible, and each
# answer is graded. We also record whether the answer *stopped*: ended with `</s>` within the
# budget rather than running on. A chat model that does not stop is not usable, whatever its
# accuracy.


# %%
#| export: evaluate
def answer_chats(
    model: torch.nn.Module,
    tokenizer,
    conversations: Sequence[Sequence[dict]],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 32,
    system_prompt: str | None = None,
    **sampling: Any,
) -> list[tuple[str, bool]]:
    """Answer each conversation (ending with a user turn): ``[(text, stopped), ...]`` in order.

    Defined in 07_sft. Prompts are rendered in the chat format (``<s>assistant\\n`` last) and
    answered in batches of similar length, greedily unless ``sampling`` says otherwise
    (``temperature``, ``top_p``, ``repetition_penalty``, ``seed``...). ``stopped`` is True when the
    answer ended with ``</s>`` (which is not part of ``text``); reasoning tags stay in ``text``.
    """
    for i, conv in enumerate(conversations):
        if not conv or conv[-1].get("role") != "user":
            raise ValueError(f"conversation {i}: must end with a user turn to be answered")
    encoder = ChatEncoder(tokenizer, system_prompt)
    prompts = [ids for ids, _ in encoder.encode_many(conversations)]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # less left padding
    sampling.setdefault("temperature", 0.0)
    eos = tokenizer.eos_id
    out: list[tuple[str, bool]] = [("", False)] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        new = generate(model, [prompts[i] for i in batch], max_new_tokens,
                       eos_token_id=eos, pad_token_id=tokenizer.pad_id, **sampling)  # fmt: skip
        for i, ids in zip(batch, new):
            stopped = bool(ids) and ids[-1] == eos
            out[i] = (tokenizer.decode(ids[:-1] if stopped else ids), stopped)
    return out


# %%
#| export: evaluate
@dataclass
class EvalReport:
    """The graded answers of one eval set. Defined in 07_sft.

    ``records``: one dict per question (``id``, ``expected``, ``answer``, ``correct``,
    ``stopped``); ``accuracy`` is the share correct, ``stopped`` the share of answers that ended
    with ``</s>`` (not cut off by ``max_new_tokens``).
    """

    name: str
    grader: str
    records: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(r["correct"] for r in self.records) / max(1, len(self.records))

    @property
    def stopped(self) -> float:
        return sum(r["stopped"] for r in self.records) / max(1, len(self.records))

    def by(self, part: int) -> dict[str, float]:
        """Accuracy per value of the ``part``-th dot field of the ids (``patrick.home.en``)."""
        groups: dict[str, list[bool]] = {}
        for r in self.records:
            fields_ = str(r.get("id", "")).split(".")
            if len(fields_) > part:
                groups.setdefault(fields_[part], []).append(r["correct"])
        return {k: sum(v) / len(v) for k, v in sorted(groups.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grader": self.grader,
            "n": len(self.records),
            "accuracy": self.accuracy,
            "stopped": self.stopped,
            "records": self.records,
        }


# %% [markdown]
# `evaluate_file` answers every line of an eval file with the model and grades each answer with
# the grader the caller names, into an `EvalReport`.


# %%
#| export: evaluate
def evaluate_file(
    model: torch.nn.Module,
    tokenizer,
    path: str | os.PathLike,
    grader: str,
    *,
    name: str | None = None,
    limit: int | None = None,
    **kwargs: Any,
) -> EvalReport:
    """Answer and grade a ``{"messages", "expected"}`` JSONL file. Defined in 07_sft.

    ``grader`` is ``"fact"`` or ``"number"``, always given by the caller. ``limit`` keeps the
    first ``limit`` records. ``kwargs`` go to :func:`answer_chats` (``max_new_tokens``,
    ``batch_size``, sampling). A line without ``messages`` or ``expected`` raises
    ``ValueError("FILE:LINE: ...")``.
    """
    fn = grader_named(grader)
    records = []
    for n, rec in enumerate(read_jsonl(path), 1):
        if limit is not None and len(records) >= limit:
            break
        if not isinstance(rec, dict) or "messages" not in rec or "expected" not in rec:
            raise ValueError(f"{path}:{n}: an eval line needs 'messages' and 'expected'")
        records.append(rec)
    answers = answer_chats(model, tokenizer, [r["messages"] for r in records], **kwargs)
    report = EvalReport(name or Path(path).stem, grader)
    for i, (rec, (text, stopped)) in enumerate(zip(records, answers)):
        report.records.append({"id": rec.get("id", str(i)), "expected": str(rec["expected"]),
                               "answer": text, "correct": bool(fn(text, rec["expected"])),
                               "stopped": stopped})  # fmt: skip
    return report


# %%
#| export: evaluate
# The held-out sets of the embedded world: file, grader, answer budget in tokens.
EVAL_SETS: dict[str, tuple[str, str, int]] = {
    "facts": ("eval_facts.jsonl", "fact", 96),
    "facts_train": ("eval_facts_train.jsonl", "fact", 96),
    "single_facts": ("eval_single_facts.jsonl", "fact", 96),
    "long": ("eval_long.jsonl", "fact", 32),
    "arith": ("eval_arith.jsonl", "number", 256),
    "arith_reworded": ("eval_arith_reworded.jsonl", "number", 256),
}


def evaluate_sets(
    model: torch.nn.Module,
    tokenizer,
    folder: str | os.PathLike,
    names: Sequence[str] = tuple(EVAL_SETS),
    **kwargs: Any,
) -> dict[str, EvalReport]:
    """Run the named sets of :data:`EVAL_SETS` found in ``folder``, each with its own grader and
    answer budget. Defined in 07_sft."""
    unknown = [n for n in names if n not in EVAL_SETS]
    if unknown:
        raise ValueError(f"unknown eval set(s) {unknown}; choose from {sorted(EVAL_SETS)}")
    reports = {}
    for n in names:
        file, grader, budget = EVAL_SETS[n]
        kw = {"max_new_tokens": budget, **kwargs}
        reports[n] = evaluate_file(model, tokenizer, Path(folder) / file, grader, name=n, **kw)
    return reports


# %% [markdown]
# Before any SFT, the pretrained model has never seen a chat: it continues the prompt as if it
# were a pretraining line (and stops where such a line would end), but it does not answer.

# %%
# NBVAL_IGNORE_OUTPUT
before = evaluate_sets(base, tok, world, ["facts"], limit=64)["facts"]
print(f"pretrained model on 64 held-out questions: accuracy {before.accuracy:.0%}, "
      f"ends with </s> {before.stopped:.0%}")  # fmt: skip
print(repr(before.records[0]["answer"][:120]))
assert before.accuracy < 0.2  # measured 0 %


# %% [markdown]
# ## 4. Replay: keep showing the model its pretraining text
#
# SFT on `sft_512` alone teaches the format quickly (the loss falls to almost nothing within a
# couple of epochs), but a model this small pays for it: measured on this CPU, held-out questions
# were answered correctly **12 %** of the time after two minutes of SFT alone; the model
# answered a question about Patrick with SpongeBob's facts. The chats mention only the training
# residents, and the gradient that fits them also overwrites what pretraining stored about the
# others (*catastrophic forgetting*). The cure is old: keep training on the old data too.
# `ReplayMix` interleaves pretraining batches with the chat batches, deterministically (batch `i`
# is replay when `floor((i + 1) f)` grows), so that with `f = 0.5` and two micro-batches per step
# every optimizer step sees one of each, and a resumed run continues the same sequence.
#
# One subtlety: chapter 06's loop normalises the loss by the trained tokens of the whole step. A
# replay batch trains all of its 4,096 positions, a chat batch only its answers (about 450), so
# by token count replay dominates each step. `replay_weight` scales the replay targets' weights
# if you want to shift that balance (exercise 2 asks you to predict the shares).


# %%
#| export
"""Supervised fine-tuning: chat batches (loss on the replies only) mixed with pretraining replay.

Defined in 07_sft. SFT reuses the one training loop of chapter 06 (``spongebob.train.train``); what
it adds is the data: right-padded chat batches whose targets are the assistant replies
(``spongebob.data.ChatLoader``), a share of pretraining batches replayed among them
(:class:`ReplayMix`: without it the tiny model forgets what pretraining stored), optionally a loss
on the last reply only (:class:`LastReplyOnly`, for long-context retrieval), and the stage's
checkpoint that later chapters find or re-create (:func:`sft_checkpoint`)::

    ckpt = sft_checkpoint("sft_512.jsonl", tok, out_dir, sft_config("tiny"),
                          init=pretrained, replay="pretrain.jsonl")
"""

import math  # noqa: F811
from collections.abc import Iterable, Iterator  # noqa: F811
from pathlib import Path  # noqa: F811 (also imported by the evaluate cells above)
from typing import Any  # noqa: F811

import numpy as np  # noqa: F811
import torch  # noqa: F811

from spongebob.files import sha256_file
from spongebob.model import IGNORE_INDEX  # noqa: F811
from spongebob.train import TrainConfig, TrainResult


# %%
#| export
class ReplayMix:
    """Interleave chat batches with pretraining ("replay") batches. Defined in 07_sft.

    Batch ``i`` (from 0) is a replay batch when ``floor((i + 1) * fraction) > floor(i * fraction)``:
    with ``fraction = 0.5`` and ``grad_accum = 2`` each step holds one chat and one replay batch.
    Replay targets weigh ``replay_weight`` each (the loop normalises by the step's summed weights,
    and a replay batch has many more trained tokens than a chat batch). Resumable.
    """

    def __init__(self, chat: Iterable, replay: Iterable | None = None, fraction: float = 0.5,
                 replay_weight: float = 1.0) -> None:  # fmt: skip
        if not 0 <= fraction < 1:
            raise ValueError(f"replay fraction must be in [0, 1), got {fraction}")
        if fraction > 0 and replay is None:
            raise ValueError("a replay fraction > 0 needs a replay loader")
        if replay_weight <= 0:
            raise ValueError(f"replay_weight must be > 0, got {replay_weight}")
        self.chat, self.replay, self.fraction = chat, replay, fraction
        self.replay_weight, self.count = float(replay_weight), 0

    def is_replay(self, i: int) -> bool:
        return math.floor((i + 1) * self.fraction) > math.floor(i * self.fraction)

    def __iter__(self) -> Iterator[tuple]:
        chat = iter(self.chat)
        replay = iter(self.replay) if self.replay is not None else None
        while True:
            i, self.count = self.count, self.count + 1
            if replay is not None and self.is_replay(i):
                x, y, w = next(replay)
                if self.replay_weight != 1.0:
                    w = (torch.ones(y.shape) if w is None else w) * self.replay_weight
                yield x, y, w
            else:
                yield next(chat)

    @property
    def batches_per_epoch(self) -> int:
        """Batches per pass over the chat data (replay batches included)."""
        return math.ceil(self.chat.batches_per_epoch / (1 - self.fraction))

    def state_dict(self) -> dict:
        """The counter and both loaders' positions; ``world_size`` when both count globally (a
        resume on another number of ranks then continues at the same samples)."""
        state = {"count": self.count, "chat": self.chat.state_dict()}
        if self.replay is not None:
            state["replay"] = self.replay.state_dict()
        worlds = {s.get("world_size") for k, s in state.items() if k != "count"}
        if None not in worlds and len(worlds) == 1:
            state["world_size"] = worlds.pop()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.chat.load_state_dict(state["chat"])
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])


# %%
mix = ReplayMix(chat=[None], replay=[None], fraction=0.5)
print("f = 0.5: ", "".join("R" if mix.is_replay(i) else "c" for i in range(12)))
mix.fraction = 0.25
print("f = 0.25:", "".join("R" if mix.is_replay(i) else "c" for i in range(12)))
assert [ReplayMix([None], [None], 0.25).is_replay(i) for i in range(8)] == [0, 0, 0, 1] * 2


# %% [markdown]
# ## 5. The SFT stage
#
# `sft` is a thin layer over chapter 06's `train`: pre-tokenise the chats (cut at the stage's
# length, 512 tokens as in the original), open the replay text, build the mixed loader, load the
# model *with its own configuration* from the `init` checkpoint, and train. The checkpoint records
# the stage and its recipe, so `sft_checkpoint` can tell whether `out_dir/last.pt` is the run you
# asked for (same data, same options, same `init` file) and re-create it only when it is not:
# chapter 08 starts with two such calls and runs on its own.
#
# The tiny recipe (`sft_config("tiny")`): lr 1.5e-3 (half of pretraining's), 20 warmup steps,
# 600 steps of one chat batch (8 conversations) and one replay batch (4 windows of 512 tokens
# that start anywhere in the text: chapter 05's `PackedLoader(..., cuts="random")`, so that replay
# does not show the model the very windows, cut at the very places, it saw in pretraining). An
# earlier recipe trained twice the batch at lr 1e-3 for twice the time and answered as many
# held-out facts, within the spread of loader seeds (docs/benchmarks.md, "Half the batch"); half
# the batch at lr 1e-3 answers fewer, and at lr 2e-3 it costs chapter 08's distillation its
# arithmetic.


# %%
#| export
# The SFT recipes: TrainConfig fields ("train") and the data options of `sft`. The short stage
# trains at the original's 512 tokens, the long one at 1024 (SEED.md); the tiny replay batch holds
# half the tokens of a pretraining batch of chapter 06 (4 x 512 against 16 x 256). The tiny ones
# are measured in 07_sft.
SFT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(train=dict(lr=1.5e-3, warmup_steps=20, max_steps=600, batch_size=8, seq_len=512,
                            grad_accum=2, log_every=20, eval_every=100),
                 options=dict(replay=0.5, replay_batch_size=4, random_windows=True,
                              length_window=100)),
    "tiny-long": dict(train=dict(lr=1e-3, warmup_steps=10, max_steps=100, batch_size=4,
                                 seq_len=1024, grad_accum=2, log_every=20),
                      options=dict(replay=0.5, replay_batch_size=4, last_reply_only=True,
                                   random_windows=True, length_window=100)),
    "seed": dict(train=dict(lr=5e-4, warmup_steps=100, max_steps=None, batch_size=32, seq_len=512,
                            grad_accum=8, log_every=20, save_every=500, compile=True),
                 options=dict(replay=0.0, length_window=100, pad_multiple=64)),
    "seed-long": dict(train=dict(lr=5e-4, warmup_steps=100, max_steps=None, batch_size=16,
                                 seq_len=1024, grad_accum=16, log_every=20, save_every=500,
                                 compile=True),
                      options=dict(replay=0.0, length_window=100, pad_multiple=64)),
}  # fmt: skip


def sft_config(preset: str, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of an SFT preset (``tiny``, ``tiny-long``, ``seed``, ``seed-long``)
    with ``overrides``. Defined in 07_sft."""
    if preset not in SFT_PRESETS:
        raise ValueError(f"unknown SFT preset {preset!r}; choose one of {sorted(SFT_PRESETS)}")
    return TrainConfig(**{**SFT_PRESETS[preset]["train"], **overrides})


def sft_options(preset: str, **overrides: Any) -> dict[str, Any]:
    """The data options of an SFT preset (``replay``, ``replay_batch_size``, ...), for `sft` and
    `sft_checkpoint`. Defined in 07_sft."""
    if preset not in SFT_PRESETS:
        raise ValueError(f"unknown SFT preset {preset!r}; choose one of {sorted(SFT_PRESETS)}")
    return {**SFT_PRESETS[preset]["options"], **overrides}


# %%
#| export
def sft_loader(data, cfg: TrainConfig, replay_data=None, *, replay: float = 0.5,
               replay_batch_size: int | None = None, replay_weight: float = 1.0,
               last_reply_only: bool = False, random_windows: bool = False,
               tag_weight: float = 1.0, length_window: int = 0, pad_multiple: int = 1,
               rank: int = 0, world_size: int = 1) -> ReplayMix:  # fmt: skip
    """The batches of an SFT run. Defined in 07_sft.

    ``data``: a ``PreparedData`` of chats, ``replay_data`` one of pretraining text (or None);
    chat batches of ``cfg.batch_size`` conversations, replay batches of ``replay_batch_size``
    (default ``cfg.batch_size``) windows of ``cfg.seq_len`` tokens (packed like pretraining, or
    starting anywhere with ``random_windows``), mixed by :class:`ReplayMix`. ``length_window``
    > 0 groups chats of similar length into batches (chapter 05's ``ChatLoader``: sorted within
    windows of that many batches, the batches shuffled), so that little of a batch is padding;
    ``pad_multiple`` rounds a batch's length up (fewer shapes for ``torch.compile``).
    """
    from spongebob.data import ChatLoader, PackedLoader

    shard = dict(rank=rank, world_size=world_size)
    chat = ChatLoader(data, cfg.batch_size, seed=cfg.seed, tag_weight=tag_weight,
                      length_window=length_window, pad_multiple=pad_multiple, **shard)  # fmt: skip
    chat = LastReplyOnly(chat) if last_reply_only else chat
    rep = None
    if replay > 0:
        cuts = "random" if random_windows else "shifted"  # windows start anywhere, or packed
        rep = PackedLoader(replay_data, cfg.seq_len, replay_batch_size or cfg.batch_size,
                           seed=cfg.seed + 1, cuts=cuts, **shard)  # fmt: skip
    return ReplayMix(chat, rep, replay, replay_weight)


# %%
#| export
_OPTION_DEFAULTS = dict(replay=0.5, replay_batch_size=None, replay_weight=1.0,
                        last_reply_only=False, random_windows=False, tag_weight=1.0,
                        length_window=0, pad_multiple=1)  # fmt: skip


def open_chat_data(source: str | Path, tokenizer, work_dir: str | Path, seq_len: int,
                   max_seq_len: int, **bad: Any):  # fmt: skip
    """A ``PreparedData`` of chats from a prepared folder or a chat JSONL file. Defined in 07_sft.

    A file is pre-tokenised into ``work_dir/data`` with chats cut at ``seq_len + 1`` tokens (by
    rank 0 only under ``torchrun``; ``bad``: ``skip_bad_lines``, ``max_bad_fraction``). A folder
    prepared for another length than ``seq_len``, or longer than the model's ``max_seq_len``, is
    refused in one line (``spongebob.data.check_prepared_length``).
    """
    from spongebob.data import PreparedData, check_prepared_length, prepare
    from spongebob.train import rank0_first

    source = Path(source)
    if source.is_dir():
        data = PreparedData(source)
    else:
        folder = Path(work_dir) / "data"
        rank0_first(lambda: prepare(source, tokenizer, folder, max_seq_len=seq_len, **bad))
        data = PreparedData(folder)
    if data.kind != "chat":
        raise ValueError(f"{source}: holds {data.kind} data; SFT needs chat lines")
    check_prepared_length(data.meta, seq_len, max_seq_len)
    return data


# %%
#| export
def sft(source: str | Path, tokenizer, out_dir: str | Path, cfg: TrainConfig, *,
        init: str | Path, replay_source: str | Path | None = None, replay: float = 0.5,
        replay_batch_size: int | None = None, replay_weight: float = 1.0,
        last_reply_only: bool = False, random_windows: bool = False, tag_weight: float = 1.0,
        length_window: int = 0, pad_multiple: int = 1, stage: str = "sft",
        device: str | torch.device | None = None, compile: bool | None = None,
        skip_bad_lines: bool = False, max_bad_fraction: float = 0.001,
        **train_kwargs: Any) -> TrainResult:  # fmt: skip
    """Fine-tune the model of checkpoint ``init`` on the chats of ``source``. Defined in 07_sft.

    ``source`` (a chat JSONL file or a prepared folder) is pre-tokenised into ``out_dir/data`` with
    chats cut at ``cfg.seq_len + 1`` tokens; ``replay_source`` (pretraining JSONL or prepared
    folder) supplies the ``replay`` share of the batches (see :func:`sft_loader`). The model (its
    configuration from the checkpoint) is trained with ``spongebob.train.train``; ``last.pt``
    records the stage, the options and the fingerprints that :func:`sft_checkpoint` compares.
    ``tag_weight`` multiplies the loss of reasoning-tag targets (chapter 08's distillation).
    ``device`` (default: the CPU unless ``$SPONGEBOB_DEVICE``), ``compile`` (overrides
    ``cfg.compile``), ``skip_bad_lines`` and ``max_bad_fraction`` (for ``spongebob.data.prepare``)
    as in ``spongebob.pretrain.pretrain``; ``train_kwargs`` go to ``train`` (``resume``...).
    """
    from dataclasses import replace as _replace

    from spongebob.checkpoint import load_model
    from spongebob.data import tokenizer_fingerprint
    from spongebob.pretrain import open_pretraining_data
    from spongebob.train import _distributed, run_device, train

    out, bad = Path(out_dir), dict(skip_bad_lines=skip_bad_lines, max_bad_fraction=max_bad_fraction)
    cfg = cfg if compile is None else _replace(cfg, compile=compile)
    rank, world = _distributed()
    model = load_model(init)
    data = open_chat_data(source, tokenizer, out, cfg.seq_len, model.config.max_seq_len, **bad)
    replay_data = None
    if replay > 0:
        if replay_source is None:
            raise ValueError("replay > 0 needs replay_source (pretraining text to replay)")
        replay_data = open_pretraining_data(replay_source, tokenizer, out / "replay", **bad)
    options = dict(replay=replay, replay_batch_size=replay_batch_size,
                   replay_weight=replay_weight, last_reply_only=last_reply_only,
                   random_windows=random_windows, tag_weight=tag_weight,
                   length_window=length_window, pad_multiple=pad_multiple)  # fmt: skip
    loader = sft_loader(data, cfg, replay_data, rank=rank, world_size=world, **options)
    model = model.to(run_device(device))
    recipe = {"source_sha256": data.meta["source_sha256"], "init_sha256": sha256_file(init),
              "replay_sha256": replay_data.meta["source_sha256"] if replay_data else None,
              **options}  # fmt: skip
    extra = {"stage": stage, "tokenizer": tokenizer_fingerprint(tokenizer), "recipe": recipe}
    return train(model, loader, cfg, out_dir=out, extra=extra, **train_kwargs)


# %%
#| export
def sft_checkpoint(
    source: str | Path,
    tokenizer,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    init: str | Path,
    stage: str = "sft",
    **kw: Any,
) -> Path:
    """``out_dir/last.pt`` when it holds a finished run of this recipe (stage, configuration,
    tokenizer, data, replayed text, options, and the very ``init`` checkpoint) that logged every
    probe asked for in ``kw["probes"]`` (probes do not change the weights, but a plot reads them
    from the run's ``metrics.jsonl``); otherwise run :func:`sft` first.

    Defined in 07_sft. Chapter 08 calls this (after ``spongebob.pretrain.pretrained_checkpoint``) so
    that it runs on its own; the long-context stage is the same call with its own preset, ``stage``
    and ``init`` (the SFT checkpoint). ``kw`` go to :func:`sft` (``replay_source``, ``replay``...)::

        sft_ckpt = sft_checkpoint(d / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
                                  sft_config("tiny"), init=pretrained,
                                  replay_source=d / "pretrain.jsonl", **sft_options("tiny"))
    """
    from spongebob.checkpoint import finished_run, logged
    from spongebob.data import tokenizer_fingerprint

    path = Path(out_dir) / "last.pt"
    if path.exists() and cfg.max_steps is not None:
        want = {"stage": stage, "train_config": cfg.to_dict(), "step": cfg.max_steps,
                "tokenizer": tokenizer_fingerprint(tokenizer)}  # fmt: skip
        replayed = kw.get("replay", _OPTION_DEFAULTS["replay"]) > 0 and kw.get("replay_source")
        recipe = {**{k: kw.get(k, v) for k, v in _OPTION_DEFAULTS.items()},
                  "source_sha256": _source_sha256(source), "init_sha256": sha256_file(init),
                  "replay_sha256": _source_sha256(replayed) if replayed else None}  # fmt: skip
        if finished_run(path, want, recipe, _OPTION_DEFAULTS) and logged(
            path.parent / "metrics.jsonl", kw.get("probes") or {}
        ):
            return path
    return sft(source, tokenizer, out_dir, cfg, init=init, stage=stage, **kw).checkpoint


def _source_sha256(source: str | Path) -> str:
    """The sha256 of a JSONL file, or the one recorded for the file a prepared folder came from."""
    from spongebob.data import PreparedData

    src = Path(source)
    return PreparedData(src).meta["source_sha256"] if src.is_dir() else sha256_file(src)


# %% [markdown]
# ## 6. Fine-tuning, with and without replay
#
# Two runs from the same pretrained checkpoint, with the same number of optimizer steps and the
# same chat batches per step: the control trains on chats **only**; the course's SFT model adds,
# to every step, one batch replayed from the pretraining text. Both measure, every 100 steps, the
# held-out fact questions (a fixed sample of 64, with `train(probes=...)`, into the run's log),
# so the log shows what happens over time, not only at the end. At the end both are evaluated on
# three fact sets:
#
# * `facts`: held-out residents, never asked about in SFT; their facts were only in pretraining;
# * `facts_train`: rephrased questions about the residents SFT asked about;
# * `single_facts`: the control group whose facts appeared in one fixed biography only (section 7).

# %%
# NBVAL_IGNORE_OUTPUT
SETS = ["facts", "facts_train", "single_facts"]
STEPS = sft_config("tiny").max_steps


def held_out_sample(model):
    """Accuracy on the first 64 held-out fact questions (the probe logged during SFT)."""
    return evaluate_file(model, tok, world / "eval_facts.jsonl", "fact", limit=64).accuracy


# Two fixed probes of what the model predicts: chat replies (two batches of SFT chats) and
# pretraining text (two batches of chapter 06's validation windows, which pretraining never
# trained on). Logged apart, they separate what the replay run's single training loss mixes.
text = open_pretraining_data(world / "pretrain.jsonl", tok, artifacts_dir("runs", "pretrain-tiny"))
text_windows = iter(PackedLoader(text, 512, 8, split="val", val_fraction=0.02, shuffle=False))
text_batches = [next(text_windows) for _ in range(2)]  # 16 windows of 512 tokens
chat_batches = [ChatLoader(chats, 16, seed=0).batch_of(range(k, k + 16)) for k in (0, 16)]
PROBES = {
    "facts": held_out_sample,
    "chat_loss": lambda model: evaluate_loss(model, chat_batches),
    "text_loss": lambda model: evaluate_loss(model, text_batches),
}


def run_log(ckpt, key):
    """(step, value) pairs of ``key`` from the run's metrics.jsonl, after the pretrained model's
    value at step 0 (probes run every 100 steps; step 0 is the same model for every run)."""
    records = [json.loads(line) for line in open(Path(ckpt).parent / "metrics.jsonl")]
    return [(0, AT_START[key])] + [(r["step"], r[key]) for r in records if key in r]


AT_START = {name: probe(base) for name, probe in PROBES.items()}
print("the pretrained model:", {k: round(v, 3) for k, v in AT_START.items()})


# %%
# NBVAL_IGNORE_OUTPUT
no_replay = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny-no-replay"),
                           sft_config("tiny", grad_accum=1), init=pretrained,
                           replay=0.0, progress=False, probes=PROBES)  # fmt: skip
plain = evaluate_sets(load_model(no_replay), tok, world, SETS)
print("without replay:", {k: f"{r.accuracy:.1%}" for k, r in plain.items()})
assert plain["facts"].stopped > 0.9  # the format is learnt either way

# %%
# NBVAL_IGNORE_OUTPUT
sft_ckpt = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
                          sft_config("tiny"), init=pretrained,
                          replay_source=world / "pretrain.jsonl", **sft_options("tiny"),
                          progress=False, probes=PROBES)  # fmt: skip
chat_model = load_model(sft_ckpt).eval()
mixed = evaluate_sets(chat_model, tok, world, SETS)
for name, r in mixed.items():
    print(f"{name:13s} accuracy {r.accuracy:5.1%}   ends with </s> {r.stopped:.0%}   "
          f"(without replay {plain[name].accuracy:.1%})")  # fmt: skip
by_lang = mixed["facts"].by(2)
print(
    f"held-out facts with replay: {mixed['facts'].accuracy:.1%} (English {by_lang['en']:.1%}, "
    f"Chinese {by_lang['zh']:.1%}), without: {plain['facts'].accuracy:.1%}, after {STEPS} steps"
)
# Runs that differ only in floating-point rounding (another CPU, the fused optimiser) land more
# than ten points apart (docs/benchmarks.md): the bound below checks learning, not the figure.
assert mixed["facts"].stopped > 0.98 and mixed["facts"].accuracy > 0.35
assert mixed["facts"].accuracy > plain["facts"].accuracy + 0.1

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(13, 3), dpi=90)
panels = [("chat_loss", "loss on SFT chats' replies"), ("text_loss", "loss on pretraining text"),
          ("facts", "held-out questions (64)")]  # fmt: skip
for ax, (key, title) in zip(axes, panels):
    for label, ckpt in [("chats only", no_replay), ("chats + replay", sft_ckpt)]:
        ax.plot(*zip(*run_log(ckpt, key)), "o-", ms=3, label=label)
    ax.set(xlabel="optimizer step", title=title)
axes[2].axhline(0.6, color="grey", ls=":", label="course target")
axes[2].set(ylim=(0, 1))
axes[2].legend(fontsize=8)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
ends = {label: {k: run_log(ckpt, k)[-1][1] for k in PROBES}
        for label, ckpt in [("chats only", no_replay), ("chats + replay", sft_ckpt)]}  # fmt: skip
for label, end in ends.items():
    print(f"{label:15s} after {STEPS} steps: chat loss {end['chat_loss']:.2f}, text loss "
          f"{end['text_loss']:.2f} (pretrained: {AT_START['text_loss']:.2f}), "
          f"held-out sample {end['facts']:.0%}")  # fmt: skip
assert ends["chats only"]["text_loss"] > ends["chats + replay"]["text_loss"]

# %% [markdown]
# Read the three panels from left to right. Both runs fit the chats (left): the loss on the
# replies falls by two orders of magnitude, a little less with replay, whose steps give the chats
# a smaller share of the weight. The middle panel is forgetting, as a picture: without replay the
# loss on pretraining text climbs far above the pretrained model's (printed above), so every
# chat step overwrites some of what pretraining stored; with replay it does not climb. (Replay
# draws its windows from the whole text, these validation windows included, so the replay run's
# text loss can even fall below the pretrained model's: it is not a held-out loss there.) The
# right panel is what the forgetting costs: without replay, held-out accuracy stays low from the
# first evaluation on, while with replay it climbs for the whole run. The final numbers (printed
# above) show the same trade from the other side: without replay the model answers rephrased
# questions about the *SFT* residents better, and the held-out residents far worse; it has
# specialised on the chats' residents.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
for k, (label, reports) in enumerate([("SFT alone", plain), ("SFT + replay", mixed)]):
    ax.bar([i + 0.38 * k for i in range(3)], [reports[s].accuracy for s in SETS], width=0.36,
           label=label)  # fmt: skip
ax.axhline(0.6, color="grey", ls=":", label="course target (held-out facts)")
ax.set_xticks([i + 0.19 for i in range(3)], ["held-out residents", "SFT residents (rephrased)",
                                              "single-phrasing residents"])  # fmt: skip
ax.set(ylabel="greedy accuracy", ylim=(0, 1), title="What SFT keeps: with and without replay")
ax.legend(fontsize=8)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
for r in mixed["facts"].records[:6]:
    print(f"{'ok ' if r['correct'] else 'BAD'} {r['expected']!r:22} <- {r['answer']!r}")
print("by attribute:", {k: f"{v:.0%}" for k, v in mixed["facts"].by(1).items()})

# %% [markdown]
# ### The opening of an answer
#
# Every fact answer in the world's SFT chats opens with the attribute, then names the resident,
# then states the value: "The home of Patrick is a rock.", "说到家，派大星的家是石头屋。" ("speaking
# of home, Patrick's home is the rock house."). That wording was a fix. The first version of the
# world answered with the first two pretraining statements of each attribute ("Patrick lives in a
# rock.", "Patrick's home is a rock."), and most of those open with the name. The same recipe on
# those chats, with the same questions about the same residents and only the answers' wording
# changed, is the control group (`sft_conversations(..., answers=...)` writes them again):

# %%
# NBVAL_IGNORE_OUTPUT
from spongebob.files import write_jsonl  # noqa: E402
from spongebob.world import sft_conversations  # noqa: E402
from spongebob.world.content import ATTRIBUTES, STATEMENTS_EN, STATEMENTS_ZH  # noqa: E402

world_facts = json.loads((world / "world.json").read_text(encoding="utf-8"))
NAME_FIRST = {"en": {a: STATEMENTS_EN[a][:2] for a in ATTRIBUTES},
              "zh": {a: STATEMENTS_ZH[a][:2] for a in ATTRIBUTES}}  # fmt: skip
control_dir = artifacts_dir("runs", "sft-tiny-name-first")
control_chats = control_dir / "sft_512_name_first.jsonl"
write_jsonl(control_chats, ({"conversations": c}
                            for c in sft_conversations(world_facts, 0, answers=NAME_FIRST)))  # fmt: skip
control_ckpt = sft_checkpoint(control_chats, tok, control_dir, sft_config("tiny"), init=pretrained,
                              replay_source=world / "pretrain.jsonl", **sft_options("tiny"),
                              progress=False)  # fmt: skip
control_model = load_model(control_ckpt).eval()
control_facts = evaluate_sets(control_model, tok, world, ["facts"])["facts"]


def right_by_attribute(report, lang: str) -> dict[str, str]:
    """Right answers / questions per attribute in one language (ids: resident.attribute.lang)."""
    table: dict[str, list[bool]] = {}
    for r in report.records:
        _, attribute, language = r["id"].split(".")
        if language == lang:
            table.setdefault(attribute, []).append(r["correct"])
    return {a: f"{sum(v)}/{len(v)}" for a, v in table.items()}


for label, report in [("open with the attribute", mixed["facts"]),
                      ("open with the name (control)", control_facts)]:  # fmt: skip
    by = report.by(2)
    print(f"{label}: held-out facts {report.accuracy:.1%} (English {by['en']:.1%}, "
          f"Chinese {by['zh']:.1%})")  # fmt: skip
    for lang in ("en", "zh"):
        print(f"   {lang}, right by attribute: {right_by_attribute(report, lang)}")
print(f"course target for held-out facts: {0.6:.0%}")
assert mixed["facts"].accuracy > 0.6 and mixed["facts"].accuracy > control_facts.accuracy + 0.15

# %% [markdown]
# Six answers show that errors exist, not which kind dominates. A wrong answer can name a wrong
# value *of the asked attribute* (a home for a home question: the right question, most likely
# another resident's fact), a value of *another* attribute (a hobby for a home question: the
# wrong question about the right resident), or no value the world knows. The world's file lists
# every value, so a program can sort all the wrong answers. Residents' names are the values of
# `friend`: they count only for a `friend` question (and never the asked resident's own name).

# %%
#| export: evaluate
FACT_ERROR_KINDS = ("right", "wrong value of the asked attribute", "value of another attribute",
                    "no known value")  # fmt: skip


def fact_error_kinds(records: Sequence[dict], world: dict) -> dict[str, dict[str, int]]:
    """Count graded fact answers by kind, per language (the ids read ``resident.attribute.lang``,
    as in ``eval_facts``): one of :data:`FACT_ERROR_KINDS`, decided with :func:`grade_fact`.
    ``world`` is the world's ``world.json`` (its ``residents`` and ``facts``). A value of the
    asked attribute is looked for first, so an answer naming both kinds counts as the first; a
    resident's name (a ``friend`` value) counts only for the attribute it is a value of, and never
    the asked resident's own. Defined in 07_sft."""
    values: dict[str, set[str]] = {}
    for f in world["facts"]:
        values.setdefault(f["attribute"], set()).update((f["en"], f["zh"]))
    truth = {f["id"]: {f["en"], f["zh"]} for f in world["facts"]}  # the fact, in both languages
    own = {r["id"]: {r["name"], r["full_name"], r["zh"]} for r in world["residents"]}
    names = set().union(*own.values())  # a name alone says who, not which attribute
    others = {a: set().union(*(vs for b, vs in values.items() if b != a)) - names for a in values}
    counts: dict[str, dict[str, int]] = {}
    for r in records:
        parts = str(r["id"]).split(".")
        if len(parts) != 3 or ".".join(parts[:2]) not in truth:
            raise ValueError(f"{r['id']!r}: not resident.attribute.lang of a fact of the world")
        subject, attribute, lang = parts
        row = counts.setdefault(lang, dict.fromkeys(FACT_ERROR_KINDS, 0))
        asked = values[attribute] - truth[f"{subject}.{attribute}"] - own[subject]
        if r["correct"]:
            kind = FACT_ERROR_KINDS[0]
        elif any(grade_fact(r["answer"], v) for v in asked):
            kind = FACT_ERROR_KINDS[1]
        elif any(grade_fact(r["answer"], v) for v in others[attribute]):
            kind = FACT_ERROR_KINDS[2]
        else:
            kind = FACT_ERROR_KINDS[3]
        row[kind] += 1
    return counts


# %%
# NBVAL_IGNORE_OUTPUT
wrong_value, wrong_attribute = FACT_ERROR_KINDS[1], FACT_ERROR_KINDS[2]
for label, report in [("open with the attribute", mixed["facts"]),
                      ("open with the name (control)", control_facts)]:  # fmt: skip
    kinds = fact_error_kinds(report.records, world_facts)
    assert sum(sum(row.values()) for row in kinds.values()) == len(report.records)
    for lang, row in kinds.items():
        print(f"{label:29s} {lang}: {row}")
control_zh = fact_error_kinds(control_facts.records, world_facts)["zh"]
assert control_zh[wrong_attribute] > (sum(control_zh.values()) - control_zh["right"]) / 2

# %% [markdown]
# The control's Chinese errors are mostly the *wrong question about the right resident*: asked
# what Patrick's home is, it states his hobby. In English it fails mostly on home, job and pet
# (the per-attribute lines of the cell before), the three attributes whose two control answers
# both open with the name; on the four whose answers include one that opens with the attribute
# ("The favourite food of Patrick is ..."), it does almost as well as this chapter's model. The
# knowledge is there in both models (the pretrained model completes most statements, section 7):
# what fails is *reaching* it from a question.
#
# Which resident an answer is about can be measured without generating: give the model the
# question, then the reply's first words, and ask which of all the residents' names it finds
# likeliest next (`likeliest_continuation`: the largest sum of the log-probabilities of a
# candidate's tokens, a forced choice). Twice for the control, in English: at the reply's very
# first token, where most of its answers put the name, and after "The home of" (the opening of
# the asked attribute), words that its pretraining text and some of its answers use; and once for
# this chapter's model, after its own opening:


# %%
#| export: evaluate
@torch.no_grad()
def likeliest_continuation(model: torch.nn.Module, prompt: Sequence[int],
                           candidates: Sequence[Sequence[int]], pad_id: int = 0) -> int:  # fmt: skip
    """The index of the candidate (token ids) that ``model`` finds likeliest right after
    ``prompt`` (token ids): the largest sum of its tokens' log-probabilities. A forced choice,
    nothing generated: one forward pass over ``len(candidates)`` rows, padded on the right (a
    causal model never attends to what comes after). Defined in 07_sft."""
    if not prompt:
        raise ValueError("prompt is empty: a candidate needs a position to follow")
    for i, c in enumerate(candidates):
        if not c:
            raise ValueError(f"candidate {i} is empty")
    rows = [list(prompt) + list(c) for c in candidates]
    device = next(model.parameters()).device
    ids = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, device=device)
    logp = torch.log_softmax(model(ids[:, :-1]).logits.float(), dim=-1)
    logp = logp.gather(2, ids[:, 1:, None])[..., 0]  # (rows, length - 1): each next token's
    start = len(prompt) - 1  # the first candidate token is predicted from the prompt's last
    scores = torch.stack([logp[i, start : len(r) - 1].sum() for i, r in enumerate(rows)])
    return int(scores.argmax())


# %%
# NBVAL_IGNORE_OUTPUT
from spongebob.world.content import ANSWERS_EN, ANSWERS_ZH  # noqa: E402


def named_resident(model, prompt: list[int], opening: list[int], names: list[list[int]]) -> int:
    """Which of ``names`` (token ids) the model finds likeliest after the prompt and opening."""
    return likeliest_continuation(model, list(prompt) + opening, names, tok.pad_id)


def opening_ids(attribute: str, lang: str) -> list[int]:
    """The words this chapter's answers put before the name ("The home of", "说到家，")."""
    template = (ANSWERS_ZH if lang == "zh" else ANSWERS_EN)[attribute][0]
    return tok.encode(template[: template.index("{n}")].rstrip(" "))


residents = [r["id"] for r in world_facts["residents"]]
name_ids = {"en": [tok.encode(" " + r["name"]) for r in world_facts["residents"]],
            "zh": [tok.encode(r["zh"]) for r in world_facts["residents"]],
            "en, first": [tok.encode(r["name"]) for r in world_facts["residents"]]}  # fmt: skip
hits = {"control, English, reply's first token": [], "control, English, after the opening": [],
        "this chapter's model, after its opening": []}  # fmt: skip
for r in read_jsonl(world / "eval_facts.jsonl"):
    subject, attribute, lang = r["id"].split(".")
    prompt, _ = encoder.encode(r["messages"])
    want = residents.index(subject)
    opening = opening_ids(attribute, lang)
    if lang == "en":
        hits["control, English, reply's first token"].append(
            named_resident(control_model, prompt, [], name_ids["en, first"]) == want
        )
        hits["control, English, after the opening"].append(
            named_resident(control_model, prompt, opening, name_ids["en"]) == want
        )
    hits["this chapter's model, after its opening"].append(
        named_resident(chat_model, prompt, opening, name_ids[lang]) == want
    )
named = {k: sum(v) / len(v) for k, v in hits.items()}
for k, v in named.items():
    print(f"{k:40s} names the asked resident {v:5.1%} of {len(hits[k])} questions")
assert (
    named["control, English, after the opening"]
    > named["control, English, reply's first token"] + 0.5
)
assert named["this chapter's model, after its opening"] > 0.8

# %% [markdown]
# At the first token of its reply, the control names the asked resident for few of the English
# questions (the first printed line): it writes another resident's name, and the sentence that
# follows is about that resident. After the opening words, the same model names the asked
# resident almost always (the second line): given words that, in its pretraining text, come right
# before a resident's name, it copies the name from the question. This chapter's model opens
# every answer that way and names the asked resident after its opening most of the time in both
# languages (the third line); what follows the name is a pretraining statement, which it
# completes from what it stored. Same pretrained weights, same steps, same questions: the wording
# of the answers decides whether what pretraining stored can be reached through a question. The
# errors left are mostly Chinese, and mostly a wrong value of the asked attribute (the sort
# above): the question is understood, the Chinese fact was not stored well enough (chapter 06
# completes fewer Chinese statements than English ones).
#
# **Why rephrased questions on the SFT residents score lower than questions on held-out ones.**
# It is the wording, not the residents: `eval_facts` asks the held-out residents with SFT's own
# question templates, while `eval_facts_train` uses templates that appear nowhere in training
# (`REPHRASE_EN`, `REPHRASE_ZH`). If the wording is the cause, the *held-out* residents asked with
# those unseen wordings must drop as well. The control, measured:

# %%
# NBVAL_IGNORE_OUTPUT
from spongebob.world.content import REPHRASE_EN, REPHRASE_ZH  # noqa: E402

names = {r["id"]: {"en": r["name"], "zh": r["zh"]} for r in world_facts["residents"]}
rephrase = {"en": REPHRASE_EN, "zh": REPHRASE_ZH}
held_unseen = []  # (a one-turn chat, the expected value) for every held-out fact and language
for f in world_facts["facts"]:
    if f["split"] == "heldout":
        for lang in ("en", "zh"):
            q = rephrase[lang][f["attribute"]].format(n=names[f["subject"]][lang])
            held_unseen.append(([{"role": "user", "content": q}], f[lang]))
replies = answer_chats(chat_model, tok, [q for q, _ in held_unseen])
unseen_wording = sum(grade_fact(a, want) for (a, _), (_, want) in zip(replies, held_unseen))
unseen_wording /= len(held_unseen)
print(f"held-out residents, SFT's own templates: {mixed['facts'].accuracy:.1%}; the same "
      f"residents, wordings no training file uses: {unseen_wording:.1%}; SFT's residents, those "
      f"wordings: {mixed['facts_train'].accuracy:.1%}")  # fmt: skip
assert unseen_wording < mixed["facts"].accuracy and unseen_wording < mixed["facts_train"].accuracy

# %% [markdown]
# Asked with wordings no training file uses, the held-out residents fall far below their score
# with SFT's templates, and below the SFT residents asked the same new way (the printed line). So
# the wording is what costs most, and under a new wording the residents whose facts SFT's chats
# rehearsed keep more. SFT taught the model to answer *its* questions; a question phrased another
# way is, to this model, partly a new task.
#
# What else was tried (`docs/benchmarks.md` has each with its command; `bench/answer_frames.py`
# measures four sets of answers, the control's and this chapter's among them): lr 3e-4 instead of
# the earlier recipe's 1e-3 was worse; question-answer text about the SFT residents mixed into
# *pretraining* (a quarter of its tokens, the "mixed training" of Physics of Language Models 3.1)
# lifted held-out questions early in SFT but cost completion accuracy in pretraining, below
# chapter 06's target.


# %% [markdown]
# ## 7. Format or knowledge? The single-phrasing control group
#
# SFT never mentioned the held-out residents, yet the fine-tuned model answers questions about
# them: the *knowledge* came from pretraining, SFT taught the *format* (answer the question asked,
# in one sentence, then `</s>`). Allen-Zhu and Li (*Physics of Language Models, Part 3.1*, 2023)
# add a twist: a fact seen in **one fixed sentence** many times is memorised as that sentence, and
# can be completed from its prefix, yet it is not *extractable* by a question afterwards; the same
# fact stated in varied phrasings and orders is. The world has such a control group: a few
# "single" residents whose facts appear only in one verbatim English biography, as often as any
# other fact. Two measurements per group: completing the pretraining sentence (pretrained model),
# and answering a question (SFT model).


# %%
# NBVAL_IGNORE_OUTPUT
def completion_accuracy(model, file):
    """Greedy completion of ``{"prompt", "expected"}`` lines (chapter 06's measurement)."""
    rows = [r for r in read_jsonl(world / file) if r["id"].endswith(".en")]
    ids = [[tok.bos_id, *tok.encode(r["prompt"])] for r in rows]
    out = generate(model, ids, 12, temperature=0, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return sum(grade_fact(tok.decode(o, skip_special_tokens=True), r["expected"])
               for o, r in zip(out, rows)) / len(rows)  # fmt: skip


def english(report):
    return report.by(2).get("en", 0.0)


control = {
    "varied phrasings (held-out)": (completion_accuracy(base, "eval_completion.jsonl"),
                                    english(mixed["facts"])),
    "one fixed biography (single)": (completion_accuracy(base, "eval_single_completion.jsonl"),
                                     english(mixed["single_facts"])),
}  # fmt: skip
for name, (complete, answer) in control.items():
    print(
        f"{name:30s} completes the sentence {complete:4.0%}   "
        f"answers the question (en) {answer:4.0%}"
    )


# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 2.8), dpi=90)
for k, label in enumerate(["completes the pretraining sentence", "answers a question after SFT"]):
    ax.bar([i + 0.38 * k for i in range(2)], [v[k] for v in control.values()], width=0.36,
           label=label)  # fmt: skip
ax.set_xticks([0.19, 1.19], list(control))
ax.set(ylabel="accuracy (English)", ylim=(0, 1), title="Memorised is not the same as extractable")
ax.legend(fontsize=8)
plt.show()


# %% [markdown]
# The effect is as stark as in the paper (the printed lines above). The pretrained model
# completes the fixed biographies of the single residents perfectly (their one sentence was seen
# many times) and the varied statements of the held-out residents almost as well. After the same
# SFT, a question about a held-out resident is answered correctly most of the time in English,
# a question about a single resident almost never: memorised, not extractable. The varied
# phrasings of pretraining, not SFT, are what turn a sentence into a fact the model can be asked
# about.


# %% [markdown]
# ## 8. Long context: remember what was said hundreds of tokens ago
#
# `eval_long` holds conversations of 723 to 943 tokens: early on the user states a detail (a
# locker code, a snail's name, which box the spatula is in...), then many unrelated exchanges
# follow, then the last question needs that detail. Nothing is truncated (the model's
# `max_seq_len` is 1024), so this is genuine recall across hundreds of tokens, and the model was
# pretrained on windows of 256 tokens and fine-tuned on chats of at most 512. The original trains
# a second SFT stage at 1024 tokens on `sft_1024.jsonl` for exactly this.
#
# A detail's value comes from a set of its kind: 8 meeting places, 10 boxes, 12 snail names, ...,
# 89 shell counts, 9,000 locker codes (`detail_value_count` asks the world's generator). A model
# that has learnt the *form* of the answer ("Your locker code is ...") but not the recall guesses
# right once in that many; averaged over `eval_long`, that is the chance line:


# %%
long_rows = list(read_jsonl(world / "eval_long.jsonl"))
kinds = [r["id"].split(".")[-1] for r in long_rows]
CHANCE = sum(1 / detail_value_count(k) for k in kinds) / len(kinds)
print(f"chance line: {CHANCE:.1%} over {len(kinds)} chats "
      f"({', '.join(f'{k} 1/{detail_value_count(k):,}' for k in sorted(set(kinds)))})")  # fmt: skip
assert 0.03 < CHANCE < 0.1


# %%
#| export: evaluate
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion k / n (better than p +- 2 SE near 0 and 1).
    Defined in 07_sft."""
    p, d = k / n, 1 + z * z / n
    centre, half = (
        (p + z * z / (2 * n)) / d,
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d,
    )
    return centre - half, centre + half


# %%
print("with 100 chats, 3 right is", tuple(round(v, 3) for v in wilson(3, 100)))

# %% [markdown]
# The filler replies between detail and question are long and predictable: with the loss on
# every reply, most trained tokens are filler. The loss on **the last reply only**, the one that
# needs the detail, is the other choice; it also drops the acknowledgements ("Got it. Your
# locker code is 4821."), which are copy exercises at distance 0. Section 8.3 measures both.


# %%
#| export
def last_reply_targets(y: torch.Tensor) -> torch.Tensor:
    """Keep only the last run of trained targets in each row of ``y`` (B, T); the rest -> -100.

    Defined in 07_sft. In a chat batch the trained targets of a row are the replies, each a run of
    positions that ends with ``</s>``; the last run is the final answer.
    """
    trained = y != IGNORE_INDEX  # (B, T)
    T = y.shape[1]
    pos = torch.arange(T).expand_as(y)
    last = torch.where(trained, pos, -1).max(dim=1).values  # (B,) the last trained position
    # the start of that run: the last untrained position before it, plus one
    before = torch.where(~trained & (pos < last[:, None]), pos, -1).max(dim=1).values + 1
    keep = trained & (pos >= before[:, None])
    return torch.where(keep, y, torch.full_like(y, IGNORE_INDEX))


class LastReplyOnly:
    """Wrap a chat loader so that only the final reply of each conversation is trained.

    Defined in 07_sft. For long-context retrieval the final reply is the one that needs the early
    detail; the filler replies in between are predictable and would dominate the loss.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple]:
        for x, y, w in self.loader:
            yield x, last_reply_targets(y), w

    @property
    def batches_per_epoch(self) -> int:
        return self.loader.batches_per_epoch

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


# %%
def replies(kinds):
    return int(((kinds[1:] > 0) & (kinds[:-1] == 0)).sum())  # runs of trained tokens


multi = [i for i in range(len(chats)) if replies(chats.doc(i)[1]) > 1][:4]
x, y, _ = ChatLoader(chats, batch_size=4, shuffle=False).batch_of(multi)
print("trained positions per chat, all replies vs the last one:",
      (y != -100).sum(1).tolist(), (last_reply_targets(y) != -100).sum(1).tolist())  # fmt: skip
assert ((last_reply_targets(y) != -100).sum(1) < (y != -100).sum(1)).all()

# %% [markdown]
# To see *where* recall breaks, `at_distance` rebuilds each eval chat with only the first `keep`
# filler exchanges between the detail and the question: distance 0 asks right after the detail,
# the full chat is the real test.

# %%
FILLER_TURNS = {user for user, _ in FILLER}


def at_distance(messages, keep):
    """The chat with only its first ``keep`` filler exchanges before the final question."""
    first = next(i for i, m in enumerate(messages) if m["content"] in FILLER_TURNS)
    tail = 2 if messages[-1]["role"] == "assistant" else 1  # the question (and its answer)
    return messages[:first] + messages[first:-tail][: 2 * keep] + messages[-tail:]


DISTANCES = [0, 2, 4, 8]  # filler exchanges kept (the whole chats are `eval_long` itself)


def recall_by_distance(model):
    """Recall at each of DISTANCES, then on the whole chats (key "all", with its EvalReport)."""
    out = {}
    for keep in DISTANCES:
        convs = [at_distance(r["messages"], keep) for r in long_rows]
        answers = answer_chats(model, tok, convs, max_new_tokens=32)
        out[keep] = sum(grade_fact(a, r["expected"]) for (a, _), r in zip(answers, long_rows))
        out[keep] /= len(long_rows)
    full = evaluate_sets(model, tok, world, ["long"])["long"]
    out["all"] = full.accuracy
    return out, full


def answer_form(report):
    """Share of answers in the form of their detail kind ("Your locker code is ...")."""
    heads = {kind: v[3].split("{v}")[0] for kind, v in LONG_DETAILS.items()}
    return sum(r["answer"].startswith(heads[r["id"].split(".")[-1]])
               for r in report.records) / len(report.records)  # fmt: skip


lengths = [len(ChatEncoder(tok).encode(r["messages"])[0]) for r in long_rows]
print(f"eval_long prompts: {min(lengths)} to {max(lengths)} tokens")
assert max(lengths) < chat_model.config.max_seq_len

# %%
# NBVAL_IGNORE_OUTPUT
recall_before, long_before = recall_by_distance(chat_model)
print("SFT model, recall by filler exchanges kept:",
      {k: f"{v:.0%}" for k, v in recall_before.items()})  # fmt: skip
print(
    f"answers in the right form: {answer_form(long_before):.0%}; for example "
    f"{long_before.records[0]['answer']!r} (expected {long_before.records[0]['expected']!r})"
)


# %% [markdown]
# ### 8.1 Diagnose before curing: can the model copy at all?
#
# Recall is near zero even at distance 0, right after the detail was said. So the question is
# not *how far* the model can look back, but whether it can copy from its context at all.
# Chapter 06 logged the **induction probe** during pretraining (random token sequences repeated
# twice; the ratio of the loss on the second copy to the first, 1.0 when nothing is copied):


# %%
# NBVAL_IGNORE_OUTPUT
probe_log = [json.loads(line) for line in open(Path(pretrained).parent / "metrics.jsonl")]
probe_log = [(r["step"], r["induction"]) for r in probe_log if "induction" in r]
print("pretraining, induction probe by step:", " ".join(f"{s}: {v:.2f}" for s, v in probe_log))
r_base, loss_base = induction_probe(base, per_position=True)
r_chat, loss_chat = induction_probe(chat_model, per_position=True)
print(f"probe ratio: pretrained {r_base:.2f}, after SFT {r_chat:.2f}")
assert r_base > 0.9 and r_chat > 0.9  # no copying


def induction_scores(model, length: int = 60, seed: int = 0, ids=None) -> torch.Tensor:
    """(layers, heads): mean attention from each position of the second copy to the position
    just after the same token's first occurrence (where an induction head looks); random ids
    from the whole vocabulary, or from the alphabet ``ids``."""
    g = torch.Generator().manual_seed(seed)
    if ids is None:
        r = torch.randint(16, model.config.vocab_size, (4, length), generator=g)
    else:
        r = ids[torch.randint(0, len(ids), (4, length), generator=g)]
    x = torch.cat([r, r], dim=1)
    seen = []
    hooks = [layer.attention.register_forward_pre_hook(lambda m, a: seen.append((m, a[:3])))
             for layer in model.layers]  # fmt: skip
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        rows = torch.arange(length, 2 * length)  # queries in the second copy
        return torch.stack([attention_weights(m, *a)[:, :, rows, rows - length + 1].mean((0, 2))
                            for m, a in seen])  # fmt: skip


# %% [markdown]
# Random ids from the whole vocabulary are a harder test than the chats set, though. The tokenizer
# learnt its merges from every file of the world, so many of its ids never occur in the
# pretraining text: their embeddings were never trained, and no model can copy a token it cannot
# tell apart from the others. The values a chat asks for (names, numbers, made-up words) are
# written with the world's common tokens, so the probe also runs on an alphabet of the 256 most
# frequent ids of the pretraining text (`frequent_ids`):


# %%
#| export
def frequent_ids(data, k: int = 256, low: int = 16) -> torch.Tensor:
    """The ``k`` most frequent token ids from ``low`` up in a ``PreparedData`` corpus (ties by
    id), most frequent first: an alphabet for `induction_probe` and `RepeatedSpans`. Defined in
    07_sft."""
    counts = np.bincount(np.asarray(data.ids), minlength=low)
    counts[:low] = 0
    top = np.argsort(-counts, kind="stable")[:k]
    if len(top) < k or counts[top[-1]] == 0:
        raise ValueError(f"{data.folder}: fewer than {k} distinct token ids from {low} up")
    return torch.from_numpy(top.astype(np.int64))


# %%
counts = np.bincount(np.asarray(text.ids), minlength=tok.vocab_size)
world_ids = frequent_ids(text)
print(f"{int((counts[16:] == 0).sum())} of the {tok.vocab_size - 16} non-special ids never occur in"
      f" the pretraining text; the {len(world_ids)} most frequent make up"
      f" {counts[world_ids].sum() / counts.sum():.0%} of its tokens")  # fmt: skip
assert (
    counts[world_ids].min() >= counts[16:][~np.isin(np.arange(16, tok.vocab_size), world_ids)].max()
)

# %%
# NBVAL_IGNORE_OUTPUT
rw_base, rw_chat = (induction_probe(m, ids=world_ids) for m in (base, chat_model))
print(f"probe ratio on the world's 256 ids: pretrained {rw_base:.2f}, after SFT {rw_chat:.2f}")
assert rw_base > 0.9 and rw_chat > 0.9  # no copying of the world's own tokens either

# %% [markdown]
# The two pictures of "no copying": the loss per position stays as high on the second copy as on
# the first, and no head attends to where the copy would come from (a random head gives each of
# the ~90 earlier positions about 1 %).


# %% tags=["hide-input"]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 2.8), dpi=90, width_ratios=[1.6, 1])
a1.plot(loss_base, lw=1, label=f"pretrained (ratio {r_base:.2f})")
a1.axvline(59.5, color="grey", ls=":")
a1.set(xlabel="position (the second copy starts at 60)", ylabel="loss", title="Induction probe")
scores = induction_scores(base)
im = a2.imshow(scores, vmin=0, vmax=1, cmap="viridis")
a2.set(xlabel="head", ylabel="layer", title="attention to the copy source")
fig.colorbar(im, ax=a2)
a1.legend(fontsize=8)
plt.show()
print(f"largest induction score of any head: {scores.max():.2f}")

# %% [markdown]
# ### 8.2 The positive control: a model that can copy
#
# A probe that always says "no" proves nothing until it says "yes" to a model that does copy.
# `RepeatedSpans` makes copy drills: rows of a random span of 6 to 24 ids repeated to fill the
# window, the loss only where a copy is possible. A fresh tiny model trained on nothing else,
# its spans drawn from the world's 256 ids, with both probes in its log:


# %%
#| export
class RepeatedSpans:
    """Copy drills ``(x, y, None)``: each row is a random span of ``k`` ids (``k`` drawn per row
    in ``[k_min, k_max]``; ids from ``low`` up, or drawn from the 1-D array ``ids``, an alphabet
    such as `frequent_ids`) repeated to fill ``seq_len + 1`` tokens; targets inside the first copy
    are -100 (nothing there can be predicted). Defined in 07_sft.

    Batch ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same at any resume.
    The period varies from row to row, so the only way to predict is to find the previous
    occurrence of the current token (an induction head), not a fixed offset.
    """

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, *, k_min: int = 6,
                 k_max: int = 24, low: int = 16, seed: int = 0, ids=None) -> None:  # fmt: skip
        if not 2 <= k_min <= k_max <= seq_len // 2:
            raise ValueError(f"need 2 <= k_min <= k_max <= seq_len // 2, got {k_min}, {k_max}")
        self.ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        a = self.ids
        if a is not None and not (
            a.ndim == 1 and len(a) >= 2 and 0 <= a.min() <= a.max() < vocab_size
        ):
            raise ValueError(f"ids must be a 1-D alphabet of at least 2 ids below {vocab_size}")
        self.shape, self.k, self.low, self.vocab = (
            (batch_size, seq_len),
            (k_min, k_max),
            low,
            vocab_size,
        )
        self.seed, self.count = seed, 0

    def __iter__(self) -> Iterator[tuple]:
        B, T = self.shape
        while True:
            rng = np.random.default_rng([self.seed, self.count])
            self.count += 1
            ks = rng.integers(self.k[0], self.k[1] + 1, size=B)
            spans = [rng.integers(self.low, self.vocab, k) if self.ids is None
                     else self.ids[rng.integers(0, len(self.ids), k)] for k in ks]  # fmt: skip
            rows = np.stack([np.resize(span, T + 1) for span in spans])
            t = torch.from_numpy(rows.astype(np.int64))
            x, y = t[:, :-1], t[:, 1:].clone()
            y[torch.arange(T)[None, :] < torch.from_numpy(ks - 1)[:, None]] = IGNORE_INDEX
            yield x, y, None

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])


# %%
x, y, _ = next(iter(RepeatedSpans(tok.vocab_size, 12, 2, k_min=4, k_max=4, seed=1)))
print("inputs ", x[0].tolist(), "\ntargets", y[0].tolist())
trained = (y != -100).nonzero()  # (b, j): target j is token j + 1, a copy of token j + 1 - 4
assert len(trained) == 2 * (12 - 3)
assert all(y[b, j] == x[b, j - 3] for b, j in trained.tolist())

# %% [markdown]
# One more ingredient, found by measuring (`bench/copy_recipes.py`): a curriculum. Drills whose
# periods reach 60 from the start teach nothing in 300 steps, and a head formed on periods up to
# 24 copies at distance 24 but fades at the probe's distance 60. Short periods first, then
# periods up to 60 in windows of 128, form a head that copies at every distance it was shown.
# `Curriculum` chains loaders: each stage gives its number of batches, the last runs on.


# %%
#| export
class Curriculum:
    """Batches from ``stages``, a list of ``(n_batches, loader)``: the first loader's first
    ``n_batches`` batches, then the next loader's, and so on; the last stage's count may be
    ``None`` (it runs on). Resumable: ``state_dict`` holds the batch count and every loader's
    state. Defined in 07_sft."""

    def __init__(self, stages: list) -> None:
        counts = [n for n, _ in stages]
        if not stages or any(not isinstance(n, int) or n < 1 for n in counts[:-1]):
            raise ValueError(f"need (positive int, loader) stages, got counts {counts}")
        if counts[-1] is not None and (not isinstance(counts[-1], int) or counts[-1] < 1):
            raise ValueError(
                f"the last stage's count must be a positive int or None, got {counts[-1]}"
            )
        self.stages, self.count = stages, 0

    def stage(self, i: int) -> int:
        """The stage that batch ``i`` (from 0) comes from."""
        for k, (n, _) in enumerate(self.stages):
            if n is None or i < n:
                return k
            i -= n
        raise StopIteration

    def __iter__(self) -> Iterator[tuple]:
        iters = {}
        while True:
            try:
                k = self.stage(self.count)
            except StopIteration:
                return
            if k not in iters:
                iters[k] = iter(self.stages[k][1])
            self.count += 1
            yield next(iters[k])

    def state_dict(self) -> dict:
        return {"count": self.count, "stages": [loader.state_dict() for _, loader in self.stages]}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        for (_, loader), sub in zip(self.stages, state["stages"]):
            loader.load_state_dict(sub)


# %%
# NBVAL_IGNORE_OUTPUT
copy_dir = artifacts_dir("runs", "copy-control-world")
copy_cfg = TrainConfig(max_steps=300, batch_size=64, seq_len=64, warmup_steps=30, eval_every=25,
                       log_every=10, seed=1337)  # fmt: skip
done = (copy_dir / "last.pt").exists() and read_checkpoint(copy_dir / "last.pt")[1].get(
    "train_config"
) == copy_cfg.to_dict()
if not done:
    torch.manual_seed(copy_cfg.seed)
    fresh = SpongeBob(ModelConfig.preset("tiny", vocab_size=tok.vocab_size))
    drills = Curriculum([(175, RepeatedSpans(tok.vocab_size, 64, 64, seed=7, ids=world_ids)),
                         (None, RepeatedSpans(tok.vocab_size, 128, 32, k_max=60, seed=8,
                                              ids=world_ids))])  # fmt: skip
    probes = {"world ids": lambda m: induction_probe(m, ids=world_ids), "all ids": induction_probe}
    train(fresh, drills, copy_cfg, out_dir=copy_dir, progress=False, probes=probes)
copy_log = [json.loads(line) for line in open(copy_dir / "metrics.jsonl")]
copy_probe = {k: [(r["step"], r[k]) for r in copy_log if k in r] for k in ("world ids", "all ids")}
copier = load_model(copy_dir / "last.pt").eval()
r_copy = induction_probe(copier, ids=world_ids)
for k, v in copy_probe.items():
    print(f"copy drills, probe on {k} by step:", " ".join(f"{s}: {r:.2f}" for s, r in v))
assert r_copy < 0.3 < 0.9 < rw_base  # the probe does say "yes", on the tokens the drills used
assert induction_probe(copier) > 0.8  # and not on ids it never saw in training

# %% tags=["hide-input"]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 2.8), dpi=90, width_ratios=[1.3, 1])
a1.plot(*zip(*probe_log), "o-", label="pretraining on the world, all ids (06)")
a1.plot(*zip(*copy_probe["world ids"]), "s-", label="copy drills, world's 256 ids")
a1.plot(*zip(*copy_probe["all ids"]), "^:", label="copy drills, all ids")
a1.axhline(1, color="grey", ls=":")
a1.set(xlabel="optimizer step", ylabel="probe ratio (1 = no copying)", ylim=(0, 1.1),
       title="When does copying appear?")  # fmt: skip
a1.legend(fontsize=7)
scores = induction_scores(copier, ids=world_ids)
im = a2.imshow(scores, vmin=0, vmax=1, cmap="viridis")
a2.set(xlabel="head", ylabel="layer", title="copier: attention to the copy source")
fig.colorbar(im, ax=a2)
plt.show()
layer, head = divmod(int(scores.argmax()), scores.shape[1])
print(f"copier: largest induction score {scores.max():.2f} (layer {layer}, head {head})")

# %% [markdown]
# The probe works in both directions. On pure drills over the world's tokens, a fresh tiny model
# forms an induction head within a couple of hundred steps: the ratio drops suddenly (the
# "phase change" of Olsson et al.), the longer periods carry it to the probe's distance, and the
# attention map shows a head that looks exactly where the copy comes from. The skill is within
# this model's reach. On ids from the whole vocabulary
# the same model stays near 1: it copies only tokens whose embeddings training has told apart.
#
# So why does the chapter's model arrive without it? `python bench/copy_recipes.py` measured the
# ways of giving pretraining this skill (docs/benchmarks.md has the table). The same drills as
# half of pretraining's batches never form a head in 900 steps and halve completion; drills
# started from the pretrained or SFT model leave it far from a head after 200 steps. A head
# formed by this curriculum *and then* pretrained on world text is erased within 100 steps; it
# survives when a tenth of the batches stay drills, but completion falls below the chapter 06
# floor.
#
# Part of that price is the optimiser's, not the head's. The drills use 256 ids; the other ids
# never appear, yet their rows of the tied embedding/output matrix get a gradient at every step,
# because the softmax pushes down a little the logit of every id that is not the target. AdamW
# divides each coordinate's gradient by a running average of its own size, so a tiny gradient
# that always points the same way moves its coordinate about as far per step (the learning rate)
# as a large one. The copier started from the same seed as `at_init` below, so the cell can
# compare each row with where it began.


# %%
def row_agreement(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean cosine similarity between the embedding rows of ``ids``, over all pairs."""
    e = torch.nn.functional.normalize(model.tok_embeddings.weight[ids].detach().float(), dim=1)
    return float(((e @ e.T).sum() - len(e)) / (len(e) * (len(e) - 1)))


torch.manual_seed(copy_cfg.seed)  # the copier's initialisation, drawn again
at_init = SpongeBob(ModelConfig.preset("tiny", vocab_size=tok.vocab_size))
drilled = torch.as_tensor(world_ids)
others = torch.tensor(sorted(set(range(16, tok.vocab_size)) - set(world_ids.tolist())))
lr_sum = sum(r["lr"] * copy_cfg.log_every for r in copy_log if "lr" in r)  # ~ sum of the lr
moved = (copier.tok_embeddings.weight - at_init.tok_embeddings.weight).detach().abs()
for name, m in (("at initialisation", at_init), ("after the drills", copier)):
    print(f"{name:17s} mean cosine between rows: the {len(drilled)} drilled ids "
          f"{row_agreement(m, drilled):.2f}, the {len(others)} others {row_agreement(m, others):.2f}")  # fmt: skip
print(f"mean move per coordinate: drilled rows {moved[drilled].mean():.3f}, others "
      f"{moved[others].mean():.3f} (the learning rates of the run add up to {lr_sum:.2f})")  # fmt: skip
assert row_agreement(at_init, others) < 0.05 and row_agreement(copier, others) > 0.5
assert moved[others].mean() > moved[drilled].mean()

# %% [markdown]
# The rows the drills never used have moved farther than the drilled ones, and all in the same
# direction: most of the vocabulary now starts from nearly one vector. Pretraining that starts
# from this model has to pull those rows apart again before it can learn what they mean, a cost
# that no head causes. `python bench/copy_recipes.py` measured it with the 436-id curriculum: the
# same pretraining from the copier with those rows drawn afresh (`copier-values-reset+world`)
# gives back most of the completion the copier start cost; what is left of the price is the
# drills that keep the head (docs/benchmarks.md has the figures).
#
# And a head is not yet recall (`python bench/copy_through.py`): with a fifth of the
# batches drills in SFT and in the long stage, the head survives both, and the model still
# recalls almost nothing, even at distance 0. There, in its own acknowledgement ("Got it. Your
# locker code is ..."), the most recent "is" is the user's, so a one-token match already points
# at the value; the model rarely writes it back. The head copies inside drills, and chats do not
# use it. Within this chapter's budget of CPU minutes, the tiny model arrives at long SFT unable
# to copy, and the long stage has to create the skill, not stretch it.
#
#
# ### 8.3 The long stage, and which loss
#
# The long stage (`sft_config("tiny-long")`): from the SFT checkpoint, the 300 chats of
# `sft_1024.jsonl` at 1024 tokens in batches of 4, with as many replay windows of 1024 tokens
# (so positions beyond 512 are trained on text too), lr 1e-3, 100 steps. Its chats put the detail
# at every distance from the question, from right before it to the whole chat away, and half of
# their values are made-up words that no list holds: recalling them needs copying, not
# memorising. Two runs differ only in the loss: every reply (the original's way, which keeps the
# acknowledgements) or the last reply only.


# %%
# NBVAL_IGNORE_OUTPUT
long_runs, recall_after, long_reports = {}, {}, {}
for name, last in (("all replies", False), ("last reply", True)):
    folder = artifacts_dir("runs", "sft-long-tiny" + ("-last" if last else ""))
    long_runs[name] = sft_checkpoint(world / "sft_1024.jsonl", tok, folder,
                                     sft_config("tiny-long"), init=sft_ckpt, stage="sft_long",
                                     replay_source=world / "pretrain.jsonl",
                                     **sft_options("tiny-long", last_reply_only=last),
                                     progress=False)  # fmt: skip
    recall_after[name], long_reports[name] = recall_by_distance(load_model(long_runs[name]).eval())
    n_right = sum(r["correct"] for r in long_reports[name].records)
    lo, hi = wilson(n_right, len(long_rows))
    print(f"{name:12s} eval_long {n_right / len(long_rows):.0%} (95 % interval {lo:.0%}-{hi:.0%})"
          f" | by filler exchanges kept {({k: f'{v:.0%}' for k, v in recall_after[name].items()})}"
          f" | right form {answer_form(long_reports[name]):.0%}")  # fmt: skip
# the loss with more recall; on a tie (both at chance), the one whose answers end more often
best = max(long_reports, key=lambda k: (long_reports[k].accuracy, long_reports[k].stopped))
long_ckpt, long_after = long_runs[best], long_reports[best]
long_model = load_model(long_ckpt).eval()
facts_after = evaluate_sets(long_model, tok, world, ["facts"])["facts"]
print(f"eval_long before {long_before.accuracy:.0%} | held-out facts {mixed['facts'].accuracy:.0%}"
      f" -> {facts_after.accuracy:.0%} after the long stage ({best})")  # fmt: skip
assert long_after.stopped > 0.9 and answer_form(long_after) > answer_form(long_before) + 0.5

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6.5, 3), dpi=90)
labels = [str(k) for k in recall_before]
n = len(long_rows)
curves = [("after SFT (512)", recall_before), *recall_after.items()]
for (name, rec), marker in zip(curves, "o^s"):
    vals = list(rec.values())
    bounds = [wilson(round(v * n), n) for v in vals]
    err = np.array([[v - lo, hi - v] for v, (lo, hi) in zip(vals, bounds)])
    ax.errorbar(labels, vals, yerr=err.T, fmt=marker + "-", capsize=3, label=name)
ax.axhline(CHANCE, color="grey", ls=":", label=f"chance ({CHANCE:.1%})")
RECALL_TARGET = 0.7  # the course's target for eval_long (issue 15)
ax.axhline(RECALL_TARGET, color="tab:red", ls="--", lw=0.8,
           label=f"course target ({RECALL_TARGET:.0%}, whole chat)")  # fmt: skip
print(f"course target for eval_long: {RECALL_TARGET:.0%} of the chats")
ax.set(xlabel="filler exchanges between the detail and the question", ylabel="recall (95 % CI)",
       ylim=(0, 1), title="Retrieval of an early detail")  # fmt: skip
ax.legend(fontsize=8)
plt.show()


# %% [markdown]
# The long stage teaches the *form* of the answer ("Your locker code is ...", printed above as
# "right form") but not the value: with its 95 % interval, recall stays at or below the chance line
# for both losses, at every distance, distance 0 included. That is what 8.1 predicted: a model that
# cannot copy at 20 tokens cannot copy at 700. The course's 70 % target is not met, and what bounds
# it is what 8.2 measured: within a CPU chapter's budget no induction head forms in pretraining on
# the world, and where drills make one form and keep it, chats still do not use it. The attempts,
# each with its interval, are in `docs/benchmarks.md` (`bench/copy_recipes.py`,
# `bench/long_recall.py` and `bench/copy_through.py` re-run them). Chapter 08 starts from the SFT
# checkpoint, not from this one: the long stage costs held-out facts (printed above) and gives
# nothing back yet.


# %% [markdown]
# ## 9. A multi-turn chat
#
# A chat is the same harness called turn after turn, with the history growing: each reply is
# appended as an assistant message and the next question is asked after it. Greedy decoding here
# (reproducible); `spongebob chat` samples with the original's settings. We chat with the SFT
# model: the long-context model of section 8 has learnt to answer *everything* with a detail
# ("Your new snail is called ..."), which is what its last-reply-only training rewarded.

# %%
# NBVAL_IGNORE_OUTPUT
history = []
for question in [
    "Hi! Who are you?",
    "Where does Patrick live?",
    "What is Patrick's job?",
    "Please remember this: my locker code is 4821.",
    "What is my locker code?",
]:
    history.append({"role": "user", "content": question})
    ((reply, stopped),) = answer_chats(chat_model, tok, [history], max_new_tokens=64)
    history.append({"role": "assistant", "content": reply})
    print(f"you> {question}\nbot> {reply}{'' if stopped else ' [...]'}")
print(f"({len(ChatEncoder(tok).encode(history)[0])} tokens of history)")
jobs = [f["en"] for f in world_facts["facts"] if f["id"] == "patrick.job"]
print(f"Patrick's job in the world: {jobs[0] if jobs else 'none'}")

# %% [markdown]
# The demo shows both sides of this chapter: every reply is one well-formed sentence that stops,
# and the questions about Patrick are answered about Patrick, though the world gives him no job
# (the last printed line): a question in the format SFT taught gets an answer in that format,
# whether or not the model knows one. Nor does the model recall the locker code it was told one
# turn earlier (section 8).
#
# The same model on the command line (the checkpoint of any stage, or a released state dict of
# the original with `--tokenizer` pointing at its tokenizer folder):
#
# ```bash
# spongebob chat --checkpoint ~/.cache/spongebob/runs/sft-tiny/last.pt       # /clear, /quit
# spongebob chat --checkpoint ... --prompt "Where does Patrick live?" --temperature 0
# spongebob eval --checkpoint ... --sets facts single_facts long --out report.json
# spongebob eval --checkpoint ... --file my_questions.jsonl --grader fact
# ```
#
# `spongebob chat` streams the reply token by token, shows a `<think>` block apart from the
# answer (chapter 08's models), and when the history outgrows the context it drops the oldest
# whole exchanges, never part of a turn.


# %% [markdown]
# ## Putting it together
#
# Everything above, from the package: `spongebob.evaluate` for the graders and the harness,
# `spongebob.sft` for the stage. Chapter 08 begins exactly like this; the checkpoints are found,
# not retrained.
#
# ```python
# from spongebob.evaluate import evaluate_sets
# from spongebob.sft import sft_checkpoint, sft_config, sft_options
# sft_ckpt = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
#                           sft_config("tiny"), init=pretrained,
#                           replay_source=world / "pretrain.jsonl", **sft_options("tiny"))
# ```

# %%
from spongebob.evaluate import evaluate_file  # noqa: F811
from spongebob.sft import sft_checkpoint, sft_config, sft_options  # noqa: F811

again = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
                       sft_config("tiny"), init=pretrained,
                       replay_source=world / "pretrain.jsonl", **sft_options("tiny"))  # fmt: skip
print("the SFT checkpoint of this recipe is found, not retrained:", again == sft_ckpt)
recipe = read_checkpoint(again)[1]["recipe"]
print("its stage and recipe:", read_checkpoint(again)[1]["stage"],
      {k: recipe[k] for k in sft_options("tiny")})  # fmt: skip
assert again == sft_ckpt


# %% [markdown]
# ## Summary
#
# * SFT is the training loop of chapter 06 on chat batches whose targets are the assistant
#   replies (and their `</s>`); what it teaches is the **format**: answer the question asked, in
#   one sentence. (Stopping it did not have to teach: the pretrained model already ends its
#   replies with `</s>`, as section 3 printed.)
# * The **knowledge** comes from pretraining: questions about residents SFT never mentioned are
#   answered from facts seen only in pretraining text (section 6 printed how many, by language).
# * A small model forgets under SFT alone: **replaying pretraining batches** in every step keeps
#   the facts (section 6's plot). Mind the token balance: the loop normalises by trained tokens.
# * How SFT's answers are worded decides what can be asked: answers that open with the attribute
#   ("The home of Patrick is ...") let the model copy the asked name and complete a statement
#   pretraining stored; answers that open with the name make it pick the resident at its first
#   token, where it rarely copies (section 6's control group and its probe).
# * A fact memorised in one fixed sentence is completed from its prefix but is hard to extract by
#   a question (*Physics of Language Models 3.1*): varied phrasings in pretraining matter.
# * Long-context recall is a skill of its own, and it rests on another: **copying** from the
#   context. The induction probe diagnosed that the tiny model cannot copy an arbitrary sequence
#   (section 8.1; the copying of section 6 picks one of the residents' names, tokens it knows
#   well, after words that announce a name), a copy-only run showed the probe can say "yes"
#   (8.2), and the long stage, with either loss, learnt the answer's form but recalled at chance
#   (8.3). SFT elicits skills; it did not create this one within the chapter's budget.
# * Evaluation is part of the method: exact graders named by the caller, greedy answers in
#   batches, and the share of answers that stop.
#
# | module | what this chapter exported |
# |---|---|
# | `spongebob.evaluate` | `grade_fact`, `grade_number`, `parse_r1`, `is_well_formed_r1`, `R1_TAGS`, `GRADERS`, `grader_named`, `grade_file`, `answer_chats`, `EvalReport`, `evaluate_file`, `EVAL_SETS`, `evaluate_sets`, `FACT_ERROR_KINDS`, `fact_error_kinds`, `likeliest_continuation`, `wilson` |
# | `spongebob.sft` | `ReplayMix`, `last_reply_targets`, `LastReplyOnly`, `RepeatedSpans`, `SFT_PRESETS`, `sft_config`, `sft_options`, `sft_loader`, `open_chat_data`, `sft`, `sft_checkpoint` |
#
# Next: [08 · Distillation](08_distill.ipynb) starts from the SFT checkpoint and teaches the model
# to reason in `<think>...</think>` before it answers.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub to complete and a check cell that says "not attempted yet" until you do.
# Solutions: `notebooks/solutions/07_sft_solutions.ipynb`.
#
# **1 (lab; predict, then measure). How much should replay weigh?** A replay batch (4 windows of
# 512 tokens) trains every one of its positions, a chat batch only its replies, so in the tiny
# recipe the text gets most of each step's loss weight (exercise 2 computes how much).
# `replay_weight` scales the replay targets' weight. Predict, before you run anything: after 100
# steps from the pretrained model, does `replay_weight=0.1` give a higher, similar or lower loss
# on pretraining text (section 6's `text_loss` probe) than weight 1? And on the chats
# (`chat_loss`)? Write `replay_weight_run(weight)`: fine-tune with `sft_checkpoint` (the tiny
# recipe with `max_steps=100`, the options of `sft_options("tiny", replay_weight=weight)`, a
# folder of its own per weight; pass the prepared folders of section 6's runs as `source` and
# `replay_source` so nothing is tokenised again) and return `{name: probe(model)}` for the two
# loss probes of section 6. About a minute for both weights.


# %%
def replay_weight_run(weight: float) -> dict[str, float]:
    raise NotImplementedError


# %%
try:
    lab = {weight: replay_weight_run(weight) for weight in (1.0, 0.1)}
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    for weight, probes in lab.items():
        assert {"chat_loss", "text_loss"} <= set(probes), f"Exercise 1: got keys {set(probes)}"
        print(f"replay weight {weight}: chat loss {probes['chat_loss']:.3f}, "
              f"text loss {probes['text_loss']:.3f}")  # fmt: skip
    print("Exercise 1: measured; compare with your prediction (the solutions discuss one run)")

# %% [markdown]
# **2 (easy; predict, then verify). Whose step is it?** In one step of the tiny recipe (8 chats
# and 4 replay windows of 512 tokens), what share of the loss's weight falls on the *chat*
# tokens: about a half, a quarter or a tenth? Write down your guess. Then write `chat_share(chat_y,
# replay_y, replay_weight)`: the chat tokens' share of the step's total weight (targets `-100`
# weigh nothing, replay targets weigh `replay_weight`), and run the check on real batches.


# %%
def chat_share(chat_y: torch.Tensor, replay_y: torch.Tensor, replay_weight: float = 1.0) -> float:
    raise NotImplementedError


# %%
try:
    replay_data = PreparedData(artifacts_dir("runs", "sft-tiny", "replay", "data"))
    n_chats, n_windows = sft_config("tiny").batch_size, sft_options("tiny")["replay_batch_size"]
    cy = ChatLoader(chats, n_chats, seed=0).batch_of(range(n_chats))[1]  # one step of the recipe
    ry = PackedLoader(replay_data, 512, n_windows, seed=0).batch_of(range(n_windows))[1]
    share = chat_share(cy, ry)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    hint = "Hint: count targets != -100 in each batch; the replay ones weigh replay_weight each"
    want = trained_tokens(cy) / (trained_tokens(cy) + trained_tokens(ry))
    assert abs(share - want.item()) < 1e-6, f"Exercise 2: {share} != {want.item()}. {hint}"
    share_01 = chat_share(cy, ry, 0.1)
    want_01 = (want / (want + 0.1 * (1 - want))).item()
    assert abs(share_01 - want_01) < 1e-6, f"Exercise 2, weight 0.1: {share_01}. {hint}"
    print(f"chat share of a step: {share:.1%} (replay weight 1), "
          f"{share_01:.1%} (replay weight 0.1)")  # fmt: skip
    print("Exercise 2: correct")

# %% [markdown]
# **3 (medium). Trim a history by whole turns.** A chat history is a list of messages with their
# token counts `counts` (the last one is the new user turn). Write `first_kept(counts, budget)`:
# the index of the first message to keep so that the kept messages fit `budget` tokens, dropping
# whole exchanges (a user turn and its reply, two messages) from the front, and always keeping
# the last message; raise `ValueError` when the last message alone does not fit.


# %%
def first_kept(counts: list[int], budget: int) -> int:
    raise NotImplementedError


# %%
try:
    got = [first_kept([5, 5, 5, 5, 3], b) for b in (23, 22, 3)] + [first_kept([9, 1, 1, 1, 2], 5)]
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    assert got == [0, 2, 4, 2], (
        f"Exercise 3: got {got}, want [0, 2, 4, 2]. Hint: start at 0 and move the start 2 "
        "messages on (a whole exchange) while the kept counts exceed the budget"
    )
    try:
        first_kept([1, 1, 9], 5)
        raise AssertionError("Exercise 3: the last message alone does not fit: raise ValueError")
    except ValueError:
        pass
    print("Exercise 3: correct")

# %% [markdown]
# **4 (harder; predict, then verify). Does the system prompt matter?** Most SFT chats used the
# course's default system prompt (an English sentence; one chat in ten carries one of their
# own). Predict: with the system prompt `"You are a helpful assistant."`, will the accuracy on held-out questions fall a lot, a little,
# or not at all? Write `accuracy_with_system(model, system_prompt, n)`: the accuracy on the first
# `n` questions of `eval_facts.jsonl`, answered greedily with that system prompt. Verify.


# %%
def accuracy_with_system(model, system_prompt: str, n: int = 64) -> float:
    raise NotImplementedError


# %%
try:
    default = accuracy_with_system(chat_model, tok.default_system_prompt, 64)
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    same = evaluate_file(chat_model, tok, world / "eval_facts.jsonl", "fact", limit=64).accuracy
    assert abs(default - same) < 1e-9, (
        f"Exercise 4: {default:.3f} with the default prompt, evaluate_file gives {same:.3f}. "
        "Hint: read the first n lines of eval_facts.jsonl, put {'role': 'system', ...} before "
        "their messages, answer them with answer_chats and grade each answer with grade_fact"
    )
    other = accuracy_with_system(chat_model, "You are a helpful assistant.", 64)
    assert 0.0 <= other <= 1.0, f"Exercise 4: an accuracy is a fraction, got {other}"
    print(f"default system prompt {default:.0%}, another one {other:.0%}")
    print("Exercise 4: correct")
