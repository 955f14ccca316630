# Hand-written module (not generated from a notebook).
"""The course tokenizer: the byte-level BPE every chapter after 01 uses, trained on this world.

:func:`course_tokenizer` is :func:`spongebob.tokenizer.cached_tokenizer` applied to the sample's
``pretrain.jsonl``. It lives here, not in ``spongebob.tokenizer``, so that the tokenizer never
depends on the data generator (the world imports the tokenizer, never the other way round).
"""

from __future__ import annotations

from spongebob.tokenizer import SpongeTokenizer, cached_tokenizer
from spongebob.world.sample import sample_dir


def course_tokenizer(vocab_size: int = 2048, seed: int = 0) -> SpongeTokenizer:
    """The tokenizer of the later chapters: ``vocab_size`` tokens trained on the world of ``seed``.

    Trained once, then loaded from ``artifacts_dir("tokenizer", f"world{seed}-bpe{vocab_size}")``;
    retrained (a few seconds) when the sample's ``pretrain.jsonl``, the training recipe or the
    `tokenizers` version changed (see :func:`spongebob.tokenizer.cached_tokenizer`).
    """
    data = sample_dir(seed) / "pretrain.jsonl"
    return cached_tokenizer(data, vocab_size, name=f"world{seed}-bpe{vocab_size}")
