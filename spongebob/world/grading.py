# Hand-written module (not generated from a notebook).
"""Graders: whether a model's output answers an eval question (exact, rule-based).

:func:`grade_fact` matches a short fact as whole words, :func:`grade_number` the number of an
``<answer>`` block, :func:`parse_r1` checks the reasoning layout, and :func:`grade_file` scores a
whole eval file with the grader named by the caller.
"""

from __future__ import annotations

import os
import re
import unicodedata

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
    full-width forms ignored; Chinese compared character by character)."""
    e = _normalise(expected)
    return bool(e) and f" {e} " in f" {_normalise(output)} "


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# The reasoning tags are the tokenizer's special tokens (their one home); R1_TAGS is an alias.
R1_TAGS = REASONING_TOKENS
_THINK, _THINK_END, _ANSWER, _ANSWER_END = (re.escape(tag) for tag in REASONING_TOKENS)
_ANSWER_BLOCK = re.compile(rf"{_ANSWER}(.*?){_ANSWER_END}", re.DOTALL)
_R1 = re.compile(rf"\s*{_THINK}(.*?){_THINK_END}\s*{_ANSWER}(.*?){_ANSWER_END}\s*", re.DOTALL)


def grade_number(output: str, expected: str | int) -> bool:
    """True when the number in ``<answer>...</answer>`` (else the last number) equals ``expected``."""
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


GRADERS = {"fact": grade_fact, "number": grade_number}


def grade_file(path: str | os.PathLike, answers: list[str], grader: str) -> float:
    """Fraction of ``answers`` (model outputs, in file order) that match the eval file's expected.

    ``grader`` names the grader, always explicitly: ``"fact"`` (:func:`grade_fact`, for the fact,
    long-context and completion files) or ``"number"`` (:func:`grade_number`, for
    ``eval_arith.jsonl``); any other name raises ``ValueError`` listing the choices. The file is
    read with ``spongebob.data.read_jsonl``; a different number of answers than records raises
    ``ValueError``.
    """
    from spongebob.data import read_jsonl  # here, so that `import spongebob.world` needs no torch

    if grader not in GRADERS:
        raise ValueError(f"grade_file: grader must be one of {sorted(GRADERS)}, got {grader!r}")
    fn = GRADERS[grader]
    records = list(read_jsonl(path))
    if len(records) != len(answers):
        raise ValueError(f"{path}: {len(records)} records but {len(answers)} answers")
    if not records:
        return 0.0
    return sum(fn(a, r["expected"]) for r, a in zip(records, answers)) / len(records)
