"""Hostile inputs: each is either handled cleanly (a named ReviewInputError: exit 2, one line, nothing
written) or works as it should. Patterns run on RE2 (linear time); schemas never fetch; secrets stay out;
malformed, deep, huge and oddly encoded files fail with a message naming what is wrong."""
from __future__ import annotations

import time

import pytest
from gov_helpers import Pair, make_comparison, tamper

from lib.data.fields import InvalidField  # a field problem; the importer wraps it with the file and line
from lib.errors import ReviewInputError

CATASTROPHIC = "^(a|a)+$"  # Python's re never returns on 40 a's and a '!'; RE2 answers at once
SLOW_TEXT = "a" * 40 + "!"


# ---------------------------------------------------------------- patterns (section 2)

UNSUPPORTED_PATTERNS = [
    (r"(a)\1", "backreferences"),
    (r"foo(?=bar)", "lookahead"),
    (r"foo(?!bar)", "negative lookahead"),
    (r"(?<=x)foo", "lookbehind"),
    (r"(?<!x)foo", "negative lookbehind"),
    ("(unclosed", "missing )"),
    ("[a-", "missing ]"),
    ("a{1001}", "invalid repetition size"),
    ("x" * 10_001, "longer than 10,000 characters"),
    ("\ud800", "lone surrogate"),
]


@pytest.mark.parametrize(("pattern", "fragment"), UNSUPPORTED_PATTERNS, ids=lambda v: str(v)[:20])
def test_patterns_re2_cannot_run_are_named_input_errors(pattern: str, fragment: str) -> None:
    from lib.review.checks import InvalidPatternError
    from lib.review.checks.patterns import compile_user_pattern

    with pytest.raises(InvalidPatternError) as err:
        compile_user_pattern(pattern, what="refusal pattern")
    assert isinstance(err.value, ReviewInputError)
    message = str(err.value)
    assert message.startswith("invalid refusal pattern ") and fragment in message and "\n" not in message


def _every_pattern_entry_point(pattern: str) -> list[tuple[str, object]]:
    """Each place a user's pattern enters: (name, a callable that compiles and runs it)."""
    from lib.data.fields import check_rule
    from lib.drift.analysis import DriftOptions
    from lib.redteam.constraints import failed_constraints, parse_constraints
    from lib.review.checks.refusal import RefusalDetector
    from lib.review.settings import ReviewSettings

    return [
        ("refusal", lambda: RefusalDetector([pattern]).is_refusal(SLOW_TEXT)),
        ("settings pattern", lambda: ReviewSettings(match="regex", pattern=pattern)),
        ("case pattern", lambda: check_rule("regex", pattern, "x")),
        ("drift regex", lambda: DriftOptions(regex={"r": pattern}).validate()),
        ("red-team rule", lambda: failed_constraints(SLOW_TEXT, parse_constraints([{"type": "regex",
                                                                                     "value": pattern}]))),
    ]


@pytest.mark.parametrize("entry", range(5), ids=["refusal", "settings", "case", "drift", "redteam"])
@pytest.mark.parametrize("pattern", [CATASTROPHIC, r"(a)\1", r"x(?=y)"], ids=["redos", "backref", "lookahead"])
def test_every_pattern_entry_point_is_linear_or_refused(entry: int, pattern: str) -> None:
    name, call = _every_pattern_entry_point(pattern)[entry]
    start = time.monotonic()
    if pattern == CATASTROPHIC:
        call()  # accepted: RE2 runs it in linear time
    else:
        with pytest.raises((ReviewInputError, InvalidField), match="not supported"):
            call()
    assert time.monotonic() - start < 2.0, name


def test_catastrophic_pattern_runs_in_linear_time_everywhere() -> None:
    import pandas as pd

    from lib.review.checks.matching import match_outputs
    from lib.review.checks.refusal import RefusalDetector

    start = time.monotonic()
    assert RefusalDetector([CATASTROPHIC]).is_refusal(SLOW_TEXT) is False
    assert RefusalDetector([CATASTROPHIC]).is_refusal("a" * 40) is True
    flags = match_outputs(pd.Series([SLOW_TEXT] * 50), pd.Series(["a"] * 50), pd.Series(["regex"] * 50),
                        pd.Series([CATASTROPHIC] * 50))
    assert not flags.any()
    assert time.monotonic() - start < 2.0


def test_stored_patterns_are_compiled_on_re2_when_read(engine, db_url: str) -> None:
    """A pattern already in the store (written before this check existed) is safe too."""
    import json

    from lib.review.report import build_report

    make_comparison(engine, "stored", [Pair("a", SLOW_TEXT, "a" * 40)] * 3)
    tamper(db_url, "UPDATE comparison SET settings_json = ? WHERE name = 'stored'",
           json.dumps({"match": None, "pattern": None, "refusal_patterns": [CATASTROPHIC]}))
    start = time.monotonic()
    report = build_report(engine, "stored")
    assert time.monotonic() - start < 30
    assert report["settings"]["refusal_patterns"] == [CATASTROPHIC]
    tamper(db_url, "UPDATE comparison SET settings_json = ? WHERE name = 'stored'",
           json.dumps({"match": None, "pattern": None, "refusal_patterns": [r"(a)\1"]}))
    with pytest.raises(ReviewInputError, match="backreferences"):
        build_report(engine, "stored")


# ---------------------------------------------------------------- schemas (section 3)

class _CountingServer:
    """A local HTTP server that serves a schema and counts the requests it gets (a fetch = a failure)."""

    def __enter__(self) -> _CountingServer:
        import http.server
        import threading

        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                counter.hits += 1
                body = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.hits = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/schema.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _outside_refs(url: str) -> list[dict]:
    return [{"$ref": url}, {"$ref": "file:///etc/passwd"}, {"properties": {"a": {"$ref": url + "#/x"}}},
            {"$ref": "other.json"}, {"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/missing"}]


SCHEMAS_THAT_PASS = [
    {"type": "object", "required": ["a"]},
    {"$defs": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/s"}}},
    {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"s": {"type": "string"}},
     "properties": {"a": {"$ref": "#/definitions/s"}}},
    {"$id": "https://example.com/root", "$defs": {"s": {"$id": "https://example.com/s", "type": "string"}},
     "properties": {"a": {"$ref": "https://example.com/s"}}},
    {"$defs": {"s": {"$anchor": "str", "type": "string"}}, "properties": {"a": {"$ref": "#str"}}},
    {"type": "object", "properties": {"next": {"$ref": "#"}}},
]


@pytest.mark.parametrize("which", range(5), ids=["http", "file", "nested-http", "relative", "missing-pointer"])
def test_schema_refs_outside_the_schema_are_refused_everywhere_and_never_fetched(which: int, tmp_path) -> None:
    import json

    from lib.data.golden import parse_cases
    from lib.errors import DatasetImportError
    from lib.review.checks import InvalidSchemaError
    from lib.review.checks.structured import schema_validator
    from lib.review.settings import ReviewSettings, ReviewSettingsError

    with _CountingServer() as server:
        schema = _outside_refs(server.url)[which]
        with pytest.raises(ReviewSettingsError, match="does not resolve inside the schema"):
            ReviewSettings(schema=json.dumps(schema))
        line = json.dumps({"id": "a", "input": "x", "schema": schema}).encode()
        with pytest.raises(DatasetImportError, match="line 1: field 'schema'.*does not resolve inside"):
            parse_cases(line, "cases.jsonl")
        with pytest.raises(InvalidSchemaError, match="does not resolve inside"):  # a stored one, read back
            schema_validator(json.dumps(schema))
        assert server.hits == 0


@pytest.mark.parametrize("schema", SCHEMAS_THAT_PASS, ids=["plain", "defs", "draft7", "embedded-id", "anchor",
                                                           "recursive"])
def test_schemas_with_references_inside_still_work(schema: dict) -> None:
    import json

    from lib.review.checks.structured import schema_validator
    from lib.review.settings import ReviewSettings

    ReviewSettings(schema=json.dumps(schema))
    validator = schema_validator(json.dumps(schema))
    assert not validator.is_valid({"a": 1}) or schema.get("properties", {}).get("a") is None
    assert validator.is_valid({"a": "text", "next": {"a": "x"}})


@pytest.mark.slow
def test_cli_schema_with_remote_ref_exits_2_writes_nothing_fetches_nothing(db_url: str, engine, tmp_path) -> None:
    import json

    from conftest import FIXTURES
    from test_cli_data import assert_one_line_error, cli

    from lib.store.entities import Comparison, Dataset

    with _CountingServer() as server:
        schema_file = tmp_path / "schema.json"
        schema_file.write_text(json.dumps({"$ref": server.url}))
        proc = cli(db_url, "load", FIXTURES / "wide.csv", "--name", "w", "--schema", schema_file)
        assert_one_line_error(proc, "does not resolve inside the schema")
        cases = tmp_path / "cases.jsonl"
        cases.write_text(json.dumps({"id": "a", "input": "x", "schema": {"$ref": "file:///etc/passwd"}}) + "\n")
        proc = cli(db_url, "dataset", "import", cases, "--name", "d")
        assert_one_line_error(proc, "cases.jsonl, line 1", "does not resolve inside the schema")
        assert server.hits == 0
    from sqlmodel import Session, select

    with Session(engine) as s:
        assert s.exec(select(Comparison)).all() == [] and s.exec(select(Dataset)).all() == []
