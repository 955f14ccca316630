"""Notebook hygiene: executed, clean outputs, paired with jupytext, chapters have solutions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_config

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
NOTEBOOKS = CHAPTERS + SOLUTIONS
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]
# Local paths that would leak a machine's layout into a committed output.
ABSOLUTE_PATH = re.compile(r"(/(home|root|Users|tmp|work|opt|usr|var)/[^\s'\"]*|[A-Za-z]:\\\\\w)")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(output: dict) -> str:
    if "text" in output:
        t = output["text"]
        return "".join(t) if isinstance(t, list) else t
    parts = []
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            parts.append(value if isinstance(value, str) else json.dumps(value))
    return "".join(parts)


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_code_cell_was_executed_top_to_bottom(path):
    counts = []
    for i, cell in enumerate(_cells(path)):
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        assert cell.get("execution_count") is not None, f"{path.name}: code cell {i} never ran"
        counts.append(cell["execution_count"])
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: cells were not run once, in order, in a fresh kernel (counts {counts})"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_hold_no_errors_or_absolute_paths(path):
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: cell {i} raised {out.get('ename')}"
            text = _text(out)
            leak = ABSOLUTE_PATH.search(text)
            assert leak is None, f"{path.name}: cell {i} prints a local path {leak.group(0)!r}"
            assert "Traceback (most recent call last)" not in text, f"{path.name}: cell {i}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_and_its_py_pair_agree(path):
    pair = path.with_suffix(".py")
    assert pair.exists(), f"{path.name}: no jupytext pair {pair.name}; run jupytext --sync"
    config = load_jupytext_config(str(path))
    nb = jupytext.read(path)
    expected = jupytext.writes(nb, fmt="py:percent", config=config)
    assert pair.read_text(encoding="utf-8") == expected, (
        f"{pair.name} differs from {path.name}; run `jupytext --sync {path.relative_to(ROOT)}`"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_each_chapter_has_a_solutions_notebook_and_exercises(path):
    solutions = ROOT / "notebooks" / "solutions" / f"{path.stem}_solutions.ipynb"
    assert solutions.exists(), f"{path.name}: missing {solutions.relative_to(ROOT)}"
    markdown = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    for heading in ("## Summary", "## Exercises"):
        assert heading in markdown, f"{path.name}: no '{heading}' section"


def test_the_book_lists_every_chapter_in_order():
    import yaml

    toc = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text(encoding="utf-8"))
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    listed = [f for f in files if f.startswith("notebooks/")]
    assert listed == [p.relative_to(ROOT).with_suffix("").as_posix() for p in CHAPTERS]
    for f in files:
        assert list(ROOT.glob(f + ".*")), f"book/_toc.yml names a missing page {f}"
