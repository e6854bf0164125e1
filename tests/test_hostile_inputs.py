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


# ---------------------------------------------------------------- malformed files (sections 6 and 7)

def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _line(**fields: object) -> bytes:
    import json

    return (json.dumps({"id": "a", "input": "x", **fields}) + "\n").encode()


DATASET_FILES = [  # (id, filename, bytes, fragment of the one-line error)
    ("100k-deep-json", "d.jsonl", f'{{"id": "a", "input": {_deep(100_000)}}}\n'.encode(),
     "line 1: invalid JSON: nested more than 100 levels deep"),
    ("2k-deep-metadata", "d.jsonl", f'{{"id": "a", "input": "x", "metadata": {{"m": {_deep(2000)}}}}}\n'.encode(),
     "line 1: invalid JSON: nested more than 100 levels deep"),
    ("150-deep-metadata", "d.jsonl", f'{{"id": "a", "input": "x", "metadata": {{"m": {_deep(150)}}}}}\n'.encode(),
     "line 1: invalid JSON: nested more than 100 levels deep"),
    ("5000-digit-number", "d.jsonl", b'{"id": "a", "input": "x", "expected": ' + b"9" * 5000 + b"}\n",
     "line 1: invalid JSON: a number is too long (value has 5000 digits)"),
    ("lone-surrogate", "d.jsonl", b'{"id": "a", "input": "x\\ud800y"}\n',
     "line 1: invalid JSON: a string holds a lone"),
    ("lone-surrogate-json", "d.json", b'[{"id": "a", "input": "ok"}, {"id": "b", "input": "\\udfff"}]',
     "invalid JSON: a string holds a lone surrogate"),
    ("unbalanced-csv-quote", "d.csv", b'id,input\n1,ok\n2,"never closed\n3,swallowed\n4,too\n',
     "line 3: unbalanced quote"),
    ("latin-1", "d.csv", "id,input\n1,caf\u00e9\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9)"),
    ("utf-16", "d.jsonl", '{"id": "a", "input": "x"}\n'.encode("utf-16"), "is not UTF-8 text"),
    ("empty", "d.jsonl", b"  \n\n", "the file is empty"),
    ("not-objects", "d.json", b"[1, 2]", "expected a JSON object, got int"),
    ("broken-json-line", "d.jsonl", _line() + b'{"id": "b", "input": \n', "line 2: invalid JSON"),
    ("duplicate-header", "d.csv", b"id,input,input\n1,a,b\n", "duplicate column names: input"),
    ("too-many-cells", "d.csv", b"id,input\n1,a,b\n", "line 2: row has 3 cells but the header has 2"),
    ("unknown-extension", "d.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'"),
    ("regex-backref", "d.jsonl", _line(match="regex", pattern=r"(a)\1"), "backreferences"),
    ("regex-redos-too-long", "d.jsonl", _line(match="regex", pattern="a" * 10_001), "longer than 10,000"),
    ("schema-remote-ref", "d.jsonl", _line(schema={"$ref": "http://127.0.0.1:9/s.json"}),
     "does not resolve inside the schema"),
    ("schema-not-a-schema", "d.jsonl", _line(schema={"type": 5}), "is not a valid JSON Schema"),
    ("metadata-not-object", "d.jsonl", _line(metadata=[1]), "must be a JSON object"),
]

DATASET_FILES_THAT_PASS = [
    ("nul-in-csv-cell", "d.csv", b"id,input\n1,a\x00b\n", 1),
    ("utf-8-bom", "d.csv", "\ufeffid,input\n1,caf\u00e9\n".encode(), 1),
    ("quoted-multiline", "d.csv", b'id,input\n1,"two\nlines"\n2,"say ""hi"""\n', 2),
    ("inch-mark-unquoted", "d.csv", b'id,input\n1,a 5" screen\n2,ok\n', 2),
    ("paired-surrogates", "d.jsonl", b'{"id": "a", "input": "\\ud83d\\ude00"}\n', 1),
    ("u2028-in-string", "d.jsonl", '{"id": "a", "input": "x\u2028y"}\n'.encode(), 1),
    ("99-deep-metadata", "d.jsonl", f'{{"id": "a", "input": "x", "metadata": {{"m": {_deep(98)}}}}}\n'.encode(), 1),
    ("4000-digit-number", "d.jsonl", b'{"id": "a", "input": "x", "expected": ' + b"9" * 4000 + b"}\n", 1),
    ("local-schema-ref", "d.jsonl", _line(schema={"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}), 1),
    ("re2-pattern", "d.jsonl", _line(match="regex", pattern=r"(?i)^(\d+)\s*(?P<u>kg|g)$", expected="5"), 1),
]


@pytest.mark.parametrize(("filename", "data", "fragment"), [c[1:] for c in DATASET_FILES],
                         ids=[c[0] for c in DATASET_FILES])
def test_hostile_dataset_files_fail_cleanly_and_write_nothing(engine, filename: str, data: bytes,
                                                              fragment: str) -> None:
    from sqlalchemy import func
    from sqlmodel import Session, select

    from lib.data.golden import import_dataset
    from lib.store.entities import Case, Dataset

    with pytest.raises(ReviewInputError) as err:
        import_dataset(engine, data, filename, "hostile")
    message = str(err.value)
    assert fragment in message and "\n" not in message, message
    assert message.startswith(filename) and len(message) < 400
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(Dataset)).one() == 0
        assert s.exec(select(func.count()).select_from(Case)).one() == 0


@pytest.mark.parametrize(("filename", "data", "n_cases"), [c[1:] for c in DATASET_FILES_THAT_PASS],
                         ids=[c[0] for c in DATASET_FILES_THAT_PASS])
def test_unusual_but_valid_dataset_files_still_import(engine, filename: str, data: bytes, n_cases: int) -> None:
    from lib.data.golden import import_dataset

    assert import_dataset(engine, data, filename, "fine").n_cases == n_cases


def test_promptfoo_null_response_is_an_error_with_a_warning(engine) -> None:
    import json

    from conftest import FIXTURES
    from sqlmodel import Session, select

    from lib.data.loaders import load_recorded
    from lib.store.entities import Output

    lines = (FIXTURES / "promptfoo.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["response"] = None
    lines[0] = json.dumps(first)
    result = load_recorded(engine, "\n".join(lines).encode(), "results.jsonl", "pf")
    assert any("1 result(s) have `response: null` (first at line 1)" in w for w in result.warnings), result.warnings
    with Session(engine) as s:
        errors = [o for o in s.exec(select(Output)) if o.error]
    null = [(o.text, o.error) for o in errors if "null" in o.error]  # the fixture also has a recorded 429
    assert null == [(None, "no response recorded (promptfoo's `response` is null)")]


@pytest.mark.parametrize("which", ["file-as-directory", "query-options", "file-uri", "directory-as-file"])
def test_bad_database_urls_fail_cleanly_without_stray_files(which: str, tmp_path, monkeypatch) -> None:
    from lib.errors import StoreURLError
    from lib.store.engine import get_engine

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    url = {"file-as-directory": f"sqlite:///{tmp_path}/afile/review.db",
           "query-options": f"sqlite:///{tmp_path}/r.db?mode=ro",
           "file-uri": "sqlite:///file:r.db?mode=rwc&uri=true",
           "directory-as-file": f"sqlite:///{tmp_path}"}[which]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(StoreURLError, match="^DATABASE_URL: "):
        get_engine(url)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_disk_full_is_one_line_without_sql_or_case_data(tmp_path) -> None:
    from sqlalchemy import event

    from lib.store.engine import StoreFullError, get_engine, session_scope
    from lib.store.entities import Case, Dataset

    engine = get_engine(f"sqlite:///{tmp_path}/full.db")
    engine.dispose()
    event.listen(engine, "connect", lambda conn, _rec: conn.execute("PRAGMA max_page_count = 60"))
    with pytest.raises(StoreFullError) as err:
        with session_scope(engine) as s:
            ds = Dataset(name="d", content_hash="h", n_cases=1)
            s.add(ds)
            s.flush()
            s.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text="private case text " * 50)
                      for i in range(3000))
    message = str(err.value)
    assert "disk is full" in message and "\n" not in message
    assert "INSERT" not in message and "private case text" not in message
    from sqlmodel import Session, select
    with Session(engine) as s:
        assert s.exec(select(Dataset)).all() == []


def test_second_run_of_the_same_name_is_refused_before_any_call(engine, llm_server) -> None:
    from lib.run.runner import ModelSpec, RunInProgressError, RunOptions, run_comparison, run_lock
    from tests.test_runner import make_dataset

    make_dataset(engine, n=3)
    specs = {"baseline": ModelSpec("openai/base", api_base=llm_server.url),
             "candidate": ModelSpec("openai/cand", api_base=llm_server.url)}
    with run_lock(engine, "cmp"):  # the first run, still going
        with pytest.raises(RunInProgressError, match="'cmp' is being run by another process"):
            run_comparison(engine, dataset="golden", name="cmp", options=RunOptions(workers="in-process"), **specs)
    assert llm_server.calls() == 0
    done = run_comparison(engine, dataset="golden", name="cmp", options=RunOptions(workers="in-process"), **specs)
    assert done.baseline.succeeded == 3 and llm_server.calls() == 6  # once it is done, the name is free


@pytest.mark.parametrize("path", ["logs/a\x00b.csv", "x" * 5000, "y/" * 2000, "../../etc/passwd", "~nouser9/x"],
                         ids=["nul", "5000-chars", "deep", "outside", "tilde-user"])
def test_canary_log_paths_fail_cleanly(path: str, tmp_path) -> None:
    from lib.release.canary import CanaryInputError, resolve_log_path

    with pytest.raises(CanaryInputError, match="^no log file '") as err:
        resolve_log_path(path, tmp_path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


@pytest.mark.slow
def test_decide_without_passphrase_or_terminal_and_unknown_signer(engine, db_url: str, tmp_path) -> None:
    from gov_helpers import cli, pairs

    from lib.governance.decisions import set_owner
    from lib.governance.policy import create_policy
    from lib.governance.signing import create_key

    create_policy(engine, "strict", "alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n")
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    make_comparison(engine, "cmp", pairs(20))
    args = ("decide", "cmp", "--decision", "go", "--rationale", "ok", "--policy", "strict")
    unknown = cli(db_url, tmp_path / "keys", *args, "--signer", "mallory", passphrase=None, stdin="")
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
        "error: no key registered for 'mallory' (create one on the Decision page, or with "
        "`./review keys create mallory`)"]
    no_tty = cli(db_url, tmp_path / "keys", *args, "--signer", "alice", passphrase=None, stdin="")
    assert no_tty.returncode == 2 and no_tty.stderr.strip().splitlines() == [
        "error: no passphrase: set REVIEW_PASSPHRASE or run the command in a terminal"]


# ---------------------------------------------------------------- pages (section 5)

def test_datasets_page_escapes_column_and_file_names(engine) -> None:
    """A header `![c](http://...)` is shown as text: the caption holds the escaped form, no image markup."""
    from tests.page_helpers import router

    data = b'id,input,![c](http://127.0.0.1:8733/col.png),<img src=x onerror=alert(1)>\n1,a,b,c\n'
    at = router().run()
    at.switch_page("pages/datasets.py").run()
    at.file_uploader(key="datasets_upload").set_value(("![f](http://127.0.0.1:8733/f.png).csv", data,
                                                       "text/csv")).run()
    assert not at.exception, at.exception
    preview = next(c.value for c in at.caption if c.value.startswith("Preview:"))
    assert "\\!\\[c\\]\\(http://127\\.0\\.0\\.1:8733/col\\.png\\)" in preview
    assert "\\<img src=x onerror=alert\\(1\\)\\>" in preview
    import re

    assert not re.search(r"(?<!\\)(!\[|<img)", preview)  # no unescaped image markup or tag
