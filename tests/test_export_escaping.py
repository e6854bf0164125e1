"""`export --format md` escapes what it shows: the exported Markdown, rendered by a CommonMark renderer
(markdown-it-py, raw HTML allowed as CommonMark allows it) and opened in headless Chromium, runs no script
and makes no request. The same payloads written raw do both, so the test can fail."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from gov_helpers import make_comparison, pairs, tamper

from lib.governance.decisions import DecisionRequest, add_comment, decide, set_owner
from lib.governance.export import change_record, record_markdown
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.store.columns import utcnow

CHROMIUM = Path("/usr/bin/chromium")
PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "![c](http://127.0.0.1:8733/col.png)",
    "[click](javascript:alert(3))",
    "<svg onload=alert(4)>",
    "<iframe src=\"javascript:alert(5)\"></iframe>",
    "<style>@import url(http://127.0.0.1:8733/x.css)</style>",
    "<link rel=stylesheet href=http://127.0.0.1:8733/y.css>",
    "<video src=http://127.0.0.1:8733/v.mp4 autoplay></video>",
    "<object data=http://127.0.0.1:8733/o></object>",
    "<http://127.0.0.1:8733/autolink>",
    "<details open ontoggle=alert(6)>",
    "![x](<http://127.0.0.1:8733/angle.png>)",
    "[r]: http://127.0.0.1:8733/ref.png\n\n![r][r]",
]
JOINED = " ".join(PAYLOADS)


def _hostile_record(engine, tmp_path: Path) -> str:
    create_policy(engine, "strict", "alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n")
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    name = "cmp " + PAYLOADS[0]
    make_comparison(engine, name, pairs(40), outputs_at=utcnow() + timedelta(minutes=1))
    return name


def _render_in_chromium(markdown: str) -> tuple[int, list[str]]:
    """Dialogs opened and requests made when the CommonMark rendering of `markdown` is loaded."""
    from markdown_it import MarkdownIt
    from playwright.sync_api import sync_playwright

    html = "<!doctype html><html><body>" + MarkdownIt("commonmark").render(markdown) + "</body></html>"
    dialogs, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            context = browser.new_context()
            context.on("request", lambda r: requests.append(r.url))
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.set_content(html, wait_until="load")
            page.wait_for_timeout(800)
        finally:
            browser.close()
    off_app = [u for u in requests if not u.startswith(("data:", "about:"))]
    return len(dialogs), off_app


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium")
def test_exported_markdown_runs_no_script_and_fetches_nothing(engine, db_url: str, tmp_path: Path) -> None:
    name = _hostile_record(engine, tmp_path)
    tamper(db_url, "UPDATE modelconfig SET model = ?", JOINED)
    tamper(db_url, "UPDATE run SET served_model = ?, system_fingerprint = ?", JOINED, JOINED)
    tamper(db_url, "UPDATE dataset SET name = ?", JOINED)
    decide(engine, DecisionRequest(name, "go", "alice", "\n".join(PAYLOADS), "\n".join(PAYLOADS), "strict"),
           "correct horse", tmp_path / "keys")
    add_comment(engine, name, JOINED, "\n".join(PAYLOADS))
    markdown = record_markdown(change_record(engine, name))
    dialogs, requests = _render_in_chromium(markdown)
    assert (dialogs, requests) == (0, [])
    # Control: the same payloads unescaped do open dialogs and fetch (the check can fail).
    raw_dialogs, raw_requests = _render_in_chromium("\n\n".join(PAYLOADS))
    assert raw_dialogs >= 3 and len(raw_requests) >= 3


def test_exported_markdown_shows_the_payloads_as_text(engine, db_url: str, tmp_path: Path) -> None:
    from markdown_it import MarkdownIt

    name = _hostile_record(engine, tmp_path)
    decide(engine, DecisionRequest(name, "go", "alice", "\n".join(PAYLOADS), None, "strict"), "correct horse",
           tmp_path / "keys")
    html = MarkdownIt("commonmark").render(record_markdown(change_record(engine, name)))
    for tag in ("<script", "<img", "<svg", "<iframe", "<style", "<link", "<video", "<object", "<a href",
                "<details"):
        assert tag not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
