# Hand-written module (not generated from a notebook).
"""The `spongebob` command line: thin wrappers around the package's functions.

    spongebob data sample --out DIR [--seed N]
    spongebob data download NAME... --out DIR [--force]     (the real data, from ModelScope)
    spongebob data prepare FILE.jsonl [--tokenizer DIR] [--preset seed] [--out DIR]
        [--max-seq-len N] [--workers N]
    spongebob tokenizer train FILE.jsonl --vocab-size N --out DIR [--max-lines N]
    spongebob train pretrain DATA --preset tiny|seed [--tokenizer DIR] [--out DIR]
        [--resume | --init CKPT] [--device auto|cpu|cuda|mps] [--compile|--no-compile] [...]
        (DATA: a pretraining JSONL file or a prepared folder; every other flag defaults to the
        preset's value; also under `torchrun --nproc_per_node=N -m spongebob train pretrain ...`)
    spongebob train sft DATA --init CKPT --preset tiny|tiny-long|seed|seed-long [--replay-data F]
    spongebob train distill DATA --init CKPT --preset tiny|seed [--tag-weight W] [--replay-data F]
        (DATA: a chat JSONL file or a prepared folder, or --data; the same flags as pretrain)
    spongebob train rl DATA --init CKPT [--preset tiny] [--steps N] [--group N] [...]
        (GRPO of a distilled model on problems with checkable answers, in one process; DATA: a
        JSONL file of reasoning chats or eval lines, or --data; flags override RLConfig's fields)
    spongebob pipeline --preset tiny|seed [--out DIR] [--data DIR] [--tokenizer DIR] [--dry-run]
        (tokenizer, pretrain, SFT, long SFT, distill, RL (tiny preset only), eval and a report;
        finished stages skipped)
    spongebob chat --checkpoint CKPT [--tokenizer DIR] [--prompt TEXT] [--temperature 0 ...]
        (interactive with history, /clear and /quit; --prompt answers once and prints the answer)
    spongebob eval --checkpoint CKPT [--sets facts long ...] [--out FILE.json]
    spongebob eval --checkpoint CKPT --file MY.jsonl --grader fact|number
    spongebob export hf|gguf --checkpoint CKPT [--tokenizer DIR] --out DIR|FILE.gguf [--dtype ...]
        (a Hugging Face LlamaForCausalLM folder, or a GGUF file for llama.cpp; book/hf_export.md)

Every --checkpoint takes our checkpoints and bare state dicts (the original's releases: the config
is inferred from the shapes, --n-heads defaults to 8, the inferred config is printed). The seed
presets need a 6400-token --tokenizer (never the course's). Every command that reads JSONL takes
--skip-bad-lines and --max-bad-fraction (pipeline --preset seed skips by default; --strict).
train, chat, eval and pipeline take --device (auto: CUDA, then MPS, then the CPU). A problem with
the input is one line, ``spongebob: error: ...``, and exit status 2.

Heavy imports happen inside each command, so `spongebob --help` is instant.

One module per command group: `data`, `tokenizer`, `train`, `pipeline`, `chat`, `eval`, `export`
(each with its functions and an ``add_parsers``); `common` (one-line errors, input and output
checks, the seed presets' tokenizer rule, the bad-line and device flags) and `checkpoints` (every
``--checkpoint``) are shared.
"""

from __future__ import annotations

import argparse
import sys

from spongebob.cli.chat import ReasoningSplitter, TemplatePrompts, fit_history, prompt_encoder
from spongebob.cli.checkpoints import infer_config, load_model_checkpoint
from spongebob.cli.common import CliError, one_line

__all__ = ["CliError", "ReasoningSplitter", "TemplatePrompts", "build_parser", "fit_history",
           "infer_config", "load_model_checkpoint", "main", "prompt_encoder"]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from spongebob.cli import chat, data, eval, export, pipeline, tokenizer, train

    p = argparse.ArgumentParser(
        prog="spongebob", description="Build a small chat LLM from scratch."
    )
    groups = p.add_subparsers(dest="group", required=True)
    for module in (data, tokenizer, train, chat, eval, pipeline, export):
        module.add_parsers(groups)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; a problem with its input is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as e:  # CliError, CheckpointError, the package's own checks
        print(f"spongebob: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
