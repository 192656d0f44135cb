"""The book builds with ``-W -n`` from the notebooks' stored outputs, and the site check
(``scripts/check_site.py``) finds broken links, missing images and page errors.

The build test does not execute notebooks (nbval and the smoke runs do that): it catches
warnings that would break ``make book``, such as a bad cross-reference, in seconds.
The browser test runs only where Debian's ``chromium`` and ``chromium-driver`` and the
``selenium`` package are installed (``make site-check`` installs them).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.book  # minutes: not in the quick tier (pytest -m "not book")

REPOSITORY = Path(__file__).resolve().parent.parent
CHECK_SITE = REPOSITORY / "scripts" / "check_site.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def load_check_site():
    """``scripts/check_site.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location("check_site", CHECK_SITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toc_pages(entry: object) -> set[str]:
    """Every ``file:`` and the ``root`` of a parsed ``_toc.yml``, without suffix."""
    if isinstance(entry, dict):
        found = {str(Path(entry[key]).with_suffix("")) for key in ("file", "root") if key in entry}
        return found.union(*(toc_pages(value) for value in entry.values()))
    if isinstance(entry, list):
        return set().union(*(toc_pages(item) for item in entry))
    return set()


def book_config_without_execution(path: Path) -> Path:
    """``_config.yml`` with notebook execution off, written to ``path``.

    Paths of local Sphinx extensions are made absolute: Jupyter Book reads them relative
    to the configuration file.
    """
    config = yaml.safe_load((REPOSITORY / "_config.yml").read_text(encoding="utf-8"))
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    extensions = config.get("sphinx", {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str(REPOSITORY / folder)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def test_the_book_builds_without_warnings_from_stored_outputs(tmp_path: Path):
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.exists():
        jupyter_book = Path(shutil.which("jupyter-book") or "jupyter-book")
    config = book_config_without_execution(tmp_path / "_config.yml")
    output = tmp_path / "book"
    command = [str(jupyter_book), "build", str(REPOSITORY), "-W", "-n", "--keep-going"]
    command += ["--config", str(config), "--path-output", str(output)]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    )
    html = output / "_build" / "html"
    pages = toc_pages(yaml.safe_load((REPOSITORY / "_toc.yml").read_text(encoding="utf-8")))
    missing = sorted(page for page in pages if not (html / f"{page}.html").is_file())
    assert not missing, f"pages of _toc.yml without an HTML file: {missing}"
    assert (html / "index.html").is_file()


def write_fake_site(root: Path) -> Path:
    """A two-page site with one broken link, one missing fragment, one missing image
    and a JavaScript error; external and mailto links must be ignored."""
    (root / "_images").mkdir(parents=True)
    (root / "_static").mkdir()
    matplotlib.image.imsave(root / "_images" / "plot.png", np.zeros((4, 6, 3)))
    (root / "_static" / "style.css").write_text("body { margin: 0; }", encoding="utf-8")
    (root / "_static" / "ignored.html").write_text('<a href="nowhere.html">x</a>', encoding="utf-8")
    (root / "genindex.html").write_text('<a href="nowhere.html">x</a>', encoding="utf-8")
    (root / "index.html").write_text(
        '<html><head><link rel="stylesheet" href="_static/style.css"></head><body>'
        '<h1 id="top">Fake</h1><a href="#top">top</a> <a href="book/chapter.html#intro">ok</a>'
        '<a href="book/chapter.html#nowhere">no such id</a> <a href="book/missing.html">broken</a>'
        '<a href="https://example.com/page.html">external</a> <a href="mailto:a@example.com">mail</a>'
        '<a href="genindex.html">index</a> <img src="_images/plot.png"></body></html>',
        encoding="utf-8",
    )
    (root / "book").mkdir()
    (root / "book" / "chapter.html").write_text(
        '<html><body><h1 id="intro">Chapter</h1><a href="../index.html#top">home</a>'
        '<img src="../_images/plot.png"><img src="../_images/lost.png">'
        "<script>notDefinedAnywhere();</script></body></html>",
        encoding="utf-8",
    )
    return root


def test_site_check_finds_only_content_pages(tmp_path: Path):
    site = write_fake_site(tmp_path / "html")
    assert load_check_site().find_pages(site) == ["book/chapter.html", "index.html"]


def test_site_check_reads_ids_links_and_images():
    refs = load_check_site().parse_page(
        '<a name="old"></a><div id="x"><a href="a.html#b">a</a><img src="p.png"></div>'
        '<script src="s.js"></script><meta http-equiv="refresh" content="0; url=book/intro.html">'
    )
    assert refs.ids == {"old", "x"}
    assert refs.links == ["a.html#b", "s.js", "book/intro.html"]
    assert refs.images == ["p.png"]


@pytest.mark.parametrize(
    ("page", "ref", "expected"),
    [
        ("book/a.html", "b.html#sec", ("book/b.html", "sec")),
        ("book/a.html", "../_static/x.css?v=1", ("_static/x.css", "")),
        ("book/a.html", "#top", ("book/a.html", "top")),
        ("book/a.html", "sub/", ("book/sub/index.html", "")),
        ("book/a.html", "my%20page.html#a%20b", ("book/my page.html", "a b")),
        ("index.html", "http://127.0.0.1:8000/book/a.html", ("book/a.html", "")),
        ("index.html", "https://example.com/a.html", None),
        ("index.html", "mailto:a@example.com", None),
        ("index.html", "data:image/png;base64,AAAA", None),
    ],
)
def test_site_check_resolves_references(page: str, ref: str, expected: tuple[str, str] | None):
    assert load_check_site().resolve(page, ref) == expected


def test_site_check_reports_broken_links_fragments_and_missing_images(tmp_path: Path):
    check_site = load_check_site()
    site = write_fake_site(tmp_path / "html")
    problems, checked = check_site.check_files(site, check_site.find_pages(site))
    assert sorted(problems) == [
        ("book/chapter.html", "missing image", "../_images/lost.png"),
        (
            "index.html",
            "missing fragment",
            "book/chapter.html#nowhere (no id 'nowhere' in book/chapter.html)",
        ),
        ("index.html", "missing link target", "book/missing.html"),
    ]
    assert checked == 10  # 7 on index.html, 3 on the chapter: external and mailto links are skipped


def test_site_check_exits_nonzero_listing_every_problem(tmp_path: Path, capsys):
    site = write_fake_site(tmp_path / "html")
    assert load_check_site().main(["--html-dir", str(site), "--no-browser"]) == 1
    output = capsys.readouterr().out
    assert "3 problem(s)" in output
    assert "FAIL index.html: missing link target: book/missing.html" in output


def test_site_check_passes_a_sound_site(tmp_path: Path, capsys):
    site = write_fake_site(tmp_path / "html")
    (site / "book" / "missing.html").write_text("<p>found</p>", encoding="utf-8")
    (site / "book" / "chapter.html").write_text(
        '<h1 id="intro">Chapter</h1><p id="nowhere"></p><img src="../_images/plot.png">', encoding="utf-8"
    )
    assert load_check_site().main(["--html-dir", str(site), "--no-browser"]) == 0
    assert "site check passed" in capsys.readouterr().out


def test_site_check_ignores_offline_failures_but_not_page_errors():
    local = "http://127.0.0.1:9"
    entries = [
        (
            "SEVERE",
            "network",
            "https://cdn.example.org/m.js - Failed to load resource: net::ERR_NAME_NOT_RESOLVED",
        ),
        (
            "SEVERE",
            "network",
            f"{local}/a.png - Failed to load resource: the server responded with a status of 404",
        ),
        ("SEVERE", "javascript", f"{local}/a.html 3:1 Uncaught TypeError: x is undefined"),
        ("SEVERE", "console-api", f'{local}/s.js 1:2 "broken"'),
        ("WARNING", "console-api", f"{local}/s.js 1:2 deprecated"),
    ]
    errors = load_check_site().console_errors(
        [{"level": level, "source": source, "message": message} for level, source, message in entries]
    )
    assert errors == [f"{local}/a.html 3:1 Uncaught TypeError: x is undefined", f'{local}/s.js 1:2 "broken"']


@pytest.mark.skipif(
    not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()), reason="needs Debian's chromium and chromium-driver"
)
def test_site_check_in_chromium_catches_javascript_errors_and_missing_images(tmp_path: Path):
    pytest.importorskip("selenium")
    check_site = load_check_site()
    site = write_fake_site(tmp_path / "html")
    shots = tmp_path / "shots"
    browser = check_site.Browser(CHROMIUM, CHROMEDRIVER, window="800,600", full_page=True)
    problems, reports = check_site.check_in_browser(site, check_site.find_pages(site), shots, browser)
    kinds = sorted((problem.page, problem.kind) for problem in problems)
    assert kinds == [("book/chapter.html", "image not loaded"), ("book/chapter.html", "page error")]
    assert "notDefinedAnywhere" in next(p.detail for p in problems if p.kind == "page error")
    assert [(report.page, report.images, report.broken_images) for report in reports] == [
        ("book/chapter.html", 2, 1),
        ("index.html", 1, 0),
    ]
    assert all(Path(report.screenshot).read_bytes().startswith(b"\x89PNG") for report in reports)
