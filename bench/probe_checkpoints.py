"""The induction probe (chapter 06's ``induction_probe``) on saved checkpoints: does a model still
copy after a later stage? Prints, per checkpoint, the probe's ratio on the world's detail values
(``bench/copy_recipes.py``'s ``value_ids``: the ids long-context recall has to copy) and on all
ids; 1.0 means no copying, towards 0 copying.

    .venv/bin/python bench/probe_checkpoints.py NAME=PATH [NAME=PATH ...]

Not a test: reads the checkpoints and writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from copy_recipes import value_ids  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.pretrain import induction_probe
from spongebob.world import course_tokenizer


def named_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (NAME, PATH), the path checked to be a file."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH")
    if not Path(path).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such checkpoint file")
    return name, Path(path).expanduser()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=named_path, metavar="NAME=PATH")
    args = ap.parse_args()
    values = value_ids(course_tokenizer())
    print(f"{'checkpoint':28s} {'values':>7s} {'all ids':>7s}")
    for name, path in args.checkpoints:
        model = load_model(path).eval()
        on_values, on_all = induction_probe(model, ids=values), induction_probe(model)
        print(f"{name:28s} {on_values:7.3f} {on_all:7.3f}", flush=True)


if __name__ == "__main__":
    main()
