"""Journey (b), the demo, in headless Chromium at 1440 x 900: from an empty store the launcher loads the
demo (as `scripts/dev.py app` does), then Overview -> the top regression in Diffs -> Drift, each with no
exception, no None/nan text and, in Diffs, every column on screen. Then every page's text is scanned for
None/nan, and no request of the whole walk goes to a host other than the app's.

Screenshots of each step: test-artifacts/journey-demo/.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.test_browser import (  # skips this module too when chromium or playwright is missing
    CHROMIUM,
    LAUNCH_ARGS,
    PAGES,
    T,
    expect,
    idle,
    nav,
    no_exception,
    serve_app,
    sync_api,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "journey-demo"
WIDTH, HEIGHT = 1440, 900
# what a person must never read: Python's and pandas' words for "nothing"
MISSING = re.compile(r"(?<![\w<])(None|nan|NaN|<NA>)(?![\w>])")
PAGE_TEXT_JS = """() => {
  const parts = [document.body.innerText];
  // table cells (the grid draws on a canvas; its accessible table holds the text) and chart labels
  document.querySelectorAll('[data-testid=stDataFrame] table, .js-plotly-plot svg text')
    .forEach(e => parts.push(e.textContent));
  return parts.join('\\n');
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("journey-demo")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'review.db'}", "REVIEW_KEY_DIR": str(tmp / "keys"),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-m", "lib", "demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    with serve_app(env, tmp / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def walk(app: str):
    """One browser context for the whole journey, recording the host of every request it makes."""
    hosts: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        context.set_default_timeout(T)
        context.on("request", lambda r: hosts.append(_host(r.url)))
        pg = context.new_page()
        pg.on("websocket", lambda ws: hosts.append(_host(ws.url)))
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.js_errors = errors  # type: ignore[attr-defined]
        pg.hosts = hosts  # type: ignore[attr-defined]
        yield pg
        browser.close()


def _host(url: str) -> str:
    parsed = urlparse(url)
    return "" if parsed.scheme in ("data", "blob", "about") else parsed.netloc


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def nothing_reads_none(pg, where: str) -> None:
    texts = [pg.evaluate(PAGE_TEXT_JS)] + [f.evaluate("() => document.body ? document.body.innerText : ''")
                                         for f in pg.frames[1:]]
    found = sorted({m.group(0) for t in texts for m in MISSING.finditer(t)})
    assert not found, f"{where}: a person reads {found}"


def healthy(pg, where: str) -> None:
    no_exception(pg)
    expect(pg.get_by_test_id("stAlertContentError")).to_have_count(0)
    nothing_reads_none(pg, where)


def on_screen(pg, selector: str) -> None:
    """Every element matching `selector` lies inside the viewport's width."""
    boxes = pg.evaluate("s => [...document.querySelectorAll(s)].map(e => {"
                        " const r = e.getBoundingClientRect(); return [r.left, r.right]; })", selector)
    assert boxes, f"no {selector} on the page"
    assert all(0 <= left and right <= WIDTH for left, right in boxes), (selector, boxes)


def no_sideways_scroll(pg) -> None:
    """No table needs horizontal scrolling: every column is visible as laid out."""
    widths = pg.evaluate("() => [...document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')]"
                         ".map(e => [e.scrollWidth, e.clientWidth])")
    assert widths and all(scroll <= client + 1 for scroll, client in widths), widths


def test_1_overview_of_the_demo(walk, app) -> None:
    walk.goto(app)
    expect(walk.get_by_test_id("stHeading").filter(has_text="Overview").first).to_be_visible(timeout=T)
    idle(walk)
    expect(walk.get_by_test_id("stSidebar").get_by_role("combobox", name="Active comparison")).to_have_value(
        re.compile("^demo-"))
    healthy(walk, "Overview")
    shot(walk, "1-overview")


def test_2_the_top_regression_in_diffs(walk) -> None:
    top = walk.locator(".st-key-overview_case_accuracy_regressions_0 button").first
    label = top.get_by_test_id("stMarkdownContainer").inner_text()  # "arith-11 · arithmetic · right → wrong"
    case = label.split(" · ")[0].strip()
    top.click()
    expect(walk.get_by_test_id("stHeading").filter(has_text="Diffs").first).to_be_visible(timeout=T)
    idle(walk)
    expect(walk.get_by_test_id("stHeading").filter(has_text=f"Case {case}")).to_be_visible()
    # its status chip and similarity, above the texts
    expect(walk.get_by_test_id("stMarkdownContainer").filter(has_text="similarity").filter(
        has_text=re.compile(r"\bregressed\b")).first).to_be_visible()
    healthy(walk, "Diffs")
    no_sideways_scroll(walk)
    on_screen(walk, "[data-testid=stDataFrame]")
    on_screen(walk, ".diff-box")  # input, expected, baseline and candidate side by side
    assert walk.locator(".diff-box del.diff-del, .diff-box ins.diff-ins").count() > 0  # the word diff
    shot(walk, "2-diffs-top-regression")
    walk.locator(".diff-box").last.scroll_into_view_if_needed()
    shot(walk, "2-diffs-top-regression-outputs")


def test_3_drift_runs_and_renders(walk) -> None:
    nav(walk, "Drift")
    expect(walk.get_by_text("No drift result for this comparison yet")).to_be_visible()
    walk.get_by_role("button", name="Run drift analysis").click()
    expect(walk.get_by_test_id("stMetric").filter(has_text="Drifted share")).to_be_visible(timeout=180_000)
    idle(walk)
    healthy(walk, "Drift")
    no_sideways_scroll(walk)
    shot(walk, "3-drift")


def test_4_no_page_reads_none_or_nan(walk) -> None:
    links = walk.get_by_test_id("stSidebarNav").get_by_role("link")
    paths = [urlparse(links.nth(i).get_attribute("href")).path.strip("/") or "overview" for i in range(links.count())]
    assert sorted(paths) == sorted(PAGES), paths
    for i, path in enumerate(paths):
        links.nth(i).click()  # through the sidebar: one session, as a person walks it
        expect(walk.get_by_test_id("stHeading").filter(has_text=PAGES[path]).first).to_be_visible(timeout=T)
        idle(walk)
        healthy(walk, path)
        shot(walk, f"4-page-{path}")


def test_5_nothing_leaves_the_machine(walk, app) -> None:
    own = urlparse(app).netloc
    assert walk.hosts, "no request was recorded"
    assert {h for h in walk.hosts if h} == {own}, sorted(set(walk.hosts))


def test_an_app_started_on_an_empty_store_reaches_the_demo_in_one_click(walk, tmp_path: Path) -> None:
    """`streamlit run` on an empty store (without scripts/dev.py, which loads the demo first): the Overview's
    empty state loads the demo, and the sidebar and the answer follow. (A page of the module's browser: one
    Playwright per process.)"""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'review.db'}", "REVIEW_KEY_DIR": str(tmp_path),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with serve_app(env, tmp_path / "streamlit.log") as url:
        pg = walk.context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.js_errors = errors  # type: ignore[attr-defined]
        pg.goto(url)
        expect(pg.get_by_text("No comparison yet", exact=False).first).to_be_visible(timeout=T)
        pg.locator(".st-key-overview_load_demo button").click()
        expect(pg.get_by_text("Accuracy fell", exact=False).first).to_be_visible(timeout=3 * T)
        idle(pg)
        expect(pg.get_by_test_id("stSidebar").get_by_role("combobox")).to_have_value("demo-smollm2-q4-to-q2")
        healthy(pg, "the demo's Overview after one click")
        shot(pg, "0-empty-store-demo-loaded")
        pg.close()
