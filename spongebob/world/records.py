# Hand-written module (not generated from a notebook).
"""Record shapes of the course's JSONL files, and :func:`read_jsonl`, which checks them.

Four shapes (SEED.md): ``{"text"}`` (pretraining), ``{"conversations"}`` (chats),
``{"messages", "expected"}`` (eval questions) and ``{"prompt", "expected"}`` (completions).
Lines are read by :func:`spongebob.files.iter_jsonl`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from spongebob.files import iter_jsonl

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


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Stream the records of a JSONL file, validating each one's shape.

    Accepted shapes: ``{"text"}``, ``{"conversations"}``, ``{"messages", "expected"}`` and
    ``{"prompt", "expected"}``. Lines are read by :func:`spongebob.files.iter_jsonl` (blank lines
    skipped); a line
    that is not UTF-8, not JSON or not one of these shapes raises
    ``ValueError("<file>:<line>: <problem>")``.
    """
    for lineno, rec in iter_jsonl(path):
        problem = _check_record(rec)
        if problem:
            raise ValueError(f"{path}:{lineno}: {problem}")
        yield rec
