"""Execute notebooks in place (top to bottom, fresh kernel), as a learner would, and report timings.

    python tools/run_notebooks.py                      # every chapter and solutions notebook
    python tools/run_notebooks.py notebooks/02_rope.ipynb

Each notebook runs with its own folder as the working directory. Timings go to the terminal only,
never into the notebook. After executing, the paired .py file is re-synced with jupytext.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def all_notebooks() -> list[Path]:
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return nbs + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def run(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # timestamps of an earlier run
        cell.metadata.pop("execution", None)
    start = time.perf_counter()
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no wall-clock timestamps in committed notebooks
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(path)], check=True)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = p.parse_args(argv)
    paths = [n.resolve() for n in args.notebooks] or all_notebooks()
    total = 0.0
    for path in paths:
        print(f"running {path.relative_to(ROOT)} ...", flush=True)
        secs = run(path, args.timeout)
        total += secs
        print(f"  {secs:6.1f} s", flush=True)
    print(f"all {len(paths)} notebook(s): {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
