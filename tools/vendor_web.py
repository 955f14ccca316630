"""Fetch the book's browser scripts (MathJax, require.js, the Jupyter widget manager) at install time.

    python tools/vendor_web.py            # fetch what is missing into .venv/share/spongebob-web
    python tools/vendor_web.py --check    # exit 1 (and say what to run) if anything is missing

The book must build and display with no network: maths is typeset by MathJax and saved widget state
is drawn by @jupyter-widgets/html-manager, both normally loaded from a CDN by the reader's browser.
This script takes them from the npm registry with `npm pack` (pinned versions, the tarball's sha512
checked against the value pinned below), and unpacks only the folders the book uses into
``.venv/share/spongebob-web/<name>``. `make` runs it once when it creates .venv; tools/build_book.py
then copies those folders into the site (book/_build/html/_static/vendor), so neither the build nor
the published pages reach out to a CDN. Nothing is committed to the repository.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / ".venv" / "share" / "spongebob-web"

# name -> (npm spec, sha512 integrity of the tarball, folders of the package to keep)
PACKAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mathjax": (
        "mathjax@3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        ("es5", "LICENSE"),
    ),
    "requirejs": (
        "requirejs@2.3.7",
        "sha512-DouTG8T1WanGok6Qjg2SXuCMzszOo0eHeH9hDZ5Y4x8Je+9JB38HdTLT4/VA8OaUhBa0JPVHJ0pyBkM1z+pDsw==",
        ("require.js", "README.md"),
    ),
    "html-manager": (
        "@jupyter-widgets/html-manager@1.0.6",
        "sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        ("dist", "LICENSE"),
    ),
}
STAMP = "VERSION"


def missing(dest: Path = DEST) -> list[str]:
    """Names of the packages not (or not at the pinned version) under ``dest``."""
    out = []
    for name, (spec, _, _) in PACKAGES.items():
        stamp = dest / name / STAMP
        if not stamp.is_file() or stamp.read_text(encoding="utf-8").strip() != spec:
            out.append(name)
    return out


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def unpack(data: bytes, keep: tuple[str, ...], target: Path) -> None:
    """Extract ``package/<keep...>`` of an npm tarball into ``target`` (no source maps)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 2 or parts[0] != "package" or parts[1] not in keep:
                continue
            if not member.isfile() or member.name.endswith(".map"):
                continue
            rel = Path(*parts[1:])
            if rel.is_absolute() or ".." in rel.parts:
                raise SystemExit(f"vendor_web: unsafe path {member.name!r} in the tarball")
            out = target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            out.write_bytes(src.read())


def fetch(name: str, dest: Path = DEST) -> None:
    spec, want, keep = PACKAGES[name]
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            f"vendor_web: npm is needed once, at install time, to fetch {spec} for the offline book "
            "(Debian/Ubuntu: apt-get install npm; conda: conda install nodejs); then rerun "
            "`python tools/vendor_web.py`"
        )
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(
            [npm, "pack", spec, "--json", "--pack-destination", tmp],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(f"vendor_web: `npm pack {spec}` failed:\n{res.stderr.strip()}")
        filename = json.loads(res.stdout)[0]["filename"]
        data = (Path(tmp) / filename).read_bytes()
    got = integrity(data)
    if got != want:
        raise SystemExit(f"vendor_web: {spec} has integrity {got}, expected {want}; not used")
    target = dest / name
    staging = dest / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    unpack(data, keep, staging)
    (staging / STAMP).write_text(spec + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    print(
        f"vendor_web: {spec} -> {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report what is missing")
    args = p.parse_args(argv)
    todo = missing()
    if args.check:
        if todo:
            print(f"vendor_web: missing {', '.join(todo)}; run `python tools/vendor_web.py`")
            return 1
        return 0
    for name in todo:
        fetch(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
