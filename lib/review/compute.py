"""The checks as pure functions of (output, case, settings): every per-output check of one side, the pair
values, the columns stored per output, and the store key that hashes exactly this code.

`checked_pairs(pairs, settings)` computes everything from a `load_pairs` frame from scratch: the reference
the stored path (`lib.review.checked`) is tested against."""
from __future__ import annotations

import hashlib
from functools import cache
from importlib import metadata
from pathlib import Path

import pandas as pd

from lib.review.checks import safety
from lib.review.checks.lengths import char_lengths, empty_flags, error_flags, truncation_flags, word_counts
from lib.review.checks.matching import match_outputs
from lib.review.checks.refusal import RefusalDetector
from lib.review.checks.safety import safety_checks
from lib.review.checks.similarity import similarity
from lib.review.checks.structured import json_checks, value_changes
from lib.review.settings import ReviewSettings
from lib.review.tokens import RunPrompt, token_checks
from lib.store.columns import to_json

# Bump to invalidate every stored result when what the checks return changes without a code change
# in CHECK_CODE (a dependency upgrade, say); code changes there invalidate by themselves.
CHECKS_VERSION = 1
NO_CATEGORY = "(none)"
RAW_COLUMNS = ("latency_s", "cost_usd", "completion_tokens")  # output fields the report uses as they are


LIB = Path(__file__).resolve().parents[1]
# The code whose output is stored: the checks (safety included), the red-team rules they apply, and the
# functions here and in tokens.py that compute stored values. Settings, the store and reports are not in
# it: editing them keeps every stored result valid.
CHECK_CODE = ("review/checks/*.py", "review/compute.py", "review/tokens.py", "redteam/families.py", "redteam/names.py",
              "redteam/constraints.py")


def check_code_files() -> list[Path]:
    return sorted(path for pattern in CHECK_CODE for path in LIB.glob(pattern))


@cache
def _code_version() -> str:
    """Hash of the check code and the libraries it leans on: any change invalidates stored results."""
    digest = hashlib.sha256()
    for path in check_code_files():
        digest.update(path.relative_to(LIB).as_posix().encode() + path.read_bytes())
    digest.update(f"safety={getattr(safety, 'SAFETY_CHECKS_VERSION', 0)}".encode())
    for lib in ("jsonschema", "rapidfuzz", "pyarrow", "pandas", "py3langid"):
        digest.update(f"{lib}={metadata.version(lib)}".encode())
    return digest.hexdigest()


def settings_key(settings: ReviewSettings) -> str:
    """The store key of per-output results: settings, check code and CHECKS_VERSION."""
    raw = to_json({"settings": settings.as_dict(), "code": _code_version(), "version": CHECKS_VERSION})
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def pairs_key(settings: ReviewSettings | None = None) -> str:
    """The store key of pair values: check code, plus the review schema when one applies (it decides
    which pairs have a contract to compare)."""
    schema = f"/{settings.schema}" if settings is not None and settings.schema else ""
    return "pairs-" + hashlib.sha256(f"{_code_version()}/{CHECKS_VERSION}{schema}".encode()).hexdigest()[:26]


# ---------------------------------------------------------------- the checks (pure)

def side_checks(frame: pd.DataFrame, side: str, settings: ReviewSettings, detector: RefusalDetector | None = None,
                values: dict | None = None) -> dict[str, pd.Series]:
    """Every per-output check of one side (`b`/`c` columns of a pairs frame), named `{side}_{check}`.
    `values` (optional) receives the parsed JSON of outputs with a schema (index label -> value)."""
    detector = detector or RefusalDetector(settings.refusal_patterns)
    rule = pd.Series(settings.match, index=frame.index) if settings.match else frame["match"]
    pattern = pd.Series(settings.pattern, index=frame.index) if settings.match else frame["pattern"]
    text = frame[f"{side}_text"]
    validity = json_checks(text, case_schemas(frame, settings), values)
    refused = detector.flags(text)
    return {
        f"{side}_refused": refused,
        f"{side}_correct": match_outputs(text, frame["expected"], rule, pattern),
        f"{side}_json_strict": validity["strict"],
        f"{side}_json_lenient": validity["lenient"],
        f"{side}_truncated": truncation_flags(frame[f"{side}_finish_reason"]),
        f"{side}_errored": error_flags(frame[f"{side}_error"], text),
        f"{side}_empty": empty_flags(text),
        f"{side}_len_chars": char_lengths(text),
        f"{side}_len_words": word_counts(text),
        **safety_checks(frame, side, refused),
        f"{side}_json_found": validity["found"],  # for the contract: some JSON value was found
    }


def case_schemas(frame: pd.DataFrame, settings: ReviewSettings) -> pd.Series:
    """Each case's JSON Schema, or the settings' schema where the case has none."""
    schemas = frame["json_schema"]
    return schemas.where(schemas.notna(), settings.schema) if settings.schema else schemas


def pair_values(b_text: pd.Series, c_text: pd.Series, has_schema: pd.Series, b_json: list,
                c_json: list) -> pd.DataFrame:
    """Similarity, and contract changes (JSON list) where the case has a schema and both sides carry JSON
    (`b_json`/`c_json`: each output's `parse_lenient` value, aligned; None where there is none)."""
    contract = [value_changes(b, c) if schema else None
                for b, c, schema in zip(b_json, c_json, has_schema.to_numpy(dtype=bool))]
    return pd.DataFrame({"similarity": similarity(b_text, c_text),
                         "contract": pd.Series(contract, index=b_text.index, dtype=object)})


def checked_pairs(pairs: pd.DataFrame, settings: ReviewSettings = ReviewSettings(),
                  tokenizers: dict[str, RunPrompt] | None = None) -> pd.DataFrame:
    """The `load_pairs` frame plus every check, computed from scratch (no store). Token columns need each
    side's run (`tokenizers`, see `run_prompts`); without, they are NA."""
    detector = RefusalDetector(settings.refusal_patterns)
    has_schema = case_schemas(pairs, settings).notna()
    parsed: dict[str, dict] = {"b": {}, "c": {}}
    columns = {**side_checks(pairs, "b", settings, detector, parsed["b"]),
               **side_checks(pairs, "c", settings, detector, parsed["c"]), "has_schema": has_schema}
    for side in "bc":
        tokens = token_checks(pairs, side, (tokenizers or {}).get(side), settings)
        missing = pairs[f"{side}_id"].isna()  # no output on this side: nothing was sent to count
        columns.update({name: values.mask(missing) for name, values in tokens.items()})
    b_json, c_json = ([parsed[side].get(label) for label in pairs.index] for side in "bc")
    columns.update(pair_values(pairs["b_text"], pairs["c_text"], has_schema, b_json, c_json))
    out = pd.concat([pairs, pd.DataFrame(columns, index=pairs.index)], axis=1)
    out["category"] = out["category"].fillna(NO_CATEGORY)
    return out


def check_outputs(raw: pd.DataFrame, settings: ReviewSettings, parsed: dict | None = None,
                   prompt: RunPrompt | None = None) -> pd.DataFrame:
    """Stored columns for freshly read outputs: case columns, check columns, raw report columns."""
    checks = {**side_checks(raw, "b", settings, values=parsed), **token_checks(raw, "b", prompt, settings)}
    out = pd.DataFrame({"output_id": raw["output_id"].astype("int64"), "case_id": raw["case_id"].astype("int64"),
                        "repeat": raw["repeat"].astype("int64"), "case_key": raw["case_key"].astype(str),
                        "position": raw["position"].astype("int64"), "category": raw["category"],
                        "has_schema": case_schemas(raw, settings).notna()})
    for col in RAW_COLUMNS:
        out[col] = pd.to_numeric(raw[f"b_{col}"]).astype("Float64" if col != "completion_tokens" else "Int64")
    for name, values in checks.items():
        out[name[2:]] = values
    return out


