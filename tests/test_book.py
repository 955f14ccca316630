"""The book: its table of contents, pages, offline scripts, the Sphinx extension and the browser test's
link checker. (The browser test itself runs in `make test` after the book build.)"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest
import yaml
from docutils import nodes
from docutils.frontend import get_default_settings
from docutils.parsers.rst import Parser
from docutils.utils import new_document

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import browser_test  # noqa: E402
import build_book  # noqa: E402
import spongebob_book  # noqa: E402
import vendor_web  # noqa: E402

TOC = yaml.safe_load((ROOT / "book" / "_toc.yml").read_text(encoding="utf-8"))
CONFIG = yaml.safe_load((ROOT / "book" / "_config.yml").read_text(encoding="utf-8"))
CHAPTER = re.compile(r"^\d\d_[a-z0-9_]+$")


def toc_files() -> list[str]:
    return [c["file"] for part in TOC["parts"] for c in part["chapters"]]


def chapters_on_disk() -> list[Path]:
    """The committed chapter notebooks (all on disk outside a git checkout)."""
    paths = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if CHAPTER.match(p.stem))
    try:
        out = subprocess.run(
            ["git", "ls-files", "notebooks"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return paths
    tracked = {ROOT / f for f in out}
    return [p for p in paths if p in tracked]


def tracked_solutions() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "notebooks/solutions"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
    return [ROOT / f for f in out if f.endswith(".ipynb")]


def test_every_chapter_and_its_solutions_are_in_the_book_in_order():
    files = toc_files()
    chapters = [f"notebooks/{p.stem}" for p in chapters_on_disk()]
    assert chapters, "no chapter notebooks found"
    listed = [f for f in files if f in chapters]
    assert listed == chapters, f"book/_toc.yml must list every chapter in order: {chapters}"
    for p in chapters_on_disk():
        sol = ROOT / "notebooks" / "solutions" / f"{p.stem}_solutions.ipynb"
        if sol in set(tracked_solutions()):
            assert f"notebooks/solutions/{sol.stem}" in files, f"{sol.name} is not in the book"


def test_every_toc_entry_exists():
    for f in toc_files():
        assert any((ROOT / f).with_suffix(s).is_file() for s in (".md", ".ipynb")), f


@pytest.mark.parametrize("path", chapters_on_disk(), ids=lambda p: p.stem)
def test_every_chapter_has_a_chinese_summary_box(path: Path):
    nb = nbformat.read(path, as_version=4)
    boxes = [
        c
        for c in nb.cells
        if c.cell_type == "markdown" and "中文摘要" in c.source and ":class: zh-summary" in c.source
    ]
    assert len(boxes) == 1, f"{path.name}: one markdown cell with the 中文摘要 admonition"
    text = re.sub(r"[:{}a-z_\-` \n]", "", boxes[0].source)
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 40, "the summary is in Chinese"


def test_the_book_loads_no_script_from_a_cdn():
    cfg = CONFIG["sphinx"]["config"]
    assert not cfg["mathjax_path"].startswith(("http:", "https:", "//"))
    for url in cfg["nb_ipywidgets_js"]:
        assert not url.startswith(("http:", "https:", "//")), url
    assert "book/_build/_vendor" in cfg["html_static_path"]


def test_defects_appendix_covers_every_defect_of_the_seed_with_its_chapter():
    text = (ROOT / "book" / "defects.md").read_text(encoding="utf-8")
    sections = re.split(r"\n\(defect-(\d+)\)=\n", text)[1:]
    numbers = [int(n) for n in sections[0::2]]
    assert numbers == list(range(1, 11))
    for n, body in zip(numbers, sections[1::2]):
        assert "**Evidence.**" in body and "**Fixed in**" in body, f"defect {n}"
    fixed_by = {n: body.split("**Fixed in**")[1] for n, body in zip(numbers, sections[1::2])}
    assert "08_distill" in fixed_by[5]
    for n in (1, 6):
        assert "06_pretrain" in fixed_by[n]
    for n in (2, 3, 4):
        assert "05_data" in fixed_by[n]
    for n in (8, 9):
        assert "04_model" in fixed_by[n]
    assert "chapter 01" in fixed_by[10]


def test_every_reference_has_a_link():
    lines = (ROOT / "book" / "references.md").read_text(encoding="utf-8").splitlines()
    items: list[str] = []
    for line in lines:
        if line.startswith("- "):
            items.append(line)
        elif items and line.startswith("  "):
            items[-1] += line
    assert len(items) >= 20
    for item in items:
        assert re.search(r"\]\(https://[^)]+\)", item), item


def test_glossary_is_bilingual():
    text = (ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
    rows = [r for r in text.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) >= 25
    for term, zh in [("RoPE", "旋转位置编码"), ("GQA", "分组查询注意力"), ("token", "词元")]:
        assert any(term in r and zh in r for r in rows), term


def test_the_export_page_transformers_recipe_runs_on_an_export(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers", reason="needs the hf extra")
    from spongebob.config import ModelConfig
    from spongebob.export import export_hf
    from spongebob.model import SpongeBob
    from spongebob.world import course_tokenizer

    text = (ROOT / "book" / "hf_export.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'from_pretrained("spongebob-hf")' in code
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny")
    assert cfg.n_kv_heads < cfg.n_heads  # the permutation per KV head is exercised
    model, tok = SpongeBob(cfg).eval(), course_tokenizer()
    export_hf(model, tok, tmp_path / "spongebob-hf")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "book/hf_export.md", "exec"), scope)
    ids = scope["ids"]
    assert ids[0].tolist() == tok.encode(tok.apply_chat_template(scope["chat"]))
    assert type(scope["model"]).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        ours, theirs = model(ids).logits, scope["model"](ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    new = scope["out"][0, ids.shape[1] :].tolist()
    assert capsys.readouterr().out == tok.decode(new, skip_special_tokens=True) + "\n"


# --- the Sphinx extension ---------------------------------------------------------------------------


def _cell(source: str, output: bool) -> nodes.container:
    cell = nodes.container(nb_element="cell_code")
    src = nodes.container(nb_element="cell_code_source")
    src += nodes.literal_block(source, source, language="ipython3")
    cell += src
    if output:
        cell += nodes.container(nb_element="cell_code_output")
    return cell


def _doc() -> nodes.document:
    return new_document("test", get_default_settings(Parser))


def test_markers_and_the_default_exp_cell_leave_the_page():
    doc = _doc()
    doc += _cell("#| default_exp rope", output=False)
    doc += _cell("# NBVAL_IGNORE_OUTPUT\nprint(1)\nx = 2  # NBVAL_not_a_marker", output=True)
    doc += _cell("#| export\ndef f():\n    return 1", output=False)
    spongebob_book.clean_cells(None, doc)
    blocks = [b.astext() for b in doc.findall(nodes.literal_block)]
    assert blocks == ["print(1)\nx = 2  # NBVAL_not_a_marker", "#| export\ndef f():\n    return 1"]
    block = next(iter(doc.findall(nodes.literal_block)))
    assert block.rawsource == block.astext() and block["language"] == "ipython3"


def test_lint_markers_leave_the_page_and_a_note_after_them_stays():
    doc = _doc()
    source = (
        "# NBVAL_IGNORE_OUTPUT\n"
        "x = f(a,\n      b)  # fmt: skip\n"
        "from m import y  # noqa: F401  (used in chapter 06)\n"
        "from z import (  # noqa: E402,F811\n    w,\n)\n"
        "    # fmt: off\n"
        "k: int = g()  # type: ignore[assignment]\n"
        's = "keep # fmt: skip in a string"  # a plain comment\n'
        "print(s)  # noqa"
    )
    doc += _cell(source, output=True)
    doc += _cell("%%time\nfor i in range(2): print(i)  # noqa: E701", output=True)
    spongebob_book.clean_cells(None, doc)
    blocks = [b.astext() for b in doc.findall(nodes.literal_block)]
    assert blocks == [
        "x = f(a,\n      b)\n"
        "from m import y  # used in chapter 06\n"
        "from z import (\n    w,\n)\n"
        "k: int = g()\n"
        's = "keep # fmt: skip in a string"  # a plain comment\n'
        "print(s)",
        "%%time\nfor i in range(2): print(i)",
    ]


def test_no_lint_marker_reaches_a_rendered_chapter():
    """Every code cell of every notebook, as the page shows it, holds no lint marker comment."""
    marker = re.compile(r"#\s*(fmt:\s*(skip|off|on)|noqa\b|type:\s*ignore|pragma:\s*no)")
    for path in chapters_on_disk() + tracked_solutions():
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            shown = "\n".join(spongebob_book._visible_lines(cell.source))
            for line in shown.splitlines():
                code = line.split("#", 1)[1] if "#" in line else ""
                assert not marker.search("#" + code), f"{path.name}: {line!r}"


def test_a_default_exp_cell_with_code_or_output_stays():
    doc = _doc()
    doc += _cell("#| default_exp rope\nimport torch", output=False)
    doc += _cell("#| default_exp rope", output=True)
    spongebob_book.clean_cells(None, doc)
    assert len(list(doc.findall(nodes.literal_block))) == 2


def test_scripts_are_written_once_and_thebe_is_dropped():
    from sphinx.builders.html._assets import _JavaScript

    a = _JavaScript("doctools.js")
    thebe = _JavaScript(None, body='const THEBE_JS_URL = "x"')
    inline = _JavaScript(None, body="var togglebuttonSelector = '.toggle';")
    context = {"script_files": [a, inline, thebe, _JavaScript("sphinx-thebe.js"), a, inline]}
    spongebob_book.local_scripts(None, "p", "t", context, None)
    assert context["script_files"] == [a, inline]


# --- vendoring and staging ----------------------------------------------------------------------------


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_keeps_the_listed_folders_without_source_maps(tmp_path):
    data = _tarball(
        {
            "package/es5/tex.js": b"js",
            "package/es5/tex.js.map": b"map",
            "package/src/big.ts": b"ts",
            "package/LICENSE": b"lic",
        }
    )
    vendor_web.unpack(data, ("es5", "LICENSE"), tmp_path)
    got = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert got == ["LICENSE", "es5/tex.js"]


def test_unpack_refuses_a_path_outside_the_target(tmp_path):
    data = _tarball({"package/es5/../../../evil.js": b"x"})
    with pytest.raises(SystemExit, match="unsafe path"):
        vendor_web.unpack(data, ("es5",), tmp_path / "t")
    assert not (tmp_path / "evil.js").exists()


def test_integrity_is_npm_sha512():
    assert vendor_web.integrity(b"").startswith("sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg")


def test_missing_lists_absent_and_outdated_packages(tmp_path):
    assert vendor_web.missing(tmp_path) == list(vendor_web.PACKAGES)
    for name, (spec, _, _) in vendor_web.PACKAGES.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "VERSION").write_text(spec + "\n")
    (tmp_path / "mathjax" / "VERSION").write_text("mathjax@2.7.9\n")
    assert vendor_web.missing(tmp_path) == ["mathjax"]


def test_staging_without_vendored_scripts_says_what_to_run(tmp_path):
    with pytest.raises(SystemExit, match="tools/vendor_web.py"):
        build_book.stage_vendor(tmp_path / "none", tmp_path / "out")


def test_staging_copies_what_the_site_loads(tmp_path):
    src = tmp_path / "src"
    for name in ("mathjax", "requirejs", "html-manager"):
        (src / name).mkdir(parents=True)
        (src / name / "VERSION").write_text(name)
    (src / "mathjax" / "es5" / "sre").mkdir(parents=True)
    for f in ("tex-mml-chtml.js", "tex-svg.js", "sre/big.js"):
        (src / "mathjax" / "es5" / f).write_text("x")
    (src / "html-manager" / "dist").mkdir()
    for f in ("embed-amd.js", "embed.js", "a.woff2"):
        (src / "html-manager" / "dist" / f).write_text("x")
    build_book.stage_vendor(src, tmp_path / "out")
    got = sorted(
        p.relative_to(tmp_path / "out").as_posix()
        for p in tmp_path.rglob("*")
        if p.is_file() and "out" in p.parts
    )
    assert got == [
        "@jupyter-widgets/html-manager/VERSION",
        "@jupyter-widgets/html-manager/dist/a.woff2",
        "@jupyter-widgets/html-manager/dist/embed-amd.js",
        "mathjax/VERSION",
        "mathjax/es5/tex-mml-chtml.js",
        "requirejs/VERSION",
    ]


def test_the_executing_config_runs_chapters_only_and_finds_the_extension():
    cfg = build_book.executing_config(CONFIG)
    assert cfg["execute"]["execute_notebooks"] == "force"
    assert cfg["execute"]["exclude_patterns"] == ["notebooks/solutions/*"]
    path = Path(cfg["sphinx"]["local_extensions"]["spongebob_book"])
    assert path.is_absolute() and (path / "spongebob_book.py").is_file()
    assert CONFIG["execute"]["execute_notebooks"] == "off"  # the input is not modified


# --- the browser test's link checker -------------------------------------------------------------------


def test_link_checker_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text('<h1 id="top">A</h1><p id="x">x</p>')
    (tmp_path / "index.html").write_text("<h1>i</h1>")
    base = "http://127.0.0.1:1/"
    browser_test.ids_of.cache_clear()
    assert browser_test.check_link(tmp_path, base, base + "book/a.html#x") is None
    assert browser_test.check_link(tmp_path, base, base) is None
    assert browser_test.check_link(tmp_path, base, "https://arxiv.org/abs/1") is None
    assert "missing anchor" in browser_test.check_link(tmp_path, base, base + "book/a.html#nope")
    assert "missing file" in browser_test.check_link(tmp_path, base, base + "book/b.html")


def test_site_pages_skip_assets(tmp_path):
    for rel in ("index.html", "book/a.html", "_static/x.html", "_sources/y.html", "reports/r.html"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<h1>x</h1>")
    assert browser_test.site_pages(tmp_path) == ["book/a.html", "index.html"]


def test_browser_test_without_a_site_fails_with_advice(tmp_path, capsys):
    assert browser_test.main(["--site", str(tmp_path)]) == 1
    assert "make book-html" in capsys.readouterr().out


def test_browser_test_is_skipped_or_required_without_chromium(tmp_path, monkeypatch, capsys):
    (tmp_path / "index.html").write_text("<h1>x</h1>")
    monkeypatch.setattr(browser_test.shutil, "which", lambda name: None)
    monkeypatch.delenv("BROWSER_TEST_REQUIRED", raising=False)
    assert browser_test.main(["--site", str(tmp_path)]) == 0
    assert "SKIPPED" in capsys.readouterr().out
    monkeypatch.setenv("BROWSER_TEST_REQUIRED", "1")
    assert browser_test.main(["--site", str(tmp_path)]) == 1
    assert "chromium" in capsys.readouterr().out


def test_widget_shim_and_styles_exist():
    static = ROOT / "book" / "_static"
    shim = (static / "widgets-offline.js").read_text(encoding="utf-8")
    assert "requirejs.config" in shim and "typesetPromise" in shim
    assert json.dumps(CONFIG["sphinx"]["config"]["nb_ipywidgets_js"]).index(
        "widgets-offline.js"
    ) < (json.dumps(CONFIG["sphinx"]["config"]["nb_ipywidgets_js"]).index("embed-amd.js"))
