"""Browser journey (a), the owner's, from an empty store to a downloaded change record, without a terminal:
demo -> Overview headline -> the top regression in Diffs -> lock a policy -> create a key -> claim ownership
-> sign no-go -> see it on the Overview -> verify -> download the change record.

The store starts empty; the app's launch step (`./review demo`, as `scripts/dev.py app` runs it) loads the
demo. Each step writes a screenshot to test-artifacts/journey/; the Overview's (1440 x 900) is also
docs/img/overview.png, the README's screenshot.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, LAUNCH_ARGS, T, expect, serve_app, sync_api

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "journey"
README_SHOT = ROOT / "docs" / "img" / "overview.png"
OWNER, PASSPHRASE = "alice", "correct horse battery"
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("journey")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'review.db'}", "REVIEW_KEY_DIR": str(tmp / "keys"),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("REVIEW_PASSPHRASE", None)  # everything the owner types, they type in the browser
    demo = subprocess.run([sys.executable, "-m", "lib", "demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert demo.returncode == 0, demo.stderr
    with serve_app(env, tmp / "streamlit.log") as url:
        yield url


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.set_default_timeout(T)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.js_errors = errors  # type: ignore[attr-defined]
        yield pg
        browser.close()


def idle(pg) -> None:
    expect(pg.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning", timeout=T)
    expect(pg.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=T)
    expect(pg.get_by_test_id("stSpinner")).to_have_count(0, timeout=T)


def heading(pg, title: str) -> None:
    expect(pg.get_by_test_id("stHeading").filter(has_text=title).first).to_be_visible(timeout=T)
    idle(pg)


def fine(pg) -> None:
    expect(pg.get_by_test_id("stException")).to_have_count(0)
    assert not pg.js_errors, pg.js_errors


def shot(pg, n: int, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{n:02d}-{name}.png"
    pg.screenshot(path=str(path))
    return path


def nav(pg, title: str, heading_text: str | None = None) -> None:
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    heading(pg, heading_text or title)


def choose(pg, key: str, option: str) -> None:
    pg.locator(f".st-key-{key}").get_by_role("combobox").click()
    pg.get_by_role("option", name=option, exact=True).click()
    idle(pg)


def success(pg, text: str):
    found = pg.get_by_test_id("stAlertContentSuccess").filter(has_text=text)
    expect(found.first).to_be_visible(timeout=T)
    idle(pg)
    found.first.scroll_into_view_if_needed()  # the step's screenshot shows its outcome
    return found


def test_the_owner_signs_off_in_the_browser(page, server) -> None:
    # 1. the demo's Overview answers first: the headline, the verdict and its plain post-hoc sentence
    page.goto(server)
    heading(page, "Overview")
    expect(page.get_by_text("Accuracy fell 14.3 pp (95% CI 3.4–24.6), 22 regressions", exact=False)).to_be_visible()
    expect(page.get_by_text("No significant change in Refusal rate", exact=False)).to_be_visible()
    expect(page.locator(".st-key-verdict-no-go")).to_contain_text("Verdict: NO-GO")
    expect(page.locator(".st-key-verdict-no-go")).to_contain_text("after the candidate's outputs were stored")
    expect(page.locator('[class*="st-key-card-worse-accuracy"]')).to_be_visible()
    fine(page)
    expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=T)  # the forest plot drawn, not a skeleton
    idle(page)
    page.evaluate("window.scrollTo(0, 0)")
    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot(page, 1, "overview"), README_SHOT)

    # 2. the top accuracy regression opens in Diffs
    first = page.locator('[class*="st-key-overview_case_accuracy_regressions_"] button').first
    first.scroll_into_view_if_needed()
    first.click()
    heading(page, "Diffs")
    expect(page.locator(".diff-box").first).to_be_visible()
    fine(page)
    shot(page, 2, "diffs-top-regression")

    # 3. lock the owner's own version of the system's policy (named after the system: in force for it)
    nav(page, "Policy", "Policies")
    page.locator(".st-key-policy_name input").fill("default")
    page.locator(".st-key-policy_name input").press("Enter")
    idle(page)
    choose(page, "policy_row_0_metric", "accuracy")
    choose(page, "policy_row_0_key", "max_decrease")
    page.locator(".st-key-policy_row_0_value input").fill("0.03")  # 3 pp: what 98 cases can show
    page.locator(".st-key-policy_row_0_value input").press("Enter")
    idle(page)
    page.locator(".st-key-policy_create button").click()
    success(page, "Locked default v2")
    fine(page)
    shot(page, 3, "policy-locked")

    # 4. create a key: the passphrase twice, never shown back
    nav(page, "Decision")
    page.locator(".st-key-decision_key_name input").fill(OWNER)
    page.locator(".st-key-decision_key_pass input").fill(PASSPHRASE)
    page.locator(".st-key-decision_key_pass2 input").fill(PASSPHRASE)
    page.locator(".st-key-decision_key_create button").click()
    success(page, f"Created key {OWNER}")
    assert PASSPHRASE not in page.content()
    fine(page)
    shot(page, 4, "key-created")

    # 5. claim the demo's system, which has no owner
    page.locator(".st-key-decision_claim button").click()
    success(page, f"{OWNER} now owns system default")
    fine(page)
    shot(page, 5, "claimed")

    # 6. sign no-go under the policy in force (the version just locked); the form clears and shows the decision
    expect(page.get_by_text("Policy default v2 · sha256", exact=False)).to_be_visible()
    expect(page.get_by_test_id("stHeading").filter(has_text="Verdict: NO-GO")).to_be_visible()
    page.locator(".st-key-decision_choice").get_by_text("no-go", exact=True).click()
    idle(page)
    page.locator(".st-key-decision_rationale textarea").fill("Accuracy fell 14 pp, mostly arithmetic.")
    page.locator(".st-key-decision_passphrase input").fill(PASSPHRASE)
    page.locator(".st-key-decision_sign button").click()
    success(page, f"Signed decision 1: no-go by {OWNER}")
    expect(page.locator(".st-key-decision_rationale textarea")).to_have_value("")
    fine(page)
    shot(page, 6, "signed")

    # 7. the Overview shows the signed decision, intact
    nav(page, "Overview")
    expect(page.get_by_text("Decision #1: NO-GO", exact=False)).to_be_visible()
    expect(page.get_by_text("signature and evidence intact", exact=False)).to_be_visible()
    fine(page)
    shot(page, 7, "overview-decided")

    # 8. verify the whole trail
    nav(page, "Decision")
    page.locator(".st-key-decision_verify button").click()
    success(page, "Intact:")
    fine(page)
    shot(page, 8, "verified")

    # 9. download the change record
    with page.expect_download() as info:
        page.locator(".st-key-decision_download_md button").click()
    record = Path(info.value.path()).read_text()
    assert f"**NO-GO** signed by {OWNER}" in record and "default v2" in record and "integrity: intact" in record
    shot(page, 9, "record-downloaded")
