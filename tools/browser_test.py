"""Open every page of the built book in headless Chromium and check what a reader would see.

    python tools/browser_test.py [--site book/_build/html] [--screenshot PATH]

Run by `make test` after the book build (`make browser-test`). The site is served from 127.0.0.1 by
a local HTTP server (as GitHub Pages would serve it) and Chromium is driven through chromedriver's
W3C WebDriver interface (plain HTTP, so no extra Python package). Every page must have:

- a title that names its heading;
- on a chapter page (notebooks/NN_*.html), at least one rendered figure (an image that loaded);
- maths typeset by MathJax: every `.math` element holds MathJax output, no TeX error, and no raw TeX
  (`$$`, `\\frac`, `\\begin{`) left in the text;
- working internal links: every link into the site reaches a page that exists, and its #anchor
  exists on that page;
- no console errors, and no request outside the site (the book works offline);
- code blocks that fit the text column (no horizontal scrollbar) at a 1400 x 1000 window.

It saves a screenshot of a chapter page, scrolled to its first displayed equation, as
book/_build/screenshot.png. Where Chromium or chromedriver is missing it says so and exits 0 (the
test is skipped), unless BROWSER_TEST_REQUIRED=1 (CI sets it, after installing them), when it fails.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "book" / "_build" / "html"
SCREENSHOT = ROOT / "book" / "_build" / "screenshot.png"
SCREENSHOT_PAGE = "notebooks/02_rope.html"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
]
CHAPTER = re.compile(r"^notebooks/\d\d_[a-z0-9_]+\.html$")
RAW_TEX = re.compile(r"\$\$|\\frac\b|\\begin\{|\\sqrt\{|\\mathrm\{")


class Skip(Exception):
    """Chromium or chromedriver is not installed."""


def find_browser() -> tuple[str, str]:
    browser = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None]
        raise Skip(
            f"{' and '.join(missing)} not found; on Debian/Ubuntu: "
            "apt-get install chromium chromium-driver (.ci/run does it)"
        )
    return browser, driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test's output to its findings
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class WebDriver:
    """The few W3C WebDriver commands the test needs, over chromedriver's HTTP interface."""

    def __init__(self, driver: str, browser: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("chromedriver did not start within 20 s") from None
                time.sleep(0.1)
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": CHROME_FLAGS},
            "goog:loggingPrefs": {"browser": "ALL"},
            "pageLoadStrategy": "normal",
        }
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{value['sessionId']}"
        self._call("POST", f"{self.session}/timeouts", {"script": 30000, "pageLoad": 30000})

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())["value"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"WebDriver {method} {path}: {err.read().decode()[:500]}") from None

    def get(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str, *args):
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": args})

    def run_async(self, script: str, *args):
        body = {"script": script, "args": list(args)}
        return self._call("POST", f"{self.session}/execute/async", body)

    def console(self) -> list[dict]:
        return self._call("POST", f"{self.session}/se/log", {"type": "browser"})

    def screenshot(self, path: Path) -> None:
        png = base64.b64decode(self._call("GET", f"{self.session}/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(png)
        tmp.replace(path)

    def quit(self) -> None:
        try:
            self._call("DELETE", self.session)
        except (OSError, RuntimeError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# Runs in the page once it has loaded: waits for MathJax (where the page loads it), then reports.
INSPECT = r"""
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise)
  ? MathJax.startup.promise : Promise.resolve();
ready.then(() => new Promise(r => setTimeout(r, 150))).then(() => {
  const article = document.querySelector('article') || document.body;
  const h1 = document.querySelector('article h1') || document.querySelector('h1');
  const maths = [...document.querySelectorAll('article .math')];
  const figures = [...article.querySelectorAll('.cell_output img, figure img, img.figure')]
    .filter(img => img.complete && img.naturalWidth > 0);
  const widgetImgs = [...article.querySelectorAll('img')].filter(
    img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute('src'));
  const pres = [...article.querySelectorAll('div.highlight pre')];
  const wide = pres.filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split('\n').reduce((a, b) => a.length >= b.length ? a : b));
  const text = [...article.querySelectorAll('p, li, td, h1, h2, h3, dd, dt')]
    .map(e => e.innerText).join('\n');
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const resources = performance.getEntriesByType('resource').map(e => e.name);
  done({
    title: document.title,
    h1: h1 ? h1.innerText.replace(/[#\u00b6]\s*$/, '').trim() : null,
    maths: maths.length,
    untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60)),
    texErrors: document.querySelectorAll('mjx-merror').length,
    figures: figures.length,
    brokenImages: widgetImgs,
    wideCode: wide.map(l => l.slice(0, 120)),
    text: text,
    links: links,
    resources: resources,
  });
});
"""


def site_pages(site: Path) -> list[str]:
    pages = []
    for path in sorted(site.rglob("*.html")):
        rel = path.relative_to(site).as_posix()
        if rel.split("/")[0] in ("_static", "_sources", "_images", "reports"):
            continue
        pages.append(rel)
    return pages


@functools.cache
def ids_of(site: Path, rel: str) -> frozenset[str] | None:
    """The element ids of a page of the site (None if the page does not exist)."""
    path = site / rel
    if not path.is_file():
        return None
    html = path.read_text(encoding="utf-8", errors="replace")
    return frozenset(re.findall(r"""\bid=["']([^"']+)["']""", html))


def check_link(site: Path, base: str, href: str) -> str | None:
    """An error message when an internal link is broken, else None."""
    if not href.startswith(base):
        return None  # outside the site (an external reference): not this test's business
    parsed = urllib.parse.urlsplit(href)
    rel = urllib.parse.unquote(parsed.path)[1:] or "index.html"
    if rel.endswith("/"):
        rel += "index.html"
    target = site / rel
    if not target.exists():
        return f"link to a missing file {rel}"
    if parsed.fragment and rel.endswith(".html"):
        ids = ids_of(site, rel)
        if ids is not None and urllib.parse.unquote(parsed.fragment) not in ids:
            return f"link to a missing anchor {rel}#{parsed.fragment}"
    return None


def check_page(wd: WebDriver, site: Path, base: str, rel: str) -> list[str]:
    wd.get(base + rel)
    info = wd.run_async(INSPECT)
    errors = []
    title = (info["title"] or "").strip()
    if not title or "<no title>" in title:
        errors.append(f"no title ({title!r})")
    elif info["h1"] and info["h1"] not in title:
        errors.append(f"title {title!r} does not name the heading {info['h1']!r}")
    if info["h1"] is None:
        errors.append("no <h1> heading")
    if CHAPTER.match(rel) and info["figures"] == 0:
        errors.append("a chapter page with no rendered figure")
    if info["brokenImages"]:
        errors.append(f"images that did not load: {info['brokenImages'][:3]}")
    if info["untypeset"]:
        errors.append(f"{len(info['untypeset'])} maths not typeset, e.g. {info['untypeset'][0]!r}")
    if info["texErrors"]:
        errors.append(f"{info['texErrors']} TeX errors in typeset maths")
    raw = RAW_TEX.search(info["text"])
    if raw:
        start = max(raw.start() - 40, 0)
        errors.append(f"raw TeX in the text: {info['text'][start : raw.end() + 40]!r}")
    if info["wideCode"]:
        errors.append(
            f"{len(info['wideCode'])} code blocks wider than the column, e.g. "
            f"{info['wideCode'][0]!r}"
        )
    for href in sorted(set(info["links"])):
        problem = check_link(site, base, href)
        if problem:
            errors.append(problem)
    outside = [r for r in info["resources"] if not r.startswith(base) and not r.startswith("data:")]
    if outside:
        errors.append(f"requests outside the site (offline it breaks): {outside[:3]}")
    for entry in wd.console():
        if entry.get("level") == "SEVERE":
            errors.append(f"console error: {entry.get('message', '')[:300]}")
    return errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--site", type=Path, default=SITE, help="the built HTML (default: %(default)s)")
    p.add_argument("--screenshot", type=Path, default=SCREENSHOT, help="where to save the PNG")
    args = p.parse_args(argv)
    site = args.site.resolve()
    if not (site / "index.html").is_file():
        print(f"browser test: no built site at {site}; run `make book-html` (or `make book`) first")
        return 1
    try:
        browser, driver = find_browser()
    except Skip as why:
        if os.environ.get("BROWSER_TEST_REQUIRED") == "1":
            print(f"browser test: FAILED, BROWSER_TEST_REQUIRED=1 but {why}")
            return 1
        print(f"browser test: SKIPPED: {why}")
        return 0
    pages = site_pages(site)
    if not any(CHAPTER.match(rel) for rel in pages):
        print("browser test: the site has no chapter page (notebooks/NN_name.html)")
        return 1
    server, base = serve(site)
    wd = WebDriver(driver, browser)
    failures = 0
    try:
        for rel in pages:
            errors = check_page(wd, site, base, rel)
            failures += bool(errors)
            status = "ok" if not errors else "FAILED"
            print(f"browser test: {rel}: {status}")
            for e in errors:
                print(f"    {e}")
        shot_page = (
            SCREENSHOT_PAGE
            if SCREENSHOT_PAGE in pages
            else next(rel for rel in pages if CHAPTER.match(rel))
        )
        wd.get(base + shot_page)
        wd.run_async(INSPECT)
        wd.run(
            "const m = document.querySelector('article div.math');"
            "if (m) { m.scrollIntoView({block: 'center'}); }"
        )
        wd.screenshot(args.screenshot)
        shown = (
            args.screenshot.relative_to(ROOT)
            if args.screenshot.is_relative_to(ROOT)
            else args.screenshot
        )
        print(f"browser test: screenshot of {shot_page} in {shown}")
    finally:
        wd.quit()
        server.shutdown()
    print(f"browser test: {len(pages) - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
