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
# 3. `prepare`: pre-tokenisation of a JSONL file into a `uint16` memmap with constant memory;
# 4. `PackedLoader` and `ChatLoader`: packed pretraining windows (no padding) and right-padded chat
#    batches, shuffled from a seed, resumable, and sharded across GPUs.
#
# ![Data: pretraining lines and chats are validated and streamed, encoded once by prepare into memory-mapped ids (and token kinds for chats), then batched by PackedLoader without padding or by ChatLoader, right-padded with the loss on the replies](../book/figures/data_overview.svg)

# %% [markdown]
# :::{admonition} 中文摘要
# :class: zh-summary
# 把四种 JSONL 格式变成各训练阶段所需的词元 id、损失掩码和批次：逐行流式读取并校验（出错时指明文件和行号），用 `ChatEncoder` 一次性得到对话的 id 和只覆盖助手回复（含 `</s>`）的损失掩码，并展示原项目掩码错位一位的问题；再把数据一次性预分词为 `uint16` 内存映射文件（内存占用不随文件增长），用序列打包代替填充，并提供可复现、可断点续训、可多卡分片的数据加载器。导出模块：`spongebob.data`。
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
# able to find the line. `record_problem` describes what is wrong with one parsed record:

# %%
#| export
"""Training data: validated JSONL records, chats rendered to ids and a loss mask, pre-tokenised
memmaps, and loaders that pack (pretraining) or pad (chat). Defined in 05_data.

- Every JSONL file is streamed (`spongebob.files.iter_jsonl`), never loaded whole. A malformed
  line stops with ``FILE:LINE: problem``, or, with ``skip_bad_lines``, is skipped, counted and
  listed in a `BadLines` report: nothing is dropped silently.
- `ChatEncoder` renders a conversation to ids and per-token *kinds* in one pass: special tokens are
  inserted as ids, message text is encoded with special-token parsing off (a ``</s>`` typed by a
  user is text), and the kinds mark exactly each assistant reply and its closing ``</s>``
  (`TRAINED`; reasoning tags `TAG`), everything else `CONTEXT`.
- `prepare` writes ``ids.bin`` (uint16), ``offsets.bin`` (uint64 document starts), for chats
  ``kinds.bin`` (uint8), and ``meta.json``; memory does not grow with the input; it is reused when
  the source, the tokenizer and the settings are unchanged.
- `PackedLoader` cuts the token stream into windows (pretraining: no padding, documents are not
  masked from each other); `ChatLoader` right-pads conversations (no attention mask is needed).
  Both yield ``(x, y, w)`` forever, shuffle each epoch from a seed, shard across ranks, and save
  their position with ``state_dict``.
"""

import contextlib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from spongebob.files import atomic_open, atomic_write_text, iter_jsonl, sha256_file
from spongebob.model import IGNORE_INDEX
from spongebob.tokenizer import BOS, EOS, REASONING_TOKENS, SpongeTokenizer, chat_segments

ROLES = ("system", "user", "assistant")
# The four line formats: the key that identifies each, and the shape in words (for errors).
FORMATS = {
    "pretrain": ("text", "{'text': str}"),
    "chat": ("conversations", "{'conversations': [{'role': ..., 'content': ...}, ...]}"),
    "eval": ("messages", "{'messages': [...], 'expected': str} (optional 'id')"),
    "completion": ("prompt", "{'prompt': str, 'expected': str} (optional 'id')"),
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
        if not isinstance(t, dict) or set(t) != {"role", "content"}:
            keys = sorted(t) if isinstance(t, dict) else type(t).__name__
            return f"turn {i} must be an object with exactly 'role' and 'content' (got {keys})"
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
    allowed = {key} | ({"expected", "id"} if kind in ("eval", "completion") else set())
    if claimed != kind or not set(record) <= allowed:
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
# A file with four broken lines, read both ways:

# %%
bad_file = Path(tempfile.mkdtemp()) / "bad.jsonl"
bad_file.write_bytes(
    b'{"conversations": [{"role": "user", "content": "Hi"}, '
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

# %%
#| export
CONTEXT, TRAINED, TAG = 0, 1, 2  # token kinds in kinds.bin: not trained, trained, reasoning tag
_TAG_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in REASONING_TOKENS) + ")")


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
                for part in _TAG_SPLIT.split(text):  # "<think>" -> a TAG piece, the rest TRAINED
                    if part in REASONING_TOKENS:
                        out.append((self._tag_ids.get(part, part), TAG))
                    elif part:
                        out.append((part, TRAINED))
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

# %%
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
    ax.legend(handles, [MASK_LABELS[k] for k in sorted(MASK_LABELS)], loc="upper right",
              bbox_to_anchor=(1, 1.35), ncol=3, fontsize=8, frameon=False)  # fmt: skip
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
print(len(ids), "tokens,", sum(k > 0 for k in kinds), "trained;",
      "eos ids:", sum(i == tok.eos_id for i in ids), "(the user's '</s>' stayed text)")  # fmt: skip
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
# the `</s>\n` (SEED defect 2). After the shift to targets, two tokens are wrong: the first answer
# token is never trained, and the token after `</s>\n` (the next turn's `<s>`) is. Here is a
# re-creation of that rule from its description (not the original's code), beside ours:


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
assert orig[first_answer] == 0 and kinds2[first_answer] == 1

# %% [markdown]
# Does one token matter? The first token of a reply is the model's decision of *how to start*; a
# model never trained on it starts replies by chance. And training the token after `</s>\n` asks
# the model to predict the next user turn's `<s>`: after `</s>` generation has stopped, so that is
# wasted, and it teaches nothing about the user. In SFT data with short answers (ours are 5-10
# tokens), the first token is a tenth of all the supervision.
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
# Our tokenizer has each tag as one special token (ids 3-6, chapter 01); the original's does not,
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
    assert "".join(tags) == "".join(
        REASONING_TOKENS
    )  # only the reply's four tags, never the user's

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

# %%
#| export
FORMAT_VERSION = 1
META = "meta.json"


def tokenizer_fingerprint(tokenizer: SpongeTokenizer, system_prompt: str | None = None) -> str:
    """sha256 of what decides the ids: the tokenizer's JSON, its bos/eos/pad ids and the default
    system prompt that chats are rendered with. Defined in 05_data."""
    system = tokenizer.default_system_prompt if system_prompt is None else system_prompt
    key = json.dumps([tokenizer.tokenizer.to_str(), tokenizer.bos_id, tokenizer.eos_id,
                      tokenizer.pad_id, system])  # fmt: skip
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _current_meta(folder: Path, key: dict) -> dict | None:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in key.items()):
        return None
    sizes = {"ids.bin": 2 * meta["tokens"], "offsets.bin": 8 * (meta["documents"] + 1)}
    if meta["kind"] == "chat":
        sizes["kinds.bin"] = meta["tokens"]
    ok = all((folder / n).is_file() and (folder / n).stat().st_size == s for n, s in sizes.items())
    return meta if ok else None


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _write_chunk(records, kind, encoder, max_seq_len, stats, files) -> None:
    """Encode one chunk of records and append it to the open ``files`` (ids, offsets, kinds)."""
    if kind == "pretrain":
        docs = [(ids, None) for ids in encoder.encode_texts([r["text"] for r in records])]
    else:
        docs = encoder.encode_many([r["conversations"] for r in records])
    all_ids, all_kinds, lengths = [], [], []
    for ids, kinds in docs:
        if kinds is not None:
            if len(ids) > max_seq_len + 1:
                stats["truncated"] += 1
                ids, kinds = ids[: max_seq_len + 1], kinds[: max_seq_len + 1]
            trained = sum(1 for k in kinds[1:] if k)
            if not trained:
                stats["dropped_untrained"] += 1
                continue
            stats["trained_tokens"] += trained
            all_kinds += kinds
        else:
            stats["trained_tokens"] += len(ids) - 1
        all_ids += ids
        lengths.append(len(ids))
    np.asarray(all_ids, dtype=np.uint16).tofile(files["ids"])  # one write per chunk
    if "kinds" in files:
        np.asarray(all_kinds, dtype=np.uint8).tofile(files["kinds"])
    ends = stats["tokens"] + np.cumsum(lengths, dtype=np.uint64)
    ends.astype(np.uint64).tofile(files["offsets"])
    stats["documents"] += len(lengths)
    stats["tokens"] += len(all_ids)


# %% [markdown]
# The preparation loop itself: records in, chunks encoded, arrays appended. Pretraining documents
# become `<s> text </s>`; chats go through `ChatEncoder`.


# %%
#| export
def prepare(
    source: str | Path,
    tokenizer: SpongeTokenizer,
    out_dir: str | Path,
    *,
    max_seq_len: int = 512,
    skip_bad_lines: bool = False,
    system_prompt: str | None = None,
    chunk: int = 4096,
) -> dict:
    """Pre-tokenise a pretraining or chat JSONL file into ``out_dir``; returns ``meta.json``'s dict.

    Defined in 05_data. Writes ``ids.bin`` (uint16), ``offsets.bin`` (uint64, documents + 1),
    for chats ``kinds.bin`` (uint8: `CONTEXT`/`TRAINED`/`TAG`), then ``meta.json``. Reuses the
    folder when its ``meta.json`` matches the source's sha256, the tokenizer and the settings.
    Chats are truncated to ``max_seq_len + 1`` tokens (counted; dropped if nothing trained is
    left). Bad lines raise ``FILE:LINE: problem`` unless ``skip_bad_lines`` (then listed in the
    meta). Memory holds ``chunk`` records at a time.
    """
    source, out = Path(source), Path(out_dir)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file (expected a JSONL file to prepare)")
    if tokenizer.vocab_size > 1 << 16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit the uint16 memmap")
    key = {"format_version": FORMAT_VERSION, "source_sha256": sha256_file(source),
           "tokenizer_sha256": tokenizer_fingerprint(tokenizer, system_prompt),
           "max_seq_len": max_seq_len, "skip_bad_lines": skip_bad_lines}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    meta = _current_meta(out, key)
    if meta is not None:
        return meta
    (out / META).unlink(missing_ok=True)  # the old files are no longer trusted
    bad = BadLines(str(source))
    records = iter_records(source, skip_bad_lines=skip_bad_lines, bad=bad)
    first = next(records, None)
    if first is None:
        raise ValueError(f"{source}: no valid records to prepare. {bad.summary()}".strip())
    kind = record_kind(first[1])
    if kind not in ("pretrain", "chat"):
        raise ValueError(f"{source}: prepare takes pretraining or chat lines, not {kind} lines")
    encoder = ChatEncoder(tokenizer, system_prompt)
    stats = dict(documents=0, tokens=0, trained_tokens=0, truncated=0, dropped_untrained=0)
    with contextlib.ExitStack() as stack:
        files = {name: stack.enter_context(atomic_open(out / f"{name}.bin"))
                 for name in ("ids", "offsets", "kinds")[: 3 if kind == "chat" else 2]}  # fmt: skip
        np.zeros(1, np.uint64).tofile(files["offsets"])
        for batch in _chunks(itertools.chain([first], records), chunk):
            _write_chunk([r for _, r in batch], kind, encoder, max_seq_len, stats, files)
    meta = {**key, "kind": kind, "source": source.name, "vocab_size": tokenizer.vocab_size,
            "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id,
            **stats, "bad_lines": {"count": bad.count, "lines": bad.lines}}  # fmt: skip
    atomic_write_text(out / META, json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return meta


# %% [markdown]
# The world's pretraining file and its SFT file, prepared into the artifact folder (a second call
# finds them current and returns at once):

# %%
prepared = artifacts_dir("prepared", "world0-bpe2048")
pre_meta = prepare(world / "pretrain.jsonl", tok, prepared / "pretrain")
sft_meta = prepare(world / "sft_512.jsonl", tok, prepared / "sft_512", max_seq_len=256)
for m in (pre_meta, sft_meta):
    print(
        {
            k: m[k]
            for k in (
                "source",
                "kind",
                "documents",
                "tokens",
                "trained_tokens",
                "truncated",
                "dropped_untrained",
            )
        },
        "bad lines:",
        m["bad_lines"]["count"],
    )
assert prepare(world / "pretrain.jsonl", tok, prepared / "pretrain") == pre_meta  # reused
assert pre_meta["documents"] == sum(1 for _ in open(world / "pretrain.jsonl", encoding="utf-8"))

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
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format {self.meta.get('format_version')}, this "
                             f"code reads {FORMAT_VERSION}; prepare the data again")  # fmt: skip
        self.kind = self.meta["kind"]
        self.ids = self._open("ids.bin", np.uint16, self.meta["tokens"])
        self.offsets = self._open("offsets.bin", np.uint64, self.meta["documents"] + 1)
        self.kinds = self._open("kinds.bin", np.uint8, self.meta["tokens"]) if (
            self.kind == "chat") else None  # fmt: skip

    def _open(self, name: str, dtype, count: int) -> np.ndarray:
        path = self.folder / name
        size = path.stat().st_size if path.is_file() else -1
        if size != count * np.dtype(dtype).itemsize:
            raise ValueError(f"{path}: {size} bytes, {META} promises {count} x {dtype.__name__}; "
                             "prepare the data again")  # fmt: skip
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
# ## 6. Packing beats padding
#
# The original pads every pretraining line to 512 tokens and masks the padding out of the loss
# (SEED defect 3): a 60-token line then costs the compute of 512. Packing instead concatenates all
# documents into one stream, `<s> doc1 </s><s> doc2 </s>...`, and cuts it into windows of $T + 1$
# tokens: no padding at all. Documents are not masked from each other inside a window (as in
# nanoGPT and most pretraining code): the model learns that `</s>` ends a document and that what
# follows is unrelated, and attention across the boundary costs nothing extra. Masking them apart
# would need a block-diagonal attention mask, which rules out the fused causal kernels.
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
# On the world's short lines, padding to 512 wastes most of the compute; on the real data (lines of
# up to 512 characters, about 1.5 characters per Chinese token) the original wastes about half.
# For chat data we keep padding (each row must start with its own system prompt and be trained as
# one conversation), but only to the longest conversation of the batch, and on the right, so that a
# causal model needs no attention mask: padding comes after every real token, so no real token
# attends to it; its targets are `-100`.
#
# ## 7. Loaders: shuffled, resumable, sharded
#
# Both loaders share one ordering: each epoch is a permutation of the items (windows or
# conversations) drawn from `(seed, epoch)`; with several GPUs, rank $r$ of $W$ takes every $W$-th
# item of it, so ranks never see the same item in an epoch. The position is two numbers, the epoch
# and the batch within it: `state_dict()` saves it in a checkpoint, `load_state_dict()` restores
# it, and training continues with exactly the batches it would have seen.


# %%
#| export
class _Order:
    """Which items each batch holds: a permutation per epoch from ``(seed, epoch)``, sharded by
    rank, cut into full batches. Defined in 05_data."""

    def __init__(self, items: np.ndarray, batch_size: int, seed: int, rank: int,
                 world_size: int, shuffle: bool) -> None:  # fmt: skip
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got "
                             f"{batch_size}, {rank}, {world_size}")  # fmt: skip
        self.items, self.batch_size, self.seed = items, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.batches_per_epoch = len(items) // world_size // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(items)} items cannot fill one batch of {batch_size} on each "
                f"of {world_size} rank(s); use a smaller batch or more data"
            )
        self.epoch, self.batch = 0, 0
        self._cached: tuple[int, np.ndarray] | None = None

    def _epoch_items(self) -> np.ndarray:
        if self._cached is None or self._cached[0] != self.epoch:
            perm = self.items
            if self.shuffle:
                perm = self.items[np.random.default_rng([self.seed, self.epoch]).permutation(
                    len(self.items))]  # fmt: skip
            per_rank = len(self.items) // self.world_size
            self._cached = (self.epoch, perm[self.rank :: self.world_size][:per_rank])
        return self._cached[1]

    def next_batch(self) -> np.ndarray:
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        b = self.batch * self.batch_size
        self.batch += 1
        return self._epoch_items()[b : b + self.batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"the saved data position is for seed {state.get('seed')}, this "
                             f"loader has seed {self.seed}")  # fmt: skip
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


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
# The offset $o$ is new each epoch (random in $[0, T)$): with fixed cuts, a small corpus seen for
# many epochs is memorised window by window. Chapter 06 measured it: on the world's 260 k tokens,
# 900 steps (14 epochs) with fixed cuts reached 61% held-out fact completion while the validation
# loss rose after step 600; with cuts that move, the same run reached 86%.


# %%
#| export
class _Loader:
    """Shared by both loaders: iteration forever, position, sharding. Defined in 05_data."""

    order: _Order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        while True:
            yield self.batch_of(self.order.next_batch())

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.order.load_state_dict(state)

    @property
    def batches_per_epoch(self) -> int:
        return self.order.batches_per_epoch


class PackedLoader(_Loader):
    """Packed pretraining batches ``(x, y, None)``, each ``(batch_size, seq_len)`` int64.

    Defined in 05_data. ``data`` is a `PreparedData` of pretraining text (or a 1-D array of ids).
    The stream is cut into ``(len - 1) // seq_len`` windows; ``split="val"`` takes the last
    ``val_fraction`` of them. With ``shuffle`` (training), every epoch visits the windows in a new
    order AND shifts all cuts by a new random offset in ``[0, seq_len)`` (both from ``(seed,
    epoch)``), so a document is not seen cut at the same places every epoch; the last training
    window is left out so that a shifted window never reaches into the validation tokens. Rank
    ``rank`` of ``world_size`` reads its own shard.
    """

    def __init__(self, data, seq_len: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, split: str = "train", val_fraction: float = 0.0,
                 shuffle: bool = True) -> None:  # fmt: skip
        self.ids = np.asarray(getattr(data, "ids", data))  # a PreparedData, or ids themselves
        if self.ids.ndim != 1:
            raise ValueError(f"PackedLoader needs a 1-D array of ids, got shape {self.ids.shape}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.seq_len = seq_len
        items = _split_items((len(self.ids) - 1) // seq_len, split, val_fraction)
        if shuffle:
            items = items[:-1]  # room for the shift: window w may end at (w + 1) * T + offset
        self.order = _Order(items, batch_size, seed, rank, world_size, shuffle)

    def offset(self, epoch: int) -> int:
        """Where this epoch's cuts start: 0 without shuffling, else random in ``[0, seq_len)``."""
        if not self.order.shuffle:
            return 0
        return int(np.random.default_rng([self.order.seed, epoch, 1]).integers(self.seq_len))

    def batch_of(self, windows: np.ndarray):
        T, o = self.seq_len, self.offset(self.order.epoch)
        rows = np.stack([self.ids[o + w * T : o + w * T + T + 1] for w in windows])
        rows = rows.astype(np.int64)
        t = torch.from_numpy(rows)  # (B, T + 1)
        return t[:, :-1], t[:, 1:], None  # x, y: (B, T)


# %% [markdown]
# The chat loader: conversation $i$ gives `x = ids[:-1]`, and `y = ids[1:]` with `-100` wherever
# the target is context; rows are right-padded to the longest of the batch. `tag_weight` (chapter
# 08) puts a weight on the reasoning-tag targets: `w` is then a float tensor, else `None`.


# %%
#| export
class ChatLoader(_Loader):
    """Right-padded chat batches ``(x, y, w)``: ``x``, ``y`` ``(B, L)`` int64 with ``L`` the
    longest conversation of the batch minus one; ``y = -100`` on context and padding; ``w`` is
    ``None``, or ``(B, L)`` float32 with ``tag_weight`` on `TAG` targets when it is not 1.

    Defined in 05_data. ``data`` is a `PreparedData` of chats. Shuffled per epoch from ``seed``,
    sharded by rank; ``split="val"`` takes the last ``val_fraction`` of the conversations.
    """

    def __init__(self, data: PreparedData, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, split: str = "train", val_fraction: float = 0.0,
                 shuffle: bool = True, tag_weight: float = 1.0) -> None:  # fmt: skip
        if data.kind != "chat":
            raise ValueError(f"{data.folder}: ChatLoader needs chat data, got {data.kind}")
        self.data, self.tag_weight = data, float(tag_weight)
        self.pad_id = int(data.meta["pad_id"])
        items = _split_items(len(data), split, val_fraction)
        self.order = _Order(items, batch_size, seed, rank, world_size, shuffle)

    def batch_of(self, docs: np.ndarray):
        rows = [self.data.doc(int(i)) for i in docs]
        L = max(len(ids) for ids, _ in rows) - 1
        x = torch.full((len(rows), L), self.pad_id, dtype=torch.int64)
        y = torch.full((len(rows), L), IGNORE_INDEX, dtype=torch.int64)
        w = torch.ones(len(rows), L) if self.tag_weight != 1.0 else None
        for r, (ids, kinds) in enumerate(rows):
            ids = torch.from_numpy(ids.astype(np.int64))
            k = torch.from_numpy(kinds[1:].astype(np.int64))
            n = len(ids) - 1
            x[r, :n] = ids[:-1]
            y[r, :n] = torch.where(k > 0, ids[1:], IGNORE_INDEX)
            if w is not None:
                w[r, :n][k == TAG] = self.tag_weight
        return x, y, w


# %% [markdown]
# One batch of each, with the checks that matter: the packed targets are the inputs shifted by
# one, chat targets are `-100` exactly where the kinds say context or padding:

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

# %% [markdown]
# Resuming: a loader restored from a saved position yields exactly the batches the first one
# would have yielded next; and two ranks of a two-GPU run read disjoint windows:

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

# %% [markdown]
# ## Putting it together
#
# The whole path from a JSONL file to a training batch, with the exported names; this is what
# chapters 06-08 and `spongebob data prepare` do:

# %%
from spongebob.data import ChatEncoder, PreparedData, prepare  # noqa: E402,F811

folder = artifacts_dir("prepared", "world0-bpe2048", "r1_1024")
meta = prepare(world / "r1_1024.jsonl", tok, folder, max_seq_len=512)
r1_batches = ChatLoader(PreparedData(folder), batch_size=8, tag_weight=10.0)
x, y, w = next(iter(r1_batches))
print(meta["documents"], "reasoning chats;", "batch", tuple(x.shape),
      "| weight 10 on", int((w == 10).sum()), "tag targets")  # fmt: skip
assert int((w == 10).sum()) == 4 * 8  # four tags per reply, eight replies

# %% [markdown]
# ## Summary
#
# * Four JSONL formats feed the whole pipeline; they are read one line at a time, and every bad
#   line is an error naming its file and line, or, when asked, skipped, counted and listed.
# * A chat is rendered to ids and a mask in one pass: special tokens as ids, text with
#   special-token parsing off, and the mask marks exactly each assistant reply and its `</s>`. The
#   original's mask is shifted by one: it never trains the first answer token.
# * Reasoning tags are single tokens in our tokenizer and several in the original's; the encoder
#   marks them either way, inside replies only.
# * Pre-tokenising once into `uint16` memmaps keeps memory flat and takes tokenization out of the
#   training loop; packing removes the padding that the original spends most of its compute on.
# * Loaders shuffle from `(seed, epoch)`, shard by rank, and resume exactly from two numbers.
#
# | module | what it exports |
# |---|---|
# | `spongebob.data` | `iter_records`, `read_jsonl`, `record_problem`, `turns_problem`, `BadLines`, `ChatEncoder`, `CONTEXT`/`TRAINED`/`TAG`, `prepare`, `tokenizer_fingerprint`, `PreparedData`, `PackedLoader`, `ChatLoader` |
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
# **3 (medium). Length bucketing.** Sorting conversations by length before batching cuts padding,
# but a fully sorted order is not random. Write `bucketed_order(lengths, batch_size, seed)`:
# shuffle, then sort within blocks of `50 * batch_size`, then shuffle the batches. It must be a
# permutation, and on the world's SFT lengths it must waste less than a plain shuffle. (Run the
# chapter first: the check uses `chat_lens`.)


# %%
def bucketed_order(lengths, batch_size: int, seed: int) -> np.ndarray:
    raise NotImplementedError


# %%
def waste(o):  # the padding fraction of order o in batches of 16
    bs = [chat_lens[o[i : i + 16]] for i in range(0, len(o) - 15, 16)]
    return 1 - sum(b.sum() for b in bs) / sum(16 * b.max() for b in bs)


try:
    order_b = bucketed_order(chat_lens, 16, seed=0)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    assert sorted(order_b.tolist()) == list(range(len(chat_lens))), (
        "Exercise 3: not a permutation of range(len(lengths)). Hint: sort the *indices* of each "
        "block by length (np.argsort on the block's lengths), never the lengths themselves"
    )
    plain_order = np.random.default_rng(0).permutation(len(chat_lens))
    assert waste(order_b) < waste(plain_order) / 2, (
        f"Exercise 3: waste {waste(order_b):.3f} vs {waste(plain_order):.3f} for a plain shuffle. "
        "Hint: cut the sorted order into batches of batch_size *before* shuffling the batches"
    )
    print("Exercise 3: correct")

# %% [markdown]
# **4 (harder). Document masking.** Packed windows let a token attend to earlier documents in the
# same window. Write `document_mask(x, bos_id)` for a packed batch `x` `(B, T)`: a boolean
# `(B, 1, T, T)` mask, True where query $i$ may attend key $j$: $j \le i$ and no `<s>` at a
# position in $(j, i]$. (Such masks rule out the fused causal kernels; chapter 06 explains why we
# do not use them.)


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
