"""Browser tests: the real app in `streamlit run`, driven by Playwright through Debian's chromium.

One server per module on a temporary store holding the recorded demo comparison, a small `hostile`
comparison whose outputs carry script payloads, a locked policy, a signing key and the system's owner.
Full-page screenshots land in test-artifacts/screenshots/ for a person to look at.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (`apt-get install chromium`; "
                ".ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (requirements-dev.txt) is not installed")
expect = sync_api.expect

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "screenshots"
DEMO = "demo-smollm2-q4-to-q2"
HOSTILE = "hostile"
OWNER = "alice"
PASSPHRASE = "correct horse battery"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic"]
PAYLOADS = ['<img src=x onerror="window.__pwned=1">', "<script>window.__pwned=2</script>",
            "[click](javascript:window.__pwned=3)"]
HOSTILE_MODEL = '<img src=x onerror="window.__pwned=4">'  # the candidate's model name: sidebar and Comparisons
# url path -> the page's title (st.navigation derives the path from the file name)
PAGES = {"overview": "Overview", "diffs": "Diffs", "distributions": "Distributions", "drift": "Drift",
         "comparisons": "Comparisons", "safety": "Safety", "judge": "Judge", "canary": "Canary",
         "monitor": "Monitor", "policy": "Policies", "decision": "Decision",
         "datasets": "Golden datasets", "run": "Run a comparison", "load": "Load a recorded comparison",
         "timeline": "Timeline"}
POLICY_TOML = """\
alpha = 0.05
[criteria.accuracy]
max_decrease = 0.05
[criteria.refusal_rate]
max_increase = 0.05
"""
T = 60_000  # ms: Streamlit on a loaded 2-core box can be slow to rerun
expect.set_options(timeout=T)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _hostile_csv() -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "question", "baseline_output", "candidate_output", "category"])
    for i, payload in enumerate(PAYLOADS, 1):
        w.writerow([f"h{i}", f"Hostile case {i}", f"plain answer {i}", payload, "xss"])
    return buf.getvalue().encode()


def _cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, f"./review {' '.join(args)}: {done.stdout}\n{done.stderr}"


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"streamlit not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")


@contextmanager
def serve_app(env: dict[str, str], log: Path) -> Iterator[str]:
    """`streamlit run` on a free port of 127.0.0.1 with this environment; yields its URL once healthy."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("browser")
    (tmp / "policy.toml").write_text(POLICY_TOML)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'review.db'}", "REVIEW_KEY_DIR": str(tmp / "keys"),
           "REVIEW_PASSPHRASE": PASSPHRASE, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # The hostile comparison first: the sidebar lists newest first, so the demo stays the default.
    load = ("import sys; from lib.store.engine import get_engine, database_url; "
            "from lib.data.loaders import LoadMapping, load_recorded; "
            "load_recorded(get_engine(database_url()), sys.stdin.buffer.read(), 'hostile.csv', sys.argv[1], "
            "'wide', LoadMapping(baseline='plain-model', candidate=sys.argv[2]))")
    done = subprocess.run([sys.executable, "-c", load, HOSTILE, HOSTILE_MODEL], cwd=ROOT, env=env,
                          input=_hostile_csv(), capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()
    _cli(env, "demo")
    _cli(env, "policy", "create", "--name", "gate", "--file", str(tmp / "policy.toml"))
    _cli(env, "keys", "create", OWNER)
    _cli(env, "system", "set-owner", "default", "--owner", OWNER)

    with serve_app(env, tmp / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(T)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    pg.js_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


# --- helpers -----------------------------------------------------------------------------------------

def idle(pg) -> None:
    """The script finished its run and nothing is pending (no sleeping)."""
    expect(pg.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=T)
    expect(pg.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=T)
    expect(pg.get_by_test_id("stSpinner")).to_have_count(0, timeout=T)


def open_page(pg, server: str, path: str = "", title: str | None = None) -> None:
    pg.goto(f"{server}/{path}")
    if title:
        expect(pg.get_by_test_id("stHeading").filter(has_text=title).first).to_be_visible(timeout=T)
    idle(pg)


def no_exception(pg) -> None:
    expect(pg.get_by_test_id("stException")).to_have_count(0)
    assert not pg.js_errors, pg.js_errors


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose(pg, key: str, option: str) -> None:
    """Pick `option` in the selectbox with widget key `key`."""
    pg.locator(f".st-key-{key}").get_by_role("combobox").click()
    pg.get_by_role("option", name=option, exact=True).click()
    idle(pg)


def active(pg):
    """The sidebar's active-comparison selectbox (its input holds the chosen name)."""
    return pg.get_by_test_id("stSidebar").get_by_role("combobox", name="Active comparison")


def nav(pg, title: str) -> None:
    """Open a page through the sidebar's links (keeps the session, unlike a new URL)."""
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(pg.get_by_test_id("stHeading").filter(has_text=title).first).to_be_visible(timeout=T)
    idle(pg)


def not_pwned(pg) -> None:
    for frame in pg.frames:
        assert frame.evaluate("() => window.__pwned") is None, f"payload ran in {frame.url}"
    expect(pg.locator("img[src=x]")).to_have_count(0)
    for frame in pg.frames[1:]:
        assert frame.locator("img[src=x]").count() == 0


# --- tests -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_deep_link_opened_first_runs_through_the_router(page, server) -> None:
    # First in this module on purpose: on a fresh server Streamlit would run `pages/diffs.py` alone
    # (legacy multipage mode) — no sidebar selector, a raw file list. pages/_shared.py switches it off.
    open_page(page, server, "diffs", "Diffs")
    expect(active(page)).to_have_value(DEMO)
    expect(page.get_by_test_id("stSidebarNav").get_by_role("link", name="Overview", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav").get_by_role("link", name="shared")).to_have_count(0)
    no_exception(page)


@pytest.mark.slow
def test_first_screen_is_the_demo_overview(page, server) -> None:
    open_page(page, server, "", "Overview")
    expect(active(page)).to_have_value(DEMO)
    expect(page.get_by_test_id("stMetric").first).to_be_visible()
    assert page.get_by_test_id("stMetric").count() >= 4
    expect(page.get_by_test_id("stMetric").filter(has_text="Similarity")).to_have_count(1)
    no_exception(page)
    assert f"comparison={DEMO}" in page.url
    shot(page, "overview")


@pytest.mark.slow
def test_every_page_opens_without_error(page, server) -> None:
    open_page(page, server, "", "Overview")
    links = page.get_by_test_id("stSidebarNav").get_by_role("link")
    paths = [urlparse(links.nth(i).get_attribute("href")).path.strip("/") for i in range(links.count())]
    # the default page (Overview) links to the bare root; every other path is its file name
    assert sorted(paths) == sorted(["" if p == "overview" else p for p in PAGES]), paths
    for path in paths:
        title = PAGES[path or "overview"]
        open_page(page, server, path, title)
        no_exception(page)
        expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
        shot(page, path or "overview-root")


@pytest.mark.slow
def test_dataset_upload_with_column_mapping(page, server) -> None:
    open_page(page, server, "datasets", "Golden datasets")
    data = "\n".join(json.dumps({"qid": f"q{i}", "prompt": f"What is {i}+{i}?", "answer": str(2 * i)})
                     for i in range(5)).encode()
    page.locator(".st-key-datasets_upload input[type=file]").set_input_files(
        files=[{"name": "arith.jsonl", "mimeType": "application/octet-stream", "buffer": data}])
    expect(page.get_by_text("Preview: 5 rows")).to_be_visible(timeout=T)
    idle(page)
    choose(page, "datasets_map_id", "qid")
    choose(page, "datasets_map_input", "prompt")
    choose(page, "datasets_map_expected", "answer")
    expect(page.locator(".st-key-datasets_name input")).to_have_value("arith")
    page.locator(".st-key-datasets_import button").click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Imported arith v1 (5 cases)", timeout=T)
    idle(page)
    no_exception(page)
    shot(page, "datasets-imported")


@pytest.mark.slow
def test_diff_opens_for_the_demo(page, server) -> None:
    open_page(page, server, "", "Overview")
    nav(page, "Diffs")
    expect(active(page)).to_have_value(DEMO)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    expect(page.get_by_text("matching pairs")).to_be_visible()
    boxes = page.locator(".diff-box")
    expect(page.get_by_text("Baseline", exact=True)).to_be_visible()
    expect(page.get_by_text("Candidate", exact=True)).to_be_visible()
    assert boxes.count() >= 3  # input, (expected,) baseline, candidate
    # the least similar pair first: it has a real word diff
    choose(page, "diffs_filter", "Lowest similarity")
    no_exception(page)
    expect(page.locator(".diff-box del.diff-del").first).to_be_visible()
    expect(page.locator(".diff-box ins.diff-ins").first).to_be_visible()
    shot(page, "diffs-demo")


@pytest.mark.slow
def test_hostile_outputs_are_shown_as_text_and_never_run(page, server) -> None:
    open_page(page, server, "", "Overview")
    choose(page, "sidebar_active_comparison", HOSTILE)
    expect(active(page)).to_have_value(HOSTILE)
    # the hostile model name is text in the sidebar caption
    expect(page.get_by_test_id("stSidebar").get_by_text(HOSTILE_MODEL, exact=False)).to_be_visible()
    no_exception(page)
    nav(page, "Diffs")
    for i, payload in enumerate(PAYLOADS, 1):
        page.locator(".st-key-diffs_search input").fill(f"Hostile case {i}")
        page.locator(".st-key-diffs_search input").press("Enter")
        expect(page.get_by_text("1 matching pairs")).to_be_visible(timeout=T)
        idle(page)
        candidate = page.locator(".diff-box").last
        expect(candidate).to_contain_text(payload)
        no_exception(page)
        not_pwned(page)
        shot(page, f"diffs-hostile-{i}")
    nav(page, "Comparisons")
    expect(page.get_by_test_id("stHeading").filter(has_text=HOSTILE)).to_be_visible()
    expect(page.get_by_test_id("stMarkdown").filter(has_text=f"Model: {HOSTILE_MODEL}").first).to_be_visible()
    no_exception(page)
    not_pwned(page)
    shot(page, "comparisons-hostile")
    nav(page, "Overview")
    no_exception(page)
    not_pwned(page)


@pytest.mark.slow
def test_decision_is_signed_in_the_browser(page, server) -> None:
    # Through the root: a deep link as a fresh server's very first request runs the page without the
    # router (Streamlit's pages/ auto-discovery; reported to the lead).
    open_page(page, server, "", "Overview")
    nav(page, "Decision")
    expect(active(page)).to_have_value(DEMO)
    expect(page.get_by_text(f"owner {OWNER}")).to_be_visible()
    expect(page.get_by_test_id("stHeading").filter(has_text="Verdict:")).to_be_visible(timeout=T)
    expect(page.get_by_text("No decision signed yet.")).to_be_visible()
    no_exception(page)
    expect(page.locator(".st-key-decision_signer input")).to_have_value(OWNER)
    page.locator(".st-key-decision_choice").get_by_text("no-go", exact=True).click()
    page.locator(".st-key-decision_rationale textarea").fill("Q2 loses too much accuracy on the golden set.")
    page.locator(".st-key-decision_passphrase input").fill(PASSPHRASE)
    page.locator(".st-key-decision_sign button").click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text(f"no-go by {OWNER}", timeout=T)
    idle(page)
    no_exception(page)
    expect(page.get_by_text("No decision signed yet.")).to_have_count(0)
    # the history is a canvas grid (its cells aren't DOM text): verdict table + history table
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)
    page.locator(".st-key-decision_verify button").click()
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Intact:")).to_contain_text(
        "1 decisions", timeout=T)
    idle(page)
    no_exception(page)
    shot(page, "decision-signed")


@pytest.mark.slow
def test_a_live_run_from_the_run_page(page, server, llm_server) -> None:
    """A newcomer's run in the browser: dataset, two models on a local OpenAI-compatible server, a name,
    Start; the status says complete (workers from the resident host) and every call was made once."""
    open_page(page, server, "run", "Run a comparison")
    choose(page, "run_dataset", "demo-golden")
    for side, model in (("baseline", "openai/base"), ("candidate", "openai/cand")):
        page.locator(f".st-key-run_{side}_model input").fill(model)
        page.locator(f".st-key-run_{side}_model input").press("Enter")
        idle(page)
        page.locator(f".st-key-run_{side}_api_base input").fill(llm_server.url)
        page.locator(f".st-key-run_{side}_api_base input").press("Enter")
        idle(page)
    page.locator(".st-key-run_name input").fill("from-the-browser")
    page.locator(".st-key-run_name input").press("Enter")
    idle(page)
    page.locator(".st-key-run_start button").click()
    outcome = page.get_by_test_id("stAlertContentSuccess").filter(has_text="from-the-browser: complete")
    expect(outcome).to_be_visible(timeout=120_000)
    idle(page)
    no_exception(page)
    assert llm_server.calls() == 2 * 130
    assert "(per-side)" in outcome.inner_text()
    expect(active(page)).to_have_value("from-the-browser")  # the sidebar follows the run
    shot(page, "run-complete")
    page.locator(".st-key-run_go_overview button").click()
    expect(page.get_by_test_id("stHeading").filter(has_text="Overview").first).to_be_visible(timeout=T)
    idle(page)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("openai/base → openai/cand")
    no_exception(page)
