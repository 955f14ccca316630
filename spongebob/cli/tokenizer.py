# Hand-written module (not generated from a notebook).
"""``spongebob tokenizer train``."""

from __future__ import annotations

import argparse
from pathlib import Path

from spongebob.cli.common import (
    CliError,
    add_bad_lines_args,
    bad_lines_kwargs,
    input_file,
    output_dir,
)


def _tokenizer_train(args: argparse.Namespace) -> int:
    from spongebob.tokenizer import train_tokenizer

    if (args.file is None) == (args.input is None):
        raise CliError("give the JSONL file once: FILE or --input FILE")
    source = input_file(args.file if args.file is not None else args.input, "tokenizer train")
    output_dir(args.out, "tokenizer train --out: a tokenizer folder")
    if args.vocab_size < 259:
        raise CliError(f"--vocab-size must be at least 259 (256 bytes + 3 special tokens), "
                       f"got {args.vocab_size}")  # fmt: skip
    if args.max_lines is not None and args.max_lines < 1:
        raise CliError(f"--max-lines must be >= 1, got {args.max_lines}")
    kw = bad_lines_kwargs(args)
    if args.max_lines is not None:
        kw["max_lines"] = args.max_lines
    stats: dict = {}
    try:
        tok = train_tokenizer(source, vocab_size=args.vocab_size, out_dir=args.out, stats=stats,
                              **kw)  # fmt: skip
    except ValueError as e:
        if args.skip_bad_lines:
            raise
        raise CliError(f"{e} (--skip-bad-lines skips such lines)") from e
    sample = f", first {args.max_lines:,} lines" if args.max_lines is not None else ""
    print(f"trained a {tok.vocab_size}-token byte-level BPE tokenizer on {source.name}"
          f"{sample} -> {args.out}")  # fmt: skip
    if stats.get("bad"):
        print(f"  skipped {stats['bad']:,} bad line(s) of {stats['lines']:,}; first "
              f"{stats['first_bad']}")  # fmt: skip
    return 0


def add_parsers(groups) -> None:
    tok = groups.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tok_cmds = tok.add_subparsers(dest="cmd", required=True)
    t = tok_cmds.add_parser("train", help="train on the 'text' field of a JSONL file")
    t.add_argument("file", type=Path, nargs="?", default=None,
                   help="pretraining JSONL ({'text': ...})")  # fmt: skip
    t.add_argument("--input", type=Path, default=None, help="the same as FILE")
    t.add_argument("--vocab-size", type=int, default=6400, help="default 6400 (the original's)")
    t.add_argument("--out", type=Path, required=True, help="output tokenizer folder")
    t.add_argument(
        "--max-lines",
        type=int,
        default=None,
        help="train on the first N lines only (a bounded sample of a multi-GB file; the "
        "pipeline's seed preset uses 200000)",
    )
    add_bad_lines_args(t)
    t.set_defaults(func=_tokenizer_train)
