"""Golden datasets: every documented field, versioning, and one precise error per kind of bad input."""
from __future__ import annotations

import json
import re

import pytest
from conftest import FIXTURES
from sqlalchemy import func
from sqlmodel import Session, select

from lib.data.golden import ColumnMapping, get_dataset, import_dataset, list_datasets, parse_cases
from lib.data.tables import read_table
from lib.errors import DatasetImportError, DatasetNotFound
from lib.store.columns import from_json
from lib.store.entities import Case, Dataset, ModelConfig, Run


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def cases_of(engine, dataset_id: int) -> dict[str, Case]:
    with Session(engine) as s:
        rows = s.exec(select(Case).where(Case.dataset_id == dataset_id).order_by(Case.position)).all()
    return {c.case_key: c for c in rows}


def row_counts(engine) -> tuple[int, int]:
    with Session(engine) as s:
        return s.exec(select(func.count(Dataset.id))).one(), s.exec(select(func.count(Case.id))).one()


# ---------------------------------------------------------------- documented fields

def test_jsonl_stores_every_documented_field(engine) -> None:
    res = import_dataset(engine, fixture("golden_support.jsonl"), "golden_support.jsonl", "support")
    assert (res.name, res.version, res.n_cases, res.created, res.warnings) == ("support", 1, 8, True, [])
    cases = cases_of(engine, res.dataset_id)
    assert list(cases) == ["refund-window", "greeting-fr", "order-status-json", "support-phone",
                           "no-legal-advice", "plan-name", "tone", "free-form"]
    assert [c.position for c in cases.values()] == list(range(8))

    refund = cases["refund-window"]
    assert (refund.expected, refund.match, refund.category) == ("30", "numeric", "billing")
    assert from_json(refund.metadata_json) == {"source": "faq", "priority": 1}
    assert refund.messages_json is None

    chat = cases["greeting-fr"]
    assert json.loads(chat.messages_json)[1] == {"role": "user", "content": "Say hello to the customer."}
    assert chat.input_text == ("system: You are a support agent for Acme. Answer in French.\n"
                               "user: Say hello to the customer.")
    assert (chat.expected, chat.match) == ("bonjour", "contains")

    schema = json.loads(cases["order-status-json"].json_schema)
    assert schema["required"] == ["order_id", "status"] and cases["order-status-json"].match is None

    phone = cases["support-phone"]
    assert (phone.match, phone.pattern) == ("regex", r"\+1-800-\d{3}-\d{4}")
    assert [cases[k].match for k in ("no-legal-advice", "plan-name", "tone")] == ["not_contains", "exact",
                                                                                  "normalized"]
    free = cases["free-form"]
    assert (free.expected, free.match, free.category, free.metadata_json) == (None, None, None, None)


def test_csv_reads_chat_schema_and_metadata_from_json_text_and_multiline_cells(engine) -> None:
    res = import_dataset(engine, fixture("golden_support.csv"), "golden_support.csv", "support-csv")
    cases = cases_of(engine, res.dataset_id)
    assert res.n_cases == 5
    assert json.loads(cases["greeting-fr"].messages_json)[0] == {"role": "system", "content": "Answer in French."}
    assert cases["greeting-fr"].input_text.startswith("system: Answer in French.\nuser: Say hello.")
    assert json.loads(cases["order-status-json"].json_schema) == {"type": "object", "required": ["status"]}
    assert from_json(cases["refund-window"].metadata_json) == {"source": "faq"}
    assert cases["support-phone"].pattern == r"\+1-800-\d{3}-\d{4}"
    assert cases["multi-line"].input_text == "Rewrite this address on one line:\n221B Baker Street\nLondon"
    # empty CSV cells are absent values, not empty strings
    assert cases["order-status-json"].expected is None and cases["order-status-json"].match is None


def test_json_cases_object_numbers_become_text(engine) -> None:
    res = import_dataset(engine, fixture("golden_support.json"), "golden_support.json", "support-json")
    cases = cases_of(engine, res.dataset_id)
    assert list(cases) == ["1", "2", "3"]
    assert (cases["1"].expected, cases["1"].match) == ("144", "numeric")
    assert json.loads(cases["3"].json_schema)["minItems"] == 3


def test_json_plain_list_is_accepted() -> None:
    data = json.dumps([{"id": "a", "input": "hi"}, {"id": "b", "input": "yo"}]).encode()
    assert [c.key for c in parse_cases(data, "list.json")] == ["a", "b"]


def test_mapping_renames_columns_and_reports_ignored_ones(engine) -> None:
    mapping = ColumnMapping(input="question", expected="answer", category="topic")
    res = import_dataset(engine, fixture("golden_custom_columns.csv"), "golden_custom_columns.csv", "quiz",
                         mapping)
    assert res.warnings == ["ignored columns not in the mapping: notes"]
    cases = cases_of(engine, res.dataset_id)
    # no id column: keys are short content hashes, stable across imports
    assert all(re.fullmatch(r"[0-9a-f]{12}", k) for k in cases)
    first = next(iter(cases.values()))
    assert (first.expected, first.category) == ("100", "science")
    again = parse_cases(fixture("golden_custom_columns.csv"), "x.csv", mapping)
    assert [c.key for c in again] == list(cases)


def test_pattern_without_a_rule_means_regex() -> None:
    [case] = parse_cases(b'{"id": "p", "input": "Phone?", "pattern": "^\\\\d+$"}\n', "p.jsonl")
    assert (case.match, case.pattern) == ("regex", r"^\d+$")


def test_read_table_returns_raw_rows_for_previews() -> None:
    frame = read_table(fixture("golden_custom_columns.csv"), "quiz.csv")
    assert list(frame.columns) == ["question", "answer", "topic", "notes"] and len(frame) == 3
    assert frame.loc[1, "notes"] is None  # empty cell
    frame = read_table(fixture("golden_support.jsonl"), "s.jsonl")
    assert isinstance(frame.loc[1, "input"], list) and "schema" in frame.columns


# ---------------------------------------------------------------- versioning

def test_same_content_returns_latest_and_changed_content_makes_a_new_version(engine) -> None:
    data = fixture("golden_support.jsonl")
    first = import_dataset(engine, data, "golden_support.jsonl", "support")
    same = import_dataset(engine, data, "renamed.jsonl", "support")
    assert (same.dataset_id, same.version, same.created) == (first.dataset_id, 1, False)

    changed = data.replace(b'"expected": "Starter"', b'"expected": "Starter plan"')
    second = import_dataset(engine, changed, "golden_support.jsonl", "support")
    assert (second.version, second.created) == (2, True) and second.dataset_id != first.dataset_id
    assert cases_of(engine, first.dataset_id)["plan-name"].expected == "Starter"  # v1 never changes
    assert cases_of(engine, second.dataset_id)["plan-name"].expected == "Starter plan"

    back = import_dataset(engine, data, "golden_support.jsonl", "support")
    assert (back.version, back.created) == (3, True)  # compared with the latest version only

    with Session(engine) as s:
        assert get_dataset(s, "support").version == 3
        assert get_dataset(s, "support", 1).id == first.dataset_id
        with pytest.raises(DatasetNotFound, match="no version 9 .latest is 3"):
            get_dataset(s, "support", 9)
        with pytest.raises(DatasetNotFound, match="no dataset named 'nope'"):
            get_dataset(s, "nope")


def test_list_datasets_counts_runs_using_each_version(engine) -> None:
    res = import_dataset(engine, fixture("golden_support.json"), "golden_support.json", "tiny")
    import_dataset(engine, fixture("golden_support.jsonl"), "golden_support.jsonl", "tiny")
    with Session(engine) as s:
        cfg = ModelConfig(config_hash="h", model="openai/gpt-4o-mini")
        s.add(cfg)
        s.flush()
        s.add(Run(config_id=cfg.id, dataset_id=res.dataset_id))
        s.commit()
    rows = list_datasets(engine)
    assert [(r["name"], r["version"], r["n_cases"], r["used_by_runs"], r["source"]) for r in rows] == [
        ("tiny", 2, 8, 0, "golden_support.jsonl"), ("tiny", 1, 3, 1, "golden_support.json")]
    assert rows[0]["created_at"] is not None


# ---------------------------------------------------------------- bad input

BAD_INPUTS = [
    # (filename, content, line, field, message fragment)
    ("bad.jsonl", b'{"id": "a", "input": "ok"}\n{"id": "b", "input": }\n', 2, None, "invalid JSON"),
    ("bad.jsonl", b'{"id": "a", "input": "ok"}\n\n["b", "x"]\n', 3, None, "expected a JSON object, got list"),
    ("bad.jsonl", b'{"id": "a", "input": "ok"}\n{"id": "b", "question": "x"}\n', 2, "input", "is missing"),
    ("bad.jsonl", b'{"id": "a", "input": "   "}\n', 1, "input", "is empty"),
    ("bad.jsonl", b'{"id": "a", "input": "ok"}\n{"id": "b", "input": "x", "match": "fuzzy"}\n', 2, "match",
     "unknown rule 'fuzzy'"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "match": "regex"}\n', 1, "pattern", "is required by match rule"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "match": "regex", "pattern": "(unclosed"}\n', 1, "pattern",
     "not a valid regular expression"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "schema": {"type": "objekt"}}\n', 1, "schema",
     "not a valid JSON Schema"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "expected": "about 4", "match": "numeric"}\n', 1, "expected",
     "not a number"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "match": "exact"}\n', 1, "expected", "is required by match rule"),
    ("bad.jsonl", b'{"id": "a", "input": [{"role": "user"}]}\n', 1, "input", "has no text 'content'"),
    ("bad.jsonl", b'{"id": "a", "input": "x", "metadata": [1, 2]}\n', 1, "metadata", "must be a JSON object"),
    ("bad.jsonl", b'{"id": "a", "input": "x"}\n{"input": "y"}\n', 2, "id", "is missing or empty"),
    ("bad.csv", b"id,input\na,one\nb,two\na,three\n", 4, "id", "repeats id 'a' (first at line 2)"),
    ("bad.csv", b'id,input,schema\na,x,"{not json"\n', 2, "schema", "is not valid JSON"),
    ("bad.csv", b"id,input\na,one,extra\n", 2, None, "row has 3 cells but the header has 2"),
    # a quoted cell spanning lines 2-3: the next row is line 4, as an editor shows it
    ("bad.csv", b'id,input,match\na,"two\nlines",\nb,x,fuzzy\n', 4, "match", "unknown rule"),
    ("bad.csv", b"id,input\n", 1, None, "has no cases"),
    ("bad.csv", b"id,input\na,caf\xe9\n", 2, None, "is not UTF-8"),
]


@pytest.mark.parametrize("filename,data,line,field,fragment", BAD_INPUTS)
def test_bad_input_names_file_line_field_and_writes_nothing(engine, filename, data, line, field, fragment):
    import_dataset(engine, fixture("golden_support.json"), "golden_support.json", "existing")
    before = row_counts(engine)
    with pytest.raises(DatasetImportError) as info:
        import_dataset(engine, data, filename, "existing")
    err = info.value
    assert (err.source, err.line, err.field) == (filename, line, field)
    message = str(err)
    assert message.startswith(f"{filename}, line {line}:") and fragment in message
    if field:
        assert f"field '{field}'" in message
    assert row_counts(engine) == before


@pytest.mark.parametrize("filename,data,fragment", [
    ("empty.jsonl", b"  \n\n", "the file is empty"),
    ("cases.txt", b"input\nhello\n", "unsupported file type '.txt'"),
    ("cases.json", b'{"items": []}', 'expected a JSON list of objects or {"cases": [...]}'),
])
def test_whole_file_errors(engine, filename, data, fragment) -> None:
    with pytest.raises(DatasetImportError, match=re.escape(fragment)) as info:
        import_dataset(engine, data, filename, "x")
    assert str(info.value).startswith(filename)
    assert row_counts(engine) == (0, 0)


def test_json_errors_name_the_array_index(engine) -> None:
    data = json.dumps({"cases": [{"id": 1, "input": "ok"}, {"id": 2, "input": ""}]}).encode()
    with pytest.raises(DatasetImportError) as info:
        import_dataset(engine, data, "cases.json", "x")
    assert info.value.field == "input" and "(item [1])" in str(info.value)


def test_invalid_json_file_names_its_line(engine) -> None:
    with pytest.raises(DatasetImportError) as info:
        import_dataset(engine, b'[\n  {"id": 1, "input": "a"},\n  {"id": 2 "input": "b"}\n]', "c.json", "x")
    assert info.value.line == 3 and "invalid JSON" in str(info.value)


def test_mapped_column_that_does_not_exist_lists_available_columns(engine) -> None:
    with pytest.raises(DatasetImportError) as info:
        import_dataset(engine, fixture("golden_custom_columns.csv"), "quiz.csv", "quiz",
                       ColumnMapping(input="prompt"))
    assert (info.value.line, info.value.field) == (1, "input")
    assert "'prompt'" in str(info.value)
    assert "available columns: question, answer, topic, notes" in str(info.value)
    with pytest.raises(DatasetImportError, match="names column 'qid'"):
        parse_cases(fixture("golden_support.jsonl"), "s.jsonl", ColumnMapping(id="qid"))


def test_duplicate_content_without_ids_is_an_error() -> None:
    with pytest.raises(DatasetImportError, match="duplicate case: same content as line 2") as info:
        parse_cases(b"input,expected\nhi,hello\nhi,hello\n", "dup.csv")
    assert info.value.line == 3


def test_failure_inside_the_transaction_writes_nothing(engine, monkeypatch) -> None:
    """A database error after the dataset row was written rolls the whole import back."""
    import lib.data.golden

    real_values = lib.data.golden.CaseRecord.values

    def broken_values(self, dataset_id: int, position: int) -> tuple:
        values = real_values(self, dataset_id, position)
        return (*values[:3], None, *values[4:]) if position == 2 else values  # input_text: NOT NULL violation

    import_dataset(engine, fixture("golden_support.json"), "golden_support.json", "existing")
    before = row_counts(engine)
    monkeypatch.setattr(lib.data.golden.CaseRecord, "values", broken_values)
    with pytest.raises(Exception, match="NOT NULL"):
        import_dataset(engine, fixture("golden_support.jsonl"), "golden_support.jsonl", "support")
    assert row_counts(engine) == before


def test_100k_cases_import_in_one_transaction(engine) -> None:
    """Scale, not speed (bench/ measures that): 100k cases in one import, every one stored."""
    lines = (json.dumps({"id": f"c{i}", "input": f"What is {i} + 1?", "expected": str(i + 1), "match": "numeric",
                         "category": f"cat{i % 7}"}) for i in range(100_000))
    data = "\n".join(lines).encode()
    res = import_dataset(engine, data, "big.jsonl", "big")
    assert res.n_cases == 100_000 and row_counts(engine) == (1, 100_000)
