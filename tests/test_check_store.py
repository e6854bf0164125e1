"""The check store: stored results equal a from-scratch computation, only new outputs are checked,
and every change that matters (settings, check code, an updated output or case) invalidates."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

import lib.review.checked
import lib.review.compute
from bench.synth import add_outputs, build
from lib.review.checked import CheckCounts, checked_frame, checked_with_counts, ensure_checked, with_texts
from lib.review.comparisons import load_pairs
from lib.review.compute import checked_pairs
from lib.review.report import report_from_checked
from lib.review.settings import ReviewSettings, save_settings, stored_settings
from lib.review.tokens import run_prompts
from lib.store.check_store import MAX_SEGMENTS, stored_keys

ROOT = Path(__file__).resolve().parent.parent
CHECK_COLUMNS = [f"{s}_{c}" for s in "bc" for c in ("refused", "correct", "json_strict", "json_lenient", "truncated",
                                                    "len_tokens", "input_tokens", "input_over_limit", "errored",
                                                    "len_chars", "len_words", "json_found",
                                                    "latency_s", "cost_usd", "completion_tokens")]
PAIR_COLUMNS = ["case_key", "repeat", "category", "has_schema", "similarity", "contract"]


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Check columns with one dtype each, so stored and from-scratch frames compare value by value."""
    out = frame[PAIR_COLUMNS + CHECK_COLUMNS].reset_index(drop=True).copy()
    for col in out.columns:
        if col not in ("case_key", "category", "contract"):
            out[col] = out[col].astype("Float64")
    out["case_key"] = out["case_key"].astype(str)
    return out


def _assert_same_as_scratch(engine, name: str, settings: ReviewSettings | None = None) -> None:
    settings = settings or stored_settings(engine, name)
    stored = checked_frame(engine, name, settings)
    scratch = checked_pairs(load_pairs(engine, name), settings, run_prompts(engine, name))
    pd.testing.assert_frame_equal(_canonical(stored), _canonical(scratch))
    assert (json.dumps(report_from_checked(stored, name), sort_keys=True)
            == json.dumps(report_from_checked(scratch, name), sort_keys=True))


def _n_outputs(engine, run_id: int | None = None) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM output WHERE :r IS NULL OR run_id = :r"),
                            {"r": run_id}).scalar_one()


@pytest.mark.parametrize("seed,repeats", [(1, 1), (2, 2), (3, 3)])
def test_stored_checks_equal_scratch_on_messy_synthetic_data(engine, seed: int, repeats: int) -> None:
    build(engine, "syn", 160, seed, messy=True, repeats=repeats)
    first = ensure_checked(engine, "syn")
    assert first == CheckCounts(_n_outputs(engine), first.pairs_computed) and first.pairs_computed > 0
    assert ensure_checked(engine, "syn") == CheckCounts(0, 0)  # everything is stored now
    _assert_same_as_scratch(engine, "syn")


def test_stored_checks_equal_scratch_on_the_demo(engine) -> None:
    from lib.data.demo import load_demo

    name = load_demo(engine).comparison
    ensure_checked(engine, name)
    _assert_same_as_scratch(engine, name)


def test_only_new_outputs_are_checked(engine) -> None:
    build(engine, "grow", 120, messy=True, with_outputs=False)
    n_first = add_outputs(engine, "grow", range(0, 50), seed=1, messy=True)
    assert ensure_checked(engine, "grow").outputs_checked == n_first
    n_cand = add_outputs(engine, "grow", range(50, 80), seed=2, messy=True, sides=(1,))  # half pairs
    assert ensure_checked(engine, "grow").outputs_checked == n_cand
    n_base = add_outputs(engine, "grow", range(50, 120), seed=3, messy=True, sides=(0,))
    counts = ensure_checked(engine, "grow")
    assert counts.outputs_checked == n_base and counts.pairs_computed > 0
    _assert_same_as_scratch(engine, "grow")


def test_reviewer_settings_change_invalidates(engine) -> None:
    build(engine, "set", 70, messy=True)
    ensure_checked(engine, "set")
    before = checked_frame(engine, "set")
    save_settings(engine, "set", ReviewSettings(match="contains", refusal_patterns=(r"\bthe\b",)))
    counts = ensure_checked(engine, "set")
    assert counts.outputs_checked == _n_outputs(engine) and counts.pairs_computed == 0  # pairs don't depend on it
    after = checked_frame(engine, "set")
    assert after["c_refused"].sum() > before["c_refused"].sum()
    _assert_same_as_scratch(engine, "set")
    # Only the live settings' results are kept for a run: the old key's segments are gone.
    assert len({key for run, other, key, _ in stored_keys(engine) if other is None}) == 1


def test_check_version_change_invalidates(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    build(engine, "ver", 40)
    ensure_checked(engine, "ver")
    monkeypatch.setattr(lib.review.compute, "CHECKS_VERSION", lib.review.compute.CHECKS_VERSION + 1)
    counts = ensure_checked(engine, "ver")
    assert counts.outputs_checked == _n_outputs(engine) and counts.pairs_computed == 40
    assert ensure_checked(engine, "ver") == CheckCounts(0, 0)


def test_updated_or_replaced_outputs_and_cases_are_rechecked(engine) -> None:
    build(engine, "upd", 60, messy=True)
    ensure_checked(engine, "upd")
    with engine.begin() as conn:  # a resume replaces an error output: delete, then insert
        row = conn.execute(text("SELECT id, run_id, case_id, repeat FROM output ORDER BY id DESC LIMIT 1")).one()
        conn.execute(text("DELETE FROM output WHERE id = :i"), {"i": row.id})
        conn.execute(text("INSERT INTO output (id, run_id, case_id, repeat, text, attempts, created_at) "
                          "VALUES (:i, :r, :c, :p, :t, 1, '2026-01-01')"),
                     {"i": row.id, "r": row.run_id, "c": row.case_id, "p": row.repeat,
                      "t": "I'm sorry, but I can't help with that."})  # same id reused
    assert ensure_checked(engine, "upd").outputs_checked == 60 - _missing(engine, row.run_id)
    _assert_same_as_scratch(engine, "upd")
    with engine.begin() as conn:
        conn.execute(text("UPDATE output SET text = 'The answer is 0.' WHERE id = :i"), {"i": row.id})
        conn.execute(text("""UPDATE "case" SET expected = '0', match = 'numeric' WHERE position = 3"""))
    assert ensure_checked(engine, "upd").outputs_checked == _n_outputs(engine)  # case change: both runs
    _assert_same_as_scratch(engine, "upd")


def _missing(engine, run_id: int) -> int:
    with engine.connect() as conn:
        return 60 - conn.execute(text("SELECT count(*) FROM output WHERE run_id = :r"), {"r": run_id}).scalar_one()


def test_reader_while_a_writer_adds_outputs(engine) -> None:
    build(engine, "live", 400, with_outputs=False)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for start in range(0, 400, 20):
                add_outputs(engine, "live", range(start, start + 20), seed=start)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test thread)
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    checked_total = 0
    while thread.is_alive():
        frame, counts = checked_with_counts(engine, "live")
        checked_total += counts.outputs_checked
        assert not frame.duplicated(["case_key", "repeat"]).any()
        assert frame["position"].is_monotonic_increasing
    thread.join()
    assert not errors
    checked_total += ensure_checked(engine, "live").outputs_checked
    assert checked_total == _n_outputs(engine) == 800  # every output checked exactly once
    _assert_same_as_scratch(engine, "live")


def test_overrides_are_computed_and_stored_settings_stay_live(engine) -> None:
    build(engine, "ovr", 50)
    ensure_checked(engine, "ovr")
    override = stored_settings(engine, "ovr").merged(ReviewSettings(refusal_patterns=("answers",)))
    _, counts = checked_with_counts(engine, "ovr", override)
    assert counts.outputs_checked == 100
    assert ensure_checked(engine, "ovr") == CheckCounts(0, 0)  # the stored settings' results were kept


def test_bad_case_data_makes_ensure_return_none_and_the_report_raise(engine) -> None:
    from lib.errors import ReviewInputError

    build(engine, "bad", 20)
    with engine.begin() as conn:
        conn.execute(text("""UPDATE "case" SET match = 'regex', pattern = '(' WHERE position = 0"""))
    assert ensure_checked(engine, "bad") is None
    with pytest.raises(ReviewInputError):
        checked_frame(engine, "bad")


def test_with_texts_adds_the_texts_of_the_rows(engine) -> None:
    build(engine, "txt", 30, messy=True)
    frame = checked_frame(engine, "txt")
    pairs = load_pairs(engine, "txt").set_index(["case_key", "repeat"])
    page = with_texts(engine, frame.iloc[5:15])
    for _, row in page.iterrows():
        ref = pairs.loc[(row["case_key"], row["repeat"])]
        for col in ("input_text", "b_text", "c_text", "b_error", "c_error", "expected", "json_schema"):
            assert (pd.isna(row[col]) and pd.isna(ref[col])) or row[col] == ref[col], col


def test_diffs_page_searches_and_shows_texts_from_the_store(engine) -> None:
    build(engine, "pg", 300)
    ensure_checked(engine, "pg")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/diffs.py").run()
    assert not at.exception, at.exception
    assert "300 matching pairs" in at.caption[0].value
    at.text_input(key="diffs_search").set_value("Question 123 about").run()
    assert not at.exception, at.exception
    assert "1 matching pairs" in at.caption[0].value
    assert any("c123" in sub.value for sub in at.subheader)


def test_an_output_below_the_stored_ids_makes_the_run_checked_again(engine) -> None:
    # Ids normally only grow; an explicit lower id (an import, say) is not an append: start over.
    build(engine, "gap", 40, with_outputs=False)
    add_outputs(engine, "gap", range(0, 20), sides=(0,))
    add_outputs(engine, "gap", range(0, 20), sides=(1,))
    ensure_checked(engine, "gap")
    with engine.begin() as conn:
        run_id, case_id = conn.execute(text('SELECT o.run_id, c.id FROM output o, "case" c '
                                            "WHERE c.position = 25 ORDER BY o.id LIMIT 1")).one()
        conn.execute(text("INSERT INTO output (id, run_id, case_id, repeat, text, attempts, created_at) "
                          "VALUES (0, :r, :c, 0, 'late answer', 1, '2026-01-01')"), {"r": run_id, "c": case_id})
    assert ensure_checked(engine, "gap").outputs_checked == 21
    assert ensure_checked(engine, "gap") == CheckCounts(0, 0)
    _assert_same_as_scratch(engine, "gap")


def test_small_chunks_and_text_budget_give_the_same_results(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Large runs are checked CHUNK outputs at a time, each chunk a segment, compacted past MAX_SEGMENTS,
    # and texts beyond TEXT_BUDGET are read again for the pairs: the same results at small sizes.
    monkeypatch.setattr(lib.review.checked, "CHUNK", 37)
    monkeypatch.setattr(lib.review.checked, "TEXT_BUDGET", 60)
    build(engine, "chunks", 300, 5, messy=True, repeats=2)
    first = ensure_checked(engine, "chunks")
    assert first.outputs_checked == _n_outputs(engine)
    per_output = [(run, n) for run, other, _, n in stored_keys(engine) if other is None]
    for run in {run for run, _ in per_output}:  # every output stored once, in few segments
        assert 1 < sum(1 for r, _ in per_output if r == run) <= MAX_SEGMENTS
        assert sum(n for r, n in per_output if r == run) == _n_outputs(engine, run)
    assert ensure_checked(engine, "chunks") == CheckCounts(0, 0)
    _assert_same_as_scratch(engine, "chunks")
