"""Per-output checks: matching, structured output, lengths, similarity and diffs."""
from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path

import pandas as pd
import pytest

from lib.errors import ReviewInputError
from lib.review.checks import InvalidMatchRuleError, InvalidPatternError, InvalidSchemaError
from lib.review.checks.lengths import (
    METHOD_FALLBACK,
    METHOD_LITELLM,
    char_lengths,
    error_flags,
    token_counts,
    truncation_flags,
    word_counts,
)
from lib.review.checks.matching import first_number, match_outputs, normalize
from lib.review.checks.refusal import RefusalDetector
from lib.review.checks.similarity import diff_html, similarity, word_diff
from lib.review.checks.structured import (
    KeyChange,
    contract_diff,
    json_checks,
    json_validity,
    key_diff,
    pair_changes,
    parse_lenient,
    schema_validator,
    value_changes,
)


def match_one(output: str | None, expected: str | None, rule: str | None = None,
              pattern: str | None = None, **kwargs) -> object:
    series = match_outputs(pd.Series([output], dtype=object), pd.Series([expected], dtype=object),
                           pd.Series([rule], dtype=object), pd.Series([pattern], dtype=object), **kwargs)
    value = series.iloc[0]
    return value if value is pd.NA else bool(value)


# ---- matching ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("output", "expected", "rule", "want"), [
    ("Paris\n", "Paris", "exact", True),
    ("paris", "Paris", "exact", False),
    ("Paris.", "paris", "normalized", True),
    ("U.S.A.", "usa", "normalized", True),
    ("\uff30\uff41\uff52\uff49\uff53", "paris", "normalized", True),  # full-width letters (NFKC)
    ("New   York", "new york", "normalized", True),
    ("The capital is Paris.", "Paris", "normalized", False),
    ("The capital is PARIS!", "paris", "contains", True),
    ("The capital is Lyon.", "paris", "contains", False),
    ("All good here.", "ZEBRA-42", "not_contains", True),
    ("leaked: zebra-42", "ZEBRA-42", "not_contains", False),
    ("C++ and C", "c", "normalized", False),  # symbols are not punctuation: "c++" stays "c++"
])
def test_text_rules(output: str, expected: str, rule: str, want: bool) -> None:
    assert match_one(output, expected, rule) is want


@pytest.mark.parametrize("rule", [None, "", "  "])
def test_default_rule_is_normalized(rule: str | None) -> None:
    assert match_one("Paris!", "paris", rule) is True
    assert match_one("It is Paris", "paris", rule) is False


def test_rule_names_are_case_insensitive() -> None:
    assert match_one("a", "A", "Normalized") is True


@pytest.mark.parametrize(("output", "pattern", "expected", "want"), [
    ("Answer: (b) because ...", r"Answer:\s*\(?([a-d])\)?", "B", True),
    ("Answer: (c)", r"Answer:\s*\(?([a-d])\)?", "B", False),
    ("no answer line", r"Answer:\s*([a-d])", "b", False),
    ("Total: 42 apples", r"\d+ apples", "42 APPLES", True),  # no group: the whole match
    ("first x1 then x2", r"x(\d)", "1", True),  # the first match only
])
def test_regex_rule(output: str, pattern: str, expected: str, want: bool) -> None:
    assert match_one(output, expected, "regex", pattern) is want


@pytest.mark.parametrize(("output", "expected", "want"), [
    ("The result is -3.", "-3", True),
    ("It costs 1,234.5 dollars", "1234.5", True),
    ("about 3.0e5 particles", "300000", True),
    ("Growth was 12% this year", "12", True),
    ("Growth was 12% this year", "12%", True),
    ("\u22123 degrees", "-3", True),  # Unicode minus
    ("between 10 and 20", "20", False),  # the first number counts
    ("no digits here", "3", False),
    ("0.1 + 0.2 = 0.30000000000000004", "0.1", True),
    ("x = 1.0000001", "1", True),  # within the default absolute tolerance 1e-6
    ("x = 1.00001", "1", False),
])
def test_numeric_rule(output: str, expected: str, want: bool) -> None:
    assert match_one(output, expected, "numeric") is want


def test_numeric_tolerance_can_be_given() -> None:
    assert match_one("3.14", "3.14159", "numeric") is False
    assert match_one("3.14", "3.14159", "numeric", tolerance=0.01) is True
    assert match_one("1000001", "1000000", "numeric", tolerance=0.0, rel_tolerance=1e-5) is True


def test_first_number() -> None:
    assert first_number("v = -1,234.50e1 m") == -12345.0
    assert first_number(".5 cups") == 0.5
    assert first_number("none") is None


def test_normalize() -> None:
    assert normalize("  \u00bfQu\u00c9?  \u2014 Hello,\tWORLD!! ") == "qué hello world"


def test_not_applicable_without_expected_answer() -> None:
    for rule in ("exact", "normalized", "contains", "not_contains", "regex", "numeric", None):
        assert match_one("anything", None, rule, "x") is pd.NA


def test_missing_output_is_na_not_false() -> None:
    assert match_one(None, "Paris", "exact") is pd.NA
    assert match_one(None, "secret", "not_contains") is pd.NA


def test_match_outputs_keeps_index_and_mixes_rules() -> None:
    idx = ["a", "b", "c", "d"]
    result = match_outputs(
        pd.Series(["Paris", "42 apples", "x", None], index=idx),
        pd.Series(["paris", "42", None, "y"], index=idx),
        pd.Series([None, "numeric", "exact", "exact"], index=idx),
        pd.Series([None, None, None, None], index=idx),
    )
    assert str(result.dtype) == "boolean"
    assert result.index.tolist() == idx
    assert result.tolist() == [True, True, pd.NA, pd.NA]


@pytest.mark.parametrize(("rule", "pattern", "expected", "error"), [
    ("fuzzy", None, "a", InvalidMatchRuleError),
    ("regex", None, "a", InvalidMatchRuleError),
    ("regex", "(unclosed", "a", InvalidPatternError),
    ("numeric", None, "forty-two", InvalidMatchRuleError),
])
def test_bad_case_configuration_is_a_named_input_error(rule: str, pattern: str | None, expected: str,
                                                       error: type[Exception]) -> None:
    with pytest.raises(error) as err:
        match_one("output 42", expected, rule, pattern)
    assert isinstance(err.value, ReviewInputError)


# ---- structured output ---------------------------------------------------------------------------

SCHEMA = json.dumps({
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
})


@pytest.mark.parametrize(("output", "strict", "lenient"), [
    ('{"name": "Ada", "age": 36}', True, True),
    ('  {"name": "Ada", "age": 36}\n', True, True),
    ('Sure!\n```json\n{"name": "Ada", "age": 36}\n```', False, True),
    ('```\n{"name": "Ada", "age": 36}\n```', False, True),
    ('Here you go [1]: {"name": "Ada", "age": 36} - hope it helps', False, True),
    ('The record is {"name": "Ada", "age": "36"}.', False, False),  # wrong type
    ('{"name": "Ada"}', False, False),  # required key missing
    ("I don't know who that is.", False, False),
    ('{"name": "Ada", "age": 36', False, False),  # unbalanced
])
def test_strict_and_lenient(output: str, strict: bool, lenient: bool) -> None:
    result = json_validity(pd.Series([output]), pd.Series([SCHEMA]))
    assert (result["strict"][0], result["lenient"][0]) == (strict, lenient)


def test_lenient_finds_an_embedded_array() -> None:
    schema = json.dumps({"type": "array", "items": {"type": "integer"}})
    result = json_validity(pd.Series(["The ids are [1, 2, 3]."]), pd.Series([schema]))
    assert result.iloc[0].tolist() == [False, True]


def test_validity_is_na_without_schema_or_output() -> None:
    result = json_validity(pd.Series(['{"a": 1}', None]), pd.Series([None, SCHEMA]))
    assert result.isna().all().all()
    assert result["strict"].dtype == "boolean"


@pytest.mark.parametrize("schema", ['{"type": "object"', '{"type": "no-such-type"}'])
def test_invalid_schema_is_a_named_input_error(schema: str) -> None:
    with pytest.raises(InvalidSchemaError):
        json_validity(pd.Series(["{}"]), pd.Series([schema]))


def test_validator_is_built_once_per_schema() -> None:
    assert schema_validator(SCHEMA) is schema_validator(SCHEMA)


def test_parse_lenient() -> None:
    assert parse_lenient('{"a": 1}') == {"a": 1}
    assert parse_lenient('Result:\n```json\n{"a": [1, {"b": "}"}]}\n```') == {"a": [1, {"b": "}"}]}
    assert parse_lenient("no json here") is None


def test_key_diff_kinds() -> None:
    baseline = {"user_name": "ada", "age": 36, "city": "London", "tags": ["x"], "score": 5,
                "items": [{"sku": "A1", "qty": 1}], "address": {"zip": "N1", "street": "Main"}}
    candidate = {"userName": "ada", "age": "36", "tags": ["x"], "score": 5.0, "country": "UK",
                 "items": [{"sku": "A1", "quantity": 1}], "address": {"zip": "N1"}}
    changes = set(key_diff(baseline, candidate))
    assert changes == {
        KeyChange("user_name", "renamed", "user_name -> userName"),
        KeyChange("age", "type_changed", "number -> string"),
        KeyChange("city", "missing"),
        KeyChange("country", "extra"),
        KeyChange("items[].qty", "renamed", "qty -> quantity"),
        KeyChange("address.street", "missing"),
    }  # 5 -> 5.0 is the same JSON type: not a change


def test_rename_by_same_value() -> None:
    assert key_diff({"total": "12.50 EUR"}, {"amount": "12.50 EUR"}) == [
        KeyChange("total", "renamed", "total -> amount")]
    # an uninformative value (null, booleans) does not make two unrelated keys the same field
    assert set(key_diff({"done": True}, {"flag": True})) == {KeyChange("done", "missing"),
                                                             KeyChange("flag", "extra")}


def test_root_type_change_and_bool_vs_number() -> None:
    assert key_diff({"a": 1}, [1]) == [KeyChange("$", "type_changed", "object -> array")]
    assert key_diff({"a": True}, {"a": 1}) == [KeyChange("a", "type_changed", "boolean -> number")]


def test_contract_diff_aggregates_over_cases() -> None:
    b = pd.Series([json.dumps({"id": 1, "name": "a"}), json.dumps({"id": 2, "name": "b"}), "not json",
                   json.dumps({"id": 3, "name": "c"})], index=[10, 11, 12, 13])
    c = pd.Series([json.dumps({"id": "1", "full_name": "a"}), json.dumps({"id": 2, "name": "b"}),
                   json.dumps({"id": 9}), 'ok ```json\n{"id": "3", "name": "c", "extra": 1}\n```'],
                  index=[10, 11, 12, 13])
    diff = contract_diff(b, c)
    assert (diff["n_pairs"], diff["n_compared"], diff["n_changed"]) == (4, 3, 2)
    assert diff["unparsed"] == {"baseline": 1, "candidate": 0}
    by_key = {(ch["path"], ch["kind"]): ch for ch in diff["changes"]}
    assert by_key[("id", "type_changed")]["count"] == 2
    assert by_key[("id", "type_changed")]["examples"] == [10, 13]
    assert by_key[("id", "type_changed")]["details"] == {"number -> string": 2}
    assert by_key[("name", "renamed")]["details"] == {"name -> full_name": 1}
    assert by_key[("extra", "extra")]["examples"] == [13]
    assert diff["changes"][0]["count"] == 2  # most frequent first


LENIENT_CASES = ['{"name": "Ada", "age": 36}', '{"name": "Ada"}', "null", " [1, 2] ", "no json", "",
                 'Sure:\n```json\n{"name": "Ada", "age": 36}\n```', '```\n{"a": 1}\n``` then {"name": "B", "age": 2}',
                 '{"name": "Ada", "age": "36"} and [{"name": "C", "age": 3}]', '```json\nnull\n```',
                 '{"broken": ', '```json\n{"a": 1}\n``` and again {"a": 1}']


def test_json_checks_found_and_values_agree_with_parse_lenient() -> None:
    outputs = pd.Series(LENIENT_CASES + [None])
    values: dict = {}
    result = json_checks(outputs, pd.Series([SCHEMA] * len(outputs)), values)
    for i, text in enumerate(LENIENT_CASES):
        assert values[i] == parse_lenient(text), text
        assert bool(result["found"][i]) is (parse_lenient(text) is not None), text
    assert result.iloc[-1].isna().all() and len(values) == len(LENIENT_CASES)
    pd.testing.assert_frame_equal(result[["strict", "lenient"]], json_validity(outputs, pd.Series([SCHEMA] * 13)))


@pytest.mark.parametrize("text", LENIENT_CASES)
def test_lenient_is_any_embedded_value_valid(text: str) -> None:
    """Reference: the module doc's rule spelled out, without the skipping of values tried already."""
    validator, decoder = schema_validator(SCHEMA), json.JSONDecoder()
    values = []
    for source in [text, *re.findall(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", text, re.DOTALL)]:
        try:
            values.append(json.loads(source))
        except json.JSONDecodeError:
            pass
    for opener in "{[":  # the first balanced object, the first balanced array
        for start in [i for i, ch in enumerate(text) if ch == opener]:
            try:
                values.append(decoder.raw_decode(text, start)[0])
                break
            except json.JSONDecodeError:
                continue
    want = any(validator.is_valid(v) for v in values)
    assert bool(json_validity(pd.Series([text]), pd.Series([SCHEMA]))["lenient"][0]) is want


def test_pair_changes_are_the_key_diff() -> None:
    b, c = '{"id": 1, "name": "a"}', 'ok ```json\n{"id": "1", "full_name": "a"}\n```'
    assert json.loads(pair_changes(b, c)) == [[ch.path, ch.kind, ch.detail]
                                              for ch in key_diff(parse_lenient(b), parse_lenient(c))]
    assert pair_changes(b, "no json") is None and pair_changes(None, b) is None
    assert value_changes({"a": 1}, {"a": 1}) == "[]"


def test_refusal_flags_check_each_distinct_text_once_with_the_same_verdicts() -> None:
    texts = ["I'm sorry, but I can't help with that.", "Sure, here it is.", None, "I cannot assist with that."] * 5
    detector = RefusalDetector()
    flags = detector.flags(pd.Series(texts))
    assert flags.tolist() == [pd.NA if t is None else detector.is_refusal(t) for t in texts]
    assert flags.sum() == 10


# ---- lengths, truncation, errors -----------------------------------------------------------------

def test_char_and_word_counts() -> None:
    texts = pd.Series(["hello world", "", None, " a\tb\nc "])
    assert char_lengths(texts).tolist() == [11, 0, pd.NA, 7]
    assert word_counts(texts).tolist() == [2, 0, pd.NA, 3]
    assert word_counts(pd.Series(["a b", "c"])).tolist() == [2, 1]  # no missing value at all


def test_truncation_and_error_flags() -> None:
    assert truncation_flags(pd.Series(["length", "stop", None, "MAX_TOKENS", "tool_calls"])).tolist() == [
        True, False, pd.NA, True, False]
    errors = pd.Series(["rate limited", None, None])
    texts = pd.Series([None, "an answer", None])
    assert error_flags(errors, texts).tolist() == [True, False, pd.NA]


def test_token_counts_through_litellm() -> None:
    import litellm

    texts = pd.Series(["Hello, world!", None, "Hello, world!", "A longer sentence with more tokens."])
    result = token_counts(texts, "gpt-4o")
    assert result.method == METHOD_LITELLM
    assert result.counts[1] is pd.NA
    assert result.counts[0] == litellm.token_counter(model="gpt-4o", text="Hello, world!")
    assert result.counts[3] > result.counts[0]


@pytest.mark.timeout(30)
def test_token_counts_fall_back_without_blocking_on_a_hub_download() -> None:
    import tiktoken

    text = "Bonjour \u00e0 tous, ceci est un test."
    result = token_counts(pd.Series([text]), "meta-llama/Llama-3-8b-instruct")
    assert result.method == METHOD_FALLBACK
    assert result.counts[0] == len(tiktoken.get_encoding("cl100k_base").encode_ordinary(text))


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4", "openai/my-local-model"])
def test_token_counts_are_litellms_own_counts(model: str) -> None:
    import litellm

    texts = pd.Series(["Hello <|endoftext|> world", "注文番号 1234 の配送状況", "plain words " * 40, None])
    result = token_counts(texts, model)
    assert result.method == METHOD_LITELLM
    assert result.counts[:3].tolist() == [litellm.token_counter(model=model, text=t) for t in texts[:3]]
    assert result.counts[3] is pd.NA


def test_tiktoken_table_counts_exactly_as_litellm() -> None:
    """Models of tiktoken_models.json are counted without litellm: the counts must be litellm's own, for the
    installed version (a table made from another version is ignored), on texts the table was not made with."""
    import litellm

    from lib.review.checks.lengths import _tiktoken_table, tiktoken_encoding_name

    table = _tiktoken_table()
    assert table, "tiktoken_models.json is not from the installed litellm: run scripts/tiktoken_models.py"
    models = ["gpt-4o", "gpt-4.1", "gpt-4", "gpt-3.5-turbo", "gpt-4o-mini", "openai/gpt-4o",
              *random.Random(3).sample(sorted(table), 40)]
    texts = pd.Series(["Hello <|endoftext|> world <|fim_prefix|>", "注文番号 1234 の配送状況", "plain words " * 40,
                       "  leading and trailing  \n\n", "emoji \U0001f600 and ñ", "{\"json\": [1, 2.5, null]}", None])
    for model in models:
        assert tiktoken_encoding_name(model) is not None, model
        result = token_counts(texts, model)
        assert result.method == METHOD_LITELLM
        assert result.counts[:6].tolist() == [litellm.token_counter(model=model, text=t) for t in texts[:6]], model
    assert tiktoken_encoding_name("meta-llama/Llama-3-8b-instruct") is None  # a Hugging Face tokenizer
    assert tiktoken_encoding_name("claude-3-haiku-20240307") in (None, "cl100k_base")


@pytest.mark.slow
def test_counting_a_tabled_model_does_not_import_litellm() -> None:
    import subprocess
    import sys

    code = ("import sys, pandas as pd; from lib.review.checks.lengths import token_counts; "
            "print(token_counts(pd.Series(['Hello, world!']), 'gpt-4o').counts[0], 'litellm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}).stdout.split()
    assert out == ["4", "False"]


@pytest.mark.slow
def test_a_model_the_table_lacks_is_learned_once_then_counted_without_litellm(tmp_path) -> None:
    """A local model's name: the first count goes through litellm and remembers its encoding (per litellm
    version); a later process counts it with tiktoken alone, with litellm's own counts."""
    import subprocess
    import sys

    import litellm

    from lib.review.checks.lengths import _litellm_version

    texts = ["Hello, world!", "注文番号 1234 の配送状況", "plain words " * 30]
    code = ("import sys, json, pandas as pd; from lib.review.checks.lengths import token_counts; "
            f"c = token_counts(pd.Series({texts!r}), 'openai/my-local-model-7b'); "
            "print(json.dumps([c.counts.tolist(), c.method, 'litellm' in sys.modules]))")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "REVIEW_CACHE_DIR": str(tmp_path / "cache"),
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}

    def count() -> list:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              cwd=Path(__file__).resolve().parent.parent,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    expected = [litellm.token_counter(model="openai/my-local-model-7b", text=t) for t in texts]
    assert count() == [expected, METHOD_LITELLM, True]
    learned = json.loads((tmp_path / "cache" / "tiktoken_learned.json").read_text())
    assert learned["litellm"] == _litellm_version() and "openai/my-local-model-7b" in learned["models"]
    assert count() == [expected, METHOD_LITELLM, False]
    learned["litellm"] = "0.0.1"  # learned under another litellm: ignored, learned again
    (tmp_path / "cache" / "tiktoken_learned.json").write_text(json.dumps(learned))
    assert count() == [expected, METHOD_LITELLM, True]


# ---- similarity and diffs ------------------------------------------------------------------------

def test_similarity() -> None:
    a = pd.Series(["same text", "abcd", "completely", None, "x"])
    b = pd.Series(["same text", "abce", "qxzv", "y", None])
    sim = similarity(a, b)
    assert str(sim.dtype) == "Float64"
    assert sim[0] == 1.0 and sim[1] == pytest.approx(0.75) and sim[2] < 0.3
    assert sim[3] is pd.NA and sim[4] is pd.NA
    assert similarity(b[:3], a[:3]).tolist() == sim[:3].tolist()  # symmetric


def _random_text(rng: random.Random) -> str:
    pieces = ["the", "cat", "sat", "Mat", "d\u00e9j\u00e0", "\u65e5\u672c", "42", " ", "  ", "\n", "\t",
              ",", ".", "!", "<b>", "&amp;", "\U0001f600"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))


def test_word_diff_reconstructs_both_texts() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a, b = _random_text(rng), _random_text(rng)
        ops = word_diff(a, b)
        assert "".join(op[1] for op in ops) == a
        assert "".join(op[2] for op in ops) == b
        assert all(tag in {"equal", "replace", "delete", "insert"} for tag, _, _ in ops)
        assert all(x == y for tag, x, y in ops if tag == "equal")


def test_word_diff_groups_words() -> None:
    assert word_diff("one two three four", "one five six four") == [
        ("equal", "one ", "one "), ("replace", "two three", "five six"), ("equal", " four", " four")]


@pytest.mark.parametrize("payload", ["<img src=x onerror=alert(1)>", "<script>alert('x')</script>"])
def test_diff_html_escapes_untrusted_text(payload: str) -> None:
    a, b = f"Hello {payload} world", f"Hello there {payload}"
    left, right = diff_html(a, b)
    for fragment, original in ((left, a), (right, b)):
        assert "<img" not in fragment and "<script" not in fragment
        tags = re.findall(r"</?[a-z]+[^>]*>", fragment)
        assert all(re.fullmatch(r'<(del|ins) class="diff-(del|ins)">|</(del|ins)>', t) for t in tags)
        assert html.unescape(re.sub(r"</?(del|ins)[^>]*>", "", fragment)) == original
    assert "<del" in left and "<ins" in right


def test_a_model_name_litellm_chokes_on_falls_back_instead_of_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm
    import tiktoken

    def broken(**_: object) -> int:
        raise ValueError("unsupported model")

    monkeypatch.setattr(litellm, "token_counter", broken)
    result = token_counts(pd.Series(["some words here"]), "weird/model@v?")
    assert result.method == METHOD_FALLBACK
    assert result.counts[0] == len(tiktoken.get_encoding("cl100k_base").encode_ordinary("some words here"))
