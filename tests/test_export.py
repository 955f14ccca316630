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
    (repo / "spongebob" / "files.py").write_text("X = 1\n")
    # world is a package now; a single-file world.py beside it is not on the allowlist
    (repo / "spongebob" / "world.py").write_text("# Hand-written module.\nX = 1\n")
    found = nbexport.problems(repo)
    assert any(p.startswith("spongebob/gone.py: generated module whose notebook") for p in found)
    assert any(p.startswith("spongebob/stray.py: neither generated nor") for p in found)
    assert any(p.startswith("spongebob/files.py: hand-written module without") for p in found)
    assert any(p.startswith("spongebob/world.py: neither generated nor") for p in found)

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


def test_subpackages_are_scanned_world_package_is_hand_written(repo):
    hand = "# Hand-written module (world data).\nX = 1\n"
    world = repo / "spongebob" / "world"
    world.mkdir()
    (world / "__init__.py").write_text(hand)
    (world / "people.py").write_text(hand)
    (repo / "spongebob" / "files.py").write_text(hand)
    assert nbexport.problems(repo) == []

    (world / "places.py").write_text("X = 1\n")  # no header
    gone = nbexport.Module("gone", ["notebooks/09_gone.ipynb"], ["Z = 0"]).render()
    (world / "gone.py").write_text(gone)
    other = repo / "spongebob" / "extra"
    other.mkdir()
    (other / "__init__.py").write_text(hand)  # a header alone does not put it on the allowlist
    cache = world / "__pycache__"
    cache.mkdir()
    (cache / "ignored.py").write_text("X = 1\n")
    found = nbexport.problems(repo)
    assert found == [
        "spongebob/extra/__init__.py: neither generated nor on the hand-written allowlist "
        "(HAND_WRITTEN in tools/nbexport.py)",
        "spongebob/world/gone.py: generated module whose notebook cells are gone; delete it",
        "spongebob/world/places.py: hand-written module without a '# Hand-written module' header",
    ]
    nbexport.write(repo)  # removes the orphan in the sub-package, nothing else
    assert not (world / "gone.py").exists()
    assert (world / "places.py").exists() and (other / "__init__.py").exists()


@pytest.mark.parametrize("name", ["world", "files"])
def test_cells_cannot_export_into_hand_written_modules(repo, name):
    _nb(repo / "notebooks" / "01_a.ipynb", f"#| export: {name}\nX = 1")
    with pytest.raises(nbexport.ExportError, match="hand-written"):
        nbexport.plan(repo)


def test_a_syntax_error_names_the_notebook_cell_and_line(repo):
    _nb(
        repo / "notebooks" / "01_a.ipynb",
        "#| default_exp m",
        "#| export\nA = 1\nB = 2",
        "x = 1  # not exported",
        # cell 3: the marker, a blank line (stripped from the module), then the bad line 4
        "#| export\n\nC = 3\ndef broken(:\n    pass",
    )
    _nb(repo / "notebooks" / "02_b.ipynb", "#| export: m\nD = 4")
    with pytest.raises(nbexport.ExportError) as err:
        nbexport.plan(repo)
    msg = str(err.value)
    assert msg.startswith("notebooks/01_a.ipynb, cell 3, line 4: SyntaxError"), msg
    # the module line: 3 header lines, chunk "A/B" (2 lines), 2 blank lines, then C (8), def (9)
    assert "line 9 of the generated spongebob/m.py" in msg
    assert not (repo / "spongebob" / "m.py").exists()  # nothing written
    assert nbexport.main(["--root", str(repo)]) == 2


def test_a_bracket_left_open_is_blamed_on_the_cell_that_opened_it(repo):
    # The open bracket swallows the next notebook's cell; Python reports where it was opened.
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: m\nA = 1", "#| export: m\nB = (1,\n")
    _nb(repo / "notebooks" / "02_b.ipynb", "#| export: m\nC = 3")
    with pytest.raises(nbexport.ExportError, match=r"^notebooks/01_a\.ipynb, cell 1, line 2:"):
        nbexport.plan(repo)


def test_locate_maps_every_module_line_to_its_cell():
    mod = nbexport.Module(
        "m", ["notebooks/01_a.ipynb", "notebooks/02_b.ipynb"], ["A = 1\nB = 2", "C = 3"]
    )
    mod.origins = [(4, 2), (0, 3)]
    lines = mod.render().split("\n")
    assert lines[3:5] == ["A = 1", "B = 2"] and lines[7] == "C = 3"
    assert mod.locate(1) == "the header of spongebob/m.py"
    assert mod.locate(4) == "notebooks/01_a.ipynb, cell 4, line 2"
    assert mod.locate(5) == "notebooks/01_a.ipynb, cell 4, line 3"
    assert mod.locate(6) == "notebooks/01_a.ipynb, cell 4, line 3"  # gap: the line before
    assert mod.locate(8) == "notebooks/02_b.ipynb, cell 0, line 3"
    assert mod.locate(50) == "notebooks/02_b.ipynb, cell 0, line 3"


def test_misnamed_notebooks_are_warned_about_not_exported(repo, capsys):
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: m\nX = 1")
    _nb(repo / "notebooks" / "1_typo.ipynb", "#| export: m\nY = 2")
    _nb(repo / "notebooks" / "drafts" / "02_draft.ipynb", "#| export: m\nZ = 3")
    _nb(repo / "notebooks" / "solutions" / "01_a_solutions.ipynb", "X = 1")
    _nb(repo / "notebooks" / ".ipynb_checkpoints" / "01_a-checkpoint.ipynb", "X = 1")
    _nb(repo / "notebooks" / "Untitled.ipynb", "X = 1")
    assert [p.relative_to(repo).as_posix() for p in nbexport.skipped_notebooks(repo)] == [
        "notebooks/1_typo.ipynb",
        "notebooks/Untitled.ipynb",
        "notebooks/drafts/02_draft.ipynb",
    ]
    assert nbexport.main(["--root", str(repo)]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: ") == 3
    assert "warning: notebooks/1_typo.ipynb is not exported" in captured.err
    assert "Y = 2" not in (repo / "spongebob" / "m.py").read_text()


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_check_writes_nothing_even_when_out_of_sync(repo, capsys):
    _nb(repo / "notebooks" / "01_a.ipynb", "#| export: m\nX = 1")
    _nb(repo / "notebooks" / "02_b.ipynb", "#| export: n\nY = 1")
    nbexport.write(repo)
    (repo / "spongebob" / "m.py").write_text("edited by hand\n")
    (repo / "spongebob" / "n.py").unlink()
    orphan = nbexport.Module("gone", ["notebooks/09_gone.ipynb"], ["Z = 0"]).render()
    (repo / "spongebob" / "gone.py").write_text(orphan)
    before = _snapshot(repo)
    assert nbexport.main(["--check", "--root", str(repo)]) == 1
    assert _snapshot(repo) == before
    err = capsys.readouterr().err
    assert "spongebob/m.py: differs" in err and "spongebob/n.py: missing" in err
    assert "spongebob/gone.py: generated module" in err
