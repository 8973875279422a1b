"""The HTML reports in a real headless browser (Debian's chromium + chromedriver, via selenium).

Every top-level report (``sub-*.html``, ``group.html``) of ``demo_output`` is
opened; the test fails on any JavaScript error or failed resource load in the
console, any image that did not decode, any resource fetched from the network
(the reports must be self-contained), any relative link to a missing file,
and missing links between the subject and group pages. A screenshot of each
page is saved under the test's temporary folder.

Skipped when chromium / chromedriver / selenium are missing, unless
``FMRI_PAIN_REQUIRE_BROWSER=1`` (as in CI, where ``.ci/run`` installs them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest



CHROMIUM = os.environ.get("FMRI_PAIN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FMRI_PAIN_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1600")

# Runs in the page: waits for every image to settle, then reports what a reader would miss.
_INSPECT_JS = """
const done = arguments[arguments.length - 1];
window.scrollTo(0, document.body.scrollHeight);
const imgs = Array.from(document.images);
imgs.forEach(img => { img.loading = "eager"; });
const settle = imgs.map(img => img.complete ? Promise.resolve() :
    new Promise(r => { img.addEventListener("load", r); img.addEventListener("error", r);
                       setTimeout(r, 5000); }));
Promise.all(settle).then(() => {
  window.scrollTo(0, 0);
  done({
    images: imgs.map(img => ({src: img.currentSrc || img.src || "", ok: img.complete && img.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.getAttribute("href")),
    resources: performance.getEntriesByType("resource").map(e => e.name),
    title: document.title,
    text_length: document.body ? document.body.innerText.length : 0,
  });
});
"""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("FMRI_PAIN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"FMRI_PAIN_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless chromium driven by chromedriver; console messages of all levels are logged."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed")
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (Path(binary).is_file() or shutil.which(binary)):
            _skip_or_fail(f"{binary} not found (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def inspect_report(driver, path: Path, screenshot: Path | None = None) -> dict:
    """Open ``path`` and return what is wrong with it.

    Returns
    -------
    dict
        ``errors`` (list of problem strings: console errors, broken images,
        network resources, dangling links), ``links`` (resolved local files
        the page links to) and ``info`` (page facts from the browser).
    """
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(path.resolve().as_uri())
    info = driver.execute_async_script(_INSPECT_JS)
    errors = [f"console {m['level']}: {m['message']}" for m in driver.get_log("browser")
              if m["level"] == "SEVERE"]
    for img in info["images"]:
        if not img["ok"]:
            errors.append(f"image did not load: {img['src'][:120]}")
    for name in info["resources"]:
        if urlparse(name).scheme in ("http", "https"):
            errors.append(f"resource fetched from the network (not self-contained): {name}")
    links = []
    for href in info["links"]:
        parsed = urlparse(href)
        if parsed.scheme in ("http", "https", "mailto", "data", "javascript") or not parsed.path:
            continue
        target = (path.parent / unquote(parsed.path)).resolve() if parsed.scheme == "" else Path(unquote(parsed.path))
        links.append(target)
        if not target.exists():
            errors.append(f"link to a missing file: {href}")
    if info["text_length"] == 0:
        errors.append("page has no text")
    if screenshot is not None:
        driver.save_screenshot(str(screenshot))
    return {"errors": errors, "links": links, "info": info}


def _reports(folder: Path) -> list[Path]:
    return sorted(folder.glob("sub-*.html")) + sorted(folder.glob("group.html"))


def test_reports_exist(demo_output):
    reports = _reports(demo_output)
    assert (demo_output / "group.html").is_file(), f"no group.html in {demo_output}"
    assert any(p.name.startswith("sub-") for p in reports), f"no sub-*.html in {demo_output}"


def test_reports_render_cleanly(browser, demo_output, tmp_path):
    reports = _reports(demo_output)
    assert reports
    subjects = {p.resolve() for p in reports if p.name.startswith("sub-")}
    group = (demo_output / "group.html").resolve()
    problems = {}
    for report in reports:
        shot = tmp_path / f"{report.stem}.png"
        result = inspect_report(browser, report, screenshot=shot)
        assert shot.is_file() and shot.stat().st_size > 1000, f"no screenshot of {report.name}"
        if result["info"]["images"] == []:
            result["errors"].append("no figure in the report")
        links = set(result["links"])
        if report.resolve() in subjects and group not in links:
            result["errors"].append("subject report does not link to group.html")
        if report.resolve() == group and not subjects <= links:
            missing = sorted(p.name for p in subjects - links)
            result["errors"].append(f"group report does not link to {missing}")
        if result["errors"]:
            problems[report.name] = result["errors"]
    assert not problems, "\n".join(f"{name}:\n  " + "\n  ".join(errs) for name, errs in problems.items())


def test_harness_detects_broken_pages(browser, tmp_path):
    """The checks can fail: a JS error, a missing image, a network resource and a dangling link."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>broken</title></head><body><p>text</p>"
        "<img src='missing.png'><a href='sub-99.html'>gone</a>"
        "<script>undefinedFunction();</script>"
        "<script src='https://example.invalid/lib.js'></script></body></html>")
    errors = inspect_report(browser, page, screenshot=tmp_path / "broken.png")["errors"]
    joined = "\n".join(errors)
    assert "undefinedFunction" in joined
    assert "image did not load" in joined and "missing.png" in joined
    assert "link to a missing file: sub-99.html" in joined
    assert "example.invalid" in joined
    good = tmp_path / "good.html"
    good.write_text("<!DOCTYPE html><html><head><title>ok</title></head><body><p>fine</p>"
                    "<a href='broken.html'>b</a></body></html>")
    assert inspect_report(browser, good)["errors"] == []


GROUP_HTML_MAX_BYTES = 2_800_000
"""Bound on group.html of the demo trial (measured 2.27 MB with the viewer; 3.96 MB before the
compressed figures, collapsed tables and design thumbnails)."""

# Runs in the page: the navigation bar, its targets, open long tables and the viewer's iframe.
_STRUCTURE_JS = """
const header = document.querySelector("header");
const links = Array.from(document.querySelectorAll("header nav.sections a"));
const sections = Array.from(document.querySelectorAll("details.section"));
const openLong = Array.from(document.querySelectorAll("table")).filter(t =>
    !t.closest("details:not([open])") && t.querySelectorAll("tbody tr").length > 30).length;
const scripts = Array.from(document.querySelectorAll("script[src], link[href], img[src]"))
    .map(e => e.getAttribute("src") || e.getAttribute("href")).filter(s => /^https?:/.test(s));
return {
  sticky: header ? getComputedStyle(header).position : "",
  links: links.map(a => a.getAttribute("href")),
  resolved: links.filter(a => { const t = document.getElementById(a.getAttribute("href").slice(1));
                                return t !== null && t.matches("details.section"); }).length,
  sections: sections.map(s => s.id),
  summaries: sections.filter(s => s.querySelector(":scope > summary")).length,
  open_long_tables: openLong,
  network: scripts,
};
"""


def _structure(driver, path: Path) -> dict:
    driver.get(path.resolve().as_uri())
    return driver.execute_script(_STRUCTURE_JS)


def _check_navigation(facts: dict) -> list[str]:
    problems = []
    if facts["sticky"] != "sticky":
        problems.append(f"header is not sticky ({facts['sticky']!r})")
    if not facts["links"] or facts["resolved"] != len(facts["links"]):
        problems.append(f"navigation links {facts['links']} resolve to {facts['resolved']} sections")
    if sorted(h.removeprefix("#") for h in facts["links"]) != sorted(facts["sections"]):
        problems.append(f"sections {facts['sections']} and navigation {facts['links']} differ")
    if facts["summaries"] != len(facts["sections"]):
        problems.append("a section cannot be collapsed (no <summary>)")
    if facts["open_long_tables"]:
        problems.append(f"{facts['open_long_tables']} table(s) of > 30 rows shown open")
    if facts["network"]:
        problems.append(f"network resources referenced: {facts['network']}")
    return problems


def test_group_report_navigation_tables_and_size(browser, demo_output):
    group = demo_output / "group.html"
    size = group.stat().st_size
    assert size < GROUP_HTML_MAX_BYTES, f"group.html is {size / 1e6:.2f} MB"
    facts = _structure(browser, group)
    assert not _check_navigation(facts), _check_navigation(facts)
    for expected in ("overview", "qc", "contrasts", "methods"):
        assert expected in facts["sections"], f"no {expected} section in {facts['sections']}"
    text = group.read_text()
    assert "; )" not in text  # no heading ends with an empty description
    assert "<script src" not in text.replace("'", '"').replace("<script  ", "<script ")


def test_subject_reports_navigation(browser, demo_output):
    for report in sorted(demo_output.glob("sub-*.html"))[:2]:
        facts = _structure(browser, report)
        assert not _check_navigation(facts), (report.name, _check_navigation(facts))
        assert {"runs", "first-level", "methods"} <= set(facts["sections"])


def test_viewer_loads_offline(browser, demo_output):
    """The nilearn viewer draws its canvas from inlined scripts and images, for every map."""
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get_log("browser")
    browser.get((demo_output / "group.html").resolve().as_uri())
    select = Select(browser.find_element("id", "viewer-select"))
    assert len(select.options) >= 1
    for index in range(len(select.options)):
        select.select_by_index(index)
        frame = browser.find_element("id", "viewer-frame")
        browser.switch_to.frame(frame)
        try:
            WebDriverWait(browser, 20).until(lambda d: d.execute_script(
                "const c = document.querySelector('canvas');"
                "return document.readyState === 'complete' && c !== null && c.width > 0 && "
                "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0);"))
            sources = browser.execute_script(
                "return Array.from(document.querySelectorAll('script[src], img[src]'))"
                ".map(e => e.getAttribute('src')).filter(s => !s.startsWith('data:'));")
            assert sources == [], f"viewer fetches {sources}"
        finally:
            browser.switch_to.default_content()
    errors = [m["message"] for m in browser.get_log("browser") if m["level"] == "SEVERE"]
    assert not errors, errors
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [r for r in resources if urlparse(r).scheme in ("http", "https")], resources
