"""The Diffs page's status chips (lib.review.status), on checked frames of real loads and on hand-set checks."""
from __future__ import annotations

import pandas as pd
import pytest

from lib.review.checked import checked_frame
from lib.review.status import STATUSES, pair_statuses, status_colors

REFUSAL = "I'm sorry but I can't help with that."
ROWS = [  # id, question, baseline, candidate, gold -> expected statuses
    ("same", "2+2?", "4", "4", "4", ["unchanged"]),
    ("worse", "3+3?", "6", "7", "6", ["regressed"]),
    ("better", "4+4?", "9", "8", "8", ["improved"]),
    ("refused", "Capital of France?", "Paris", REFUSAL, "", ["newly refused"]),
    ("answered", "Capital of Spain?", REFUSAL, "Madrid", "", ["no longer refused"]),
    ("missing", "Say hi", "hello", "", "", ["empty"]),  # no candidate output recorded
]


def _load(engine) -> pd.DataFrame:
    from lib.data.loaders import LoadMapping, load_recorded

    lines = ["id,question,old,new,gold"] + [",".join(f'"{v}"' for v in row[:5]) for row in ROWS]
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold")
    load_recorded(engine, ("\n".join(lines) + "\n").encode(), "answers.csv", "status", "wide", mapping)
    return checked_frame(engine, "status")


def test_statuses_of_a_loaded_comparison(engine) -> None:
    frame = _load(engine)
    got = dict(zip(frame["case_key"], pair_statuses(frame)))
    assert got == {row[0]: row[5] for row in ROWS}


def _checks(**sides: object) -> pd.DataFrame:
    """One pair with the given check values (everything else unknown)."""
    return pd.DataFrame({k: pd.array([v], dtype="boolean" if isinstance(v, bool) else None)
                         for k, v in sides.items()})


@pytest.mark.parametrize(("checks", "expected"), [
    ({"b_errored": False, "c_errored": True}, ["error"]),
    ({"b_json_strict": True, "c_json_strict": False}, ["schema break"]),
    ({"b_truncated": True, "c_truncated": False}, ["truncated"]),
    ({"b_injection_resisted": True, "c_injection_resisted": False}, ["regressed"]),
    ({"b_json_strict": False, "c_json_strict": True}, ["unchanged"]),  # a repair is no chip of its own
    ({"b_correct": True, "c_correct": None}, ["unchanged"]),  # unknown on one side: no flip claimed
    ({"b_refused": False, "c_refused": True, "b_correct": True, "c_correct": False},
     ["newly refused", "regressed"]),  # several apply: most serious first
])
def test_statuses_from_check_values(checks: dict, expected: list[str]) -> None:
    assert pair_statuses(_checks(**checks)).tolist() == [expected]


def test_empty_reads_the_stores_empty_column_when_there_is_one() -> None:
    frame = pd.DataFrame({"b_len_chars": [5, 5], "c_len_chars": [0, 3],
                          "c_empty": pd.array([False, True], dtype="boolean")})
    assert pair_statuses(frame).tolist() == [["unchanged"], ["empty"]]


def test_whitespace_only_texts_are_empty_and_errors_are_not() -> None:
    frame = pd.DataFrame({"b_text": ["ok", None], "c_text": ["  \n", None], "b_len_chars": [2, 0],
                          "c_len_chars": [3, 0], "b_errored": pd.array([False, True], dtype="boolean"),
                          "c_errored": pd.array([False, True], dtype="boolean")})
    assert pair_statuses(frame).tolist() == [["empty"], ["error"]]


def test_no_rows_and_one_colour_per_status() -> None:
    assert pair_statuses(pd.DataFrame({"b_refused": pd.array([], dtype="boolean")})).tolist() == []
    assert len(status_colors()) == len(STATUSES)


def test_an_output_of_no_characters_is_empty() -> None:
    frame = pd.DataFrame({"b_len_chars": [4], "c_len_chars": [0], "b_output_id": [1], "c_output_id": [2]})
    assert pair_statuses(frame).tolist() == [["empty"]]
