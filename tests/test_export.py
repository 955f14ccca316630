"""The notebook -> package exporter (tools/nbexport.py), on throw-away notebooks and on the repo."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("nbexport", ROOT / "tools" / "nbexport.py")
nbexport = importlib.util.module_from_spec(spec)
sys.modules["nbexport"] = nbexport
spec.loader.exec_module(nbexport)


def _nb(path: Path, *cells: str, kinds: list[str] | None = None) -> Path:
    kinds = kinds or ["code"] * len(cells)
    body = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {"cell_type": k, "metadata": {}, "source": src, "outputs": [], "execution_count": None}
            if k == "code"
            else {"cell_type": k, "metadata": {}, "source": src}
            for k, src in zip(kinds, cells)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "spongebob").mkdir()
    (tmp_path / "spongebob" / "__init__.py").write_text("# Hand-written module (x).\n")
    return tmp_path


def test_cells_go_to_default_and_named_modules_in_order(repo):
    _nb(
        repo / "notebooks" / "01_a.ipynb",
        "#| default_exp alpha",
        "#| export\nA = 1",
        "B = 2  # not exported",
        "#| export: beta\nC = 3",
        "#| export\nD = 4",
    )
    out = nbexport.plan(repo)
    alpha = out[repo / "spongebob" / "alpha.py"]
    beta = out[repo / "spongebob" / "beta.py"]
    assert alpha.splitlines()[0].startswith(
        f"# {nbexport.GENERATED_MARK} from notebooks/01_a.ipynb"
    )
    body = alpha.split("\n\n", 1)[1]
    assert body == "A = 1\n\n\nD = 4\n"
    assert "B = 2" not in alpha and "C = 3" in beta and "A = 1" not in beta


def test_several_notebooks_feed_one_module_in_file_order(repo):
    _nb(repo / "notebooks" / "02_b.ipynb", "#| export: viz\nSECOND = 2")
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: viz\nFIRST = 1")
    viz = nbexport.plan(repo)[repo / "spongebob" / "viz.py"]
    assert viz.index("FIRST") < viz.index("SECOND")
    assert "notebooks/01_a.ipynb, notebooks/02_b.ipynb" in viz.splitlines()[0]


def test_markdown_cells_and_solutions_are_never_exported(repo):
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: m\nX = 1", kinds=["markdown"])
    _nb(repo / "notebooks" / "solutions" / "01_a_solutions.ipynb", "#| export: m\nY = 1")
    assert nbexport.plan(repo) == {}


@pytest.mark.parametrize(
    "cells, message",
    [
        (["#| export\nX = 1"], "no '#| default_exp'"),
        (["#| export: cli\nX = 1"], "hand-written"),
        (["X = 1\n#| export: m"], "first line"),
        (["#| export: 9bad\nX = 1"], "malformed"),
        (["#| export: m\n"], "empty"),
        (["#| default_exp a", "#| default_exp b"], "two different"),
    ],
)
def test_rule_breaks_name_the_notebook(repo, cells, message):
    _nb(repo / "notebooks" / "03_bad.ipynb", *cells)
    with pytest.raises(nbexport.ExportError, match=message) as err:
        nbexport.plan(repo)
    assert "notebooks/03_bad.ipynb" in str(err.value)


def test_check_finds_drift_orphans_and_unlisted_modules(repo):
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: m\nX = 1")
    assert nbexport.problems(repo) == ["spongebob/m.py: missing; run `make export`"]
    assert nbexport.write(repo) == [repo / "spongebob" / "m.py"]
    assert nbexport.problems(repo) == []
    assert nbexport.write(repo) == []  # idempotent

    (repo / "spongebob" / "m.py").write_text("edited by hand\n")
    assert nbexport.problems(repo) == [
        "spongebob/m.py: differs from its notebooks; run `make export`"
    ]
    nbexport.write(repo)

    orphan = nbexport.Module("gone", ["notebooks/09_gone.ipynb"], ["Z = 0"]).render()
    (repo / "spongebob" / "gone.py").write_text(orphan)
    (repo / "spongebob" / "stray.py").write_text("X = 1\n")
    (repo / "spongebob" / "world.py").write_text("X = 1\n")
    found = nbexport.problems(repo)
    assert any(p.startswith("spongebob/gone.py: generated module whose notebook") for p in found)
    assert any(p.startswith("spongebob/stray.py: neither generated nor") for p in found)
    assert any(p.startswith("spongebob/world.py: hand-written module without") for p in found)

    nbexport.write(repo)  # removes the orphan, leaves hand-written files alone
    assert not (repo / "spongebob" / "gone.py").exists()
    assert (repo / "spongebob" / "stray.py").exists()


def test_the_repository_package_is_in_sync_with_its_notebooks():
    assert nbexport.problems(ROOT) == []


def test_generated_modules_import_and_name_their_notebook():
    for path, text in nbexport.plan(ROOT).items():
        first = text.splitlines()[0]
        assert "notebooks/" in first, path
        for src in first.split(" from ", 1)[1].rstrip(".").split(", "):
            assert (ROOT / src).exists(), f"{path.name}: source {src} is missing"
        __import__(f"spongebob.{path.stem}")
