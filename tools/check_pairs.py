"""Check that every notebook and its jupytext py:percent pair agree, without writing anything.

    python tools/check_pairs.py          # every notebooks/NN_*.ipynb and notebooks/solutions/*.ipynb
    python tools/check_pairs.py notebooks/02_rope.ipynb

Each .ipynb is rendered as py:percent in memory, with the repository's jupytext configuration, and
compared with the committed .py. Out-of-sync pairs are listed; the fix is
`.venv/bin/jupytext --sync NOTEBOOK` (it updates the older file of the pair from the newer one).
Unlike `jupytext --sync`, this never touches a file, so it is safe on a learner's checkout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
from jupytext.config import load_jupytext_config

ROOT = Path(__file__).resolve().parents[1]


def paired_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks that must have a pair: the chapters, then the solutions."""
    nbs = root / "notebooks"
    return sorted(nbs.glob("[0-9][0-9]_*.ipynb")) + sorted((nbs / "solutions").glob("*.ipynb"))


def expected_pair(path: Path) -> str:
    """The py:percent text that jupytext would write for the notebook ``path``."""
    config = load_jupytext_config(str(path))
    return jupytext.writes(jupytext.read(path), fmt="py:percent", config=config)


def pair_problem(path: Path, root: Path = ROOT) -> str | None:
    """None when ``path`` and its .py pair agree, else a line saying what is wrong and the fix."""
    pair = path.with_suffix(".py")
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = str(path)
    if not path.exists():
        return f"{rel}: no such notebook"
    if not pair.exists():
        return f"{rel}: no jupytext pair {pair.name}; run `jupytext --sync {rel}`"
    if pair.read_text(encoding="utf-8") != expected_pair(path):
        return f"{rel}: differs from {pair.name}; run `jupytext --sync {rel}`"
    return None


def lone_pairs(root: Path = ROOT) -> list[str]:
    """py:percent files under notebooks/ whose notebook is missing (a half-deleted or unpaired file)."""
    nbs = root / "notebooks"
    pys = sorted(nbs.glob("[0-9][0-9]_*.py")) + sorted((nbs / "solutions").glob("*.py"))
    return [
        f"{py.relative_to(root).as_posix()}: no notebook {py.with_suffix('.ipynb').name}; "
        f"run `jupytext --sync {py.relative_to(root).as_posix()}` or delete it"
        for py in pys
        if not py.with_suffix(".ipynb").exists()
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    args = p.parse_args(argv)
    paths = args.notebooks or paired_notebooks()
    found = [line for path in paths if (line := pair_problem(path))]
    if not args.notebooks:
        found += lone_pairs()
    for line in found:
        print(line, file=sys.stderr)
    if found:
        print(f"check-pairs: {len(found)} of {len(paths)} pair(s) out of sync")
        return 1
    print(f"check-pairs: all {len(paths)} pair(s) in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
