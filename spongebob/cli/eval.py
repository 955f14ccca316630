# Hand-written module (not generated from a notebook).
"""``spongebob eval``: grade a checkpoint on the embedded world's held-out sets or your JSONL."""

from __future__ import annotations

import argparse
from pathlib import Path

from spongebob.cli.checkpoints import chat_tokenizer, load_model_checkpoint, model_args
from spongebob.cli.common import CliError, add_device_arg, device_arg, input_file, output_file


def _eval(args: argparse.Namespace) -> int:
    import json

    from spongebob.data import ChatEncoder  # noqa: F401  (fails early without torch)
    from spongebob.evaluate import EVAL_SETS, evaluate_file
    from spongebob.files import atomic_write_text

    if (args.file is None) != (args.grader is None):
        raise CliError("--file and --grader go together (a file is never graded by guessing)")
    if args.file is not None:
        input_file(args.file, "eval --file")
    if args.data is not None and not args.data.is_dir():
        raise CliError(f"{args.data}: no such folder (eval --data: the folder of the eval files)")
    if args.out is not None:
        output_file(args.out, "eval --out")
    device = device_arg(args)
    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads)
    tok = chat_tokenizer(args, model, extras)
    model.to(device)
    if not tok.course_format:  # answer_chats (07) renders prompts with chat_segments
        raise CliError(
            f"{args.tokenizer}: its chat template renders another format than the course's; "
            "eval prompts need the course format (chat takes any template)"
        )
    kw = {"batch_size": args.batch_size, "limit": args.limit}
    if args.file is not None:
        budget = args.max_new_tokens or 64
        jobs = [(args.file.stem, args.file, args.grader, budget)]
    else:
        if args.data is None:
            from spongebob.world import sample_dir

            args.data = sample_dir()
        unknown = [s for s in args.sets if s not in EVAL_SETS]
        if unknown:
            raise CliError(f"--sets: unknown {unknown}; choose from {sorted(EVAL_SETS)}")
        jobs = [(s, args.data / EVAL_SETS[s][0], EVAL_SETS[s][1],
                 args.max_new_tokens or EVAL_SETS[s][2]) for s in args.sets]  # fmt: skip
    print(f"{'set':<14}{'grader':<8}{'n':>5}{'accuracy':>10}{'ends </s>':>11}")
    results = {}
    for name, path, grader, budget in jobs:
        r = evaluate_file(model, tok, path, grader, name=name, max_new_tokens=budget, **kw)
        results[name] = r.to_dict()
        print(f"{name:<14}{grader:<8}{len(r.records):>5}{r.accuracy:>10.1%}{r.stopped:>11.1%}")
    if args.out is not None:
        doc = {"checkpoint": str(args.checkpoint), "stage": extras.get("stage"), "sets": results}
        atomic_write_text(args.out, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def add_parsers(groups) -> None:
    ev = groups.add_parser("eval", help="grade a checkpoint on held-out sets or your JSONL")
    model_args(ev)
    ev.add_argument("--sets", nargs="+", default=["facts", "facts_train", "single_facts", "long"],
                    help="eval sets of the embedded world (facts facts_train single_facts long "
                         "arith; default all but arith)")  # fmt: skip
    ev.add_argument("--data", type=Path, default=None,
                    help="folder holding the eval files (default: the embedded sample)")  # fmt: skip
    ev.add_argument("--file", type=Path, default=None,
                    help='your own JSONL of {"messages", "expected"} lines (needs --grader)')  # fmt: skip
    ev.add_argument("--grader", choices=("fact", "number"), default=None, help="for --file")
    ev.add_argument("--out", type=Path, default=None, help="write every graded answer as JSON")
    ev.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    ev.add_argument("--batch-size", type=int, default=32, help="questions answered together")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="answer budget (default: per set; 64 for --file)")  # fmt: skip
    add_device_arg(ev)
    ev.set_defaults(func=_eval)
