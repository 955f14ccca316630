# Hand-written module (not generated from a notebook).
"""``spongebob data sample|download|prepare``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spongebob.cli.common import (
    SEED_VOCAB,
    CliError,
    add_bad_lines_args,
    bad_lines_kwargs,
    input_file,
    output_dir,
    resolve_tokenizer,
)


def _data_sample(args: argparse.Namespace) -> int:
    from spongebob.world import write_sample

    output_dir(args.out, "data sample --out")
    files = write_sample(args.out, seed=args.seed)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from spongebob.download import FILES, DownloadError, download

    output_dir(args.out, "data download --out")
    names = list(FILES) if "all" in args.names else args.names
    try:
        for path in download(names, args.out, force=args.force):
            print(f"{path.name}: {path.stat().st_size / 1e9:.2f} GB in {args.out}")
    except DownloadError as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    return 0


def _input_arg(args: argparse.Namespace) -> Path:
    """FILE (positional, like `train`) or ``--input``: exactly one."""
    if (args.file is None) == (args.input is None):
        raise CliError("give the JSONL file once: FILE or --input FILE")
    return input_file(args.file if args.file is not None else args.input, "the JSONL to prepare")


def _data_prepare(args: argparse.Namespace) -> int:
    import time

    from spongebob.data import prepare
    from spongebob.runtime import artifacts_dir

    source = _input_arg(args)
    vocab = SEED_VOCAB if args.preset == "seed" else None
    tok, tok_name = resolve_tokenizer(args.tokenizer, args.preset, vocab)
    max_seq_len = args.max_seq_len
    if max_seq_len is None:
        max_seq_len = 1024 if "1024" in source.name else 512
    if max_seq_len < 1:
        raise CliError(f"--max-seq-len must be >= 1, got {max_seq_len}")
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")
    out = args.out or artifacts_dir("prepared", source.stem)
    output_dir(Path(out), "data prepare --out")
    kw = bad_lines_kwargs(args)
    if args.workers != 1:
        kw["workers"] = args.workers
    meta_file = Path(out) / "meta.json"
    before = meta_file.stat().st_mtime_ns if meta_file.exists() else None
    start = time.perf_counter()
    meta = prepare(source, tok, out, max_seq_len=max_seq_len, **kw)
    secs = max(time.perf_counter() - start, 1e-9)
    mb = source.stat().st_size / 1e6
    print(f"{source.name} ({mb:.1f} MB, {meta['kind']}) with the {tok_name} -> {out}")
    if args.tokenizer is None:
        print("  (the course tokenizer is for the embedded world; real data needs --tokenizer)")
    print(
        f"  {meta['documents']:,} documents, {meta['tokens']:,} tokens, "
        f"{meta['trained_tokens']:,} trained; truncated at {max_seq_len + 1} tokens "
        f"{meta['truncated']}, dropped (nothing trained left) {meta['dropped_untrained']}"
    )
    extra = meta.get("extra_keys")
    if extra:
        shown = ", ".join(f"{k} ({n:,})" for k, n in sorted(extra.items()))
        print(f"  extra keys ignored: {shown}")
    reused = before is not None and meta_file.stat().st_mtime_ns == before
    print("  already prepared: reused" if reused else f"  {secs:.1f} s, {mb / secs:.1f} MB/s")
    bad = meta["bad_lines"]
    if bad["count"]:
        shown = "; ".join(f"line {n}: {p}" for n, p in bad["lines"][:10])
        print(f"  skipped {bad['count']} bad line(s) (all listed in {out}/meta.json): {shown}")
    return 0


def add_parsers(groups) -> None:
    data = groups.add_parser("data", help="embedded sample data and the real datasets")
    data_cmds = data.add_subparsers(dest="cmd", required=True)
    s = data_cmds.add_parser("sample", help="generate the embedded Bikini Bottom data set")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    s.set_defaults(func=_data_sample)

    dl = data_cmds.add_parser(
        "download", help="download the original's real data from ModelScope (needs internet)"
    )
    dl.add_argument(
        "names",
        nargs="+",
        choices=["pretrain", "sft_512", "sft_1024", "r1_1024", "all"],
        help="files to fetch: pretrain (~1.6 GB), sft_512 (~7 GB), sft_1024 (~5.2 GB), r1_1024",
    )
    dl.add_argument("--out", type=Path, required=True, help="folder for the JSONL files")
    dl.add_argument("--force", action="store_true", help="download files that are already there")
    dl.set_defaults(func=_data_download)

    pr = data_cmds.add_parser(
        "prepare", help="pre-tokenise a pretraining or chat JSONL file into uint16 memmaps"
    )
    pr.add_argument("file", type=Path, nargs="?", default=None, help="pretrain/sft/r1 JSONL file")
    pr.add_argument("--input", type=Path, default=None, help="the same as FILE")
    pr.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer folder (default: the course's, for the embedded world; required with "
        "--preset seed)",
    )
    pr.add_argument(
        "--preset",
        choices=("tiny", "seed"),
        default=None,
        help="seed: for the original's model (needs a 6400-token --tokenizer)",
    )
    pr.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $SPONGEBOB_HOME/prepared/NAME)",
    )
    pr.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="chats longer than this + 1 are truncated (default 1024 for a file named *1024*, "
        "else 512)",
    )
    pr.add_argument(
        "--workers", type=int, default=1, help="processes tokenising byte ranges (default 1)"
    )
    add_bad_lines_args(pr)
    pr.set_defaults(func=_data_prepare)
