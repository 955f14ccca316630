# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Distillation: teach the model to think before it answers
#
# **Fine-tune the chat model on a teacher's worked solutions, written as
# `<think>...</think><answer>...</answer>`, with extra weight on the tags that hold the format
# together; put that weight where it belongs with either tokenizer; measure what the model learns
# and what it forgets.**
#
# Runs in about 9 minutes on a laptop CPU (the distillation run takes 7 of them; a second run
# finds the checkpoint and takes about 2).
# Prerequisites: [05 · Data](05_data.ipynb) (the chat encoder and its token kinds, the loaders),
# [06 · Pretraining](06_pretrain.ipynb) (the training loop) and [07 · SFT](07_sft.ipynb) (the
# SFT stage, the graders and the evaluation harness; its checkpoint is found or re-created here).
#
# What you will build:
#
# 1. a look at R1-style reasoning data and the rules of its format;
# 2. how the four tags tokenize with the original's tokenizer (several tokens each) and with ours
#    (one token each), and why the original's tag weight lands on the wrong positions;
# 3. a weighted loss that weighs only the supervised tag positions, with both tokenizers;
# 4. the distillation stage (`spongebob.distill`): unseen arithmetic and format compliance before
#    and after, and the replay that keeps the facts SFT taught;
# 5. tag weight 1 against 10, measured during training; and a control run that tests what keeps
#    the facts.
#
# ![Distillation: the SFT model of chapter 07 is fine-tuned on worked solutions; the loss weighs the tag positions of each reply more; the distilled model answers unseen problems in the think/answer format](../book/figures/distill_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 用“教师”写好的推理过程（`<think>...</think><answer>...</answer>`）对第 7 章的对话模型做微调，即 DeepSeek-R1 式的推理蒸馏。本章比较四个标签在原项目分词器（每个标签被拆成多个词元）和本课程分词器（每个标签一个词元）下的切分，说明原项目的加权为什么会落到提示词和普通文本上；实现只对回复中标签位置加权的损失（两种分词器都正确），训练蒸馏模型，测量未见算术题的正确率与格式遵循率，以及换一种从未见过的说法后模型能否照抄题目中的数字，比较标签权重 1 与 10，并用对照实验检验蒸馏如何不丢知识：混入 SFT 对话保住回答格式，回放完整的预训练文本（其中的算式行重复多次）保住事实问答的正确率。导出模块：`spongebob.distill`。
# :::

# %% [markdown]
# ## Setup
#
# The chat encoder and loaders come from chapter 05, the training loop from chapter 06, the SFT
# stage, graders and harness from chapter 07; the embedded world holds the reasoning data
# (`r1_1024.jsonl`) and the unseen problems (`eval_arith.jsonl`).
#
# **If you edit an exported cell.** The cells marked `#| export` are copied into the `spongebob`
# package only by `make export`; until then, `from spongebob... import` keeps the old code. To
# re-export and reload from here, run `!cd .. && python tools/nbexport.py`, then restart the kernel
# (Kernel → Restart), or use `%load_ext autoreload` and `%autoreload 2` once at the top.

# %%
#| default_exp distill

# %%
import json

import matplotlib.pyplot as plt
import torch

from spongebob.checkpoint import load_model, read_checkpoint
from spongebob.data import (
    CONTEXT,
    TAG,
    ChatEncoder,
    ChatLoader,
    PackedLoader,
    PreparedData,
    prepare,
    read_jsonl,
)
from spongebob.evaluate import R1_TAGS, evaluate_file, evaluate_sets, parse_r1
from spongebob.model import IGNORE_INDEX, lm_loss
from spongebob.pretrain import open_pretraining_data, pretrained_checkpoint
from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.sft import sft_checkpoint, sft_config, sft_loader, sft_options
from spongebob.tokenizer import SPECIAL_TOKENS, train_bpe
from spongebob.train import TrainConfig, evaluate_loss, train
from spongebob.viz import plot_token_kinds
from spongebob.world import course_tokenizer, sample_dir

seed_everything(1337)

# %%
# NBVAL_IGNORE_OUTPUT
print("torch", torch.__version__, "| threads", torch.get_num_threads())

# %% [markdown]
# The SFT model of chapter 07: `sft_checkpoint` finds it in the artifact folder (or trains it
# again, with the pretrained model it needs, when it is missing: about 10 minutes).

# %%
# NBVAL_IGNORE_OUTPUT
world = sample_dir(0)
tok = course_tokenizer()
pretrained = pretrained_checkpoint(world / "pretrain.jsonl", tok,
                                   artifacts_dir("runs", "pretrain-tiny"),
                                   TrainConfig.preset("tiny", eval_every=150),
                                   progress=False)  # fmt: skip
sft_ckpt = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
                          sft_config("tiny"), init=pretrained,
                          replay_source=world / "pretrain.jsonl", **sft_options("tiny"),
                          progress=False)  # fmt: skip
chat_model = load_model(sft_ckpt).eval()
print("SFT checkpoint:", read_checkpoint(sft_ckpt)[1]["stage"], "stage,",
      read_checkpoint(sft_ckpt)[1]["step"], "steps")  # fmt: skip

# %% [markdown]
# ## 1. Reasoning data
#
# DeepSeek-R1 ([DeepSeek-AI, 2025](https://arxiv.org/abs/2501.12948)) showed that a large model
# trained with reinforcement learning to reason step by step can hand that skill to small models
# by plain supervised fine-tuning on its worked solutions: **distillation** in the R1 sense is SFT
# whose replies are a teacher's reasoning traces. The original project's `r1_1024.jsonl` holds
# such traces from a large teacher. Our embedded world writes its own: the teacher is the
# generator, which knows every answer, and writes each solution as one line per operation.
#
# Every reply has the same layout: a `<think>` block with the steps, then an `<answer>` block
# with the result alone. `parse_r1` (chapter 07) accepts exactly that layout.

# %%
r1 = [json.loads(line) for line in (world / "r1_1024.jsonl").open(encoding="utf-8")]
example = r1[1]["conversations"]
print(f"{len(r1)} reasoning chats\n")
for message in example:
    print(f"[{message['role']}]\n{message['content']}\n")
think, answer = parse_r1(example[1]["content"])
print("parse_r1 ->", repr(answer), "| the steps:", think.count("\n") + 1, "lines")

# %% [markdown]
# The held-out problems of `eval_arith.jsonl` use number combinations that never occur in
# `r1_1024.jsonl` nor in any pretraining story (the pretraining text does hold the plain
# equations, the "times tables" of every step). Before distillation the SFT model answers them
# in one sentence, as SFT taught it: the format is never right, and the grader, which then takes
# the last number of the answer, finds few right answers.

# %%
# NBVAL_IGNORE_OUTPUT
before = evaluate_sets(chat_model, tok, world, ["arith"])["arith"]
sft_facts = evaluate_sets(chat_model, tok, world, ["facts"])["facts"].accuracy
well_formed_before = sum(parse_r1(r["answer"]) is not None for r in before.records)
print(f"SFT model: {before.accuracy:.0%} correct, "
      f"{well_formed_before / len(before.records):.0%} well-formed")  # fmt: skip
for r in before.records[:3]:
    print(f"  expected {r['expected']:>3}: {r['answer']!r}")
assert well_formed_before == 0

# %% [markdown]
# ## 2. How the tags tokenize
#
# Our tokenizer has the four tags as special tokens (chapter 01): each is one id, and a tag typed
# in a message stays text (chapter 05). The original's tokenizer has no such tokens: its tags are
# spelt out in ordinary pieces. We do not ship the original's files, so we train a tokenizer in
# its layout (only `<unk>`, `<s>`, `</s>` as special tokens) on the same world text.

# %%
texts = [json.loads(line)["text"] for line in (world / "pretrain.jsonl").open(encoding="utf-8")]
texts += [c["conversations"][1]["content"] for c in r1]
orig_tok = train_bpe(texts, vocab_size=tok.vocab_size, special_tokens=SPECIAL_TOKENS)
for name, t in [("course", tok), ("original layout", orig_tok)]:
    pieces = {tag: [t.id_to_token(i) for i in t.encode(tag)] for tag in R1_TAGS}
    print(f"{name:16s}", "  ".join(f"{tag} -> {p}" for tag, p in pieces.items()))

# %% [markdown]
# The original multiplies the loss of the tag tokens by 10 so that the model learns the format
# firmly. It finds "the tag tokens" by their ids: it encodes the four tags, collects the ids of
# their pieces, and raises the weight of **every position whose id is in that set**. With
# several pieces per tag, that set holds pieces such as `<`, `>` or `</` that ordinary text uses
# too, and the rule looks at prompt positions as well as reply positions (SEED.md's defect 5; see
# the appendix {doc}`../book/defects`). Here is that rule applied to a chat whose user message
# mentions a tag and compares two numbers:

# %%
question = "Is 7 < 9? Put your <think> steps first."
reply = "<think>\n9 - 7 = 2\nSo 7 is smaller.\n</think>\n<answer>\nyes\n</answer>"
chat = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]


def original_rule(t, ids):
    """The original's weights: 10 wherever the id is one of the tags' pieces (prompt included)."""
    tag_ids = {i for tag in R1_TAGS for i in t.encode(tag)}
    return [10.0 if i in tag_ids else 1.0 for i in ids]


for name, t in [("course", tok), ("original layout", orig_tok)]:
    ids, kinds = ChatEncoder(t).encode(chat)
    weights = original_rule(t, ids)
    hits = [(t.id_to_token(i), k) for i, k, w in zip(ids, kinds, weights) if w == 10]
    in_prompt = sum(k == CONTEXT for _, k in hits)
    print(f"{name:16s} original rule weights {len(hits):2d} positions, {in_prompt} in the prompt,"
          f" {sum(k == TAG for _, k in hits)} of them tag pieces in the reply")  # fmt: skip
    print("                 ", [p for p, _ in hits])

# %% [markdown]
# With our tokenizer the rule is harmless (a tag's id cannot come from text), but with the
# original's it weighs pieces of the user's words and of every `<`, `>` and `</` in the reply.
# In the original's training the prompt positions had a loss mask of 0 before the weights were
# set, so those positions became trained targets with weight 10: the model was pushed to predict
# the user's text.
#
# Our rule works on **kinds**, not ids: `ChatEncoder` (chapter 05) already marks each reasoning
# tag *inside a reply* as `TAG` while it encodes the reply, one id with our tokenizer, all of its
# pieces with the original's. The loader turns the kinds into weights. The picture shows both
# tokenizers on the chat above (grey: context, not trained; green: trained; orange: a tag).

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 1, figsize=(14, 6.2), dpi=90)
for ax, (name, t) in zip(axes, [("course", tok), ("original-layout", orig_tok)]):
    ids, kinds = ChatEncoder(t, system_prompt="").encode(chat)
    pieces = [t.decode([i]) for i in ids]
    n_tag = sum(k == TAG for k in kinds)
    plot_token_kinds(pieces, kinds, title=f"{name} tokenizer: {n_tag} tag positions", per_row=24,
                     ax=ax)  # fmt: skip
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. A loss that weighs the tags
#
# `ChatLoader(..., tag_weight=10)` (chapter 05) gives every batch a weight tensor `w`: 10 on the
# targets whose kind is `TAG`, 1 elsewhere. The model's loss (chapter 04) is
#
# $$\mathcal{L} = \frac{\sum_i w_i \, \mathrm{CE}_i}{\sum_i w_i}$$
#
# over the trained positions `i`. That is the original's normalisation: LLM_SpongeBob's
# `distill.py` writes the 10s into its loss mask and then divides by the mask's sum. MiniMind
# upstream, which learners will meet too, takes the mask's sum *before* writing the 10s, so it
# divides the weighted sum by the unweighted count of trained positions: its loss grows with the
# weight instead of staying a weighted mean. Below, our loss is checked against a direct
# computation on a real batch of reasoning chats, for both tokenizers, and we measure what share
# of the loss's *weight* the tags receive (the printed lines: tag targets among the trained ones,
# and their share of the weight). A share of the weight is not a share of the gradient: once the
# tags are predicted, their loss and its gradient are near zero whatever their weight.

# %%
r1_sample = artifacts_dir("runs", "distill-demo")
shares = {}
for name, t in [("course", tok), ("original layout", orig_tok)]:
    prepare(world / "r1_1024.jsonl", t, r1_sample / name.replace(" ", "-"), max_seq_len=256)
    data = PreparedData(r1_sample / name.replace(" ", "-"))
    x, y, w = ChatLoader(data, 8, seed=0, tag_weight=10.0).batch_of(range(8))
    logits = chat_model(x).logits if t is tok else torch.randn(*x.shape, t.vocab_size)
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
    )
    counted = (y.flatten() != IGNORE_INDEX).float() * w.flatten()
    direct = (counted * ce).sum() / counted.sum()
    assert torch.allclose(lm_loss(logits, y, w), direct, atol=1e-6)
    is_tag = (w > 1) & (y != IGNORE_INDEX)
    shares[name] = (w * is_tag).sum().item() / (w * (y != IGNORE_INDEX)).sum().item()
    print(f"{name:16s} {int(is_tag.sum()):3d} tag targets of {int((y != IGNORE_INDEX).sum())}"
          f" trained, tags' share of the weight: {shares[name]:.0%}")  # fmt: skip

# %% [markdown]
# With the original's tokenizer each tag is several targets, so the same weight 10 hands the tags
# an even larger share. (The random logits in the second row only exercise the loss: the course
# model has a different vocabulary.) The tests in `tests/test_distill.py` check the same equality
# and the positions, including a user turn that contains tag-like text, for both tokenizers.

# %% [markdown]
# ## 4. The distillation stage
#
# A distillation run *is* an SFT run (chapter 07's `sft`, on chapter 06's loop) on the reasoning
# chats with one option set: `tag_weight`. The module adds the stage's recipes and the
# find-or-train function that later code (the pipeline, `spongebob train distill`) calls, and a
# diagnosis of badly formed replies.


# %%
#| export
"""Reasoning distillation (R1 style): SFT on a teacher's worked solutions, tags weighted.

Defined in 08_distill. A distillation run is an SFT run (``spongebob.sft.sft``) on chats whose
replies are ``<think>...</think>\\n<answer>...</answer>``, with the loss of the reasoning-tag
targets multiplied by ``tag_weight`` (10 in the original). The tags are found inside the replies
only, by ``spongebob.data.ChatEncoder``: one id each with the course tokenizer, all of their
pieces with a tokenizer that spells them out (the original's); prompts are never weighted. The
tiny recipe also replays the pretraining text with its equation lines repeated
(:func:`drilled_text`): the steps of a reasoning trace must be facts the student knows, and the
text keeps the facts that SFT taught the model to answer::

    ckpt = distill_checkpoint("r1_1024.jsonl", tok, out_dir, distill_config("tiny"),
                              init=sft_checkpoint, replay_source="pretrain.jsonl",
                              mix_source="sft_512.jsonl", **distill_options("tiny"))
"""

import random
import re
from pathlib import Path
from typing import Any

from spongebob.evaluate import R1_TAGS
from spongebob.files import iter_jsonl, write_jsonl
from spongebob.sft import sft, sft_checkpoint
from spongebob.train import TrainConfig, TrainResult

# The recipes: TrainConfig fields ("train") and the data options of `distill`. The reasoning chats
# of the embedded world are at most 150 tokens; the original trains at 1024 (SEED.md). The tiny
# recipe is measured in 08_distill.
DISTILL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(train=dict(lr=2e-3, warmup_steps=20, max_steps=1500, batch_size=16, seq_len=256,
                            grad_accum=2, log_every=50, eval_every=250),
                 options=dict(tag_weight=10.0, replay=0.5, replay_batch_size=8,
                              random_windows=True, mix_chats=600, drill_copies=32,
                              length_window=100)),
    "seed": dict(train=dict(lr=5e-4, warmup_steps=100, max_steps=None, batch_size=16,
                            seq_len=1024, grad_accum=16, log_every=20, save_every=500,
                            compile=True),
                 options=dict(tag_weight=10.0, replay=0.0)),
}  # fmt: skip


# %%
#| export
def _preset(name: str) -> dict[str, Any]:
    if name not in DISTILL_PRESETS:
        raise ValueError(
            f"unknown distill preset {name!r}; choose one of {sorted(DISTILL_PRESETS)}"
        )
    return DISTILL_PRESETS[name]


def distill_config(preset: str, **overrides: Any) -> TrainConfig:
    """The ``TrainConfig`` of a distillation preset (``tiny``, ``seed``) with ``overrides``.
    Defined in 08_distill."""
    return TrainConfig(**{**_preset(preset)["train"], **overrides})


def distill_options(preset: str, **overrides: Any) -> dict[str, Any]:
    """The data options of a distillation preset (``tag_weight``, ``replay``...), for `distill`
    and `distill_checkpoint`. Defined in 08_distill."""
    return {**_preset(preset)["options"], **overrides}


# %% [markdown]
# `distill` and `distill_checkpoint` are `sft` and `sft_checkpoint` with the stage named
# `distill`, a tag weight of 10 and no replay unless asked for: the checkpoint records them, so a
# distilled model can never be mistaken for an SFT one, and a finished run of the same recipe
# (same data, same SFT model, same options) is found instead of retrained.


# %%
#| export
def distill(
    source: str | Path,
    tokenizer,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    init: str | Path,
    tag_weight: float = 10.0,
    replay: float = 0.0,
    mix_source: str | Path | None = None,
    mix_chats: int = 0,
    drill_copies: int = 0,
    **kw: Any,
) -> TrainResult:
    """Distil the reasoning chats of ``source`` into the model of checkpoint ``init`` (usually
    the SFT model). Defined in 08_distill.

    ``tag_weight`` multiplies the loss of the reasoning-tag targets of every reply; ``mix_chats``
    chats drawn from ``mix_source`` (SFT's chats) are shuffled in (:func:`write_chat_mix`, into
    ``out_dir/chats.jsonl``) so the student keeps answering plain questions plainly; with
    ``drill_copies`` > 0 the replayed pretraining text has its equation lines written that many
    more times (:func:`drilled_text`, into ``out_dir/replay_text.jsonl``); ``replay`` (a share of
    pretraining batches, with ``replay_source``) and the other ``kw`` are those of
    ``spongebob.sft.sft`` (``replay_source``, ``progress``, ``on_log``, ``resume``...).
    """
    if tag_weight <= 0:
        raise ValueError(f"tag_weight must be > 0, got {tag_weight}")
    source = _mixed(source, out_dir, mix_source, mix_chats, cfg.seed)
    kw = _drilled(kw, out_dir, replay, drill_copies, cfg.seed)
    return sft(source, tokenizer, out_dir, cfg, init=init, tag_weight=tag_weight, replay=replay,
               stage="distill", **kw)  # fmt: skip


def _mixed(source, out_dir, mix_source, mix_chats: int, seed: int):
    if mix_chats <= 0:
        return source
    if mix_source is None:
        raise ValueError("mix_chats > 0 needs mix_source (a chat JSONL file to draw them from)")
    parts = [(source, None), (mix_source, mix_chats)]
    return write_chat_mix(Path(out_dir) / "chats.jsonl", parts, seed=seed)


def _drilled(kw: dict, out_dir, replay: float, drill_copies: int, seed: int) -> dict:
    """``kw`` with its ``replay_source`` replaced by the drilled text (when there is replay)."""
    if drill_copies < 0:
        raise ValueError(f"drill_copies must be >= 0, got {drill_copies}")
    if drill_copies == 0 or replay <= 0:
        return kw
    src = kw.get("replay_source")
    if src is None or not Path(src).is_file():
        raise ValueError(f"drill_copies > 0 needs replay_source to be a pretraining JSONL file, "
                         f"got {src}")  # fmt: skip
    out = drilled_text(src, Path(out_dir) / "replay_text.jsonl", drill_copies, seed=seed)
    return {**kw, "replay_source": out}


# %%
#| export
def distill_checkpoint(
    source: str | Path,
    tokenizer,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    init: str | Path,
    tag_weight: float = 10.0,
    replay: float = 0.0,
    mix_source: str | Path | None = None,
    mix_chats: int = 0,
    drill_copies: int = 0,
    **kw: Any,
) -> Path:
    """``out_dir/last.pt`` when it holds a finished distillation of this recipe, else run
    :func:`distill` first (the mixture of ``mix_chats`` and the drilled replay text are part of
    the recipe: their bytes). Defined in 08_distill."""
    source = _mixed(source, out_dir, mix_source, mix_chats, cfg.seed)
    kw = _drilled(kw, out_dir, replay, drill_copies, cfg.seed)
    return sft_checkpoint(source, tokenizer, out_dir, cfg, init=init, tag_weight=tag_weight,
                          replay=replay, stage="distill", **kw)  # fmt: skip


# %% [markdown]
# Format compliance is a yes-or-no grade (`parse_r1`), but when a reply fails it helps to know
# *how*. `format_problem` names the first rule a reply breaks, in a fixed order, and returns
# `None` exactly when `parse_r1` accepts the reply (a test checks that on many generated strings).


# %%
#| export
def format_problem(text: str) -> str | None:
    """The first rule of the think/answer format that ``text`` breaks, or None when
    ``spongebob.evaluate.parse_r1`` accepts it. Defined in 08_distill.

    The rules, in order: each tag exactly once; nothing but spaces before ``<think>``; the tags in
    order; nothing but spaces between ``</think>`` and ``<answer>`` and after ``</answer>``; a
    non-empty answer.
    """
    for tag in R1_TAGS:
        if text.count(tag) != 1:
            return f"{tag} appears {text.count(tag)} times"
    starts = [text.index(tag) for tag in R1_TAGS]
    ends = [s + len(tag) for s, tag in zip(starts, R1_TAGS)]
    if starts != sorted(starts):
        return "the tags are out of order"
    if text[: starts[0]].strip():
        return "text before <think>"
    if text[ends[1] : starts[2]].strip():
        return "text between </think> and <answer>"
    if text[ends[3] :].strip():
        return "text after </answer>"
    if not text[ends[2] : starts[3]].strip():
        return "an empty answer"
    return None


# %%
for text in [reply, "The answer is 5.", reply.replace("</think>\n", "</think>\nhm\n"),
             reply + " ok", "<think>\n</think>\n<answer>\n \n</answer>"]:  # fmt: skip
    print(f"{format_problem(text)!s:40} <- {text[:40]!r}")
    assert (format_problem(text) is None) == (parse_r1(text) is not None)

# %% [markdown]
# ### The student must know its times tables
#
# The first recipe we measured was the plain one: distil the reasoning chats alone, as the
# original does. It learns the format at once, but the answers lag far behind the course's
# target, even after 1,500 steps; replaying the whole pretraining text instead does worse.
# `docs/benchmarks.md` has the table of every recipe tried, and `python bench/distill_recipes.py`
# re-measures each row.
#
# Reading the wrong answers shows where the plain run fails. After a few hundred steps most errors were
# *copying* errors (the reasoning restates the problem with a wrong number); after 1,500 steps
# there were none of those left: every wrong answer had a **wrong equation** in its reasoning,
# such as `22 - 3 = 18`. The held-out problems are held out by their numbers, so their equations
# appear in no reasoning chat; the pretraining text has each of them twice, in lines of plain
# equations. Asked `22 - 3 =` right after `<s>`, the pretrained model completes only about a
# quarter of such equations (measured on a sample, docs/benchmarks.md). A teacher's trace is only as good as the student's ability to do
# each of its steps: the steps must be facts the student already knows.
#
# So the course's recipe replays, in half of the batches, the part of the pretraining text that
# the reasoning steps rely on: the lines that are nothing but equations. `drill_lines` finds them
# (and writes them to a file of their own); the replay machinery of chapter 07 (random windows
# of 256 tokens) does the rest.


# %%
#| export
EQUATION_LINE = re.compile(r"\s*(?:\d+ [-+*/] \d+ = -?\d+[.,;]?\s*)+")


def _is_drill_line(rec: object, pattern: re.Pattern) -> bool:
    return isinstance(rec, dict) and pattern.fullmatch(str(rec.get("text", ""))) is not None


def drill_lines(source: str | Path, out: str | Path, pattern: re.Pattern = EQUATION_LINE) -> Path:
    """Write the lines of the pretraining JSONL ``source`` whose ``text`` ``pattern`` matches
    whole (by default: nothing but equations such as ``8 + 5 = 13.``) to ``out``, atomically.

    Defined in 08_distill. The result is a pretraining file (the drill lines alone: a replay
    source that keeps no facts, see :func:`drilled_text`); reused when it is newer than
    ``source``. Raises ``ValueError`` when no line matches (replaying nothing would be a silent
    no-op).
    """
    source, out = Path(source), Path(out)
    if out.exists() and out.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return out
    kept = (rec for _, rec in iter_jsonl(source) if _is_drill_line(rec, pattern))
    out.parent.mkdir(parents=True, exist_ok=True)
    if write_jsonl(out, kept) == 0:
        out.unlink()
        raise ValueError(f"{source}: no line's text is a drill line (pattern {pattern.pattern!r})")
    return out


# %% [markdown]
# Replaying the drill lines *alone* has a price that the first version of this chapter paid: it
# teaches the equations but lets everything else that pretraining stored drift for 1,500 steps of
# reasoning chats, and the facts about the residents were lost (section 6 has the figures). The
# cure is the one chapter 07 measured for SFT: keep the *whole* pretraining text in the replay.
# The equations are a small share of that text (printed below), too few to drill, so
# `drilled_text` writes the text with its drill lines repeated `copies` more times, shuffled (32
# in the tiny recipe; with 8, two runs that differed only in the order of the lines landed far
# apart in arithmetic, docs/benchmarks.md). `distill` does it itself with the `drill_copies`
# option, from the pretraining file given as `replay_source`.


# %%
#| export
def drilled_text(source: str | Path, out: str | Path, copies: int, *, seed: int = 0,
                 pattern: re.Pattern = EQUATION_LINE) -> Path:  # fmt: skip
    """Write every line of the pretraining JSONL ``source`` plus ``copies`` more copies of its
    drill lines (``pattern`` matches the whole ``text``, as in :func:`drill_lines`), shuffled with
    ``random.Random(seed)``, to ``out``, atomically. Defined in 08_distill.

    The same inputs give the same bytes (a finished run on them is found again). Raises
    ``ValueError`` when ``copies`` < 1 or no line is a drill line.
    """
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    lines = [rec for _, rec in iter_jsonl(source)]
    drills = [rec for rec in lines if _is_drill_line(rec, pattern)]
    if not drills:
        raise ValueError(f"{source}: no line's text is a drill line (pattern {pattern.pattern!r})")
    lines += drills * copies
    random.Random(seed).shuffle(lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, lines)
    return out


# %%
copies, share = distill_options("tiny")["drill_copies"], {}
for text in texts[: len(texts) - len(r1)]:  # the pretraining lines (section 2 added r1's replies)
    drill_line = bool(EQUATION_LINE.fullmatch(text))
    share[drill_line] = share.get(drill_line, 0) + len(text)
in_text = share[True] / (share[True] + share[False])
in_replay = (1 + copies) * share[True] / ((1 + copies) * share[True] + share[False])
print(f"equations: {in_text:.1%} of the pretraining text's characters, {in_replay:.1%} of the "
      f"replayed text with {copies} more copies of the drill lines")  # fmt: skip
assert in_text < 0.1 and 0.5 < in_replay < 0.75

# %% [markdown]
# Distillation should not erase what SFT taught. A model trained only on reasoning chats answers
# *every* question with a reasoning block, fact questions included. `write_chat_mix` writes one
# chat file from several: all of the reasoning chats plus a sample of SFT's own chats, shuffled
# together, so that the student keeps seeing questions that need no reasoning. `distill` does it
# itself when given `mix_source` and `mix_chats` (how many SFT chats).


# %%
#| export
def write_chat_mix(
    out: str | Path, parts: list[tuple[str | Path, int | None]], seed: int = 0
) -> Path:
    """Write the chat lines of several JSONL files, shuffled together, to ``out`` (atomically).

    Defined in 08_distill. ``parts``: ``(path, n)`` pairs; ``n`` lines are drawn at random (seeded)
    from that file, or all of them when ``n`` is None. The same inputs give the same bytes, so a
    finished run on the mixture is found again. Raises ``ValueError`` naming the file when it holds
    fewer than ``n`` lines.
    """
    rng = random.Random(seed)
    lines: list[dict] = []
    for path, n in parts:
        recs = [rec for _, rec in iter_jsonl(path)]
        if n is not None and n > len(recs):
            raise ValueError(f"{path}: asked for {n} lines, it holds {len(recs)}")
        lines += recs if n is None else rng.sample(recs, n)
    rng.shuffle(lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, lines)
    return out


# %% [markdown]
# A reasoning trace is only as good as its first line: it restates the problem, and every later
# step computes with those numbers. `reasoning_numbers` reads the integers of that first line;
# a reply *copies the question* when they are the question's first two numbers, in order. On the
# world's own templates that is easy to do by pattern; `eval_arith_reworded.jsonl` asks the same
# held-out problems with wordings, people and items that no training file contains.


# %%
#| export
NUMBER = re.compile(r"-?\d+")


def reasoning_numbers(text: str) -> list[int]:
    """The integers, in order, of the first non-empty line after ``<think>`` in a reply (of the
    reply itself when it has no ``<think>``). Defined in 08_distill."""
    think = text.split(R1_TAGS[0], 1)[-1]
    first = next((line for line in think.splitlines() if line.strip()), "")
    return [int(n) for n in NUMBER.findall(first)]


def copies_question(text: str, numbers: list[int]) -> bool:
    """True when the reasoning's first line starts from the question's first two ``numbers``
    (in order). Defined in 08_distill."""
    return reasoning_numbers(text)[:2] == list(numbers)[:2]


# %%
example = "<think>\nWe start with 7 lanterns and add 20 more.\n7 + 20 = 27\n</think>"
print(
    reasoning_numbers(example), copies_question(example, [7, 20]), copies_question(example, [20, 7])
)
assert reasoning_numbers(example) == [7, 20] and not copies_question(example, [11, 8])


# %%
drill = drill_lines(world / "pretrain.jsonl", artifacts_dir("runs", "distill-tiny") / "drill.jsonl")
drill_texts = [json.loads(line)["text"] for line in drill.open(encoding="utf-8")]
print(f"{len(drill_texts)} drill lines of {len(texts) - len(r1)} pretraining lines, e.g.")
print(" ", drill_texts[0])
assert all(EQUATION_LINE.fullmatch(t) for t in drill_texts) and len(drill_texts) > 100

# %% [markdown]
# Now the run: the tiny recipe trains 1,500 steps, each one batch of 16 reasoning chats and one
# batch of 8 windows of the drilled pretraining text, at lr 2e-3 with tag weight 10, starting
# from the SFT model. Its chat batches are grouped by length, as chapter 07's are
# (`length_window=100`, chapter 05): the reasoning chats and the SFT chats mixed in differ in
# length, and batches of random chats are about a quarter padding (docs/benchmarks.md measures
# the saving and that the result holds). The run's time here is printed under it.


# %% [markdown]
# The run's single training loss mixes three kinds of batches. Three fixed probes, logged every
# 250 steps into the run's `metrics.jsonl` (chapter 07's `train(probes=...)`), keep them apart:
# the loss on reasoning chats, on SFT chats, and on the drill lines.

# %%
# NBVAL_IGNORE_OUTPUT
drill_data = open_pretraining_data(drill, tok, artifacts_dir("runs", "distill-tiny", "drill"))
sft_chats = PreparedData(artifacts_dir("runs", "sft-tiny", "data"))
r1_chats = PreparedData(r1_sample / "course")
drill_windows = iter(PackedLoader(drill_data, 256, 8, shuffle=False))
probe_batches = {  # two batches of each kind of text
    "reasoning_loss": [ChatLoader(r1_chats, 16, seed=0).batch_of(range(k, k + 16)) for k in (0, 16)],
    "chat_loss": [ChatLoader(sft_chats, 16, seed=0).batch_of(range(k, k + 16)) for k in (0, 16)],
    "drill_loss": [next(drill_windows) for _ in range(2)],
}  # fmt: skip
PROBES = {name: (lambda model, b=batches: evaluate_loss(model, b))
          for name, batches in probe_batches.items()}  # fmt: skip
AT_START = {name: probe(chat_model) for name, probe in PROBES.items()}
print("the SFT model:", {k: round(v, 3) for k, v in AT_START.items()})

# %%
# NBVAL_IGNORE_OUTPUT
distilled = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
                               distill_config("tiny"), init=sft_ckpt,
                               replay_source=world / "pretrain.jsonl",
                               mix_source=world / "sft_512.jsonl",
                               **distill_options("tiny"), progress=False, probes=PROBES)  # fmt: skip
reasoner = load_model(distilled).eval()
log = [json.loads(line) for line in open(Path(distilled).parent / "metrics.jsonl")]
minutes = max(r.get("elapsed", 0) for r in log) / 60
print(
    f"{len(log)} log records, read from the run's metrics.jsonl; "
    f"the run trained for {minutes:.1f} minutes"
)

# %% tags=["hide-input"]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.2), dpi=90)
a1.plot(*zip(*[(r["step"], r["loss"]) for r in log if "loss" in r]), lw=1)
a1.set(xlabel="optimizer step", ylabel="training loss (weighted, mixed batches)", yscale="log",
       title="The distillation run")  # fmt: skip
for name, label in [("reasoning_loss", "reasoning chats"), ("chat_loss", "SFT chats"),
                    ("drill_loss", "drill lines")]:  # fmt: skip
    points = [(0, AT_START[name])] + [(r["step"], r[name]) for r in log if name in r]
    a2.plot(*zip(*points), "o-", ms=3, label=label)
a2.set(xlabel="optimizer step", ylabel="loss (unweighted)", yscale="log",
       title="Each kind of text apart (probes)")  # fmt: skip
a2.legend(fontsize=8)
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
end = {name: [r[name] for r in log if name in r][-1] for name in PROBES}
print("after the run:", {k: f"{AT_START[k]:.2f} -> {v:.2f}" for k, v in end.items()})
assert end["reasoning_loss"] < 0.05 < AT_START["reasoning_loss"] and end["chat_loss"] < 0.5
assert end["drill_loss"] < AT_START["drill_loss"]

# %% [markdown]
# The reasoning chats' loss falls from the SFT model's (which has never seen a `<think>` tag) to
# almost nothing: the student reproduces the training traces. The drill lines are learnt as well,
# and the loss on SFT's own chats stays low (the printed line gives both ends): the 600 mixed-in
# chats keep the plain replies. Keep that in mind for the next cell's numbers: a low loss on
# the chats seen in training says nothing yet about questions on residents no chat mentions.

# %%
# NBVAL_IGNORE_OUTPUT
after = evaluate_sets(reasoner, tok, world, ["arith", "arith_reworded", "facts"])
problems = [format_problem(r["answer"]) for r in after["arith"].records]
compliance = sum(p is None for p in problems) / len(problems)
numbers = [r["numbers"] for r in read_jsonl(world / "eval_arith_reworded.jsonl")]
copied = {k: sum(copies_question(r["answer"], n) for r, n in zip(after[k].records, numbers))
          / len(numbers) for k in ("arith", "arith_reworded")}  # fmt: skip
print(f"unseen arithmetic: {after['arith'].accuracy:.1%} correct (before {before.accuracy:.0%}),"
      f" {compliance:.1%} well-formed (before 0%), first line copies the question's numbers "
      f"{copied['arith']:.1%}")  # fmt: skip
print(f"the same problems reworded: {after['arith_reworded'].accuracy:.1%} correct, numbers "
      f"copied {copied['arith_reworded']:.1%}")  # fmt: skip
print(f"held-out fact questions: {after['facts'].accuracy:.1%} (SFT model: {sft_facts:.1%}), "
      f"{sum('<think>' in r['answer'] for r in after['facts'].records)} of "
      f"{len(after['facts'].records)} answered with a reasoning block")  # fmt: skip
# the target is 90 %; from SFT models trained on today's answers, three runs of this recipe (SFT
# loader seeds 1337, 1 and 2) measured 92.0-94.5 %, and with the earlier answers runs spread over
# 74.5-96.5 % (machines and seeds; docs/benchmarks.md): the assert leaves room for rounding
assert compliance >= 0.95 and after["arith"].accuracy >= 0.8  # measured: printed above
assert after["facts"].accuracy >= 0.4  # the course's target for facts after distillation

# %%
# NBVAL_IGNORE_OUTPUT
for r in after["arith"].records[:4]:
    steps, answer = parse_r1(r["answer"])
    print(f"{'ok ' if r['correct'] else 'BAD'} expected {r['expected']:>3}, answered {answer:>3}"
          f" | reasoning: {steps.splitlines()[-2]!r}")  # fmt: skip
print("a fact question now:", after["facts"].records[0]["answer"][:90].replace("\n", " "))

# %% [markdown]
# What the run above measures (its printed lines; `docs/benchmarks.md` keeps the earlier rows
# with their commands):
#
# * **Format** is learnt: all or nearly all replies are well-formed think/answer blocks (the
#   printed share and the assert of the cell above).
# * **Arithmetic** on the world's own templates: most answers right. Where the wrong ones go
#   wrong (a false equation, or true equations after a misread number) is exercise 2's question;
#   its solution counts them for this run. This
#   measures the *composition of drilled equations*: every equation of a held-out problem is in
#   the replayed drill lines. The ablation that removes those equations from the drill lines
#   (`python bench/distill_recipes.py --only no-eval-drill-mix600-1500`, measured on the earlier
#   recipe that replayed the drill lines alone, six minutes, so not run in this chapter;
#   docs/benchmarks.md has its table) loses some of the right answers but keeps most: most of
#   those equations also occur in pretraining stories about other problems. What
#   the student does is compose steps it has seen, not compute with numbers it never saw.
# * **The same problems reworded** (people, items and sentences no training file contains): the
#   accuracy collapses, and the first reasoning line rarely restates the question's numbers. On
#   the world's own templates the reasoning *looks* like reading the question; on a new wording
#   it shows that it was pattern-matching the templates. Reading numbers out of an unfamiliar
#   sentence is copying from the context, and chapter 07 measured how little this model copies:
#   a resident's name from the question, where its answers announce one (section 6), but no
#   arbitrary sequence (section 8's induction probe). The course's target for it is not met.
# * **Fact questions**: the 600 SFT chats shuffled into the 2,000 reasoning chats keep the
#   *format* (plain questions get plain answers, no reasoning block), and the replayed text keeps
#   the *facts*: the printed score stands beside the SFT model's, and the cell asserts the
#   course's target for it. Section 6 tests which part of the recipe does that.

# %% [markdown]
# ## 5. Tag weight 1 or 10?
#
# Does the extra weight matter? Two short runs from the same SFT model, identical except for the
# tag weight, each graded every 25 steps on 60 unseen problems: the share of well-formed replies
# and the share of right answers. The callback gets each logged record; `generate` switches the
# training model to evaluation and back by itself (chapter 04), so grading in the middle of a run
# leaves the run untouched.


# %%
# NBVAL_IGNORE_OUTPUT
def graded_run(tag_weight: float, steps: int = 150, every: int = 25, n: int = 60) -> list[tuple]:
    cfg = distill_config("tiny", max_steps=steps, warmup_steps=10, grad_accum=1, log_every=every)
    data = PreparedData(r1_sample / "course")
    model = load_model(sft_ckpt)
    points = []

    def grade(r):
        if "loss" in r and r["step"] % every == 0:
            rep = evaluate_file(model, tok, world / "eval_arith.jsonl", "number", limit=n,
                                max_new_tokens=96)  # fmt: skip
            ok = sum(format_problem(x["answer"]) is None for x in rep.records) / n
            points.append((r["step"], ok, rep.accuracy))

    loader = sft_loader(data, cfg, tag_weight=tag_weight, replay=0.0)
    train(model, loader, cfg, progress=False, on_log=grade)
    return points


curves = {w: graded_run(w) for w in (1.0, 10.0)}
for w, points in curves.items():
    print(f"tag weight {w:4.0f}:", " ".join(f"{s}:{ok:.0%}/{acc:.0%}" for s, ok, acc in points))
assert all(points[-1][1] >= 0.95 for points in curves.values())  # the format is learnt either way

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), dpi=90)
for w, points in curves.items():
    steps_, ok, acc = zip(*points)
    axes[0].plot(steps_, ok, marker="o", label=f"tag weight {w:.0f}")
    axes[1].plot(steps_, acc, marker="o", label=f"tag weight {w:.0f}")
axes[0].set(title="well-formed replies", xlabel="step", ylim=(-0.03, 1.03))
axes[1].set(title="right answers", xlabel="step", ylim=(-0.03, 1.03))
for ax in axes:
    ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Section 3 measured the tags' share of the loss's *weight*. What moves the weights is the
# gradient, so measure that directly: split the weighted loss of one batch of reasoning chats into
# its tag part and its content part (they add up to the loss), and take the gradient norm of each,
# for the SFT model (before distillation) and for the distilled one. The mean cross-entropy of
# each part says how well the model already predicts those targets.


# %%
# NBVAL_IGNORE_OUTPUT
def part_gradients(model, batch):
    """{part: (gradient norm, mean cross-entropy)} of the tag and content parts of the weighted
    loss sum(w * ce) / sum(w) on one batch: the two parts add up to the loss itself."""
    x, y, w = batch
    trained = y != IGNORE_INDEX
    parts = {"tags": trained & (w > 1), "content": trained & (w == 1)}
    out = {}
    for name, keep in parts.items():
        model.zero_grad(set_to_none=True)
        ce = torch.nn.functional.cross_entropy(
            model(x).logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE_INDEX,
            reduction="none").view_as(y)  # fmt: skip
        ((w * ce * keep).sum() / (w * trained).sum()).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        out[name] = (norm.item(), ce[keep].mean().item())
    model.zero_grad(set_to_none=True)
    return out


r1_loader = ChatLoader(PreparedData(r1_sample / "course"), 8, seed=0, tag_weight=10.0)
batch = r1_loader.batch_of(range(8))
grads = {label: part_gradients(load_model(ckpt), batch)
         for label, ckpt in [("SFT model", sft_ckpt), ("distilled", distilled)]}  # fmt: skip
for label, parts in grads.items():
    print(f"{label:10s} " + "   ".join(f"{name}: gradient norm {g:.3f}, cross-entropy {ce:.2f}"
                                       for name, (g, ce) in parts.items()))  # fmt: skip
tag_vs_content = {k: v["tags"][0] / v["content"][0] for k, v in grads.items()}
print("tag / content gradient norm:", {k: f"{v:.2f}" for k, v in tag_vs_content.items()})
assert grads["distilled"]["tags"][1] < 0.1 < grads["SFT model"]["tags"][1]
assert tag_vs_content["distilled"] < tag_vs_content["SFT model"]

# %% [markdown]
# What these runs measure (the printed lines: well-formed share / right answers, every 25
# steps): with either weight the format is learnt within about 50 steps, and right answers grow
# slowly after that. Which weight is ahead at step 150 is within the noise of 60 problems and one
# seed: on the SFT model of an earlier version of chapter 07, weight 1 was clearly ahead at step
# 150 (docs/benchmarks.md); on this one the printed lines say which. With
# single-token tags the format is the easiest part of a reply to learn, so the extra weight has
# little left to do once the tags are right: a weight of 10 gives the four tag tokens almost
# half of the loss's weight (section 3), but the gradient measured above tells the rest. Before
# distillation the SFT model has never seen a tag, their cross-entropy is high and, weighted
# by 10, they pull harder than the whole content of the replies; once they are predicted, their
# cross-entropy is near zero and so is their gradient, weight 10 or not. The
# original had more reason for the weight: its tags are several pieces each, and some of those
# pieces are ordinary text. The course keeps the original's 10 in its recipe.

# %% [markdown]
# ## 6. What distillation keeps
#
# A model distilled on reasoning chats alone answers *every* question with a reasoning block
# (the earlier version of this chapter measured no fact question right). The SFT chats mixed into
# the run fix the *format*: almost no fact question gets a reasoning block (printed in section
# 4). The *facts* are kept by the replay: section 4 claimed that the drill lines alone let
# them drift, while the whole pretraining text keeps them in view. A control tests it: two short
# runs from the SFT model, identical (the recipe's chats, mix, lr schedule and seeds, 200 steps)
# except for what is replayed, then the first 92 held-out fact questions, greedily.


# %%
# NBVAL_IGNORE_OUTPUT
def facts_after(name: str, replay_source: Path, drill_copies: int, steps: int = 200) -> float:
    ckpt = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", name),
                              distill_config("tiny", max_steps=steps, warmup_steps=10),
                              init=sft_ckpt, replay_source=replay_source,
                              mix_source=world / "sft_512.jsonl",
                              **distill_options("tiny", drill_copies=drill_copies),
                              progress=False)  # fmt: skip
    model = load_model(ckpt).eval()
    return evaluate_file(model, tok, world / "eval_facts.jsonl", "fact", limit=92).accuracy


control = {"the drill lines alone": facts_after("distill-control-drill", drill, 0),
           "the drilled text (the recipe)": facts_after("distill-control-text",
                                                        world / "pretrain.jsonl", copies)}  # fmt: skip
sft_92 = evaluate_file(chat_model, tok, world / "eval_facts.jsonl", "fact", limit=92).accuracy
print(f"the SFT model: {sft_92:.0%} of the 92 questions")
for what, acc in control.items():
    print(f"200 steps replaying {what}: {acc:.0%}")
drift, kept = control.values()
assert kept - drift >= 0.15  # measured: printed above

# %% [markdown]
# The replay decides it: with the drill lines alone, a couple of hundred steps of reasoning chats
# already cost a large share of the facts; with the whole text replayed, far more of them stay
# (the printed lines). The main run of section 4 is the long version of the second line. What no
# replay can do is make the model read a number it has not seen in that position before: the
# reworded arithmetic stays near zero in every run, and chapter 07 (section 8) measured why: this
# model cannot copy an arbitrary sequence from its context.


# %% [markdown]
# ## 7. Chat with the reasoning model
#
# `spongebob chat` shows the reasoning apart from the answer (dimmed, in the terminal), and
# `--prompt` prints only the answer, so a script gets the number alone:
#
# ```bash
# spongebob chat --checkpoint ~/.cache/spongebob/runs/distill-tiny/last.pt
# spongebob chat --checkpoint ~/.cache/spongebob/runs/distill-tiny/last.pt \
#     --prompt "Sandy has 12 shells and finds 9 more. How many shells does Sandy have now?"
# ```
#
# In the notebook, the same split by `parse_r1`:

# %%
question = [{"role": "user", "content": "Sandy has 12 shells and finds 9 more. How many shells "
                                        "does Sandy have now?"}]  # fmt: skip
from spongebob.evaluate import answer_chats  # noqa: E402

text, stopped = answer_chats(reasoner, tok, [question], max_new_tokens=96)[0]
steps, answer = parse_r1(text)
print("reasoning:\n  " + steps.replace("\n", "\n  "))
print("answer:", answer, "| ended with </s>:", stopped)
assert answer == "21"

# %% [markdown]
# ## Putting it together
#
# The whole stage, from the package; `spongebob pipeline --preset tiny` runs it after the others,
# and `spongebob train distill` from the command line:
#
# ```python
# from spongebob.distill import distill_checkpoint, distill_config, distill_options
# distilled = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
#                                distill_config("tiny"), init=sft_ckpt,
#                                replay_source=world / "pretrain.jsonl",
#                                mix_source=world / "sft_512.jsonl", **distill_options("tiny"))
# ```

# %%
from spongebob.distill import (  # noqa: F811
    distill_checkpoint,
    distill_config,
    distill_options,
)

again = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
                           distill_config("tiny"), init=sft_ckpt,
                           replay_source=world / "pretrain.jsonl",
                           mix_source=world / "sft_512.jsonl", **distill_options("tiny"))  # fmt: skip
extras = read_checkpoint(again)[1]
print("found, not retrained:", again == distilled, "| stage:", extras["stage"],
      "| tag weight:", extras["recipe"]["tag_weight"])  # fmt: skip
assert again == distilled and extras["stage"] == "distill"

# %% [markdown]
# ## Summary
#
# * R1-style distillation is SFT on a teacher's worked solutions: a `<think>` block with the steps,
#   then an `<answer>` block. The SFT model had none of the unseen problems right and never the
#   format; the distilled one gets most of them right, almost always well-formed (section 4).
# * The original weighs its tags by their ids. Its tags are several pieces each, so the weight also
#   lands on `<`, `>` and `</` in ordinary text and on prompt positions. The course finds the tags
#   by *kind*, while it encodes each reply, and weighs those positions only, with either tokenizer.
# * A reasoning trace only helps if the student can do each step: every error of the plain
#   recipe was a wrong equation, and replaying the pretraining text's equation lines during
#   distillation is what brought the accuracy near the course's target (the printed line of
#   section 4 says where this run landed). Replaying them *inside* the whole text, repeated,
#   keeps the facts as well (section 6 tests it against the equations alone).
# * With single-token tags, a weight of 10 gives four tokens about half of the loss's weight, but
#   not of its gradient once they are predicted; in short runs the two weights are within noise.
# * What looks like reading the question is pattern matching: on a wording no training file
#   uses, the reasoning no longer restates the question's numbers. Distillation need not cost
#   the facts: SFT chats mixed in keep plain answers plain, and the replayed pretraining text
#   keeps the held-out facts (sections 4 and 6).
#
# | module | what this chapter exported |
# |---|---|
# | `spongebob.distill` | `DISTILL_PRESETS`, `distill_config`, `distill_options`, `distill`, `distill_checkpoint`, `format_problem`, `write_chat_mix`, `EQUATION_LINE`, `drill_lines`, `drilled_text`, `NUMBER`, `reasoning_numbers`, `copies_question` |
#
# This is the last chapter. The appendices go on from here: {doc}`../book/gpu` trains the
# original's model (29 M parameters, which it calls 26M) on the real data with the same code, {doc}`../book/hf_export` takes a
# model to `transformers`, llama.cpp and ollama, and {doc}`../book/defects` lists what the
# original got wrong and where the course fixes it.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub to complete and a check cell that says "not attempted yet" until you do.
# Solutions: `notebooks/solutions/08_distill_solutions.ipynb`.
#
# **1 (lab; predict, then measure). Why mix SFT chats into distillation?** The tiny recipe
# shuffles 600 of SFT's plain chats into the 2,000 reasoning chats. Predict, before you run
# anything: after only 100 steps of distillation from the SFT model, what share of held-out fact
# questions ("Where does Patrick live?") does the student answer with a `<think>` block when no
# SFT chats are mixed in, and when 600 are? Write `think_share(mix_chats)`: distil for 100 steps
# with `distill_checkpoint` (the tiny recipe with `max_steps=100`, `mix_chats` SFT chats from
# `sft_512.jsonl`, a folder of its own per value) and return the share of the first 40 questions
# of `eval_facts.jsonl` whose answer contains `<think>`. About a minute for both values.


# %%
def think_share(mix_chats: int) -> float:
    raise NotImplementedError


# %%
try:
    lab = {n: think_share(n) for n in (0, 600)}
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    assert all(0.0 <= v <= 1.0 for v in lab.values()), f"Exercise 1: shares are fractions: {lab}"
    for n, share in lab.items():
        print(f"{n:3d} SFT chats mixed in: {share:.0%} of fact questions answered with <think>")
    print("Exercise 1: measured; compare with your prediction (the solutions discuss one run)")

# %% [markdown]
# **2 (medium). Check the steps, not just the answer.** The grader looks at the answer block
# only. Write `wrong_steps(text)`: the equations `a op b = c` (op one of `+`, `-`, `*`) in a reply
# whose `c` is not the value of `a op b`, as strings in order of appearance. Then count how many
# of the distilled model's wrong answers come with a wrong step.


# %%
def wrong_steps(text: str) -> list[str]:
    raise NotImplementedError


# %%
try:
    got = wrong_steps("<think>\n3 + 4 = 7\n7 * 2 = 15\n15 - 5 = 10\n9 - 10 = 1\n</think>")
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    assert got == ["7 * 2 = 15", "9 - 10 = 1"], (
        f"Exercise 2: got {got}. Hint: re.findall(r'(\\d+) ([-+*]) (\\d+) = (\\d+)', text) "
        "gives the four parts of each equation; compute a op b and compare it with c"
    )
    wrong = [r for r in after["arith"].records if not r["correct"]]
    with_step = sum(bool(wrong_steps(r["answer"])) for r in wrong)
    print(f"{with_step} of the {len(wrong)} wrong answers have a wrong step")
    print("Exercise 2: correct")

# %% [markdown]
# **3 (harder; predict, then verify). Greedy or sampled?** `spongebob chat` samples with the
# original's defaults (temperature 0.85, top-p 0.85). Predict: on unseen problems, is the
# distilled model more often right when it samples than when it decodes greedily, about as often,
# or less often? Write `sampled_accuracy(model, n, temperature, seed)`: the accuracy on the first
# `n` problems of `eval_arith.jsonl` with that temperature and top-p 0.85 (`evaluate_file` takes
# sampling arguments), and verify on 60 problems.


# %%
def sampled_accuracy(model, n: int, temperature: float, seed: int = 0) -> float:
    raise NotImplementedError


# %%
try:
    greedy = sampled_accuracy(reasoner, 60, 0.0)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    want = evaluate_file(reasoner, tok, world / "eval_arith.jsonl", "number", limit=60,
                         max_new_tokens=96).accuracy  # fmt: skip
    assert abs(greedy - want) < 1e-9, (
        f"Exercise 3: temperature 0 gave {greedy:.3f}, greedy evaluate_file {want:.3f}. Hint: "
        "evaluate_file(model, tok, path, 'number', limit=n, temperature=..., top_p=0.85, seed=...)"
    )
    hot = sampled_accuracy(reasoner, 60, 0.85, seed=0)
    assert 0.0 <= hot <= 1.0, f"Exercise 3: an accuracy is a fraction, got {hot}"
    print(f"greedy {greedy:.0%}, sampled at 0.85 {hot:.0%}")
    print("Exercise 3: correct")
