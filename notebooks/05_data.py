# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Data: from JSONL lines to training batches
#
# **Turn the four JSONL formats into the token ids, loss masks and batches that every training
# stage consumes: streamed, validated, pre-tokenised once, packed for pretraining and padded for
# chat.**
#
# Runs in about 1 minute on a laptop CPU. Prerequisites: [01 · Tokenizer](01_tokenizer.ipynb)
# (special tokens and the chat format) and [04 · The model](04_model.ipynb) (`lm_loss` and its
# `-100` targets).
#
# What you will build:
#
# 1. a streaming, validating reader for the four formats, whose errors name the file and line;
# 2. `ChatEncoder`: a chat rendered to ids and a loss mask in one pass, where the mask covers
#    exactly each assistant reply and its `</s>` (the original trains the wrong tokens: see why);
# 3. `prepare`: pre-tokenisation of a JSONL file into a `uint16` memmap with constant memory, on
#    several cores when asked, tolerant of messy real data but never silent about it;
# 4. `PackedLoader` and `ChatLoader`: packed pretraining windows (no padding) and right-padded chat
#    batches grouped by length, shuffled from a seed, sharded across GPUs, and resumable on any
#    number of them.
#
# ![Data: pretraining lines and chats are validated and streamed, encoded once by prepare into memory-mapped ids (and token kinds for chats), then batched by PackedLoader without padding or by ChatLoader, right-padded with the loss on the replies](../book/figures/data_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 把四种 JSONL 格式变成各训练阶段所需的词元 id、损失掩码和批次：逐行流式读取并校验（出错时指明文件和行号），用 `ChatEncoder` 一次性得到对话的 id 和只覆盖助手回复（含 `</s>`）的损失掩码，并展示原项目掩码错位一位的问题；再把数据一次性预分词为 `uint16` 内存映射文件（内存占用不随文件增长；多余的键和坏行会被计数而不是悄悄丢弃；可按字节范围分给多个进程，结果与单进程逐字节相同），用序列打包代替填充、按长度分组减少对话批次的填充，并提供可复现、可多卡分片、可在不同卡数下断点续训的数据加载器。导出模块：`spongebob.data`。
# :::

# %% [markdown]
# ## Setup
#
# The tokenizer of chapter 01 and `lm_loss` of chapter 04 are imported, never redefined (the
# exported cells below import what the package module needs, e.g. `IGNORE_INDEX` and
# `REASONING_TOKENS`). If you
# edit an exported cell, the package keeps the old code until you run `make export` (or
# `!python ../tools/nbexport.py` here) and restart the kernel.

# %%
#| default_exp data

# %%
import tempfile

import matplotlib.pyplot as plt

from spongebob.model import lm_loss
from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.tokenizer import render_chat, train_bpe
from spongebob.world import course_tokenizer, sample_dir

seed_everything(1337)
tok = course_tokenizer()
world = sample_dir()
print(tok)

# %% [markdown]
# ## 1. Four formats, one line at a time
#
# The original project (and our embedded world, which copies its formats) stores every stage's
# data as JSONL: one JSON object per line, UTF-8. There are four shapes:
#
# | file | shape of a line | used by |
# |---|---|---|
# | `pretrain.jsonl` | `{"text": "..."}` | tokenizer, pretraining |
# | `sft_512.jsonl`, `sft_1024.jsonl`, `r1_1024.jsonl` | `{"conversations": [{"role", "content"}, ...]}` | SFT, long SFT, distillation |
# | `eval_*.jsonl` | `{"messages": [...], "expected": "..."}` | evaluation (the last turn is the user's) |
# | `eval_*completion.jsonl` | `{"prompt": "...", "expected": "..."}` | evaluating pretraining |
#
# Here is one line of each:

# %%
for name in ("pretrain", "sft_512", "eval_facts", "eval_completion"):
    with open(world / f"{name}.jsonl", encoding="utf-8") as f:
        line = f.readline()
    print(f"{name}: {line[:150]}{' ...' if len(line) > 150 else ''}")

# %% [markdown]
# The real `sft_512.jsonl` is 7 GB. The original parses every file whole into Python objects
# (tens of GB of RAM for that one; SEED defect 4). We never do: the package's one JSONL reader,
# `spongebob.files.iter_jsonl`, yields one line at a time, so memory does not grow with the file.
#
# Reading is also where bad data must be caught. A line can be broken in many ways: not UTF-8, not
# JSON, a missing or mistyped key, an empty conversation, an unknown role, turns out of order, a
# conversation that does not end with the assistant (nothing to learn). Each is an error that
# names the file, the line and the problem, because a learner who feeds in their own data must be
# able to find the line. `record_problem` (below) describes what is wrong with one parsed record.
#
# The package module `spongebob.data` starts here: its docstring sums up the design of the whole
# chapter, then come the imports it needs.

# %%
#| export
"""Training data: validated JSONL records, chats rendered to ids and a loss mask, pre-tokenised
memmaps, and loaders that pack (pretraining) or pad (chat). Defined in 05_data.

- Every JSONL file is streamed, never loaded whole. A malformed line (not UTF-8, not JSON, a wrong
  shape) stops with ``FILE:LINE: problem``, or, with ``skip_bad_lines``, is skipped, counted and
  listed in a `BadLines` report: nothing is dropped silently. Keys a format does not use (an
  ``"id"``, a ``"source"``) are accepted and counted.
- `ChatEncoder` renders a conversation to ids and per-token *kinds* in one pass: special tokens are
  inserted as ids, message text is encoded with special-token parsing off (a ``</s>`` typed by a
  user is text), and the kinds mark exactly each assistant reply and its closing ``</s>``
  (`TRAINED`; reasoning tags `TAG`), everything else `CONTEXT`.
- `prepare` writes ``ids.bin`` (uint16), ``offsets.bin`` (uint64 document starts), for chats
  ``kinds.bin`` (uint8), and ``meta.json``; memory does not grow with the input; ``workers``
  processes share the file by byte ranges and write the same bytes as one; the folder is reused
  when the source, the tokenizer and the settings are unchanged. `check_prepared_length` refuses a
  folder prepared for another length than a run's.
- `PackedLoader` cuts the token stream into windows (pretraining: no padding, documents are not
  masked from each other); `ChatLoader` right-pads conversations (no attention mask is needed)
  and groups them by length. Both yield ``(x, y, w)`` forever, shuffle each epoch from a seed,
  shard across ranks, and save their global position with ``state_dict`` (a run may resume on
  another number of ranks).
"""

import contextlib
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import re
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from spongebob.files import atomic_open, atomic_write_text, iter_jsonl, sha256_file
from spongebob.model import IGNORE_INDEX
from spongebob.tokenizer import BOS, EOS, REASONING_TOKENS, SpongeTokenizer, chat_segments

ROLES = ("system", "user", "assistant")

# %% [markdown]
# The four formats, written down once: the key that identifies each line's format, its shape in
# words (for the error messages), and the keys each format uses. `record_kind` reads the claim:

# %%
#| export
# The four line formats: the key that identifies each, and the shape in words (for errors).
FORMATS = {
    "pretrain": ("text", "{'text': str}"),
    "chat": ("conversations", "{'conversations': [{'role': ..., 'content': ...}, ...]}"),
    "eval": ("messages", "{'messages': [...], 'expected': str} (optional 'id')"),
    "completion": ("prompt", "{'prompt': str, 'expected': str} (optional 'id')"),
}
# The keys each format uses; any other key of a line is "extra": accepted, and counted by prepare.
KNOWN_KEYS = {
    "pretrain": {"text"},
    "chat": {"conversations"},
    "eval": {"messages", "expected", "id"},
    "completion": {"prompt", "expected", "id"},
}


def record_kind(record: object) -> str | None:
    """Which of `FORMATS` a parsed line claims to be (by its key), or None. Defined in 05_data."""
    if isinstance(record, dict):
        for kind, (key, _) in FORMATS.items():
            if key in record:
                return kind
    return None


# %% [markdown]
# A conversation is valid when it is a non-empty list of `{"role", "content"}` turns, an optional
# system turn first, then user and assistant alternating, starting with the user. Training chats
# must end with the assistant (the last reply is what is learned), evaluation prompts with the user
# (the model writes the reply):


# %%
#| export
def turns_problem(turns: object, must_end_with: str) -> str | None:
    """None when ``turns`` is a valid conversation ending with ``must_end_with``; else what is
    wrong, in words. Defined in 05_data."""
    if not isinstance(turns, list):
        return f"the conversation must be a list of turns, got {type(turns).__name__}"
    if not turns:
        return "empty conversation"
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or not {"role", "content"} <= set(t):
            keys = sorted(t) if isinstance(t, dict) else type(t).__name__
            return f"turn {i} must be an object with 'role' and 'content' (got {keys})"
        if t["role"] not in ROLES:
            return f"turn {i}: unknown role {t['role']!r} (expected one of {', '.join(ROLES)})"
        if not isinstance(t["content"], str):
            return f"turn {i}: content must be a string, got {type(t['content']).__name__}"
    roles = [t["role"] for t in turns]
    body = roles[1:] if roles[0] == "system" else roles
    for i, role in enumerate(body):
        if role != ("user" if i % 2 == 0 else "assistant"):
            return f"roles must alternate user/assistant after an optional system turn: {roles}"
    if not body:
        return "no user turn"
    if body[-1] != must_end_with:
        return f"the conversation must end with the {must_end_with}'s turn, not the {body[-1]}'s"
    return None


def record_problem(record: object, kind: str | None = None) -> str | None:
    """None when ``record`` is a valid line of format ``kind`` (default: the format its key
    claims); else the problem in words. Defined in 05_data."""
    claimed = record_kind(record)
    if claimed is None:
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        return f"not one of the formats {', '.join(FORMATS)} (got {keys})"
    kind = kind or claimed
    if kind not in FORMATS:
        raise ValueError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
    key, shape = FORMATS[kind]
    if claimed != kind:
        return f"expected a {kind} line {shape}, got keys {sorted(record)}"
    if kind in ("eval", "completion") and not isinstance(record.get("expected"), str):
        return f"'expected' must be a string in a {kind} line {shape}"
    if kind == "chat":
        return turns_problem(record[key], "assistant")
    if kind == "eval":
        return turns_problem(record[key], "user")
    if not isinstance(record[key], str):
        return f"{key!r} must be a string, got {type(record[key]).__name__}"
    return None


# %% [markdown]
# Real datasets carry more than the course needs: an `"id"` on each line, a `"source"`, a `"name"`
# on a turn. Such *extra* keys are not errors: they are ignored, and `extra_keys` names them so that
# `prepare` can count them (a typo such as `"conversation"` instead of `"conversations"` is still
# an error, because then the format's own key is missing):


# %%
#| export
def extra_keys(record: dict, kind: str) -> list[str]:
    """The keys of a valid ``kind`` record that the format does not use, turns' keys as
    ``"conversations[].name"``. Defined in 05_data."""
    extra = sorted(set(record) - KNOWN_KEYS[kind])
    key = FORMATS[kind][0]
    if kind in ("chat", "eval"):
        turn_keys = {k for turn in record[key] for k in turn} - {"role", "content"}
        extra += [f"{key}[].{k}" for k in sorted(turn_keys)]
    return extra


# %% [markdown]
# Now the reader. It yields `(line number, record)`; the format is given, or taken from the first
# record, and every later line must have the same one. By default the first bad line stops
# everything with `FILE:LINE: problem`. With `skip_bad_lines=True` a bad line is skipped, and a
# `BadLines` report counts and lists it, so that a long preparation of messy real data can finish
# and still tell you exactly what it left out.


# %%
#| export
@dataclass
class BadLines:
    """The lines a reader skipped: their count and the first ``keep`` ``(line, problem)`` pairs.

    Defined in 05_data."""

    path: str = ""
    count: int = 0
    lines: list[tuple[int, str]] = field(default_factory=list)
    keep: int = 1000

    def add(self, lineno: int, problem: str) -> None:
        self.count += 1
        if len(self.lines) < self.keep:
            self.lines.append((lineno, problem))

    def summary(self) -> str:
        shown = "; ".join(f"line {n}: {p}" for n, p in self.lines[:5])
        more = f" (and {self.count - 5} more)" if self.count > 5 else ""
        return f"{self.path}: skipped {self.count} bad line(s): {shown}{more}" if self.count else ""


def iter_records(
    path: str | Path,
    kind: str | None = None,
    *,
    skip_bad_lines: bool = False,
    bad: BadLines | None = None,
) -> Iterator[tuple[int, dict]]:
    """Stream ``(line number, record)`` of a JSONL file, checking every record. Defined in 05_data.

    ``kind`` is one of `FORMATS`; by default the first valid record's format, which every later
    line must share. A bad line raises ``ValueError("FILE:LINE: problem")``, or with
    ``skip_bad_lines`` is recorded in ``bad`` (a `BadLines`) and skipped.
    """
    if kind is not None and kind not in FORMATS:
        raise ValueError(f"unknown format {kind!r}; choose one of {', '.join(FORMATS)}")
    bad = bad if bad is not None else BadLines(str(path))

    def reject(lineno: int, problem: str) -> None:
        if not skip_bad_lines:
            raise ValueError(f"{path}:{lineno}: {problem}")
        bad.add(lineno, problem)

    for lineno, record in iter_jsonl(path, on_error=reject):
        problem = record_problem(record, kind)
        if problem:
            reject(lineno, problem)
            continue
        kind = kind or record_kind(record)
        yield lineno, record


def read_jsonl(path: str | Path, kind: str | None = None) -> Iterator[dict]:
    """The records of a JSONL file, validated (see `iter_records`); the first bad line raises."""
    for _, record in iter_records(path, kind):
        yield record


# %% [markdown]
# A file with four broken lines (and one good line that carries an extra `"id"`), read both ways:

# %%
bad_file = Path(tempfile.mkdtemp()) / "bad.jsonl"
bad_file.write_bytes(
    b'{"id": 7, "conversations": [{"role": "user", "content": "Hi"}, '
    b'{"role": "assistant", "content": "Hello!"}]}\n'
    b'{"conversations": []}\n'
    b'{"conversations": [{"role": "bot", "content": "Hi"}]}\n'
    b'{"conversations": [{"role": "user", "content": "Hi"}]}\n'
    b"\xff\xfe not text\n"
)
try:
    list(iter_records(bad_file))
except ValueError as e:
    print("strict:", str(e).replace(str(bad_file), "bad.jsonl"))

report = BadLines("bad.jsonl")
kept = list(iter_records(bad_file, skip_bad_lines=True, bad=report))
print("kept lines:", [n for n, _ in kept])
for n, problem in report.lines:
    print(f"  skipped line {n}: {problem}")
print("extra keys of line 1:", extra_keys(kept[0][1], "chat"))
assert [n for n, _ in kept] == [1] and report.count == 4

# %% [markdown]
# ## 2. A chat becomes ids and a loss mask
#
# Chapter 01 rendered a conversation as text, `<s>system\n...</s>\n<s>user\n...</s>\n<s>assistant\n`
# and so on. To train on it we need two things per token: its id, and whether the model should
# learn to predict it. SFT teaches the model to *answer*, so only the assistant's replies are
# trained, never the system prompt or the user's words (they are context: the model reads them
# but is not asked to produce them).
#
# Two traps. First, if we render the text and then tokenize it whole, a user who types `</s>` or
# `<think>` gets real control tokens: the tokenizer parses special tokens anywhere in its input.
# So we encode each message's text with special-token parsing *off* and insert the control tokens
# ourselves, as ids. Second, the mask must be built from the same pieces, not found afterwards by
# searching the ids for a pattern, which is how the original gets it wrong (section 3).
#
# `ChatEncoder` takes the chat format's segments from chapter 01 (`chat_segments`, whose join is
# `render_chat`) and lays the conversation out as a list of pieces, each an id or a text, each with a
# *kind*: `CONTEXT` (not trained), `TRAINED` (an assistant reply and its `</s>`) or `TAG` (a
# reasoning tag inside a reply: trained, and chapter 08 weights it). The text pieces of many
# conversations are then encoded in one batch call (in Rust, on all cores).
#
# First the three kinds, and the one rule inside a reply: its reasoning tags are split out as `TAG`
# pieces (a reply without tags is one `TRAINED` piece):

# %%
#| export
CONTEXT, TRAINED, TAG = 0, 1, 2  # token kinds in kinds.bin: not trained, trained, reasoning tag
_TAG_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in REASONING_TOKENS) + ")")


def reply_pieces(text: str, tag_ids: dict[str, int]) -> list[tuple[int | str, int]]:
    """An assistant reply as ``(id or text, kind)`` pieces: each reasoning tag a `TAG` piece (its
    id from ``tag_ids``, else its text), the text around the tags `TRAINED`. Defined in 05_data."""
    out: list[tuple[int | str, int]] = []
    for part in _TAG_SPLIT.split(text):  # "<think>" -> a TAG piece, the rest TRAINED
        if part in REASONING_TOKENS:
            out.append((tag_ids.get(part, part), TAG))
        elif part:
            out.append((part, TRAINED))
    return out


# %% [markdown]
# Now the encoder: `pieces` lays one conversation out, `encode_many` encodes the text pieces of
# many conversations with one batched call and expands each piece's kind to its tokens.


# %%
#| export
class ChatEncoder:
    """Conversations -> ``(ids, kinds)`` in the original's chat format. Defined in 05_data.

    The layout is `spongebob.tokenizer.chat_segments` (the one definition of the chat format),
    segment by segment: ``<s>`` and ``</s>`` are inserted as ids; message text is encoded with
    special-token parsing off. ``kinds[i]`` says
    whether token ``i`` is a training target: `TRAINED` for every token of an assistant reply and
    its closing ``</s>``, `TAG` for a reasoning tag inside a reply (a single id when the tokenizer
    has it as a special token, else its text tokens), `CONTEXT` for everything else. A
    conversation without a system turn gets ``system_prompt`` (default: the tokenizer's).
    """

    def __init__(self, tokenizer: SpongeTokenizer, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = (
            tokenizer.default_system_prompt if system_prompt is None else system_prompt
        )
        self._plain = Tokenizer.from_str(tokenizer.tokenizer.to_str())
        self._plain.encode_special_tokens = True  # "</s>" in a message is text, not a token
        self._tag_ids = tokenizer.reasoning_ids  # {} for the original's tokenizer

    def pieces(self, messages: Sequence[dict]) -> list[tuple[int | str, int]]:
        """The conversation as ``(id or text, kind)`` pieces, in order: `chat_segments` with
        ``<s>``/``</s>`` as ids and each reply's reasoning tags split out."""
        out: list[tuple[int | str, int]] = []
        special = {BOS: self.tokenizer.bos_id, EOS: self.tokenizer.eos_id}
        for text, is_reply in chat_segments(messages, self.system_prompt):
            kind = TRAINED if is_reply else CONTEXT
            if text in special:
                out.append((special[text], kind))
            elif not is_reply:
                out.append((text, kind))
            else:
                out += reply_pieces(text, self._tag_ids)
        return out

    def encode_many(self, conversations: Iterable[Sequence[dict]]) -> list[tuple[list, list]]:
        """``[(ids, kinds), ...]`` for many conversations, with one batched encoder call."""
        layouts = [self.pieces(c) for c in conversations]
        texts = [p for layout in layouts for p, _ in layout if isinstance(p, str)]
        encoded = iter(self._plain.encode_batch(texts, add_special_tokens=False))
        out = []
        for layout in layouts:
            ids, kinds = [], []
            for piece, kind in layout:
                piece_ids = [piece] if isinstance(piece, int) else next(encoded).ids
                ids += piece_ids
                kinds += [kind] * len(piece_ids)
            out.append((ids, kinds))
        return out

    def encode(self, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
        """``(ids, kinds)`` of one conversation."""
        return self.encode_many([messages])[0]

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Pretraining documents: ``<s> text </s>`` each, text encoded with parsing off."""
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        return [[bos, *e.ids, eos] for e in self._plain.encode_batch(list(texts))]


# %% [markdown]
# To *see* a mask, we colour tokens by kind. This helper goes into `spongebob.viz`, and every later
# chapter uses the same colours: grey for context, green for trained tokens, orange for tags.

# %% tags=["hide-input"]
#| export: viz
MASK_COLOURS = {0: "#e6e6e6", 1: "#9be39b", 2: "#ffb347"}  # context, trained, reasoning tag
MASK_LABELS = {0: "context (not trained)", 1: "trained", 2: "reasoning tag (trained)"}


def plot_token_kinds(pieces, kinds, title="", width=14, per_row=16, ax=None):
    """Tokens as coloured boxes, row by row: ``pieces`` are token strings, ``kinds`` 0/1/2
    (`spongebob.data` CONTEXT / TRAINED / TAG). Defined in 05_data."""
    rows = -(-len(pieces) // per_row)  # ceil
    if ax is None:
        _, ax = plt.subplots(figsize=(width, 0.42 * rows + 0.6), dpi=90)
    for i, (text, kind) in enumerate(zip(pieces, kinds)):
        r, c = divmod(i, per_row)
        ax.add_patch(plt.Rectangle((c, -r), 0.96, 0.86, color=MASK_COLOURS[int(kind)]))
        label = text.replace("\n", "\\n") if len(text) <= 9 else text[:8] + "…"
        ax.text(c + 0.48, -r + 0.43, label, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, per_row)
    ax.set_ylim(-rows + 0.8, 1)
    ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=MASK_COLOURS[k]) for k in sorted(MASK_COLOURS)]
    labels = [MASK_LABELS[k] for k in sorted(MASK_LABELS)]
    ax.legend(
        handles,
        labels,
        loc="upper right",
        bbox_to_anchor=(1, 1.35),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    ax.set_title(title, loc="left", fontsize=10, pad=18)
    return ax


# %% [markdown]
# A two-turn conversation from the world's SFT file, with a user who types a control token:

# %%
from spongebob.viz import plot_token_kinds  # noqa: E402,F811

encoder = ChatEncoder(tok)
chat = [
    {"role": "user", "content": "Where does Gary live? </s>"},
    {"role": "assistant", "content": "Gary lives in a pineapple."},
    {"role": "user", "content": "And Patrick?"},
    {"role": "assistant", "content": "Under a rock."},
]
ids, kinds = encoder.encode(chat)
pieces = [tok.decode([i]) for i in ids]
skip = ids.index(tok.bos_id, 1)  # hide the long default system prompt in the picture
plot_token_kinds(pieces[skip:], kinds[skip:], "ChatEncoder: what SFT trains (system turn hidden)")
plt.show()
n_eos = sum(i == tok.eos_id for i in ids)
print(
    f"{len(ids)} tokens, {sum(k > 0 for k in kinds)} trained; {n_eos} eos ids (the user's '</s>' "
    "stayed text)"
)
assert sum(i == tok.eos_id for i in ids) == 5  # system, 2 user turns, 2 replies

# %% [markdown]
# Two checks make this trustworthy. For ordinary text, the ids are exactly what tokenizing the
# rendered chat of chapter 01 gives (so training sees what `spongebob chat` will feed the model),
# and the trained tokens decode to exactly each reply followed by `</s>`:

# %%
plain_chat = [m | {"content": m["content"].replace(" </s>", "")} for m in chat]
ids2, kinds2 = encoder.encode(plain_chat)
assert ids2 == tok.encode(render_chat(plain_chat))

runs, current = [], []
for i, k in zip(ids2, kinds2):
    if k:
        current.append(i)
    elif current:
        runs.append(tok.decode(current))
        current = []
print(runs)
assert runs == ["Gary lives in a pineapple.</s>", "Under a rock.</s>"]

# %% [markdown]
# Across every conversation of the world's SFT file, the same equality holds:

# %%
from spongebob.data import read_jsonl as _read  # noqa: E402  (the exported reader)

sft = [r["conversations"] for r in _read(world / "sft_512.jsonl")]
encoded = encoder.encode_many(sft)
same = sum(ids == tok.encode(render_chat(c)) for c, (ids, _) in zip(sft, encoded))
print(f"{same} of {len(sft)} conversations: ids equal the tokenized render_chat text")
assert same == len(sft)

# %% [markdown]
# ## 3. The original's off-by-one
#
# In a causal LM, the logits at position $t$ predict token $t+1$. Training uses inputs
# `x = ids[:-1]` and targets `y = ids[1:]`, so the mask must be aligned with the *targets*: token
# $i$ is trained when `kinds[i]` says so, and that decides `y[i - 1]`.
#
# The original builds its mask by searching the ids for the token pattern of `<s>assistant\n` and
# then for `</s>\n`, and marks the positions from one *after* the first answer token to one after
# the `</s>\n` (SEED defect 2). After the shift to targets, the two masks disagree on three tokens
# of every reply in the middle of a chat: the first answer token is never trained, while the `\n`
# after `</s>` and the next turn's `<s>` are (a chat's last reply has no next `<s>`, so two). Here
# is a re-creation of that rule from its description (not the original's code), beside ours:


# %%
def original_style_kinds(ids, tok):
    """The original's mask, re-created from SEED.md: positions start+1 .. end+len(eos) trained."""
    start_pat = tok.encode("<s>assistant\n")
    end_pat = tok.encode("</s>\n")
    kinds, i = [0] * len(ids), 0
    while i < len(ids):
        if ids[i : i + len(start_pat)] == start_pat:
            start = end = i + len(start_pat)
            while end < len(ids) and ids[end : end + len(end_pat)] != end_pat:
                end += 1
            for j in range(start + 1, min(end + len(end_pat) + 1, len(ids))):
                kinds[j] = 1
            i = end + len(end_pat)
        else:
            i += 1
    return kinds


orig = original_style_kinds(ids2, tok)
pieces2 = [tok.decode([i]) for i in ids2]
skip2 = ids2.index(tok.bos_id, 1)
fig, axes = plt.subplots(2, 1, figsize=(14, 2.6), dpi=90)
plot_token_kinds(pieces2[skip2:], kinds2[skip2:], "ours: each reply and its </s>", ax=axes[0])
plot_token_kinds(pieces2[skip2:], orig[skip2:], "the original: shifted by one", ax=axes[1])
plt.tight_layout()
plt.show()

first_answer = kinds2.index(1)
wrong = [j for j, (a, b) in enumerate(zip(kinds2, orig)) if a != b]
print("tokens the two masks disagree on:", [pieces2[j] for j in wrong])
last_start = max(j for j in range(1, len(kinds2)) if kinds2[j] and not kinds2[j - 1])
per_reply = [sum(j < last_start for j in wrong), sum(j >= last_start for j in wrong)]
print("disagreements: the first reply", per_reply[0], "| the last reply", per_reply[1])
assert orig[first_answer] == 0 and kinds2[first_answer] == 1 and per_reply == [3, 2]

# %% [markdown]
# Does one token matter? The first token of a reply is the model's decision of *how to start*; a
# model never trained on it starts replies by chance (and how a reply starts decides a great deal:
# chapter 07, section 6, measures it). And training the tokens after `</s>` asks
# the model to predict the next user turn's `<s>`: after `</s>` generation has stopped, so that is
# wasted, and it teaches nothing about the user. How much of the supervision do the first tokens
# carry? The shorter the replies, the more; in the world's SFT chats:

# %%
replies = trained = 0
for _, kinds_c in encoded:
    flags = [k > 0 for k in kinds_c]
    replies += sum(1 for a, b in zip([False] + flags, flags) if b and not a)  # runs of trained
    trained += sum(flags)
print(
    f"A reply trains {trained / replies:.1f} tokens on average (its </s> included), so the first "
    f"answer tokens are {replies / trained:.0%} of all trained targets."
)
assert 0 < replies < trained

# %% [markdown]
#
# The mask reaches the loss through the targets: `-100` where a target is not trained, which
# `lm_loss` of chapter 04 skips. For a chat, `y[t] = ids[t+1]` if `kinds[t+1] > 0` else `-100`:

# %%
x = torch.tensor(ids2[:-1])
y = torch.tensor([i if k else IGNORE_INDEX for i, k in zip(ids2[1:], kinds2[1:])])
print("trained targets:", int((y != IGNORE_INDEX).sum()), "of", len(y))
logits = torch.zeros(1, len(x), tok.vocab_size)  # a uniform model
loss = lm_loss(logits, y[None])
print(f"uniform-model loss on them: {loss.item():.4f} = ln(V) = {math.log(tok.vocab_size):.4f}")
assert abs(loss.item() - math.log(tok.vocab_size)) < 1e-4

# %% [markdown]
# ## 4. Reasoning tags
#
# Distillation data (chapter 08) answers in the form `<think>\n...\n</think>\n<answer>\n...\n</answer>`.
# Our tokenizer has each tag as one special token (chapter 01); the original's does not,
# so there a tag is several ordinary tokens (`<`, `th`, `ink`, `>`). `ChatEncoder` marks a tag's
# tokens `TAG` with either tokenizer, and only inside assistant replies: a user who writes
# `<think>` gets text. A tokenizer with only the original's three special tokens shows the
# difference:

# %%
r1 = next(read_jsonl(world / "r1_1024.jsonl"))["conversations"]
r1 = [{"role": "user", "content": "What is <think>? " + r1[0]["content"]}, r1[1]]
texts = (r["text"] for r in read_jsonl(world / "pretrain.jsonl"))
plain_tok = train_bpe(texts, vocab_size=2048, special_tokens=["<unk>", "<s>", "</s>"])
for name, t in (("course tokenizer", tok), ("three specials only", plain_tok)):
    ids_r, kinds_r = ChatEncoder(t).encode(r1)
    tags = [t.decode([i]) for i, k in zip(ids_r, kinds_r) if k == TAG]
    print(f"{name}: {len(tags)} tag tokens {tags}")
    assert "".join(tags) == "".join(REASONING_TOKENS)  # the reply's four tags, not the user's

# %% [markdown]
# ## 5. Pre-tokenise once, into a memmap
#
# Tokenizing inside the training loop (as the original does, sample by sample in its data loader)
# repeats the same work every epoch and competes with training for the CPU. We tokenize once:
# `prepare` streams the JSONL file, encodes records in chunks of a few thousand (one batched call
# each), and appends the ids to `ids.bin` as `uint16` (2 bytes a token; vocabularies up to 65,536
# fit), with `offsets.bin` marking where each document starts and, for chats, `kinds.bin` (one byte
# a token). Memory holds one chunk, whatever the file size. Training then reads the files through
# `np.memmap`: the operating system pages in what is used.
#
# `meta.json` records what the files were made from (the sha256 of the source file and of the
# tokenizer, the settings, the counts) and is written last: a folder without a current
# `meta.json` is never trusted, and a second `prepare` with the same inputs returns at once.
#
# Chats longer than `max_seq_len + 1` tokens are truncated (the first `max_seq_len + 1` tokens are
# kept: the inputs of one training row are then `max_seq_len` long); a truncated chat with no
# trained token left is dropped. Both are counted in `meta.json`, never silent.
#
# First the bookkeeping that decides whether a folder is current (folded in the book):

# %% tags=["hide-input"]
#| export
FORMAT_VERSION = 1
META = "meta.json"


def tokenizer_fingerprint(tokenizer: SpongeTokenizer, system_prompt: str | None = None) -> str:
    """sha256 of what decides the ids: the tokenizer's JSON, its bos/eos/pad ids and the default
    system prompt that chats are rendered with. Defined in 05_data."""
    system = tokenizer.default_system_prompt if system_prompt is None else system_prompt
    ids = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    key = json.dumps([tokenizer.tokenizer.to_str(), *ids, system])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _current_meta(folder: Path, key: dict) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in key.items()) or "input_lines" not in meta:
        return None  # (a folder of an older version counted less)
    sizes = {"ids.bin": 2 * meta["tokens"], "offsets.bin": 8 * (meta["documents"] + 1)}
    if meta["kind"] == "chat":
        sizes["kinds.bin"] = meta["tokens"]
    ok = all((folder / n).is_file() and (folder / n).stat().st_size == s for n, s in sizes.items())
    return meta if ok else None


def _replaced(folder: Path, key: dict) -> str | None:
    """Why an earlier `prepare` of ``folder`` is not reused, in words (None: there was none)."""
    try:
        old = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = {"source_sha256": "the source file", "tokenizer_sha256": "the tokenizer"}
    changed = [names.get(k, f"{k} {old.get(k)} -> {v}") for k, v in key.items() if old.get(k) != v]
    if changed:
        return ", ".join(changed) + " changed"
    return "its files were incomplete" if "input_lines" in old else "an older version wrote it"


# %% [markdown]
# One chunk of records becomes three arrays: the ids of all its documents one after the other, their
# kinds (chats), and each document's length, from which the offsets follow. Lists of ids become
# arrays in one call each, and the trained targets are counted per document with NumPy, never with
# a Python loop over tokens:


# %%
#| export
def _encode_chunk(records: list[dict], kind: str, encoder: "ChatEncoder", max_seq_len: int):
    """``(ids uint16, kinds uint8 or None, lengths, stats)`` of one chunk of valid records.

    Chats are cut to ``max_seq_len + 1`` tokens; a chat with no trained target left is dropped.
    The lists of ids become one array each (no per-token Python loop)."""
    if kind == "pretrain":
        docs = encoder.encode_texts([r["text"] for r in records])
        lengths = np.fromiter(map(len, docs), np.int64, len(docs))
        ids = np.fromiter(itertools.chain.from_iterable(docs), np.uint16, int(lengths.sum()))
        return ids, None, lengths, {"trained_tokens": int(lengths.sum()) - len(docs)}
    pairs = encoder.encode_many([r["conversations"] for r in records])
    cut = max_seq_len + 1
    lengths = np.fromiter((min(len(i), cut) for i, _ in pairs), np.int64, len(pairs))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(i[:cut] for i, _ in pairs), np.uint16, total)
    kinds = np.fromiter(itertools.chain.from_iterable(k[:cut] for _, k in pairs), np.uint8, total)
    starts = np.cumsum(lengths) - lengths
    is_target = kinds > 0
    is_target[starts] = False  # a document's first token is never a target (nothing precedes it)
    trained = np.add.reduceat(is_target.astype(np.int64), starts) if len(starts) else lengths
    keep = trained > 0
    stats = {
        "trained_tokens": int(trained.sum()),
        "dropped_untrained": int((~keep).sum()),
        "truncated": sum(len(i) > cut for i, _ in pairs),
    }
    if not keep.all():
        token_keep = np.repeat(keep, lengths)
        ids, kinds, lengths = ids[token_keep], kinds[token_keep], lengths[keep]
    return ids, kinds, lengths, stats


# %% [markdown]
# A file of 14 GB takes a while on one core, and a server has many. `prepare(..., workers=N)` cuts
# the file into $N$ byte ranges whose edges are moved forward to the next line start, so that every
# line belongs to exactly one range; each worker process reads, checks and encodes its own range
# into its own part files, and the parts are then joined in order. Every document's ids depend on
# that document alone, so the joined files are the same bytes as one worker's; line numbers in the
# bad-line report are made global by adding the line counts of the ranges before.
#
# Reading a byte range needs the JSONL reader's checks on a part of a file: `_range_records` applies
# the same rules as `spongebob.files.iter_jsonl` (blank lines skipped, not UTF-8 or not JSON is a
# bad line) to the lines that start in the range.


# %%
#| export
def _shard_bounds(path: Path, n: int) -> list[int]:
    """``n + 1`` byte positions: 0, then near ``i * size / n`` moved to the next line start, size."""
    size = path.stat().st_size
    bounds = [0]
    with open(path, "rb") as fh:
        for i in range(1, n):
            pos = i * size // n
            if pos > bounds[-1]:
                fh.seek(pos - 1)
                fh.readline()  # ends at the first line start at or after pos
                pos = fh.tell()
            bounds.append(min(max(pos, bounds[-1]), size))
    return bounds + [size]


_BLANK = object()


def _range_lines(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The raw lines of a file that start in ``[start, end)``."""
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start
        for raw in fh:
            if pos >= end:
                return
            pos += len(raw)
            yield raw


def _parse_line(raw: bytes) -> tuple[object, str | None]:
    """``(value, None)``; ``(_BLANK, None)`` for a blank line; ``(None, problem)`` for a line that
    is not UTF-8 or not JSON (the rules of `spongebob.files.iter_jsonl`)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 ({e.reason})"
    if not line.strip():
        return _BLANK, None
    try:
        return json.loads(line), None
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg})"


# %% [markdown]
# One range, checked and encoded. Its line numbers count from the range's first line (the caller
# makes them global); without `skip_bad_lines` it stops at the first bad line and reports it:


# %%
#| export
def _prepare_range(job: dict, files: dict) -> dict:
    """Check and encode the lines that start in ``job["start"]:job["end"]``, appending to the
    open ``files``. Returns the range's counts, its bad lines (line numbers within the range),
    its extra keys, the number of lines it spans, and ``error``: without ``skip_bad_lines``, the
    first bad line (the range stops there)."""
    kind = job["kind"]
    encoder = ChatEncoder(job["tokenizer"], job["system_prompt"])
    out = dict(
        documents=0,
        tokens=0,
        trained_tokens=0,
        truncated=0,
        dropped_untrained=0,
        input_lines=0,
        bad=[],
        bad_count=0,
        extra_keys=Counter(),
        lines=0,
        error=None,
    )

    def flush(records: list[dict]) -> None:
        ids, kinds, lengths, stats = _encode_chunk(records, kind, encoder, job["max_seq_len"])
        ids.tofile(files["ids"])
        if kinds is not None:
            kinds.tofile(files["kinds"])
        (out["tokens"] + np.cumsum(lengths, dtype=np.uint64)).tofile(files["ends"])
        for k, v in stats.items():
            out[k] += v
        out["documents"] += len(lengths)
        out["tokens"] += len(ids)

    records = []
    lines = _range_lines(Path(job["source"]), job["start"], job["end"])
    for lineno, raw in enumerate(lines, start=1):
        out["lines"] = lineno
        record, problem = _parse_line(raw)
        if record is _BLANK:
            continue
        out["input_lines"] += 1
        problem = problem or record_problem(record, kind)
        if problem:
            out["bad_count"] += 1
            if len(out["bad"]) < BadLines.keep:
                out["bad"].append((lineno, problem))
            if not job["skip_bad_lines"]:
                out["error"] = (lineno, problem)
                return out
            continue
        out["extra_keys"].update(extra_keys(record, kind))
        records.append(record)
        if len(records) == job["chunk"]:
            flush(records)
            records = []
    if records:
        flush(records)
    return out


# %% [markdown]
# The plumbing around it (folded in the book): each worker is a fresh Python process (`spawn`,
# so no tokenizer state is inherited from a fork) that writes part files; the parent finds the
# file's format from its first valid record, then appends the parts in order, shifting each part's
# document ends by the tokens before it.


# %% tags=["hide-input"]
#| export
def _prepare_part(job: dict) -> dict:
    """A worker process: `_prepare_range` into part files ``job["part"] + ".ids"`` and so on."""
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core per worker
    names = ("ids", "ends", "kinds") if job["kind"] == "chat" else ("ids", "ends")
    with contextlib.ExitStack() as stack:
        files = {n: stack.enter_context(open(f"{job['part']}.{n}", "wb")) for n in names}
        return _prepare_range(job, files)


def _first_kind(source: Path) -> tuple[str | None, tuple[int, str] | None]:
    """The format of the file's first valid record, and the first bad line before it."""
    first_bad = None
    for lineno, raw in enumerate(_range_lines(source, 0, source.stat().st_size), start=1):
        record, problem = _parse_line(raw)
        if record is _BLANK:
            continue
        problem = problem or record_problem(record)
        if not problem:
            return record_kind(record), first_bad
        first_bad = first_bad or (lineno, problem)
    return None, first_bad


def _run_ranges(job: dict, bounds: list[int], out: Path, files: dict) -> list[dict]:
    """Each range in its own process (one range: in this one), the parts joined into ``files``."""
    jobs = [{**job, "start": a, "end": b} for a, b in itertools.pairwise(bounds)]
    if len(jobs) == 1:
        return [_prepare_range(jobs[0], files)]
    parts = out / f".parts-{os.getpid()}-{secrets.token_hex(4)}"
    parts.mkdir()
    try:
        for i, j in enumerate(jobs):
            j["part"] = str(parts / str(i))
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked tokenizer
        with ProcessPoolExecutor(len(jobs), mp_context=ctx) as pool:
            results = list(pool.map(_prepare_part, jobs))
        base = 0
        for j, r in zip(jobs, results):
            if r["error"]:
                break
            for name in files:
                if name == "ends":
                    ends = np.fromfile(f"{j['part']}.ends", dtype=np.uint64)
                    (ends + np.uint64(base)).tofile(files["ends"])
                else:
                    with open(f"{j['part']}.{name}", "rb") as part:
                        shutil.copyfileobj(part, files[name], 1 << 24)
            base += r["tokens"]
        return results
    finally:
        shutil.rmtree(parts, ignore_errors=True)


# %% [markdown]
# The preparation itself: the format comes from the file's first valid record; the ranges are
# checked and encoded (pretraining documents become `<s> text </s>`, chats go through
# `ChatEncoder`), and their counts are added up. Strict by default: the first bad line stops it,
# naming the file and line. With `skip_bad_lines` the bad lines are counted and listed in
# `meta.json`, and the run still stops when more than `max_bad_fraction` of the lines are bad
# (default `0.001`): a file that is mostly broken is a wrong file, not messy data.


# %% tags=["hide-input"]
#| export
def _bad_fraction_problem(meta: dict, max_bad_fraction: float) -> str | None:
    bad, n = meta["bad_lines"]["count"], max(meta.get("input_lines", 0), 1)
    if bad / n <= max_bad_fraction:
        return None
    line, problem = meta["bad_lines"]["lines"][0]
    return (
        f"{bad:,} of {n:,} lines are bad ({bad / n:.3%}), more than max_bad_fraction "
        f"{max_bad_fraction:.3%} allows (first: line {line}: {problem}); fix the file or "
        "raise the limit (--max-bad-fraction)"
    )


# %%
#| export
def prepare(
    source: str | Path,
    tokenizer: SpongeTokenizer,
    out_dir: str | Path,
    *,
    max_seq_len: int = 512,
    skip_bad_lines: bool = False,
    max_bad_fraction: float = 0.001,
    workers: int = 1,
    system_prompt: str | None = None,
    chunk: int = 4096,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Pre-tokenise a pretraining or chat JSONL file into ``out_dir``; returns ``meta.json``'s dict.

    Defined in 05_data. Writes ``ids.bin`` (uint16), ``offsets.bin`` (uint64, documents + 1),
    for chats ``kinds.bin`` (uint8: `CONTEXT`/`TRAINED`/`TAG`), then ``meta.json``. Reuses the
    folder when its ``meta.json`` matches the source's sha256, the tokenizer and the settings.
    Chats are truncated to ``max_seq_len + 1`` tokens (counted; dropped if nothing trained is
    left). Extra keys are counted (``meta["extra_keys"]``). When an earlier preparation of the
    folder is not reused, ``log`` (e.g. ``print``) gets one line saying why (``FOLDER: prepared
    again (max_seq_len 512 -> 1024 changed)``). A bad line raises ``FILE:LINE:
    problem``; with ``skip_bad_lines`` it is counted and listed (``meta["bad_lines"]``), and more
    than ``max_bad_fraction`` of bad lines raises. ``workers`` processes encode byte ranges of the
    file (the same bytes as one; they are started with ``spawn``, so a script that calls this needs
    the ``if __name__ == "__main__":`` guard). Memory holds ``chunk`` records per worker at a time.
    """
    source, out = Path(source), Path(out_dir)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file (expected a JSONL file to prepare)")
    if tokenizer.vocab_size > 1 << 16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit the uint16 memmap")
    if workers < 1 or not 0 <= max_bad_fraction <= 1:
        raise ValueError(
            f"need workers >= 1 and 0 <= max_bad_fraction <= 1, got {workers}, {max_bad_fraction}"
        )
    key = {
        "format_version": FORMAT_VERSION,
        "source_sha256": sha256_file(source),
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer, system_prompt),
        "max_seq_len": max_seq_len,
        "skip_bad_lines": skip_bad_lines,
    }
    out.mkdir(parents=True, exist_ok=True)
    meta = current = _current_meta(out, key)
    if current is None:
        replaced = _replaced(out, key)
        (out / META).unlink(missing_ok=True)  # the old files are no longer trusted
        meta = _prepare_files(source, tokenizer, out, key, workers, system_prompt, chunk)
    problem = _bad_fraction_problem(meta, max_bad_fraction) if skip_bad_lines else None
    if problem:  # then no meta.json: the folder is not used
        raise ValueError(f"{source}: {problem}")
    if current is None:
        atomic_write_text(out / META, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
        if replaced and log is not None:
            log(f"{out}: prepared again ({replaced})")
    return meta


# %% [markdown]
# The work for a folder that is not current (folded in the book): find the format, run the ranges,
# join them, and add up the ranges' counts, their bad lines (renumbered: each range's line numbers
# start after the lines of the ranges before it) and their extra keys:


# %% tags=["hide-input"]
#| export
def _prepare_files(source, tokenizer, out, key, workers, system_prompt, chunk) -> dict:
    """The work of `prepare` for a folder that is not current: the files, then the meta."""
    hint = "(to skip and count bad lines, use --skip-bad-lines)"
    kind, first_bad = _first_kind(source)
    if kind is None:
        if first_bad and not key["skip_bad_lines"]:
            raise ValueError(f"{source}:{first_bad[0]}: {first_bad[1]} {hint}")
        raise ValueError(f"{source}: no valid records to prepare")
    if kind not in ("pretrain", "chat"):
        raise ValueError(f"{source}: prepare takes pretraining or chat lines, not {kind} lines")
    job = {
        "source": str(source),
        "kind": kind,
        "tokenizer": tokenizer,
        "chunk": chunk,
        "system_prompt": system_prompt,
        "max_seq_len": key["max_seq_len"],
        "skip_bad_lines": key["skip_bad_lines"],
    }
    names = ("ids", "offsets", "kinds")[: 3 if kind == "chat" else 2]
    with contextlib.ExitStack() as stack:
        files = {n: stack.enter_context(atomic_open(out / f"{n}.bin")) for n in names}
        np.zeros(1, np.uint64).tofile(files["offsets"])
        files["ends"] = files.pop("offsets")
        results = _run_ranges(job, _shard_bounds(source, workers), out, files)
        offset, bad, extras = 0, BadLines(str(source)), Counter()
        for r in results:
            if r["error"]:
                raise ValueError(f"{source}:{offset + r['error'][0]}: {r['error'][1]} {hint}")
            for lineno, problem in r["bad"]:
                bad.add(offset + lineno, problem)
            bad.count += r["bad_count"] - len(r["bad"])
            extras.update(r["extra_keys"])
            offset += r["lines"]
    counts = (
        "documents",
        "tokens",
        "trained_tokens",
        "truncated",
        "dropped_untrained",
        "input_lines",
    )
    meta = {
        **key,
        "kind": kind,
        "source": source.name,
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        "pad_id": tokenizer.pad_id,
        **{c: sum(r[c] for r in results) for c in counts},
        "extra_keys": dict(sorted(extras.items())),
        "bad_lines": {"count": bad.count, "lines": bad.lines},
    }
    return json.loads(json.dumps(meta, ensure_ascii=False))


# %% [markdown]
# The world's pretraining file and its SFT file, prepared into the artifact folder (a second call
# finds them current and returns at once):

# %%
prepared = artifacts_dir("prepared", "world0-bpe2048")
pre_meta = prepare(world / "pretrain.jsonl", tok, prepared / "pretrain")
sft_meta = prepare(world / "sft_512.jsonl", tok, prepared / "sft_512", max_seq_len=256)
shown = (
    "source",
    "kind",
    "documents",
    "tokens",
    "trained_tokens",
    "truncated",
    "dropped_untrained",
)
for m in (pre_meta, sft_meta):
    print({k: m[k] for k in shown}, "bad lines:", m["bad_lines"]["count"])
assert prepare(world / "pretrain.jsonl", tok, prepared / "pretrain") == pre_meta  # reused
assert pre_meta["documents"] == sum(1 for _ in open(world / "pretrain.jsonl", encoding="utf-8"))

# %% [markdown]
# Two workers write the same bytes as one. The workers are fresh Python processes that import the
# *package*, so this cell calls the exported `spongebob.data.prepare` (a worker cannot see functions
# defined in this notebook):

# %%
from spongebob.data import prepare as package_prepare  # noqa: E402

two_dir = Path(tempfile.mkdtemp()) / "sft_512_two_workers"
two = package_prepare(world / "sft_512.jsonl", tok, two_dir, max_seq_len=256, workers=2)
names = ("ids.bin", "offsets.bin", "kinds.bin")
same = [(two_dir / n).read_bytes() == (prepared / "sft_512" / n).read_bytes() for n in names]
print("2 workers vs 1: same bytes", dict(zip(names, same)), "| same meta:", two == sft_meta)
assert all(same) and two == sft_meta

# %% [markdown]
# Real data is messy. A copy of the world's first 2,000 pretraining lines with one line cut short in
# the middle and one line that carries an extra `"id"`: the strict default stops at the broken line
# and says how to go on; skipping counts it, and the extra key is counted too; a limit below the
# file's bad fraction stops the run:

# %%
lines = (world / "pretrain.jsonl").read_bytes().splitlines(keepends=True)[:2000]
messy = Path(tempfile.mkdtemp()) / "messy.jsonl"
messy.write_bytes(
    b"".join(lines[:1000])
    + b'{"text": "cut off\n{"text": "ok", "id": 5}\n'
    + b"".join(lines[1000:])
)
try:
    prepare(messy, tok, messy.parent / "strict")
except ValueError as e:
    print("strict:", str(e).replace(str(messy), "messy.jsonl"))
m = prepare(messy, tok, messy.parent / "skipped", skip_bad_lines=True)
print(
    f"skipped: {m['bad_lines']['count']} bad of {m['input_lines']} lines {m['bad_lines']['lines']}"
)
print("extra keys:", m["extra_keys"], "| documents:", m["documents"])
try:
    prepare(messy, tok, messy.parent / "skipped", skip_bad_lines=True, max_bad_fraction=1e-4)
except ValueError as e:
    print("limit 0.01 %:", str(e).replace(str(messy), "messy.jsonl"))
assert m["bad_lines"]["lines"][0][0] == 1001 and m["extra_keys"] == {"id": 1}

# %% [markdown]
# Reading a prepared folder back: `PreparedData` opens the files as memmaps and checks them
# against `meta.json`. A document is a slice of `ids` between two offsets:


# %%
#| export
class PreparedData:
    """A folder written by `prepare`, opened read-only through memmaps. Defined in 05_data.

    ``ids`` (uint16), ``offsets`` (uint64, ``documents + 1``), ``kinds`` (uint8, chats only) and
    ``meta`` (the dict of ``meta.json``); ``doc(i)`` is document ``i``'s ``(ids, kinds)``.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_file = self.folder / META
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"{self.folder}: no {META}; prepare the data first "
                "(spongebob.data.prepare or `spongebob data prepare`)"
            )
        self.meta = json.loads(meta_file.read_text(encoding="utf-8"))
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{meta_file}: format {version}, this code reads {FORMAT_VERSION}; "
                "prepare the data again"
            )
        self.kind = self.meta["kind"]
        self.ids = self._open("ids.bin", np.uint16, self.meta["tokens"])
        self.offsets = self._open("offsets.bin", np.uint64, self.meta["documents"] + 1)
        self.kinds = None
        if self.kind == "chat":
            self.kinds = self._open("kinds.bin", np.uint8, self.meta["tokens"])

    def _open(self, name: str, dtype, count: int) -> np.ndarray:
        path = self.folder / name
        size = path.stat().st_size if path.is_file() else -1
        if size != count * np.dtype(dtype).itemsize:
            raise ValueError(
                f"{path}: {size} bytes, {META} promises {count} x {dtype.__name__}; "
                "prepare the data again"
            )
        return np.memmap(path, dtype=dtype, mode="r") if count else np.zeros(0, dtype)

    def __len__(self) -> int:
        return self.meta["documents"]

    def doc(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], None if self.kinds is None else self.kinds[a:b]


# %%
pre = PreparedData(prepared / "pretrain")
sft_data = PreparedData(prepared / "sft_512")
ids0, _ = pre.doc(0)
print(len(pre), "documents,", len(pre.ids), "tokens; document 0:", repr(tok.decode(ids0)[:80]))
assert tok.decode(ids0[1:-1]) == next(read_jsonl(world / "pretrain.jsonl"))["text"]

# %% [markdown]
# A prepared folder remembers the length its chats were cut at. A run that trains rows of `seq_len`
# tokens on a model of `max_seq_len` positions must not take chats prepared for a longer model (the
# positions past `max_seq_len` do not exist), nor silently train on chats cut shorter or longer than
# it asked for (a 1024-token long-context stage on a folder prepared at 512 would never see a long
# chat). `check_prepared_length` refuses both in one line; the training stages call it, and when
# they prepare from a JSONL file themselves, they prepare it at the run's own length. Packed
# pretraining data is cut into windows by the loader, so only `seq_len` against the model counts.


# %%
#| export
def check_prepared_length(data, seq_len: int, max_seq_len: int) -> None:
    """Raise ``ValueError`` (one line naming both lengths) when prepared data does not fit a run.

    Defined in 05_data. ``data``: a prepared folder, a `PreparedData` or its ``meta`` dict. A run
    trains rows of ``seq_len`` tokens on a model of ``max_seq_len`` positions; chat data keeps the
    length it was prepared at (``meta["max_seq_len"]``), which must be at most ``max_seq_len`` and
    equal to ``seq_len``.
    """
    if isinstance(data, dict):
        meta, name = data, data.get("source", "the prepared data")
    else:
        data = data if isinstance(data, PreparedData) else PreparedData(data)
        meta, name = data.meta, str(data.folder)
    if seq_len > max_seq_len:
        raise ValueError(f"seq_len {seq_len} is longer than the model's max_seq_len {max_seq_len}")
    if meta["kind"] != "chat":
        return  # packed windows are cut at seq_len by the loader
    length = meta["max_seq_len"]
    if length > max_seq_len:
        raise ValueError(
            f"{name}: chats prepared at max_seq_len {length}, longer than the model's max_seq_len "
            f"{max_seq_len}; prepare the data again with --max-seq-len {max_seq_len}"
        )
    if length != seq_len:
        raise ValueError(
            f"{name}: chats prepared at max_seq_len {length}, but this run trains at seq_len "
            f"{seq_len}; prepare the data again with --max-seq-len {seq_len}"
        )


# %%
try:
    check_prepared_length(sft_data, seq_len=512, max_seq_len=512)
except ValueError as e:
    print(str(e).replace(str(prepared), "..."))
check_prepared_length(sft_data, seq_len=256, max_seq_len=512)  # prepared at 256: fits
check_prepared_length(pre, seq_len=512, max_seq_len=512)  # pretraining: any seq_len up to the model

# %% [markdown]
# ## 6. Packing beats padding
#
# The original pads every pretraining line to 512 tokens and masks the padding out of the loss
# (SEED defect 3): a 60-token line then costs the compute of 512. Packing instead concatenates all
# documents into one stream, `<s> doc1 </s><s> doc2 </s>...`, and cuts it into windows of $T + 1$
# tokens: no padding at all. Documents are not masked from each other inside a window (as in
# nanoGPT and most pretraining code): the model learns that `</s>` ends a document and that what
# follows is unrelated, and attention across the boundary costs nothing extra. Masking them apart
# needs a block-diagonal attention mask (exercise 4 builds one). PyTorch's fused `is_causal` path
# takes no mask, but fused kernels for such masks exist: FlashAttention's variable-length kernels
# and PyTorch's FlexAttention run them, and Llama 3 was pretrained with documents masked apart. We
# keep the simpler causal path here.
#
# How much compute does each scheme spend on real tokens? Measured on the world's files:

# %%
doc_lens = np.diff(pre.offsets.astype(np.int64))
chat_lens = np.diff(sft_data.offsets.astype(np.int64))
useful = {
    "pretrain:\npad to 512": np.minimum(doc_lens, 512).sum() / (512 * len(doc_lens)),
    "pretrain:\npacked": 1.0,
    "SFT:\npad to 512": chat_lens.sum() / (512 * len(chat_lens)),
    "SFT: pad to\nbatch longest": None,
}
rng = np.random.default_rng(0)
order = rng.permutation(len(chat_lens))
batches = [chat_lens[order[i : i + 16]] for i in range(0, len(order) - 15, 16)]
useful["SFT: pad to\nbatch longest"] = sum(b.sum() for b in batches) / sum(
    16 * b.max() for b in batches
)
fig, ax = plt.subplots(figsize=(7, 3), dpi=90)
ax.bar(list(useful), [100 * v for v in useful.values()], color=["#bbbbbb", "#9be39b"] * 2)
for i, v in enumerate(useful.values()):
    ax.text(i, 100 * v + 2, f"{100 * v:.0f}%", ha="center")
ax.set_ylabel("useful tokens (%)")
ax.set_ylim(0, 115)
ax.set_title("Share of the compute spent on real tokens (world data)")
plt.show()
print({k.replace("\n", " "): round(float(v), 3) for k, v in useful.items()})
assert useful["pretrain:\npad to 512"] < 0.25 and useful["SFT: pad to\nbatch longest"] > 0.5

# %% [markdown]
# On the world's short lines, padding to 512 wastes most of the compute; the real data's lines are
# longer, and still the original spends a large share of pretraining on padding (SEED defect 3).
# For chat data we keep padding (each row must start with its own system prompt and be trained as
# one conversation), but only to the longest conversation of the batch, and on the right, so that a
# causal model needs no attention mask: padding comes after every real token, so no real token
# attends to it; its targets are `-100`. Section 7 then makes the rows of a batch similar in
# length, so that little padding is left.
#
# ## 7. Loaders: shuffled, resumable, sharded
#
# Both loaders share one ordering. Epoch $e$ lays all items (windows or conversations) out in one
# order drawn from `(seed, e)`. A *global batch* is the next $B \cdot W$ items of that order, where
# $B$ is the batch size of one rank and $W$ the number of ranks (GPUs); rank $r$ takes every
# $W$-th of them, starting at $r$, so ranks never see the same item in an epoch. The position is
# therefore global: the epoch and `sample`, the number of items that all ranks together have
# consumed in it. `state_dict()` saves it in a checkpoint (with $W$ and $B$ for the record) and
# `load_state_dict()` restores it, with the same number of ranks or another: a run saved by two
# ranks resumes on one at the very next item, nothing repeated and nothing skipped.


# %%
#| export
class _Layout:
    """Which items each batch holds. Defined in 05_data.

    Epoch ``e`` orders all items from ``(seed, e)`` (shuffled; with ``lengths``, grouped by length,
    see `grouped_order`). Each step consumes a global batch of ``batch_size * world_size`` items;
    rank ``rank`` takes every ``world_size``-th of them. The position is global (``sample``: items
    consumed by all ranks in this epoch), so it resumes on any number of ranks.
    """

    def __init__(
        self,
        items: np.ndarray,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        shuffle: bool,
        lengths: np.ndarray | None = None,
        window: int = 100,
    ) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                "need batch_size >= 1 and 0 <= rank < world_size, got "
                f"{batch_size}, {rank}, {world_size}"
            )
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.lengths, self.window = lengths, window
        self.group = batch_size * world_size  # items per global batch
        self.batches_per_epoch = len(items) // self.group
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(items)} items cannot fill one batch of {batch_size} on each "
                f"of {world_size} rank(s); use a smaller batch or more data"
            )
        self.epoch, self.start, self.batch = 0, 0, 0  # this layout began at item `start`
        self.epoch_group = self.group  # the global batch that this epoch's order was built for
        self._cached: tuple | None = None

    def epoch_order(self) -> np.ndarray:
        """All items of the current epoch, in the order the ranks consume them."""
        key = (self.epoch, self.epoch_group)
        if self._cached is None or self._cached[0] != key:
            order = self.items
            if self.shuffle:
                rng = np.random.default_rng([self.seed, self.epoch])
                order = self.items[rng.permutation(len(self.items))]
                if self.lengths is not None:
                    order = grouped_order(order, self.lengths, self.epoch_group, self.window, rng)
            self._cached = (key, order)
        return self._cached[1]

    def _epoch_items(self) -> np.ndarray:
        """This rank's items from the current layout's start to the end of the epoch."""
        rest = self.epoch_order()[self.start :]
        per_rank = len(rest) // self.group * self.batch_size
        return rest[self.rank :: self.world_size][:per_rank]


# %% [markdown]
# The position: `next_batch` takes this rank's next batch and moves on to the next epoch when too
# few items are left for a global batch. A checkpoint saves the seed, the epoch and the global
# `sample`, with the number of items as a check that the data is the same, and the world size and
# batch size for the record. Loading a position sets the start of the layout to `sample`; the ranks
# that load it, however many, read on from there. `epoch_group` keeps the current epoch's order as
# it was built (a grouped order depends on the global batch it was cut for); the next epoch is
# built for the new one.


# %%
#| export
class _Order(_Layout):
    """`_Layout` with a position: the next batch, and the global position to save and restore.
    Defined in 05_data."""

    @property
    def sample(self) -> int:
        return self.start + self.batch * self.group

    def next_batch(self) -> np.ndarray:
        if self.sample + self.group > len(self.items):  # the epoch is used up
            self.epoch, self.start, self.batch = self.epoch + 1, 0, 0
            self.epoch_group = self.group
        b = self.batch * self.batch_size
        self.batch += 1
        return self._epoch_items()[b : b + self.batch_size]

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "sample": self.sample,
            "items": len(self.items),
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "epoch_group": self.epoch_group,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(
                f"the saved data position is for seed {state.get('seed')}, this loader has "
                f"seed {self.seed}; resume with the same seed"
            )
        if state.get("items", len(self.items)) != len(self.items):
            raise ValueError(
                f"the saved data position is for {state['items']} items, this loader has "
                f"{len(self.items)}; resume with the same data, seq_len and validation split"
            )
        self.epoch = int(state["epoch"])
        if "sample" in state:  # global: any world size and batch size continue from here
            self.start, self.batch = int(state["sample"]), 0
            self.epoch_group = int(state["epoch_group"])
        else:  # a position saved before positions were global: same ranks and batch only
            self.start, self.batch, self.epoch_group = 0, int(state["batch"]), self.group


def _split_items(n: int, split: str, val_fraction: float) -> np.ndarray:
    """Item indices of a split: validation is the last ``ceil(n * val_fraction)`` items."""
    n_val = math.ceil(n * val_fraction) if val_fraction > 0 else 0
    if split == "train":
        return np.arange(n - n_val)
    if split == "val":
        if n_val == 0:
            raise ValueError("split='val' needs val_fraction > 0")
        return np.arange(n - n_val, n)
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


# %% [markdown]
# The pretraining loader: window $i$ is tokens $o + iT \dots o + iT + T$ of the stream, the input
# is its first $T$ tokens and the target its last $T$. Every target is trained, so `w` is `None`.
# Where the stream is cut is a choice, `cuts`:
#
# - `"shifted"` (the default): the offset $o$ is new each epoch (random in $[0, T)$). With fixed
#   cuts, a small corpus seen for many epochs can be memorised window by window, the training loss
#   falling while the validation loss rises; with cuts that move, a document is not seen cut at the
#   same places twice. Chapter 06 measures both.
# - `"fixed"`: $o = 0$ in every epoch; only the order of the windows changes.
# - `"random"`: no epochs at all. Every window starts anywhere in the training tokens, drawn
#   independently: global batch $g$ draws its $B$ starts from `default_rng([seed, 0, g])`, and rank
#   $r$ of $W$ takes global batches $r, r + W, r + 2W, \dots$ The position is then a single count of
#   global batches, which resumes on any number of ranks. Chapter 07 mixes such windows into SFT
#   (replay), where an epoch of the pretraining text means nothing.
#
# The random draws keep their position in a small class of their own; the base class both loaders
# share follows it.


# %%
#| export
class _Draws:
    """Window starts drawn independently (``cuts="random"``), with a global position.

    Defined in 05_data. The training tokens are ``ids[:end]``; global batch ``g`` is
    ``batch_size`` starts in ``[0, end - seq_len - 1)`` from
    ``numpy.random.default_rng([seed, 0, g])``, and rank ``rank`` of ``world_size`` takes
    ``g = start + i * world_size + rank`` for its ``i``-th batch. ``count`` (saved) is the number
    of global batches all ranks have drawn, so a run resumes on any number of ranks.
    """

    def __init__(self, end, seq_len, batch_size, seed, rank, world_size) -> None:
        if end < seq_len + 2 or batch_size < 1:
            raise ValueError(f"need batch_size >= 1 and more than {seq_len + 1} training tokens, "
                             f"got {batch_size} and {end}")  # fmt: skip
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        self.span, self.batch_size, self.seed = end - seq_len - 1, batch_size, seed
        self.rank, self.world_size, self.start, self.count = rank, world_size, 0, 0
        # An "epoch" (for a run measured in epochs): as many tokens as the training tokens.
        self.batches_per_epoch = max(1, end // (seq_len * batch_size * world_size))

    def next_batch(self) -> np.ndarray:
        g = self.start + self.count * self.world_size + self.rank
        self.count += 1
        return np.random.default_rng([self.seed, 0, g]).integers(0, self.span, self.batch_size)

    def state_dict(self) -> dict:
        count = self.start + self.count * self.world_size
        return {"count": count, "seed": self.seed, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed or "count" not in state:
            raise ValueError(
                f"the saved data position is for seed {state.get('seed')} "
                f"({'random' if 'count' in state else 'epoch-wise'} cuts), this loader has seed "
                f"{self.seed} (random cuts); resume with the same seed and cuts"
            )
        self.start, self.count = int(state["count"]), 0


# %%
#| export
class _Loader:
    """Shared by both loaders: iteration forever, position, sharding. Defined in 05_data."""

    order: _Order
    pin_memory: bool = False

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        while True:
            yield self.batch_of(self.order.next_batch())

    def _tensors(self, *arrays: np.ndarray | None) -> tuple[torch.Tensor | None, ...]:
        """NumPy arrays as tensors, in page-locked memory when ``pin_memory`` (fast copies to a
        GPU with ``non_blocking=True``)."""
        out = [None if a is None else torch.from_numpy(a) for a in arrays]
        return tuple(t.pin_memory() if t is not None and self.pin_memory else t for t in out)

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)

    @property
    def batches_per_epoch(self) -> int:
        return self.order.batches_per_epoch


def _pin_default(pin_memory: bool | None) -> bool:
    return torch.cuda.is_available() if pin_memory is None else bool(pin_memory)


CUTS = ("shifted", "fixed", "random")  # where PackedLoader cuts the stream


# %%
#| export
class PackedLoader(_Loader):
    """Packed pretraining batches ``(x, y, None)``, each ``(batch_size, seq_len)`` int64.

    Defined in 05_data. ``data`` is a `PreparedData` of pretraining text (or a 1-D array of ids).
    The stream is cut into ``(len - 1) // seq_len`` windows; ``split="val"`` takes the last
    ``val_fraction`` of them. With ``shuffle`` (training) every epoch visits the windows in a new
    order, and ``cuts`` says where they are cut: ``"shifted"`` moves all cuts by a new random
    offset in ``[0, seq_len)`` each epoch (both from ``(seed, epoch)``; the last training window is
    left out, so that a shifted window never reaches the validation tokens), ``"fixed"`` keeps
    them at multiples of ``seq_len``, ``"random"`` draws every window's start anywhere in the
    training tokens, with no epochs (`_Draws`). Rank ``rank`` of ``world_size`` reads its own
    shard; ``pin_memory`` (default: when CUDA is available) puts batches in page-locked memory.
    """

    def __init__(
        self,
        data,
        seq_len: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        val_fraction: float = 0.0,
        shuffle: bool = True,
        cuts: str = "shifted",
        pin_memory: bool | None = None,
    ) -> None:
        self.ids = np.asarray(getattr(data, "ids", data))  # a PreparedData, or ids themselves
        if self.ids.ndim != 1 or seq_len < 1 or cuts not in CUTS:
            raise ValueError(f"PackedLoader needs 1-D ids, seq_len >= 1 and cuts in {CUTS}, got "
                             f"shape {self.ids.shape}, {seq_len}, {cuts!r}")  # fmt: skip
        self.seq_len, self.cuts, self.pin_memory = seq_len, cuts, _pin_default(pin_memory)
        n = (len(self.ids) - 1) // seq_len
        items = _split_items(n, split, val_fraction)
        if cuts == "random":
            if split != "train" or not shuffle:
                raise ValueError("cuts='random' draws training windows: split='train', shuffle")
            end = len(self.ids) if len(items) == n else len(items) * seq_len  # validation after
            self.order = _Draws(end, seq_len, batch_size, seed, rank, world_size)
            return
        if shuffle and cuts == "shifted":
            items = items[:-1]  # room for the shift: window w may end at (w + 1) * T + offset
        self.order = _Order(items, batch_size, seed, rank, world_size, shuffle)

    def offset(self, epoch: int) -> int:
        """Where this epoch's cuts start: random in ``[0, seq_len)`` for shifted cuts, else 0."""
        if self.cuts != "shifted" or not self.order.shuffle:
            return 0
        return int(np.random.default_rng([self.order.seed, epoch, 1]).integers(self.seq_len))

    def batch_of(self, windows: np.ndarray):
        T, starts = self.seq_len, np.asarray(windows, dtype=np.int64)
        if self.cuts != "random":  # window numbers -> token positions
            starts = self.offset(self.order.epoch) + starts * T
        rows = self.ids[starts[:, None] + np.arange(T + 1)].astype(np.int64)  # (B, T + 1)
        x, y = self._tensors(rows[:, :-1], rows[:, 1:])
        return x, y, None  # x, y: (B, T)


# %% [markdown]
# The chat loader: conversation $i$ gives `x = ids[:-1]`, and `y = ids[1:]` with `-100` wherever
# the target is context; rows are right-padded to the longest of the batch. `tag_weight` (chapter
# 08) puts a weight on the reasoning-tag targets: `w` is then a float tensor, else `None`. A batch
# is built without a Python loop over its rows: one index matrix (row starts plus `0..L`) gathers
# every row's ids and kinds from the memmaps at once, and `np.where` writes padding and `-100`.
#
# Padding to the longest conversation of a *random* batch still wastes much of the compute when
# lengths vary (section 6 measured it). Sorting the whole file by length would remove the padding,
# but then every batch holds one kind of conversation, in the same order every epoch. The usual
# compromise is `grouped_order`: shuffle, sort by length within windows of about 100 global
# batches, cut each window into global batches, and shuffle the batches. Batches stay random in
# order and nearly uniform in length inside; the epoch is still a permutation drawn from
# `(seed, epoch)`, so it stays reproducible, shardable and resumable. `ChatLoader(...,
# length_window=100)` turns it on (the default 0 keeps plain shuffling).


# %%
#| export
def grouped_order(
    order: np.ndarray, lengths: np.ndarray, group: int, window: int, rng: np.random.Generator
) -> np.ndarray:
    """``order`` (a shuffled array of item ids) regrouped by length. Defined in 05_data.

    Sorted by ``lengths[item]`` within windows of ``window * group`` items, cut into batches of
    ``group`` items (a global batch), the batches shuffled by ``rng``; the last ``len % group``
    items (too few for a batch) stay at the end. A permutation of ``order``.
    """
    n = len(order) // group * group
    span = window * group
    blocks = [order[a : min(a + span, n)] for a in range(0, n, span)]
    blocks = [b[np.argsort(lengths[b], kind="stable")] for b in blocks if len(b)]
    batches = np.concatenate(blocks).reshape(-1, group) if blocks else order[:0].reshape(0, group)
    return np.concatenate([batches[rng.permutation(len(batches))].reshape(-1), order[n:]])


# %% [markdown]
# The gather that builds one padded batch, on its own: rows of different lengths, one index matrix,
# no loop over the rows.


# %%
#| export
def padded_chats(
    ids: np.ndarray,
    kinds: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    pad_id: int,
    pad_multiple: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The conversations ``ids[s : s + n]`` (``s``, ``n`` from ``starts``, ``lengths``) as one
    right-padded batch ``(x, y, k)``, each ``(B, L)`` with ``L`` the longest minus one rounded up
    to ``pad_multiple``: inputs (``pad_id`` after a row's end), targets (``-100`` where the target
    is context or padding) and the targets' kinds. Defined in 05_data."""
    L = -(-(int(lengths.max()) - 1) // pad_multiple) * pad_multiple
    pos = np.arange(L + 1)
    real = pos < lengths[:, None]  # (B, L + 1): a token of the conversation, not padding
    index = np.where(real, starts[:, None] + pos, 0)
    tokens = ids[index].astype(np.int64)
    k = np.where(real, kinds[index], CONTEXT)[:, 1:]
    x = np.where(real[:, 1:], tokens[:, :-1], pad_id)  # a row's last token has no target
    y = np.where(k > 0, tokens[:, 1:], IGNORE_INDEX)
    return x, y, k


# %%
#| export
class ChatLoader(_Loader):
    """Right-padded chat batches ``(x, y, w)``: ``x``, ``y`` ``(B, L)`` int64 with ``L`` the
    longest conversation of the batch minus one (rounded up to ``pad_multiple``); ``y = -100`` on
    context and padding; ``w`` is ``None``, or ``(B, L)`` float32 with ``tag_weight`` on `TAG`
    targets when it is not 1.

    Defined in 05_data. ``data`` is a `PreparedData` of chats. Shuffled per epoch from ``seed``,
    grouped by length within windows of ``length_window`` global batches when it is > 0 (see
    `grouped_order`), sharded by rank; ``split="val"`` takes the last ``val_fraction`` of the
    conversations; ``pin_memory`` (default: when CUDA is available) as in `PackedLoader`.
    """

    def __init__(
        self,
        data: PreparedData,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        split: str = "train",
        val_fraction: float = 0.0,
        shuffle: bool = True,
        tag_weight: float = 1.0,
        length_window: int = 0,
        pad_multiple: int = 1,
        pin_memory: bool | None = None,
    ) -> None:
        if data.kind != "chat":
            raise ValueError(f"{data.folder}: ChatLoader needs chat data, got {data.kind}")
        if length_window < 0 or pad_multiple < 1:
            raise ValueError(
                f"need length_window >= 0 and pad_multiple >= 1, got "
                f"{length_window}, {pad_multiple}"
            )
        self.data, self.tag_weight = data, float(tag_weight)
        self.pad_id, self.pad_multiple = int(data.meta["pad_id"]), pad_multiple
        self.pin_memory = _pin_default(pin_memory)
        self.starts = data.offsets[:-1].astype(np.int64)
        self.lengths = np.diff(data.offsets.astype(np.int64))
        items = _split_items(len(data), split, val_fraction)
        lengths = self.lengths if length_window > 0 else None
        self.order = _Order(
            items, batch_size, seed, rank, world_size, shuffle, lengths, length_window
        )

    def batch_of(self, docs: np.ndarray):
        docs = np.asarray(docs, dtype=np.int64)
        starts, lengths = self.starts[docs], self.lengths[docs]
        data = self.data
        x, y, kinds = padded_chats(
            data.ids, data.kinds, starts, lengths, self.pad_id, self.pad_multiple
        )
        w = None
        if self.tag_weight != 1.0:
            w = np.where(kinds == TAG, np.float32(self.tag_weight), np.float32(1.0))
        return self._tensors(x, y, w)


# %% [markdown]
# One batch of each, with the checks that matter: the packed targets are the inputs shifted by
# one; chat targets are `-100` exactly where the kinds say context or padding, and the batch equals
# the one built row by row, the plain way:

# %%
from spongebob.data import ChatLoader, PackedLoader  # noqa: E402,F811

packed = PackedLoader(pre, seq_len=256, batch_size=16, seed=0)
x, y, w = next(iter(packed))
print("packed:", tuple(x.shape), "windows per epoch:", packed.batches_per_epoch * 16)
assert w is None and torch.equal(x[:, 1:], y[:, :-1])

chats = ChatLoader(sft_data, batch_size=4, seed=0)
x, y, w = next(iter(chats))
print("chat:", tuple(x.shape), "trained targets per row:", (y != IGNORE_INDEX).sum(1).tolist())
assert ((x == tok.pad_id) <= (y == IGNORE_INDEX)).all()  # padding is never a trained target
for r, d in enumerate(chats.order._epoch_items()[:4]):  # row by row
    ids_d, kinds_d = (torch.from_numpy(a.astype(np.int64)) for a in sft_data.doc(int(d)))
    n = len(ids_d) - 1
    assert torch.equal(x[r, :n], ids_d[:-1]) and (x[r, n:] == tok.pad_id).all()
    assert torch.equal(y[r, :n], torch.where(kinds_d[1:] > 0, ids_d[1:], IGNORE_INDEX))

# %% [markdown]
# Grouping by length, measured over one epoch of the world's SFT chats in batches of 16: the share
# of the positions in a batch that hold a real token (not padding), with plain shuffling and with
# `length_window=100`:


# %%
def useful_share(loader: ChatLoader) -> float:
    """Real tokens / all positions of one epoch of ``loader``'s batches."""
    real = total = 0
    for _ in range(loader.batches_per_epoch):
        lens = loader.lengths[loader.order.next_batch()] - 1
        real, total = real + lens.sum(), total + len(lens) * lens.max()
    return real / total


plain_share = useful_share(ChatLoader(sft_data, 16, seed=0))
grouped_loader = ChatLoader(sft_data, 16, seed=0, length_window=100)
grouped_share = useful_share(grouped_loader)
print(
    f"Real tokens fill {plain_share:.0%} of a batch of randomly shuffled chats and "
    f"{grouped_share:.0%} when the chats are grouped by length."
)
epoch_items = grouped_loader.order.epoch_order()
assert sorted(epoch_items.tolist()) == list(range(len(sft_data)))  # still a permutation
assert grouped_share > max(plain_share, 0.9)

# %% [markdown]
# Resuming: a loader restored from a saved position yields exactly the batches the first one
# would have yielded next; two ranks of a two-GPU run read disjoint windows; and a position saved by
# two ranks continues on one rank at the next item of the epoch's order:

# %%
a = PackedLoader(pre, 64, 8, seed=3)
it = iter(a)
for _ in range(5):
    next(it)
saved = a.state_dict()
expected_next = [next(it)[0] for _ in range(3)]
b = PackedLoader(pre, 64, 8, seed=3)
b.load_state_dict(saved)
it_b = iter(b)
assert all(torch.equal(next(it_b)[0], e) for e in expected_next)

r0, r1 = (PackedLoader(pre, 64, 8, seed=3, rank=r, world_size=2) for r in (0, 1))
w0 = set(r0.order._epoch_items().tolist())
w1 = set(r1.order._epoch_items().tolist())
print("saved position:", saved, "| rank windows overlap:", len(w0 & w1))
assert not (w0 & w1)

steps = [np.concatenate([r0.order.next_batch(), r1.order.next_batch()]) for _ in range(5)]
one_rank = PackedLoader(pre, 64, 8, seed=3)
one_rank.load_state_dict(r0.state_dict())  # saved by rank 0 of 2 after 5 steps
steps += [one_rank.order.next_batch() for _ in range(10)]
consumed = np.concatenate(steps)
epoch_order, pos, in_order = one_rank.order.epoch_order(), 0, True
for step in steps:  # each step takes the next items of the epoch's order
    in_order &= set(step.tolist()) == set(epoch_order[pos : pos + len(step)].tolist())
    pos += len(step)
print(
    f"2 ranks for 5 steps, then 1 rank for 10 batches: {len(consumed)} windows, "
    f"{len(set(consumed.tolist()))} different, each step the next ones of the epoch: {in_order}"
)
assert in_order and len(set(consumed.tolist())) == len(consumed) == 160

# %% [markdown]
# The three cut policies side by side, on a stream whose token $i$ is the number $i$ (so a
# window's first token says where it starts): over two epochs' worth of batches, where the windows
# start, counted modulo $T$:

# %%
numbered = np.arange(20_001)  # token i is i
for cuts in CUTS:
    cut_loader = PackedLoader(numbered, 64, 8, seed=0, cuts=cuts)
    it = iter(cut_loader)
    first = torch.cat([next(it)[0][:, 0] for _ in range(2 * cut_loader.batches_per_epoch)])
    phases = sorted(set((first % 64).tolist()))
    print(f"cuts={cuts!r}: {len(phases)} different starts modulo 64, e.g. {phases[:4]}")
    assert (len(phases) == 1) == (cuts == "fixed")


# %% [markdown]
# ## Putting it together
#
# The whole path from a JSONL file to a training batch, with the exported names; this is what
# chapters 06-08 and `spongebob data prepare` do:

# %%
from spongebob.data import (  # noqa: E402,F811
    ChatEncoder,
    PreparedData,
    check_prepared_length,
    prepare,
)

folder = artifacts_dir("prepared", "world0-bpe2048", "r1_1024")
meta = prepare(world / "r1_1024.jsonl", tok, folder, max_seq_len=512, skip_bad_lines=True)
check_prepared_length(meta, seq_len=512, max_seq_len=512)
r1_batches = ChatLoader(PreparedData(folder), batch_size=8, tag_weight=10.0, length_window=100)
x, y, w = next(iter(r1_batches))
n_tags = int((w == 10).sum())
print(
    f"{meta['documents']} reasoning chats ({meta['bad_lines']['count']} bad lines); batch "
    f"{tuple(x.shape)}; weight 10 on {n_tags} tag targets"
)
assert n_tags == 4 * 8  # four tags per reply, eight replies

# %% [markdown]
# ## Summary
#
# * Four JSONL formats feed the whole pipeline; they are read one line at a time, and every bad
#   line is an error naming its file and line, or, when asked, skipped, counted and listed (up to
#   a limit on their share). Extra keys are accepted and counted.
# * A chat is rendered to ids and a mask in one pass: special tokens as ids, text with
#   special-token parsing off, and the mask marks exactly each assistant reply and its `</s>`. The
#   original's mask is shifted by one: it never trains the first answer token.
# * Reasoning tags are single tokens in our tokenizer and several in the original's; the encoder
#   marks them either way, inside replies only.
# * Pre-tokenising once into `uint16` memmaps keeps memory flat and takes tokenization out of the
#   training loop; worker processes share a large file by byte ranges and write the same bytes.
#   A prepared folder remembers its length, and a run of another length refuses it.
# * Packing removes the padding that the original spends a large share of its compute on; for
#   chats, grouping by length within windows removes most of what is left.
# * Loaders shuffle from `(seed, epoch)`, shard by rank, and save a global position, so a run
#   resumes exactly, on the same number of GPUs or another. Packed windows are cut at places that
#   move every epoch (`cuts="shifted"`), at fixed places, or anywhere (`"random"`, no epochs).
#
# | module | what it exports |
# |---|---|
# | `spongebob.data` | `iter_records`, `read_jsonl`, `record_problem`, `turns_problem`, `extra_keys`, `BadLines`, `ChatEncoder`, `reply_pieces`, `CONTEXT`/`TRAINED`/`TAG`, `prepare`, `tokenizer_fingerprint`, `PreparedData`, `check_prepared_length`, `grouped_order`, `PackedLoader` (`cuts`: `CUTS`), `padded_chats`, `ChatLoader` |
# | `spongebob.viz` | `plot_token_kinds`, `MASK_COLOURS` |
#
# Next: [06 · Pretraining](06_pretrain.ipynb) trains the tiny model on these packed batches.

# %% [markdown]
# ## Exercises
#
# Each exercise has a stub to complete and a check cell that says "not attempted yet" until you do.
# Solutions: `notebooks/solutions/05_data_solutions.ipynb`.
#
# **1 (predict, then verify).** A conversation has a system prompt, two user turns and two replies
# of 6 and 9 tokens. How many targets does our mask train, and how many does the original's? Write
# your two numbers, then check them with `ChatEncoder` and `original_style_kinds` on a chat of your
# own making.


# %%
def trained_counts(answer_token_counts: list[int]) -> tuple[int, int]:
    """(ours, original's) number of trained tokens for replies of these lengths."""
    raise NotImplementedError


# %%
try:
    got = trained_counts([6, 9])
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    assert got == (17, 18), (
        f"Exercise 1: {got}. Hint: ours trains each reply and its </s>; the original skips "
        "each reply's first token but trains the '\\n' after </s> and, mid-chat, the next <s>"
    )
    print("Exercise 1: correct")

# %% [markdown]
# **2 (easy). Padding waste.** Write `padding_waste(lengths, batch_size)`: the fraction of
# positions that are padding when `lengths` (in this order) are cut into consecutive batches that
# are padded to their longest row (drop a last incomplete batch).


# %%
def padding_waste(lengths: list[int], batch_size: int) -> float:
    raise NotImplementedError


# %%
try:
    got = padding_waste([2, 4, 3, 3, 5], 2)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    assert abs(got - 2 / 14) < 1e-9, (
        f"Exercise 2: {got:.4f} != {2 / 14:.4f}. Hint: batches [2, 4] and [3, 3] hold 2 pads "
        "in 4 * 2 + 3 * 2 = 14 slots; the last batch [5] is incomplete and dropped"
    )
    assert padding_waste([7, 7, 7], 3) == 0.0, "Exercise 2: equal lengths need no padding"
    print("Exercise 2: correct")

# %% [markdown]
# **3 (lab). How large a window?** `grouped_order` sorts by length within windows of `window` global
# batches. A larger window leaves less padding, but each batch then comes from a narrower band of
# lengths. Write `share_for_window(lengths, batch_size, window, seed)`: the share of real tokens in
# one epoch of batches of `batch_size` (one rank), ordered by a permutation drawn from
# `np.random.default_rng(seed)` and then by `grouped_order` with that window. Predict first: what
# does a window of 1 give, compared with plain shuffling? Where does the share stop growing? (Run
# the chapter first: the check uses `chat_lens`.)


# %%
def share_for_window(lengths: np.ndarray, batch_size: int, window: int, seed: int) -> float:
    raise NotImplementedError


# %%
def plain_share_of(lengths, batch_size, seed):  # plain shuffling, the same permutation
    order = np.random.default_rng(seed).permutation(len(lengths))
    b = lengths[order[: len(order) // batch_size * batch_size]].reshape(-1, batch_size)
    return b.sum() / (batch_size * b.max(1).sum())


try:
    shares = {w: share_for_window(chat_lens, 16, w, seed=0) for w in (1, 10, 100, 10_000)}
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    plain = plain_share_of(chat_lens, 16, seed=0)
    assert abs(shares[1] - plain) < 1e-9, (
        f"Exercise 3: window 1 gives {shares[1]:.4f}, plain shuffling {plain:.4f}. Hint: a window "
        "of one batch sorts inside each batch, which changes no batch's longest row"
    )
    assert shares[1] < shares[10] <= shares[100] <= shares[10_000] + 1e-9, (
        f"Exercise 3: {shares}. Hint: cut the grouped order into consecutive batches of "
        "batch_size and divide the real tokens by batch_size times each batch's longest row"
    )
    print("Exercise 3: correct;", {w: round(float(v), 3) for w, v in shares.items()})

# %% [markdown]
# **4 (harder). Document masking.** Packed windows let a token attend to earlier documents in the
# same window. Write `document_mask(x, bos_id)` for a packed batch `x` `(B, T)`: a boolean
# `(B, 1, T, T)` mask, True where query $i$ may attend key $j$: $j \le i$ and no `<s>` at a
# position in $(j, i]$. (Section 6 says which attention kernels can run such a mask fused.)


# %%
def document_mask(x: torch.Tensor, bos_id: int) -> torch.Tensor:
    raise NotImplementedError


# %%
try:
    xs = torch.tensor([[5, 1, 7, 8, 1, 9]])
    m = document_mask(xs, bos_id=1)[0, 0]
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    hint = (
        "Hint: number the documents with a cumulative sum of (x == bos_id); query i may see key "
        "j when j <= i and both carry the same number"
    )
    assert m.shape == (6, 6), f"Exercise 4: shape {tuple(m.shape)}, want (B, 1, T, T). {hint}"
    assert m[3].tolist() == [False, True, True, True, False, False], f"Exercise 4: row 3. {hint}"
    assert m[5].tolist() == [False] * 4 + [True, True] and m[0, 0], f"Exercise 4: row 5. {hint}"
    print("Exercise 4: correct")
