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
