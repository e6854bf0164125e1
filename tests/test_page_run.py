"""AppTest: the Run page against a real local server: runs and resumes."""
from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest

from tests.page_helpers import router


def _import_golden(engine, n: int = 4) -> None:
    from lib.data.golden import import_dataset

    data = "\n".join(json.dumps({"id": f"q{i}", "input": f"What is {i}+1?", "expected": str(i + 1)})
                     for i in range(n)).encode()
    import_dataset(engine, data, "golden.jsonl", "golden")


def _fill_run_form(at: AppTest, url: str, name: str) -> None:
    for side, model in (("baseline", "openai/old-model"), ("candidate", "openai/new-model")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(url)
    at.run()  # the prompt stack and options appear once both models are named
    at.text_area(key="run_system_prompt").set_value("Answer briefly.")
    at.text_input(key="run_name").set_value(name).run()


def test_run_page_runs_a_comparison_against_a_real_server(engine, llm_server) -> None:
    _import_golden(engine)
    at = router().run()
    at.switch_page("pages/run.py").run()
    _fill_run_form(at, llm_server.url, "live")
    assert any("unknown" in m.value for m in at.markdown), "a custom model's price is unknown, never $0"
    at.button(key="run_start").click().run(timeout=120)
    assert not at.exception, at.exception
    from lib.review.comparisons import list_comparisons

    (row,) = list_comparisons(engine)
    assert (row["name"], row["status"], row["n_errors"]) == ("live", "complete", 0)
    assert llm_server.calls() == 8  # 4 cases x 2 models


def test_run_page_resumes_an_interrupted_run_with_its_stored_configuration(engine, llm_server) -> None:
    _import_golden(engine)
    llm_server.add_fault("500", fraction=1.0, model="new-model")  # every candidate call fails
    at = router().run()
    at.switch_page("pages/run.py").run()
    _fill_run_form(at, llm_server.url, "flaky")
    at.number_input(key="run_max_retries").set_value(0)
    at.button(key="run_start").click().run(timeout=120)
    assert at.warning, "errors after retries are reported"
    llm_server.clear_faults()
    calls_before = llm_server.calls()
    at = router().run()
    at.switch_page("pages/run.py").run()
    assert at.selectbox(key="run_resume_name").value == "flaky"
    at.button(key="run_resume").click().run(timeout=120)
    assert not at.exception, at.exception
    assert llm_server.calls() - calls_before == 4  # only the failed candidate calls were sent again
    from lib.review.comparisons import list_comparisons

    assert list_comparisons(engine)[0]["status"] == "complete"
