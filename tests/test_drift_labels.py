"""Drift results in words (lib.drift.labels): methods named, scores in their own kind's column, no None."""
from __future__ import annotations

from lib.drift.labels import AUC, DISTANCE, HEADERS, P_VALUE, column_label, method, summary_rows
from lib.review.fmt import DASH

SUMMARY = {"drifted_share": 0.5, "columns": {
    "length": {"drifted": False, "score": 0.7427, "method": "K-S p_value"},
    "text": {"drifted": True, "score": 0.81, "method": "Text domain classifier ROC AUC"},
    "regex_apology": {"drifted": False, "score": 0.02, "method": "Jensen-Shannon distance"},
    "embedding": {"drifted": True, "score": 0.9, "method": "Embeddings domain classifier (ROC AUC)"}}}
DETAILS = {"thresholds": {"length": 0.05, "text": 0.55, "regex_apology": 0.1, "embedding": None},
           "skipped": {"refusal": "the same value (0) everywhere on both sides"}}


def test_rows_put_each_score_in_its_kinds_column_drifted_first() -> None:
    rows = {r["measure"]: r for r in summary_rows(SUMMARY, DETAILS)}
    assert [r["drifted"] for r in summary_rows(SUMMARY, DETAILS)] == ["yes", "yes", "no", "no", "not tested"]
    length = rows["Length (characters)"]
    assert (length[P_VALUE], length[AUC], length[DISTANCE]) == ("0.743", DASH, DASH)
    assert length["test"] == "Kolmogorov-Smirnov test" and "p < 0.05" in length["what the score means"]
    text = rows["Wording (the raw text)"]
    assert (text[P_VALUE], text[AUC]) == (DASH, "0.810") and "AUC > 0.55" in text["what the score means"]
    assert rows["Reviewer pattern apology (share found)"][DISTANCE] == "0.020"
    assert "chance (bootstrap)" in rows["Meaning (embeddings)"]["what the score means"]
    assert rows["Refusals (share)"]["what the score means"].startswith("the same value")


def test_every_cell_is_text_without_none_or_nan() -> None:
    cells = [str(v) for r in summary_rows(SUMMARY, DETAILS) for v in r.values()]
    assert all(set(r) == set(HEADERS) for r in summary_rows(SUMMARY, DETAILS))
    assert not [c for c in cells if c in ("None", "nan", "NaN", "<NA>") or "None" in c or "nan" in c.split()]


def test_unknown_methods_and_columns_are_shown_as_stored() -> None:
    assert method("Energy distance").name == "Energy distance" and method("Energy distance").kind == DISTANCE
    assert method("Epps-Singleton p_value").kind == P_VALUE
    assert method(None).name == DASH
    assert column_label("something_new") == "something_new"
