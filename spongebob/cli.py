# Hand-written module (not generated from a notebook).
"""The `spongebob` command line: thin wrappers around the package's functions.

    spongebob data sample --out DIR [--seed N]
    spongebob tokenizer train --input FILE.jsonl --vocab-size N --out DIR

Heavy imports happen inside each command, so `spongebob --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_sample(args: argparse.Namespace) -> int:
    from spongebob.world import write_sample

    files = write_sample(args.out, seed=args.seed)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from spongebob.tokenizer import train_tokenizer

    tok = train_tokenizer(args.input, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {tok.vocab_size}-token byte-level BPE tokenizer -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spongebob", description="Build a small chat LLM from scratch."
    )
    groups = p.add_subparsers(dest="group", required=True)

    data = groups.add_parser("data", help="embedded sample data and the real datasets")
    data_cmds = data.add_subparsers(dest="cmd", required=True)
    s = data_cmds.add_parser("sample", help="generate the embedded Bikini Bottom data set")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    s.set_defaults(func=_data_sample)

    tok = groups.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tok_cmds = tok.add_subparsers(dest="cmd", required=True)
    t = tok_cmds.add_parser("train", help="train on the 'text' field of a JSONL file")
    t.add_argument("--input", type=Path, required=True, help="pretraining JSONL ({'text': ...})")
    t.add_argument("--vocab-size", type=int, default=6400)
    t.add_argument("--out", type=Path, required=True, help="output tokenizer folder")
    t.set_defaults(func=_tokenizer_train)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
