"""promptfoo output: results.json version 3 (`results.results`), version 2 (`results.table`) and
the JSONL output (one result per line).

Only per-result fields are read. The file's `config` is never read: it may hold API keys.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from lib.data.fields import content_key, scalar_text, text_or_json
from lib.data.loaders.store import Recorded, assemble, choose_models, mapping_rule
from lib.data.tables import Table, decode_text, file_kind, load_json
from lib.errors import RecordedLoadError
from lib.review.checks.patterns import pattern_problem
from lib.run.redact import scrub

if TYPE_CHECKING:
    from lib.data.loaders import LoadMapping

SUPPORTED_VERSIONS = (2, 3)
ERROR_FAILURE = 2  # failureReason: 0 none, 1 an assertion failed (`error` is the grader's), 2 an error
# promptfoo assertion types that say what the output should be, and our rule for each.
ASSERTION_RULES = {"equals": "exact", "contains": "contains", "not-contains": "not_contains", "regex": "regex"}


def looks_like(text: str, kind: str) -> bool:
    """A promptfoo results file (JSON with a `results` object) or JSONL of results."""
    if kind == "json":
        if not text.lstrip().startswith("{"):
            return False
        try:
            value = load_json(text)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and isinstance(value.get("results"), dict)
    if kind == "jsonl":
        first = text.lstrip().split("\n", 1)[0]
        try:
            value, _ = json.JSONDecoder().raw_decode(first)
        except (ValueError, RecursionError):  # not JSON, or hostile JSON the real read will name
            return False
        return isinstance(value, dict) and "provider" in value and ("response" in value or "testIdx" in value)
    return False


# ---------------------------------------------------------------- reading the file

def _results_table(data: bytes, source: str) -> Table:
    """The file's results, one v3-shaped dict per output, located for error messages."""
    kind = file_kind(source, RecordedLoadError)
    text = decode_text(data, source, RecordedLoadError)
    if kind == "jsonl":
        return _jsonl_results(text, source)
    if kind != "json":
        raise RecordedLoadError(source, "a promptfoo file is .json (results.json) or .jsonl")
    try:
        value = load_json(text)
    except json.JSONDecodeError as exc:
        raise RecordedLoadError(source, f"invalid JSON: {exc.msg} (column {exc.colno})",
                                line=exc.lineno) from None
    results = value.get("results") if isinstance(value, dict) else None
    if not isinstance(results, dict):
        raise RecordedLoadError(source, "is missing: this is not a promptfoo results file", field="results")
    version = results.get("version")
    if version == 3:
        records = results.get("results")
        if not isinstance(records, list):
            raise RecordedLoadError(source, "must be a list", field="results.results")
        return _table(source, records, list(range(len(records))), by_line=False)
    if version == 2:
        body = (results.get("table") or {}).get("body")
        if not isinstance(body, list):
            raise RecordedLoadError(source, "must be a list", field="results.table.body")
        located = list(_table_results(results["table"], source))
        return _table(source, [r for _, r in located], [i for i, _ in located], by_line=False)
    raise RecordedLoadError(source, f"is {version!r}: only promptfoo results versions "
                                    f"{' and '.join(map(str, SUPPORTED_VERSIONS))} are supported",
                            field="results.version")


def _table(source: str, records: list, locs: list[int], *, by_line: bool) -> Table:
    table = Table(source, [], records, locs, by_line=by_line, is_csv=False, error=RecordedLoadError)
    for row, record in enumerate(records):
        if not isinstance(record, dict) or "provider" not in record:
            table.fail(row, "is not a promptfoo result (no 'provider')")
    return table


def _jsonl_results(text: str, source: str) -> Table:
    # Older promptfoo wrote result batches without a newline between them, so a line may hold
    # several objects back to back: decode them one after another.
    decoder, records, locs = json.JSONDecoder(), [], []
    # split on \n only: splitlines() would also break on U+2028, valid inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        line, pos = line.strip(), 0
        while pos < len(line):
            try:
                record, pos = decoder.raw_decode(line, pos)
            except json.JSONDecodeError as exc:
                raise RecordedLoadError(source, f"invalid JSON: {exc.msg} (column {exc.colno})",
                                        line=number) from None
            records.append(record)
            locs.append(number)
            while pos < len(line) and line[pos].isspace():
                pos += 1
    return _table(source, records, locs, by_line=True)


def _table_results(table: dict[str, Any], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Version 2: (body row index, v3-shaped result) for each cell of the table.

    Column j of a row is head.prompts[j] (a prompt on one provider); equal prompt templates on
    different providers get the same promptIdx, so they pair.
    """
    prompts = (table.get("head") or {}).get("prompts") or []
    templates = list(dict.fromkeys(p.get("raw") or p.get("label") for p in prompts))
    for row_idx, row in enumerate(table["body"]):
        test = row.get("test") or {}
        outputs = row.get("outputs") or []
        if len(outputs) > len(prompts):
            raise RecordedLoadError(source, f"has {len(outputs)} outputs but table.head has {len(prompts)} "
                                            f"prompts (item [{row_idx}])", field="results.table.body")
        for col, out in enumerate(outputs):
            prompt = prompts[col]
            is_error = out.get("failureReason") == ERROR_FAILURE
            response = out.get("response") or {"output": None if is_error else _table_text(out),
                                               "tokenUsage": out.get("tokenUsage")}
            yield row_idx, {
                "testIdx": row_idx, "promptIdx": templates.index(prompt.get("raw") or prompt.get("label")),
                "provider": {"id": prompt.get("provider")}, "prompt": {"raw": out.get("prompt")},
                "vars": test.get("vars"), "testCase": {**test, "description": row.get("description")
                                                       or test.get("description")},
                "response": response, "latencyMs": out.get("latencyMs"), "cost": out.get("cost"),
                "error": out.get("error") or (out.get("text") if is_error else None),
                "failureReason": out.get("failureReason")}


def _table_text(out: dict[str, Any]) -> str | None:
    """A v2 cell's output. Older promptfoo put the grader's reason in front of a failed output
    ("reason\\n---\\noutput"): keep only the output."""
    text = out.get("text")
    if isinstance(text, str) and out.get("pass") is False and "\n---\n" in text:
        return text.split("\n---\n", 1)[1]
    return text


# ---------------------------------------------------------------- one result -> one frame row

def _provider(record: dict[str, Any]) -> str | None:
    provider = record.get("provider")
    return provider.get("id") if isinstance(provider, dict) else provider


def _input(record: dict[str, Any], test: dict[str, Any]) -> Any:
    """The rendered prompt (`prompt.raw`), else the test's vars."""
    raw = (record.get("prompt") or {}).get("raw")
    if isinstance(raw, str) and raw.strip():
        return raw
    variables = record.get("vars") or test.get("vars") or {}
    if len(variables) == 1:
        return text_or_json(next(iter(variables.values())))
    return "\n".join(f"{k}: {text_or_json(v)}" for k, v in variables.items()) or None


def _expected(test: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(expected, match, pattern) from the first assertion that states the output."""
    for assertion in test.get("assert") or []:
        rule = ASSERTION_RULES.get(assertion.get("type")) if isinstance(assertion, dict) else None
        value = assertion.get("value") if rule else None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        if rule != "regex":
            expected = scalar_text(value, "value")
            if expected is not None:
                return expected, rule, None
            continue
        if pattern_problem(str(value)) is not None:  # JavaScript-only or not RE2: leave it to promptfoo's verdict
            continue
        return None, rule, str(value)
    return None, None, None


NO_RESPONSE = "no response recorded (promptfoo's `response` is null)"


def _error(record: dict[str, Any], response: dict[str, Any], text: str | None) -> str | None:
    """The model-side error only: with failureReason 1, `error` is the grader's reason."""
    if "response" in record and record["response"] is None and not record.get("error"):
        return NO_RESPONSE  # not an empty answer: nothing came back
    if response.get("error"):
        return scrub(str(response["error"]))  # a provider's 401 in the log may echo the key
    reason = record.get("failureReason")
    if reason == ERROR_FAILURE or (reason is None and text is None):
        return scrub(record.get("error")) or ("failed (no message in the file)" if reason == ERROR_FAILURE else None)
    return None


def _row(record: dict[str, Any]) -> dict[str, Any]:
    test = record.get("testCase") or {}
    response = record.get("response") or {}
    output = response.get("output")
    # An empty answer is an answer: keep "" (text_or_json would make it None).
    text = output if isinstance(output, str) or output is None else text_or_json(output)
    usage = response.get("tokenUsage") or record.get("tokenUsage") or {}
    expected, match, pattern = _expected(test)
    category = (test.get("metadata") or {}).get("category")
    latency = record.get("latencyMs")
    return {
        "model": _provider(record), "test": record.get("testIdx"), "prompt": record.get("promptIdx"),
        "input": _input(record, test), "expected": expected, "match": match, "pattern": pattern,
        "category": category if isinstance(category, (str, int, float)) else None,
        "metadata": {"description": test["description"]} if test.get("description") else None,
        "text": text, "error": _error(record, response, text),
        "latency_s": latency / 1000.0 if isinstance(latency, (int, float)) else None,
        "cost_usd": record.get("cost"), "prompt_tokens": usage.get("prompt"),
        "completion_tokens": usage.get("completion"),
    }


def _keys(frame: pd.DataFrame, records: list[dict[str, Any]]) -> pd.Series:
    """Pair on (testIdx, promptIdx); results without indices pair on a hash of vars and prompt."""
    one_prompt = frame["prompt"].nunique(dropna=False) <= 1
    keys = []
    for test, prompt, record in zip(frame["test"], frame["prompt"], records):
        if pd.isna(test):
            label = (record.get("prompt") or {}).get("label")
            keys.append(content_key({"vars": record.get("vars"), "prompt": label}))
        else:
            keys.append(f"test-{int(test)}" if one_prompt else f"test-{int(test)}-prompt-{int(prompt)}")
    return pd.Series(keys, index=frame.index, dtype=object)


def _frame(data: bytes, source: str) -> tuple[Table, pd.DataFrame]:
    table = _results_table(data, source)
    if not table.records:
        raise RecordedLoadError(source, "has no results")
    frame = pd.DataFrame([_row(r) for r in table.records])
    if frame["model"].isna().any():
        table.fail(int(frame["model"].isna().to_numpy().argmax()), "is missing", field="provider.id")
    return table, frame


def providers(data: bytes, source: str) -> list[str]:
    """The provider ids of a results file, in order of first appearance (for choosing the sides)."""
    return _frame(data, source)[1]["model"].drop_duplicates().tolist()


def parse(data: bytes, source: str, m: LoadMapping) -> Recorded:
    rule = mapping_rule(source, m.match, m.pattern)
    table, frame = _frame(data, source)
    baseline, candidate, warnings = choose_models(source, frame["model"].drop_duplicates().tolist(),
                                                  m.baseline, m.candidate, what="providers", auto_order=True)
    frame = frame.assign(key=_keys(frame, table.records), row=frame.index)
    frame = frame[frame["model"].isin([baseline, candidate])]
    frame = frame.assign(side=(frame["model"] == candidate).map({False: "baseline", True: "candidate"}))
    n_null = int((frame["error"] == NO_RESPONSE).sum())
    if n_null:
        first = table.locs[int(frame.index[frame["error"] == NO_RESPONSE][0])]
        where = f"line {first}" if table.by_line else f"item [{first}]"
        warnings = [*warnings, f"{n_null} result(s) have `response: null` (first at {where}): stored as "
                               "errors, not as empty answers"]
    return assemble(frame, table, baseline, candidate, rule, warnings)
