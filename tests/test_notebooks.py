"""Notebook hygiene: executed, clean outputs, paired with jupytext, chapters have solutions."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_pairs", ROOT / "tools" / "check_pairs.py")
check_pairs = importlib.util.module_from_spec(_spec)
sys.modules["check_pairs"] = check_pairs
_spec.loader.exec_module(check_pairs)

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
    assert check_pairs.pair_problem(path) is None


def test_the_pair_check_lists_the_notebooks_tested_here_and_no_lone_py():
    assert check_pairs.paired_notebooks() == NOTEBOOKS
    assert check_pairs.lone_pairs() == []


def test_the_pair_check_finds_drift_and_missing_files_and_writes_nothing(tmp_path, capsys):
    nbs = tmp_path / "notebooks"
    (nbs / "solutions").mkdir(parents=True)
    (tmp_path / "jupytext.toml").write_bytes((ROOT / "jupytext.toml").read_bytes())
    src = "# %% [markdown]\n# # Title\n\n# %%\nx = 1\nprint(x)\n"
    for name in ("01_a", "02_b", "solutions/01_a_solutions"):
        (nbs / f"{name}.py").write_text(src, encoding="utf-8")
        nb = check_pairs.jupytext.read(nbs / f"{name}.py")
        check_pairs.jupytext.write(nb, nbs / f"{name}.ipynb")
        assert check_pairs.pair_problem(nbs / f"{name}.ipynb", tmp_path) is None
    # drift: the .py was edited and not synced; a notebook lost its pair; a .py lost its notebook
    (nbs / "01_a.py").write_text(src.replace("x = 1", "x = 2"), encoding="utf-8")
    (nbs / "02_b.py").unlink()
    (nbs / "solutions" / "01_a_solutions.ipynb").unlink()
    (nbs / "03_c.py").write_text(src, encoding="utf-8")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}

    assert check_pairs.paired_notebooks(tmp_path) == [nbs / "01_a.ipynb", nbs / "02_b.ipynb"]
    assert check_pairs.pair_problem(nbs / "01_a.ipynb", tmp_path) == (
        "notebooks/01_a.ipynb: differs from 01_a.py; run `jupytext --sync notebooks/01_a.ipynb`"
    )
    assert check_pairs.pair_problem(nbs / "02_b.ipynb", tmp_path).startswith(
        "notebooks/02_b.ipynb: no jupytext pair 02_b.py"
    )
    assert [line.split(":")[0] for line in check_pairs.lone_pairs(tmp_path)] == [
        "notebooks/03_c.py",
        "notebooks/solutions/01_a_solutions.py",
    ]
    assert check_pairs.main([str(nbs / "01_a.ipynb")]) == 1
    assert "differs from 01_a.py" in capsys.readouterr().err
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


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
    # The Solutions part of the book lists notebooks/solutions/ (checked in tests/test_book.py).
    listed = [f for f in files if f.startswith("notebooks/") and "/solutions/" not in f]
    assert listed == [p.relative_to(ROOT).with_suffix("").as_posix() for p in CHAPTERS]
    for f in files:
        assert list(ROOT.glob(f + ".*")), f"book/_toc.yml names a missing page {f}"
