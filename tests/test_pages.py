"""AppTest: every page renders, on an empty store and with data; the data-path forms work."""
from __future__ import annotations

import pytest

from tests.page_helpers import SIDEBAR_KEY, load_two_pairs, load_wide, router

PAGES = ["pages/overview.py", "pages/diffs.py", "pages/distributions.py", "pages/drift.py", "pages/comparisons.py",
         "pages/safety.py", "pages/judge.py", "pages/canary.py", "pages/monitor.py",
         "pages/policy.py", "pages/decision.py",
         "pages/datasets.py", "pages/run.py", "pages/load.py", "pages/timeline.py"]









def test_a_store_that_cannot_be_opened_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://review:secret@db/review")
    at = router().run()
    assert not at.exception, at.exception
    [error] = at.error
    assert "The store cannot be opened" in error.value and "sqlite" in error.value and "secret" not in error.value


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_store(db_url: str, page: str) -> None:
    at = router().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_comparison(engine, page: str) -> None:
    load_wide(engine)
    at = router().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception


def test_sidebar_shows_the_active_comparison(engine) -> None:
    # (AppTest runs only the page script after switch_page, so the router is checked on the first page.)
    load_wide(engine)
    at = router().run()
    assert at.sidebar.selectbox(key=SIDEBAR_KEY).value == "wide-demo"
    assert "old" in at.sidebar.caption[0].value and "new" in at.sidebar.caption[0].value


def test_code_spans_and_url_safe_text_helpers() -> None:
    from pages._shared import code, md_lines, md_text

    assert code("http://127.0.0.1:8765/v1") == "`http://127.0.0.1:8765/v1`"  # verbatim: no backslash
    assert code("a`b") == "``a`b``" and code("``x") == "``` ``x ```"  # a fence longer than any run inside
    assert code("two\nlines") == "`two lines`"
    # GFM links a raw http:// from the source text: with md() alone its backslashes show in the link
    assert md_text("see http://127.0.0.1:8765/v1") == "see http\\://127\\.0\\.0\\.1\\:8765/v1"
    assert md_lines("one\n  two\n\n=== *x*") == "one  \ntwo  \n  \n\\=\\=\\= \\*x\\*"


def test_the_store_version_changes_on_a_write_and_only_then(engine, db_url: str) -> None:
    from pages._shared import store_version

    load_two_pairs(engine, "first")
    before = store_version(db_url)
    assert before == store_version(db_url)  # reads leave it alone
    load_two_pairs(engine, "second")
    assert store_version(db_url) != before


def test_an_edit_that_restores_the_modification_time_still_changes_the_store_version(engine, db_url: str) -> None:
    import os

    from sqlalchemy.engine import make_url

    from pages._shared import store_version

    load_two_pairs(engine, "first")
    path = make_url(db_url).database
    before, stat = store_version(db_url), os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what a forger does after an edit
    assert os.stat(path).st_mtime_ns == stat.st_mtime_ns and store_version(db_url) != before  # the change time


def test_a_decision_is_verified_once_per_store_version(engine, db_url: str, tmp_path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The Overview and Decision pages read the latest decision's integrity on every render: verified (seconds at
    10k pairs) once until the store changes, and a change behind the app's back is seen on the next read."""
    from lib.governance.decisions import DecisionRequest, decide, set_owner
    from lib.governance.policy import create_policy
    from lib.governance.signing import create_key
    from lib.review import headline
    from pages import _shared
    from tests.gov_helpers import make_comparison, pairs, tamper

    make_comparison(engine, "cmp", pairs(30))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    create_key(engine, "alice", "correct horse", tmp_path)
    set_owner(engine, "default", "alice")
    decide(engine, DecisionRequest("cmp", "no-go", "alice", "too risky", policy="strict"), "correct horse", tmp_path)
    verified: list[int] = []
    real = headline.decision_problems
    monkeypatch.setattr(headline, "decision_problems", lambda e, i: verified.append(i) or real(e, i))
    _shared.after_governance_write()
    assert _shared.decision_status(db_url, "cmp")["intact"] and _shared.decision_status(db_url, "cmp")["intact"]
    assert _shared.decision_problems(db_url, 1) == [] and verified == [1]  # the page's history reuses it
    tamper(db_url, "UPDATE decision SET decision = 'go'")
    status = _shared.decision_status(db_url, "cmp")
    assert not status["intact"] and any("signature does not verify" in p for p in status["problems"])
    assert verified == [1, 1]
