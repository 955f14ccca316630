# Hand-written module (not generated from a notebook).
"""The `spongebob` command line: thin wrappers around the package's functions.

    spongebob data sample --out DIR [--seed N]
    spongebob data download NAME... --out DIR [--force]     (the real data, from ModelScope)
    spongebob data prepare --input FILE.jsonl [--tokenizer DIR] [--out DIR] [--max-seq-len N]
    spongebob tokenizer train --input FILE.jsonl --vocab-size N --out DIR
    spongebob train pretrain DATA --preset tiny|seed [--out DIR] [--resume | --init CKPT] [...]
        (DATA: a pretraining JSONL file or a prepared folder; every other flag defaults to the
        preset's value; also under `torchrun --nproc_per_node=N -m spongebob train pretrain ...`)

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


def _data_download(args: argparse.Namespace) -> int:
    from spongebob.download import FILES, DownloadError, download

    names = list(FILES) if "all" in args.names else args.names
    try:
        for path in download(names, args.out, force=args.force):
            print(f"{path.name}: {path.stat().st_size / 1e9:.2f} GB in {args.out}")
    except DownloadError as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    import time

    from spongebob.data import prepare
    from spongebob.runtime import artifacts_dir
    from spongebob.tokenizer import load_tokenizer

    if args.tokenizer is None:
        from spongebob.world import course_tokenizer

        tok, tok_name = course_tokenizer(), "course tokenizer"
    else:
        tok, tok_name = load_tokenizer(args.tokenizer), str(args.tokenizer)
    out = args.out or artifacts_dir("prepared", args.input.stem)
    meta_file = Path(out) / "meta.json"
    before = meta_file.stat().st_mtime_ns if meta_file.exists() else None
    start = time.perf_counter()
    meta = prepare(
        args.input, tok, out, max_seq_len=args.max_seq_len, skip_bad_lines=args.skip_bad_lines
    )
    secs = time.perf_counter() - start
    mb = args.input.stat().st_size / 1e6
    print(f"{args.input.name} ({mb:.1f} MB, {meta['kind']}) with the {tok_name} -> {out}")
    print(
        f"  {meta['documents']:,} documents, {meta['tokens']:,} tokens, "
        f"{meta['trained_tokens']:,} trained; truncated {meta['truncated']}, "
        f"dropped (nothing trained left) {meta['dropped_untrained']}"
    )
    reused = before is not None and meta_file.stat().st_mtime_ns == before
    print("  already prepared: reused" if reused else f"  {secs:.1f} s, {mb / secs:.1f} MB/s")
    bad = meta["bad_lines"]
    if bad["count"]:
        shown = "; ".join(f"line {n}: {p}" for n, p in bad["lines"][:10])
        print(f"  skipped {bad['count']} bad line(s) (all listed in {out}/meta.json): {shown}")
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from spongebob.tokenizer import train_tokenizer

    tok = train_tokenizer(args.input, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {tok.vocab_size}-token byte-level BPE tokenizer -> {args.out}")
    return 0


# Flags of `train` commands that override a field of TrainConfig (default: the preset's value).
_TRAIN_FLAGS = {
    "lr": (float, "peak learning rate"),
    "warmup_steps": (int, "linear warmup steps from lr 0"),
    "max_steps": (int, "optimizer steps (default: the preset's; the seed preset runs one epoch)"),
    "max_minutes": (float, "time budget in minutes (the schedule is fitted to it)"),
    "epochs": (float, "passes over the data when neither max_steps nor max_minutes is set"),
    "batch_size": (int, "sequences per micro-batch and rank"),
    "seq_len": (int, "tokens per sequence"),
    "grad_accum": (int, "micro-batches per optimizer step"),
    "clip": (float, "gradient-norm clipping (0 = off)"),
    "weight_decay": (float, "AdamW weight decay of the weight matrices"),
    "seed": (int, "random seed"),
    "dtype": (str, "auto | bf16 | fp16 | fp32"),
    "log_every": (int, "steps between log records"),
    "eval_every": (int, "steps between validation losses (0 = at the end)"),
    "save_every": (int, "steps between checkpoints (0 = at the end)"),
    "tracker": (str, "none | wandb | swanlab"),
}


def _train_pretrain(args: argparse.Namespace) -> int:
    from spongebob.train import TrainConfig, pretrain, setup_distributed

    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.compile:
        overrides["compile"] = True
    if args.max_minutes is not None and args.max_steps is None:
        overrides["max_steps"] = None  # the time budget decides the length
    cfg = TrainConfig.preset(args.preset, **overrides)
    if args.tokenizer is not None:
        from spongebob.tokenizer import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    else:
        from spongebob.world import course_tokenizer

        tok = course_tokenizer()
    out = args.out or Path("runs") / f"pretrain-{args.preset}"
    rank, world, _ = setup_distributed()
    if rank == 0:
        print(f"pretraining ({args.preset} preset, {world} process(es)) -> {out}", flush=True)
    result = pretrain(
        args.data, tok, out, cfg, model_preset=args.model_preset or args.preset,
        resume=args.resume, init=args.init,
    )  # fmt: skip
    if rank == 0:
        last = result.history[-1] if result.history else {}
        val = result.val_history[-1]["val_loss"] if result.val_history else float("nan")
        print(f"done: {result.step} steps, loss {last.get('loss', float('nan')):.3f}, "
              f"validation loss {val:.3f}, checkpoint {result.checkpoint}")  # fmt: skip
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
    pr.add_argument("--input", type=Path, required=True, help="pretrain/sft/r1 JSONL file")
    pr.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder (default: the course's)"
    )
    pr.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $SPONGEBOB_HOME/prepared/NAME)",
    )
    pr.add_argument(
        "--max-seq-len", type=int, default=512, help="chats longer than this + 1 are truncated"
    )
    pr.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines (counted and listed in meta.json) instead of stopping",
    )
    pr.set_defaults(func=_data_prepare)

    tok = groups.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tok_cmds = tok.add_subparsers(dest="cmd", required=True)
    t = tok_cmds.add_parser("train", help="train on the 'text' field of a JSONL file")
    t.add_argument("--input", type=Path, required=True, help="pretraining JSONL ({'text': ...})")
    t.add_argument("--vocab-size", type=int, default=6400)
    t.add_argument("--out", type=Path, required=True, help="output tokenizer folder")
    t.set_defaults(func=_tokenizer_train)

    tr = groups.add_parser("train", help="train a model (one loop: pretrain, SFT, distill)")
    tr_cmds = tr.add_subparsers(dest="cmd", required=True)
    pt = tr_cmds.add_parser("pretrain", help="pretrain a fresh model on packed text")
    pt.add_argument("data", type=Path, help="pretraining JSONL file or a prepared folder")
    pt.add_argument(
        "--preset",
        choices=("tiny", "seed"),
        default="tiny",
        help="training recipe and model size (tiny: CPU minutes; seed: the original)",
    )
    pt.add_argument(
        "--model-preset",
        default=None,
        help="model size if not the training preset's (tiny, seed, seed-gqa)",
    )
    pt.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder for last.pt and metrics.jsonl (default runs/pretrain-PRESET)",
    )
    pt.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer folder (default: the course tokenizer of the embedded data)",
    )
    start = pt.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    start.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from another checkpoint's weights (loaded strictly)",
    )
    pt.add_argument("--compile", action="store_true", help="torch.compile the model")
    for name, (kind, text) in _TRAIN_FLAGS.items():
        pt.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=text + " (default: the preset's)",
        )
    pt.set_defaults(func=_train_pretrain)
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
