# Hand-written module (not generated from a notebook).
"""``spongebob pipeline``: every stage in one resumable run, with a report (spongebob.pipeline)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from spongebob.cli.common import (
    CliError,
    add_bad_lines_args,
    add_device_arg,
    device_arg,
    input_path,
    load_tokenizer_arg,
    output_dir,
)


def _pipeline(args: argparse.Namespace) -> int:
    from spongebob.pipeline import build_plan, describe_plan, run_pipeline

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise CliError(
            f"pipeline runs in one process (WORLD_SIZE={world} under torchrun): run it with "
            "plain `spongebob pipeline`, or run each stage with `torchrun ... -m spongebob "
            "train pretrain|sft|distill` (book/gpu.md)"
        )
    if not 0 <= args.max_bad_fraction <= 1:
        raise CliError(f"--max-bad-fraction must be between 0 and 1, got {args.max_bad_fraction}")
    if args.out is not None:
        output_dir(args.out, "pipeline --out")
    if args.data is not None:
        input_path(args.data, "pipeline --data: the folder of the JSONL files")
        if not args.data.is_dir():
            raise CliError(f"{args.data}: is a file; --data takes the folder of the JSONL files")
    tok = None
    if args.tokenizer is not None:
        tok = load_tokenizer_arg(args.tokenizer)
    device = device_arg(args)
    plan = build_plan(args.preset, args.out, data_dir=args.data, max_steps=args.max_steps,
                      eval_limit=args.eval_limit, tokenizer=tok, tokenizer_dir=args.tokenizer,
                      skip_bad_lines=args.skip_bad_lines,
                      max_bad_fraction=args.max_bad_fraction, compile=args.compile,
                      device=device, batch_size=args.batch_size,
                      grad_accum=args.grad_accum)  # fmt: skip
    print(describe_plan(plan), flush=True)
    if args.dry_run:
        return 0
    from spongebob.download import DownloadError

    try:
        run_pipeline(plan, log=lambda m: print(m, flush=True))
    except DownloadError as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    return 0


def add_parsers(groups) -> None:
    pl = groups.add_parser("pipeline", help="every stage in one resumable run, with a report")
    pl.add_argument("--preset", choices=("tiny", "seed"), default="tiny",
                    help="tiny: the embedded data on a CPU (minutes); seed: the original's recipe "
                         "on the real data (GPU; downloads it first)")  # fmt: skip
    pl.add_argument("--out", type=Path, default=None,
                    help="output folder (default: $SPONGEBOB_HOME/pipeline/PRESET)")  # fmt: skip
    pl.add_argument("--data", type=Path, default=None,
                    help="folder with the JSONL files (default: the embedded world for tiny, "
                         "OUT/data, downloaded, for seed)")  # fmt: skip
    pl.add_argument("--tokenizer", type=Path, default=None,
                    help="use this tokenizer folder (e.g. the original's) instead of training "
                         "one; its size must be the preset's (seed: 6400)")  # fmt: skip
    pl.add_argument("--dry-run", action="store_true", help="print the stage plan, run nothing")
    pl.add_argument("--max-steps", type=int, default=None,
                    help="cap every training stage at N steps (a smoke test)")  # fmt: skip
    pl.add_argument("--eval-limit", type=int, default=None,
                    help="grade only the first N questions of each eval set (a smoke test)")  # fmt: skip
    pl.add_argument("--batch-size", type=int, default=None,
                    help="sequences per micro-batch of every stage (default: the presets'; "
                         "lower it on a smaller GPU, with --grad-accum)")  # fmt: skip
    pl.add_argument("--grad-accum", type=int, default=None,
                    help="micro-batches per optimizer step of every stage (default: the "
                         "presets')")  # fmt: skip
    pl.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile every training stage (default: the presets'; seed on)")  # fmt: skip
    add_device_arg(pl)
    add_bad_lines_args(pl, preset_decides=True)
    pl.set_defaults(func=_pipeline)
