"""Build the Jupyter Book into book/_build/html, never writing outside book/_build.

    python tools/build_book.py             # render the outputs committed in the notebooks (make test)
    python tools/build_book.py --execute   # execute every chapter during the build (make book)

With --execute, myst-nb runs each chapter in a fresh kernel, with the chapter's folder as the working
directory, and puts the fresh outputs into the HTML only: the notebooks in notebooks/ are not
touched (`make notebooks` is the command that re-executes them in place). This is done with a copy of
book/_config.yml written to book/_build/ with `execute.execute_notebooks: force`; everything else is
the same configuration. The build runs with -W -n --keep-going, so any warning (a broken page, a
missing reference, a cell that raised) fails it after every page was tried.

The build needs no network. The browser scripts the pages load (MathJax for the maths, require.js and
the Jupyter widget manager for saved widget state) were fetched from the npm registry at install time
by tools/vendor_web.py into .venv/share/spongebob-web; this script stages the parts the site uses in
book/_build/_vendor, which book/_config.yml lists as a static path, so they land in
book/_build/html/_static/vendor and every page loads them from the site itself.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "book" / "_build"
VENDOR_SRC = ROOT / ".venv" / "share" / "spongebob-web"
VENDOR = BUILD / "_vendor" / "vendor"  # book/_config.yml: html_static_path has book/_build/_vendor


def _skip_unused(folder: str, names: list[str]) -> set[str]:
    """Files of the vendored packages the site never loads (other MathJax bundles, source maps)."""
    skip = {n for n in names if n.endswith(".map")}
    if Path(folder).name == "es5":  # MathJax: the site loads tex-mml-chtml.js and what it pulls in
        skip |= {n for n in names if n.endswith(".js") and n not in ("tex-mml-chtml.js",)}
        skip |= {"sre"}
    if Path(folder).name == "dist":  # html-manager: myst-nb loads the AMD build with require.js
        skip |= {"embed.js", "libembed-amd.js"}
    return skip


def stage_vendor(src: Path = VENDOR_SRC, dest: Path = VENDOR) -> None:
    """Copy the vendored browser scripts into the build's static folder (see the module doc)."""
    needed = ["mathjax", "requirejs", "html-manager"]
    absent = [name for name in needed if not (src / name / "VERSION").is_file()]
    if absent:
        raise SystemExit(
            f"build_book: the book's browser scripts ({', '.join(absent)}) are not installed in "
            f"{src.relative_to(ROOT) if src.is_relative_to(ROOT) else src}; run "
            "`python tools/vendor_web.py` once (it uses npm; `make` does it when it creates .venv)"
        )
    for name in needed:
        # require.js resolves the widget manager's modules (and fonts) by their npm names.
        target = dest / ("@jupyter-widgets/html-manager" if name == "html-manager" else name)
        stamp = target / "VERSION"
        if stamp.is_file() and stamp.read_bytes() == (src / name / "VERSION").read_bytes():
            continue
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(src / name, target, ignore=_skip_unused)


def executing_config(config: dict) -> dict:
    """``config`` (a parsed _config.yml) with every chapter executed at build time."""
    out = dict(config)
    execute = dict(out.get("execute") or {})
    execute["execute_notebooks"] = "force"
    execute["run_in_temp"] = False  # run in the notebook's folder, as a learner would
    execute["allow_errors"] = False
    # Never execute the solutions: they are rendered with their committed outputs (nbval checks
    # them in `make test`), which keeps the executing build to the chapters themselves.
    execute["exclude_patterns"] = ["notebooks/solutions/*"]
    out["execute"] = execute
    # The derived file lives in book/_build: local extension paths (relative to the config file)
    # become absolute.
    sphinx = dict(out.get("sphinx") or {})
    if sphinx.get("local_extensions"):
        sphinx["local_extensions"] = {
            name: str((ROOT / "book" / path).resolve())
            for name, path in sphinx["local_extensions"].items()
        }
        out["sphinx"] = sphinx
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
    stage_vendor()
    # Sphinx does not overwrite a static file already in the output: drop the copies of the book's
    # own static files so that an edited stylesheet or script reaches the site.
    for own in (ROOT / "book" / "_static").iterdir():
        (BUILD / "html" / "_static" / own.name).unlink(missing_ok=True)
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
