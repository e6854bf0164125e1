"""The Overview's "what changed most" lists: the ranking (lib/review/changed_most.py) and the case links into Diffs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from lib.review.browse import FILTERS
from lib.review.changed_most import RANKINGS, changed_most

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
NA = pd.NA


def _frame(index: list[int] | None = None) -> pd.DataFrame:
    """A checked-pairs frame as lib.review.checked builds it (nullable dtypes), in dataset order."""
    rows = [  # key, category, b_len, c_len, similarity, b_refused, c_refused, b_correct, c_correct
        ("a", "x", 10, 10, 1.0, False, False, True, True),  # unchanged: in no list
        ("b", "x", 10, 40, 0.5, False, True, True, False),  # +30, answered -> refused, right -> wrong
        ("c", "y", 50, 20, 0.2, True, False, NA, False),  # -30 (ties b), refused -> answered, no expected
        ("d", "y", NA, 30, NA, NA, False, True, NA),  # baseline missing: in no list
        ("e", "z", 5, 6, 0.2, False, True, True, False),  # +1, similarity ties c, a flip and a regression
        ("f", "z", 100, 100, 0.9, False, False, False, True),  # same length; an improvement, not a regression
    ]
    cols = list(zip(*rows))
    return pd.DataFrame({
        "case_id": np.arange(1, len(rows) + 1), "repeat": 0, "case_key": cols[0], "category": cols[1],
        "b_len_chars": pd.array(cols[2], dtype="Int64"), "c_len_chars": pd.array(cols[3], dtype="Int64"),
        "similarity": pd.array(cols[4], dtype="Float64"),
        "b_refused": pd.array(cols[5], dtype="boolean"), "c_refused": pd.array(cols[6], dtype="boolean"),
        "b_correct": pd.array(cols[7], dtype="boolean"), "c_correct": pd.array(cols[8], dtype="boolean"),
    }, index=index)


def _lists(frame: pd.DataFrame, n: int = 5) -> dict:
    return {r.name: r for r in changed_most(frame, n)}


def test_each_list_ranks_its_measure_ties_in_dataset_order_missing_and_unchanged_excluded() -> None:
    lists = _lists(_frame())
    assert list(lists["length_change"].rows["case_key"]) == ["b", "c", "e"]
    assert list(lists["length_change"].rows["change"]) == [30, -30, 1]
    assert list(lists["lowest_similarity"].rows["case_key"]) == ["c", "e", "b", "f"]
    assert list(lists["refusal_flips"].rows["case_key"]) == ["c", "e", "b"]
    assert list(lists["accuracy_regressions"].rows["case_key"]) == ["e", "b"]
    assert {name: r.total for name, r in lists.items()} == {
        "length_change": 3, "lowest_similarity": 4, "refusal_flips": 3, "accuracy_regressions": 2}


def test_rows_carry_the_keys_and_the_numbers_behind_the_rank_as_plain_values() -> None:
    top = _lists(_frame())["length_change"].rows.iloc[1]
    assert (top["case_id"], top["repeat"], top["case_key"], top["category"]) == (3, 0, "c", "y")
    assert (top["b_len_chars"], top["c_len_chars"], top["change"]) == (50, 20, -30)
    flip = _lists(_frame())["refusal_flips"].rows
    assert flip["c_refused"].dtype == bool and list(flip["c_refused"]) == [False, True, True]
    assert flip["similarity"].dtype == "float64"


def test_top_n_cuts_the_list_but_not_the_total() -> None:
    lists = _lists(_frame(), n=2)
    assert list(lists["lowest_similarity"].rows["case_key"]) == ["c", "e"]
    assert lists["lowest_similarity"].total == 4
    assert all(len(r.rows) <= 2 for r in lists.values())
    first = _lists(_frame(), n=1)  # a tie at the cut: the earlier row stays
    assert list(first["length_change"].rows["case_key"]) == ["b"]
    assert list(first["refusal_flips"].rows["case_key"]) == ["c"]


def test_ties_follow_row_order_not_index_labels() -> None:
    # a filtered or re-indexed frame: the labels run backwards (and repeat); the dataset order is the row order
    lists = _lists(_frame(index=[60, 50, 40, 40, 20, 10]))
    assert list(lists["length_change"].rows["case_key"]) == ["b", "c", "e"]
    assert list(lists["refusal_flips"].rows["case_key"]) == ["c", "e", "b"]


def test_an_empty_frame_gives_empty_lists() -> None:
    lists = _lists(_frame().iloc[:0])
    assert all(r.rows.empty and r.total == 0 for r in lists.values())


def test_every_list_has_a_case_browser_filter_that_holds_all_its_rows() -> None:
    from lib.review.browse import BrowseQuery, select_cases

    frame = _frame()
    assert set(RANKINGS) <= set(FILTERS)
    for ranking in changed_most(frame, n=100):
        listed = set(select_cases(frame, BrowseQuery(filter=ranking.name))["case_key"])
        assert set(ranking.rows["case_key"]) <= listed, ranking.name


def test_ranks_100k_pairs_exactly() -> None:
    """Scale, not speed (timing belongs in bench/, not in a test on a shared machine)."""
    n = 100_000
    rng = np.random.default_rng(0)

    def flags() -> pd.array:
        values = pd.array(rng.random(n) < 0.2, dtype="boolean")
        values[rng.random(n) < 0.05] = NA
        return values

    frame = pd.DataFrame({
        "case_id": np.arange(n), "repeat": 0, "case_key": [f"k{i}" for i in range(n)], "category": "c",
        "b_len_chars": pd.array(rng.integers(0, 2000, n), dtype="Int64"),
        "c_len_chars": pd.array(rng.integers(0, 2000, n), dtype="Int64"),
        "similarity": pd.array(rng.random(n), dtype="Float64"),
        "b_refused": flags(), "c_refused": flags(), "b_correct": flags(), "c_correct": flags()})
    lists = _lists(frame)
    sim = frame["similarity"].astype(float)
    assert list(lists["lowest_similarity"].rows["case_id"]) == list(np.argsort(sim.to_numpy(), kind="stable")[:5])


# ---- the page: lists on the Overview, a click opens that case in Diffs ----------------------------------

REFUSAL = "I'm sorry but I can't help with that."


def _recorded_csv() -> bytes:
    """60 cases: 58 answered -> refused flips (k55 the least similar: no letter in common), k03 the
    largest length change, k03 and k04 the accuracy regressions (k04 the least similar)."""
    lines = ["id,question,old,new,gold,category"]
    for i in range(60):
        old, new, gold, cat = f"The answer is {i}.", REFUSAL, "", "flip"
        if i == 3:
            old, new, gold, cat = "Paris", "Paris is the capital of France and its largest city, on the Seine", \
                "Paris", "facts"
        elif i == 4:
            old, new, gold, cat = "4", "four", "4", "math"
        elif i == 55:
            old = "zzzzzzzzzzzzzzzzzzzz"
        lines.append(f'k{i:02d},Question {i}?,"{old}","{new}",{gold},{cat}')
    return ("\n".join(lines) + "\n").encode()


def _load(engine) -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold", category_col="category")
    load_recorded(engine, _recorded_csv(), "answers.csv", "ranked", "wide", mapping)


def _list_labels(at: AppTest, name: str) -> list[str]:
    return [b.label for b in at.button if b.key and b.key.startswith(f"overview_case_{name}_")]


def test_overview_lists_the_cases_that_changed_most_and_a_click_opens_that_case(engine) -> None:
    _load(engine)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, at.exception
    flips = _list_labels(at, "refusal_flips")
    assert len(flips) == 5 and flips[0].startswith("**k55** · flip · answered → refused · similarity 0.00")
    assert any("top 5 of 58" in m.value for m in at.markdown)
    assert _list_labels(at, "length_change")[0].startswith("**k03** · facts · 5 → 65 chars (+60)")
    regressions = _list_labels(at, "accuracy_regressions")
    assert [label.split(" · ")[0] for label in regressions] == ["**k04**", "**k03**"]

    at.button(key="overview_case_refusal_flips_0").click().run()
    assert not at.exception, at.exception
    # Diffs: the flips filter, unnarrowed; k55 is the 54th flip in dataset order: page 2, selected
    assert at.selectbox(key="diffs_filter").value == "refusal_flips"
    assert at.number_input(key="diffs_page").value == 2
    assert [s.value for s in at.subheader] == ["Case k55 (repeat 0)"]
    assert "diffs_focus" not in at.session_state  # read once: the user's next choices are theirs

    at.number_input(key="diffs_page").set_value(1).run()  # browsing on: the link no longer pins the view
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] != ["Case k55 (repeat 0)"]


def test_a_case_link_clears_a_narrowing_that_would_hide_the_case(engine) -> None:
    _load(engine)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/diffs.py").run()
    at.multiselect(key="diffs_categories").set_value(["math"]).run()
    at.text_input(key="diffs_search").set_value("four").run()
    assert [s.value for s in at.subheader] == ["Case k04 (repeat 0)"]
    at.switch_page("pages/overview.py").run()
    at.button(key="overview_case_length_change_0").click().run()
    assert not at.exception, at.exception
    assert at.multiselect(key="diffs_categories").value == [] and at.text_input(key="diffs_search").value == ""
    assert at.selectbox(key="diffs_filter").value == "length_change"
    assert [s.value for s in at.subheader] == ["Case k03 (repeat 0)"]
