# Hand-written module (not generated from a notebook).
"""``spongebob export hf|gguf``: a Hugging Face folder or a GGUF file (book/hf_export.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spongebob.cli.checkpoints import chat_tokenizer, load_model_checkpoint, model_args
from spongebob.cli.common import output_dir, output_file


def _export(args: argparse.Namespace) -> int:
    from spongebob import export

    if args.format == "hf":
        output_dir(args.out, "export hf --out: a folder")
    else:
        output_file(args.out, "export gguf --out: a .gguf file")
    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads)
    tok = chat_tokenizer(args, model, extras)
    fn = export.export_hf if args.format == "hf" else export.export_gguf
    try:
        out = fn(model, tok, args.out, dtype=args.dtype)
    except ImportError as e:  # the hf or gguf extra is not installed
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    c = model.config
    shape = f"{c.n_layers} layers, dim {c.dim}, {c.n_heads}/{c.n_kv_heads} heads/kv heads"
    print(f"{args.checkpoint.name} ({shape}, vocab {c.vocab_size}) -> {out} "
          f"({args.format}, {args.dtype})")  # fmt: skip
    return 0


def add_parsers(groups) -> None:
    ex = groups.add_parser("export", help="export a checkpoint to Hugging Face or GGUF (llama.cpp)")
    ex_cmds = ex.add_subparsers(dest="format", required=True)
    for fmt, what, out_help, dtypes in (
        ("hf", "a Hugging Face LlamaForCausalLM folder (transformers)", "output folder",
         ("float32", "bfloat16", "float16")),
        ("gguf", "a GGUF file (llama.cpp, ollama)", "output .gguf file", ("f32", "f16")),
    ):  # fmt: skip
        e = ex_cmds.add_parser(fmt, help=f"write {what}")
        model_args(e)
        e.add_argument("--out", type=Path, required=True, help=out_help)
        e.add_argument("--dtype", choices=dtypes, default=dtypes[0],
                       help=f"weight type (default {dtypes[0]}: exact)")  # fmt: skip
        e.set_defaults(func=_export)
