"""Sphinx extension of the SpongeBob book: keeps test plumbing out of the rendered chapters.

The notebooks carry lines that matter to the tools but not to a reader: ``# NBVAL_*`` markers (for
nbval), lint markers (``# fmt: skip``, ``# fmt: off``/``on``, ``# noqa: F811``, ``# type: ignore``,
``# pragma: no cover``, for ruff and friends) and the ``#| default_exp`` cell (for the exporter). In
the HTML these are dropped: an NBVAL marker line is removed from the cell it starts; a lint marker
comment is removed from the end of its line (a line holding only the marker goes), and what a
person wrote after it stays as a plain comment (``x  # noqa: F401  (used later)`` becomes
``x  # used later``); a code cell holding only ``#| default_exp`` (and comments) and no output is
removed. Notebooks are not changed; JupyterLab shows everything.
A cell tagged ``remove-cell`` (for example the version print of a chapter's setup) is removed by
myst-nb itself.

It also keeps every page's scripts local and loaded once: the book has no live-code (Thebe) button,
so the Thebe loader, which would fetch its code from a CDN, is dropped, and a script that an
extension registered twice is written once (a second `const THEBE_JS_URL` was a console error).
"""

from __future__ import annotations

import io
import re
import tokenize

from docutils import nodes

MARKER = re.compile(r"^\s*#\s*NBVAL_[A-Z_]+\s*$")
DEFAULT_EXP = re.compile(r"^\s*#\|\s*default_exp\b")


# A lint marker comment: what follows it on the line, if anything, is a person's note.
LINT = re.compile(
    r"#\s*(?:fmt:\s*(?:skip|off|on)|noqa(?::\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*)?"
    r"|type:\s*ignore(?:\[[^\]]*\])?|pragma:\s*no\s*(?:cover|branch))(?P<note>.*)$"
)


def _comments(text: str) -> dict[int, int]:
    """{line index: column of its comment} for the lines of ``text`` that end in a comment."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # Not plain Python (a cell magic, a shell line): a marker must start a comment of its own.
        found = {}
        for i, line in enumerate(text.splitlines()):
            m = re.search(r"(?:^|\s)(#\s*(?:fmt:|noqa|type:\s*ignore|pragma:).*)$", line)
            if m:
                found[i] = m.start(1)
        return found
    return {t.start[0] - 1: t.start[1] for t in tokens if t.type == tokenize.COMMENT}


def _strip_lint(text: str) -> str:
    lines: list[str | None] = list(text.split("\n"))
    for i, col in _comments(text).items():
        m = LINT.match(lines[i][col:]) if i < len(lines) else None
        if not m:
            continue
        indent, code = lines[i][:col], lines[i][:col].rstrip()
        note = m.group("note").strip().lstrip("#").strip()
        if note.startswith("(") and note.endswith(")"):
            note = note[1:-1].strip()
        if note:
            lines[i] = f"{code}  # {note}" if code else f"{indent}# {note}"
        else:
            lines[i] = code or None  # a line that held only the marker goes
    return "\n".join(line for line in lines if line is not None)


def _visible_lines(text: str) -> list[str]:
    return [line for line in _strip_lint(text).splitlines() if not MARKER.match(line)]


def _only_default_exp(lines: list[str]) -> bool:
    code = [line for line in lines if line.strip()]
    return any(DEFAULT_EXP.match(line) for line in code) and all(
        line.lstrip().startswith("#") for line in code
    )


def clean_cells(app, doctree: nodes.document) -> None:
    for cell in list(doctree.findall(nodes.container)):
        if cell.get("nb_element") != "cell_code":
            continue
        sources = [c for c in cell.children if c.get("nb_element") == "cell_code_source"]
        has_output = any(c.get("nb_element") == "cell_code_output" for c in cell.children)
        for source in sources:
            for block in list(source.findall(nodes.literal_block)):
                lines = _visible_lines(block.astext())
                if _only_default_exp(lines) and not has_output:
                    cell.parent.remove(cell)
                    break
                text = "\n".join(lines).strip("\n")
                if text != block.astext():
                    new = nodes.literal_block(text, text, **block.attributes)
                    block.replace_self(new)
            else:
                continue
            break


def _script_key(js) -> tuple:
    attrs = getattr(js, "attributes", {}) or {}
    return (str(getattr(js, "filename", js)), tuple(sorted((k, str(v)) for k, v in attrs.items())))


def _is_thebe(js) -> bool:
    name = str(getattr(js, "filename", "") or "")
    body = str((getattr(js, "attributes", {}) or {}).get("body", ""))
    return "sphinx-thebe" in name or "thebe@" in name or "THEBE_JS_URL" in body


def local_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for js in scripts:
        key = _script_key(js)
        if key in seen or _is_thebe(js):
            continue
        seen.add(key)
        kept.append(js)
    scripts[:] = kept


def setup(app):
    app.connect("doctree-read", clean_cells)
    app.connect("html-page-context", local_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
