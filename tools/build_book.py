"""Build the Jupyter Book into book/_build/html, never writing outside book/_build.

    python tools/build_book.py             # render the outputs committed in the notebooks (make test)
    python tools/build_book.py --execute   # execute every chapter during the build (make book)

With --execute, myst-nb runs each chapter in a fresh kernel, with the chapter's folder as the working
directory, and puts the fresh outputs into the HTML only: the notebooks in notebooks/ are not
touched (`make notebooks` is the command that re-executes them in place). This is done with a copy of
book/_config.yml written to book/_build/ with `execute.execute_notebooks: force`; everything else is
the same configuration. The build runs with -W -n --keep-going, so any warning (a broken page, a
missing reference, a cell that raised) fails it after every page was tried.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "book" / "_build"


def executing_config(config: dict) -> dict:
    """``config`` (a parsed _config.yml) with every chapter executed at build time."""
    out = dict(config)
    execute = dict(out.get("execute") or {})
    execute["execute_notebooks"] = "force"
    execute["run_in_temp"] = False  # run in the notebook's folder, as a learner would
    execute["allow_errors"] = False
    out["execute"] = execute
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def command(config: Path, rebuild_all: bool) -> list[str]:
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT)]
    cmd += ["--config", str(config), "--toc", str(ROOT / "book" / "_toc.yml")]
    cmd += ["--path-output", str(ROOT / "book"), "-W", "-n", "--keep-going"]
    return cmd + (["--all"] if rebuild_all else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--execute", action="store_true", help="execute every chapter during the build")
    args = p.parse_args(argv)
    config = ROOT / "book" / "_config.yml"
    if args.execute:
        derived = executing_config(yaml.safe_load(config.read_text(encoding="utf-8")))
        config = BUILD / "_config_execute.yml"
        header = "# Written by tools/build_book.py from book/_config.yml; do not edit.\n"
        write_atomic(config, header + yaml.safe_dump(derived, sort_keys=False))
    # An executing build re-runs every chapter (the package may have changed under an unchanged
    # notebook); a rendering build after an executing one must not keep its pages. Hence --all then.
    marker = BUILD / ".last_build"
    kind = "execute" if args.execute else "render"
    rebuild_all = args.execute or not marker.exists() or marker.read_text(encoding="utf-8") != kind
    rc = subprocess.run(command(config, rebuild_all), cwd=ROOT).returncode
    if rc == 0:
        write_atomic(marker, kind)
    else:
        marker.unlink(missing_ok=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
