"""The Diffs page's refusal labels: a reviewer marks the selected output, every count follows."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.data.loaders import LoadMapping, load_recorded
from lib.review.report import build_report

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
CSV = (b"id,question,old,new,category\n"
       b"1,Capital of France?,Paris,I'm sorry but I can't help with that.,facts\n"
       b"2,Say hi,hello,hi there,chat\n")


def _diffs(engine) -> AppTest:
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          category_col="category")
    load_recorded(engine, CSV, "answers.csv", "labels-demo", "wide", mapping)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/diffs.py").run()
    assert not at.exception, at.exception
    return at


def test_a_label_needs_a_name_then_overrides_the_rule(engine) -> None:
    at = _diffs(engine)
    assert any("No output of this comparison is labelled yet" in c.value for c in at.caption)
    first = build_report(engine, "labels-demo")["metrics"]["refusal_rate"]["candidate"]
    assert first == 0.5  # the rule flags the candidate's apology
    candidate_id = next(b.key for b in at.button if b.key and b.key.startswith("label_c_") and
                        b.key.endswith("_Not a refusal"))
    at.button(key=candidate_id).click().run()
    assert any("Enter your name" in e.value for e in at.error)
    assert build_report(engine, "labels-demo")["labelled_outputs"] == 0
    at.text_input(key="labels_reviewer").set_value("ana").run()
    at.button(key=candidate_id).click().run()
    assert not at.exception, at.exception
    report = build_report(engine, "labels-demo")
    assert report["labelled_outputs"] == 1 and report["metrics"]["refusal_rate"]["candidate"] == 0.0
    assert [m.label for m in at.metric] == ["Rule precision vs labels", "Rule recall vs labels", "Labelled outputs"]
    assert at.metric[2].value == "1"
