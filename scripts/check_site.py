"""Check the built book in a real browser: links, images and page errors.

Serves the HTML build on localhost, checks every internal link and image reference
in the files themselves (the target file must exist and, for ``#fragment`` links,
contain that id), then opens each page in headless Chromium (driven by Selenium) and
reports images that did not load, requests that failed, JavaScript errors and
console errors. Failures to reach other hosts are ignored: the check runs offline.
It saves a screenshot of each page and exits non-zero listing every problem.

    python scripts/check_site.py                       # checks _build/html
    python scripts/check_site.py --html-dir <folder>/_build/html
    python scripts/check_site.py --no-browser          # the file checks only

Needs Debian's ``chromium`` and ``chromium-driver`` and the ``selenium`` package.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import posixpath
import sys
import tempfile
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

# Generated pages that hold no content of their own.
SKIPPED_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# The browser asks for these by itself; the pages do not link them.
UNLINKED_REQUESTS = {"/favicon.ico"}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Waits until every image has loaded or failed, then returns [src, decoded, width].
WAIT_FOR_IMAGES = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach((image) => { image.loading = "eager"; });
Promise.allSettled(images.map((image) => image.decode())).then((results) =>
  done(images.map((image, i) => [image.currentSrc || image.src,
                                 results[i].status === "fulfilled", image.naturalWidth])));
"""


class Problem(NamedTuple):
    page: str
    kind: str
    detail: str


class PageRefs(NamedTuple):
    """What one HTML file holds: its element ids, and the links and images it references."""

    ids: set[str]
    links: list[str]
    images: list[str]


class Browser(NamedTuple):
    """Where Chromium and its driver are, and how the screenshots are taken."""

    chromium: Path = Path("/usr/bin/chromium")
    chromedriver: Path = Path("/usr/bin/chromedriver")
    window: str = "1280,2000"  # WIDTH,HEIGHT
    full_page: bool = False  # capture the whole page, not only the window


class PageReport(NamedTuple):
    page: str
    images: int
    broken_images: int
    errors: int
    screenshot: str


class _RefParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs = PageRefs(set(), [], [])

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        if "id" in values:
            self.refs.ids.add(values["id"])
        if tag == "a" and "name" in values:
            self.refs.ids.add(values["name"])
        if tag in ("a", "link") and "href" in values:
            self.refs.links.append(values["href"])
        elif tag == "script" and "src" in values:
            self.refs.links.append(values["src"])
        elif tag == "img" and "src" in values:
            self.refs.images.append(values["src"])
        elif tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            _, _, target = values.get("content", "").partition("url=")
            if target:
                self.refs.links.append(target.strip())


def parse_page(text: str) -> PageRefs:
    """The ids, links (``a``/``link`` hrefs, script sources, meta refresh) and images of a page."""
    parser = _RefParser()
    parser.feed(text)
    parser.close()
    return parser.refs


def find_pages(html_dir: Path) -> list[str]:
    """Every content page under ``html_dir``, as a POSIX path relative to it.

    Skips folders whose name starts with ``_`` (``_static``, ``_sources``, ...) and the
    generated index and search pages.
    """
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        relative = path.relative_to(html_dir)
        if any(part.startswith("_") for part in relative.parts[:-1]) or relative.as_posix() in SKIPPED_PAGES:
            continue
        pages.append(relative.as_posix())
    return pages


def resolve(page: str, ref: str) -> tuple[str, str] | None:
    """The file (relative to the site root) and fragment that ``ref`` on ``page`` points to.

    None for references to other hosts and for schemes such as ``mailto:`` or ``data:``.
    """
    parts = urlsplit(ref)
    if parts.scheme and parts.scheme not in ("http", "https"):
        return None
    if parts.netloc and parts.hostname not in LOCAL_HOSTS:
        return None
    path = unquote(parts.path)
    if not path:
        return page, unquote(parts.fragment)
    target = path.lstrip("/") if path.startswith("/") else posixpath.join(posixpath.dirname(page), path)
    if path.endswith("/"):
        target = posixpath.join(target, "index.html")
    return posixpath.normpath(target), unquote(parts.fragment)


def check_files(html_dir: Path, pages: list[str]) -> tuple[list[Problem], int]:
    """Broken internal links, missing fragments and missing image files on ``pages``.

    Returns:
        The problems found, and the number of internal references checked.
    """
    parsed: dict[str, PageRefs] = {}

    def refs_of(page: str) -> PageRefs:
        if page not in parsed:
            parsed[page] = parse_page((html_dir / page).read_text(encoding="utf-8", errors="replace"))
        return parsed[page]

    problems, checked = [], 0
    for page in pages:
        refs = refs_of(page)
        targets = [("missing link target", ref) for ref in refs.links]
        targets += [("missing image", ref) for ref in refs.images]
        for missing, ref in targets:
            resolved = resolve(page, ref)
            if resolved is None:
                continue
            checked += 1
            target, fragment = resolved
            if target.startswith("..") or not (html_dir / target).is_file():
                problems.append(Problem(page, missing, ref))
            elif fragment and target.endswith(".html") and fragment not in refs_of(target).ids:
                problems.append(Problem(page, "missing fragment", f"{ref} (no id {fragment!r} in {target})"))
    return problems, checked


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files without logging, recording every request answered with an error."""

    failures: list[tuple[str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if str(code).isdigit() else 0
        if status >= 400 and urlsplit(self.path).path not in UNLINKED_REQUESTS:
            self.failures.append((self.path, status))

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(html_dir: Path) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    """Serve ``html_dir`` on a free localhost port; yields the base URL and the failed requests."""
    failures: list[tuple[str, int]] = []
    handler = type("Handler", (_QuietHandler,), {"failures": failures})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(html_dir))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/", failures
    finally:
        server.shutdown()
        server.server_close()


def is_external_failure(entry: dict) -> bool:
    """A console entry about a resource on another host that could not be fetched offline."""
    url = str(entry.get("message", "")).split(" ", 1)[0]
    host = urlsplit(url).hostname
    return entry.get("source") == "network" and host is not None and host not in LOCAL_HOSTS


def console_errors(entries: list[dict]) -> list[str]:
    """SEVERE console messages, less offline failures and HTTP errors (the server reports those)."""
    return [
        str(entry["message"])
        for entry in entries
        if entry.get("level") == "SEVERE"
        and not is_external_failure(entry)
        and not (
            entry.get("source") == "network" and "the server responded with a status" in entry["message"]
        )
    ]


class BrowserUnavailable(RuntimeError):
    """Chromium, its driver or Selenium is missing."""


def start_browser(browser: Browser, profile: Path):
    """Headless Chromium under Selenium, offline-safe flags, fresh profile, console logs kept."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserUnavailable("the selenium package is missing: pip install 'selenium>=4.11,<5'") from None
    for path in (browser.chromium, browser.chromedriver):
        if not path.is_file():
            raise BrowserUnavailable(f"{path} not found: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(browser.chromium)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={browser.window}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(browser.chromedriver)))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def save_screenshot(driver, path: Path, full_page: bool) -> None:
    """A PNG of the window, or of the whole page through the DevTools protocol."""
    if not full_page:
        driver.save_screenshot(str(path))
        return
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight];"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))


def check_page(
    driver, base_url: str, page: str, failures: list, screenshots: Path, full_page: bool = False
) -> tuple[list, PageReport]:
    """Open ``page``, wait for its images, and report what failed; saves a screenshot."""
    failures.clear()
    driver.get(base_url + page)
    images = driver.execute_async_script(WAIT_FOR_IMAGES)
    errors = console_errors(driver.get_log("browser"))
    shot = screenshots / (page.removesuffix(".html").replace("/", "_") + ".png")
    save_screenshot(driver, shot, full_page)
    local = [(src, decoded, width) for src, decoded, width in images if urlsplit(src).hostname in LOCAL_HOSTS]
    broken = [src for src, decoded, width in local if not decoded or width == 0]
    broken_paths = {urlsplit(src).path for src in broken}
    problems = [Problem(page, "image not loaded", src) for src in broken]
    problems += [
        Problem(page, f"HTTP {status}", path)
        for path, status in failures
        if urlsplit(path).path not in broken_paths
    ]
    problems += [Problem(page, "page error", message) for message in errors]
    report = PageReport(page, len(local), len(broken), len(problems) - len(broken), str(shot))
    return problems, report


def check_in_browser(
    html_dir: Path, pages: list[str], screenshots: Path, browser: Browser
) -> tuple[list[Problem], list[PageReport]]:
    """Open every page of the site, served from ``html_dir``, in headless Chromium."""
    screenshots.mkdir(parents=True, exist_ok=True)
    problems, reports = [], []
    with (
        tempfile.TemporaryDirectory(prefix="check-site-") as profile,
        serve(html_dir) as (base_url, failures),
    ):
        driver = start_browser(browser, Path(profile))
        try:
            for page in pages:
                found, report = check_page(driver, base_url, page, failures, screenshots, browser.full_page)
                problems += found
                reports.append(report)
        finally:
            driver.quit()
    return problems, reports


def summary_table(reports: list[PageReport]) -> str:
    """One line per page: images loaded, other errors, screenshot."""
    width = max([len("page"), *(len(report.page) for report in reports)])
    lines = [f"{'page':<{width}}  images  errors  screenshot", f"{'-' * width}  ------  ------  ----------"]
    for report in reports:
        images = f"{report.images - report.broken_images}/{report.images}"
        lines.append(f"{report.page:<{width}}  {images:>6}  {report.errors:>6}  {report.screenshot}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html-dir", type=Path, default=Path("_build/html"), help="the built site")
    parser.add_argument(
        "--screenshots", type=Path, help="where the PNGs go (default: site-check/ beside the html folder)"
    )
    parser.add_argument("--no-browser", action="store_true", help="check links and image files only")
    parser.add_argument("--chromium", type=Path, default=Browser().chromium)
    parser.add_argument("--chromedriver", type=Path, default=Browser().chromedriver)
    parser.add_argument("--window", default=Browser().window, help="window size WIDTH,HEIGHT")
    parser.add_argument("--full-page", action="store_true", help="screenshots of whole pages, not the window")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    html_dir = args.html_dir.resolve()
    if not (html_dir / "index.html").is_file():
        print(f"error: no index.html in {html_dir}: build the book first (make book)", file=sys.stderr)
        return 2
    pages = find_pages(html_dir)
    problems, checked = check_files(html_dir, pages)
    print(f"{len(pages)} pages, {checked} internal links and images checked in the files")
    if not args.no_browser:
        screenshots = args.screenshots or html_dir.parent / "site-check"
        try:
            browser = Browser(args.chromium, args.chromedriver, args.window, args.full_page)
            found, reports = check_in_browser(html_dir, pages, screenshots, browser)
        except BrowserUnavailable as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        problems += found
        print(summary_table(reports))
    for problem in problems:
        print(f"FAIL {problem.page}: {problem.kind}: {problem.detail}")
    print(f"{len(problems)} problem(s)" if problems else "site check passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
