"""Helpers shared by the page tests (tests/test_page_*.py): the app through the router or one page
alone, a recorded comparison from rows, table selections as the browser sends them."""
from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from lib.data.loaders import LoadMapping, load_recorded

ROOT = Path(__file__).resolve().parent.parent


APP = str(ROOT / "streamlit_app.py")


TWO_PAIRS_CSV = b"id,question,old,new\n1,What is 2+2?,4,4\n2,Capital of France?,Paris,Lyon\n"


PASS = "correct horse"


REFUSAL = "I'm sorry but I can't help with that."
SIDEBAR_KEY = "sidebar_active_comparison"


WIDE_CSV = (b"id,question,old,new,gold,category\n"
            b"1,What is 2+2?,4,4,4,math\n"
            b"2,Capital of France?,Paris,I'm sorry but I can't help with that.,Paris,facts\n"
            b"3,Say hi,<img src=x onerror=alert(1)>,hello,,chat\n")


def browser_selects(at: AppTest, table_key: str, row: int) -> AppTest:
    """Rerun with a row index as the browser sends it for a table (unchecked, unlike a session-state write,
    which Streamlit validates against the table's rows). AppTest has no API for this: its private run."""
    [table] = [df for df in at.dataframe if df.key == table_key]
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = table.proto.id
    state.string_value = json.dumps({"selection": {"rows": [row], "columns": [], "cells": []}})
    return at._run(states)


def load_two_pairs(engine, name: str) -> None:

    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new")
    load_recorded(engine, TWO_PAIRS_CSV, "answers.csv", name, "wide", mapping)


def metric_rows(at: AppTest) -> list[int]:
    """Metric cards per row, for every row of columns (st.columns) holding one."""
    rows, todo = [], [at.main]
    while todo:
        block = todo.pop(0)
        kids = list(getattr(block, "children", {}).values())
        if kids and all(k.type == "column" for k in kids):
            cards = sum(len(k.get("metric")) for k in kids)
            if cards:
                rows.append(cards)
            continue
        todo += [k for k in kids if hasattr(k, "children")]
    return rows


def twelve_cases_two_flips(engine) -> None:
    rows = [(f"k{i:02d}", f"Question {i}?", f"Answer {i}.", f"Answer {i}.", f"Answer {i}.", "plain")
            for i in range(12)]
    rows[3] = ("k03", "Question 3?", "Answer 3.", REFUSAL, "Answer 3.", "plain")
    rows[7] = ("k07", "Question 7?", "Answer 7.", REFUSAL, "Answer 7.", "plain")
    load_wide_rows(engine, rows)


def alone(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=90)


def load_wide_rows(engine, rows: list[tuple[str, str, str, str, str, str]], name: str = "ui") -> None:
    """A recorded wide comparison: (id, question, old, new, gold, category) rows."""

    lines = ["id,question,old,new,gold,category"] + [",".join(f'"{v}"' for v in row) for row in rows]
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold", category_col="category")
    load_recorded(engine, ("\n".join(lines) + "\n").encode(), "answers.csv", name, "wide", mapping)


def plain(markdown: str) -> str:
    """Shown text without the markdown escapes."""
    return markdown.replace("\\", "")


def routed(path: str) -> AppTest:
    """The app through the router (as users reach it), switched to one page."""
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def router() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60)


def tick_row(at: AppTest, key: str, row: int) -> None:
    """A row ticked in a table, as the browser reports it (AppTest cannot click a dataframe row)."""
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}


def ticked_rows(at: AppTest, key: str) -> list[int]:
    return list(at.session_state[key]["selection"]["rows"])


def load_wide(engine, name: str = "wide-demo") -> None:
    """A recorded wide comparison of WIDE_CSV (three pairs, one refusal flip, one hostile output)."""

    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold", category_col="category")
    load_recorded(engine, WIDE_CSV, "answers.csv", name, "wide", mapping)
