"""Drift analysis: are the candidate's outputs distributed differently from the baseline's, beyond the
per-case checks? And have the logged inputs shifted between two windows?

Output drift compares the baseline's outputs (reference) with the candidate's (current) on the cases
both sides answered, so a different case mix cannot pass for drift. Descriptors: length, word,
sentence and non-letter counts (Evidently), the refusal flag and strict JSON validity (lib.review.checks),
reviewer regex descriptors (searched, 1 = found), VADER sentiment when NLTK's lexicon is installed;
plus the raw text (domain classifier) and optionally embeddings. Methods: lib.drift.evidently_report.

Results are stored with the comparison (lib.drift.entities.DriftResult); `latest_drift` is what the gate
and the decision record read, with a digest of the summary they cite.
"""
from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.data.golden import get_dataset
from lib.drift.embeddings import embed_texts, require_available
from lib.drift.entities import DriftResult
from lib.errors import DatasetNotFound, NotFoundError, ReviewInputError
from lib.review.checks.patterns import compile_user_pattern
from lib.review.checks.refusal import RefusalDetector
from lib.review.checks.structured import json_validity
from lib.review.comparisons import comparison_runs, get_comparison, load_pairs
from lib.review.labels import label_overrides
from lib.run.redact import strip_url_credentials
from lib.store.audit import as_utc
from lib.store.columns import from_json, to_json
from lib.store.engine import session_scope
from lib.store.entities import Comparison

if TYPE_CHECKING:  # Evidently takes seconds to import: only analyses load it, never a page showing a result
    from lib.drift.evidently_report import DriftRun, Sample

NO_EMBEDDINGS = "none"
MIN_ROWS = 10  # per side; below this every test is noise (and the text classifier cannot split)
ANY_JSON_SCHEMA = "{}"  # cases without a schema: strict validity = the output parses as JSON
VADER_LEXICON = "sentiment/vader_lexicon.zip"
_REGEX_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
OUTPUT_FLAGS = ("refusal", "json_valid")

Progress = Callable[[str], None]


class DriftInputError(ReviewInputError):
    """Drift cannot run on what was given: too few outputs, a bad descriptor, no timestamps."""


@dataclass
class DriftOptions:
    embeddings: str = NO_EMBEDDINGS  # none | local | any litellm embedding model
    api_base: str | None = None
    regex: dict[str, str] = field(default_factory=dict)  # descriptor name -> pattern (searched)

    def validate(self) -> None:
        for name, pattern in self.regex.items():
            if not _REGEX_NAME.fullmatch(name):
                raise DriftInputError(f"regex descriptor name {name!r}: use letters, digits and _ "
                                      "(start with a letter, at most 40)")
            compile_user_pattern(pattern, what=f"regex descriptor '{name}'")
        if self.embeddings != NO_EMBEDDINGS:
            require_available(self.embeddings)


def parse_regex(items: list[str]) -> dict[str, str]:
    """`NAME=PATTERN` items (the CLI's repeatable --regex) as a dict."""
    pairs = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or not pattern:
            raise DriftInputError(f"--regex {item!r}: expected NAME=PATTERN")
        pairs[name.strip()] = pattern
    return pairs


# ---- output drift ---------------------------------------------------------------------------------
def output_drift(engine: Engine, comparison: str, options: DriftOptions,
                 progress: Progress | None = None) -> DriftRun:
    """Candidate outputs (current) against baseline outputs (reference) on the cases both answered."""
    options.validate()
    with Session(engine) as session:
        settings = from_json(get_comparison(session, comparison).settings_json) or {}
    pairs = load_pairs(engine, comparison)
    pairs = pairs[pairs["b_text"].notna() & pairs["c_text"].notna()].reset_index(drop=True)
    _require_rows(len(pairs), f"comparison '{comparison}' has {len(pairs)} cases with outputs on both sides")
    detector = RefusalDetector(settings.get("refusal_patterns") or ())
    runs = comparison_runs(engine, comparison)  # reviewer labels override the refusal rule here too
    samples = [_sample(pairs[f"{side}_text"].astype(str), options.regex, detector, pairs["json_schema"],
                       label_overrides(engine, runs, pairs[f"{side}_id"]))
               for side in ("b", "c")]
    _embed(engine, samples, options, progress)
    _say(progress, f"running the drift report on {len(pairs)} pairs")
    from lib.drift.evidently_report import run_report

    return run_report(samples[0], samples[1], categorical=_flag_columns(options))


def _sample(texts: pd.Series, regex: dict[str, str], detector: RefusalDetector | None = None,
            schemas: pd.Series | None = None, labels: pd.Series | None = None) -> Sample:
    from lib.drift.evidently_report import Sample

    extra = pd.DataFrame(index=texts.index)
    if detector is not None:
        flags = detector.flags(texts)
        extra["refusal"] = (flags if labels is None else labels.where(labels.notna(), flags)).astype(int)
        extra["json_valid"] = json_validity(texts, schemas.fillna(ANY_JSON_SCHEMA))["strict"].astype(int)
    for name, pattern in regex.items():  # RE2, linear time: a stored hostile pattern cannot hang the report
        compiled = compile_user_pattern(pattern, what=f"regex descriptor '{name}'")
        extra[f"regex_{name}"] = [int(compiled.search(t) is not None) for t in texts]
    sentiment = _sentiment(texts)
    if sentiment is not None:
        extra["sentiment"] = sentiment
    return Sample(texts, extra)


def _flag_columns(options: DriftOptions) -> list[str]:
    """The 0/1 columns (tested as categories); names absent from a sample are ignored."""
    return list(OUTPUT_FLAGS) + [f"regex_{name}" for name in options.regex]


def _sentiment(texts: pd.Series) -> pd.Series | None:
    """VADER compound score, only when NLTK's lexicon is installed: it is never downloaded here."""
    import nltk

    try:
        nltk.data.find(VADER_LEXICON)
    except LookupError:
        return None
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return texts.map(lambda t: analyzer.polarity_scores(t)["compound"])


def _embed(engine: Engine, samples: list[Sample], options: DriftOptions, progress: Progress | None) -> None:
    if options.embeddings == NO_EMBEDDINGS:
        return
    texts = [t for s in samples for t in s.texts]
    vectors = embed_texts(engine, texts, options.embeddings, options.api_base, progress)
    samples[0].embeddings, samples[1].embeddings = vectors[:len(samples[0].texts)], vectors[len(samples[0].texts):]


def _require_rows(n: int, what: str) -> None:
    if n < MIN_ROWS:
        raise DriftInputError(f"{what}; drift analysis needs at least {MIN_ROWS}")


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


# ---- storage --------------------------------------------------------------------------------------
@dataclass
class StoredDrift:
    id: int
    created_at: datetime
    options: dict[str, Any]
    summary: dict[str, Any]
    details: dict[str, Any]
    digest: str


def store_drift(engine: Engine, comparison: str, options: DriftOptions, run: DriftRun) -> StoredDrift:
    summary_json = to_json(run.summary)
    stored_options = {**asdict(options), "api_base": strip_url_credentials(options.api_base)}  # no key stored
    with session_scope(engine) as session:
        row = DriftResult(comparison_id=get_comparison(session, comparison).id,
                          options_json=to_json(stored_options), summary_json=summary_json,
                          digest=hashlib.sha256(summary_json.encode()).hexdigest(),
                          details_json=to_json(run.details),
                          report_html_gz=gzip.compress(run.html.encode(), compresslevel=6))
        session.add(row)
        session.flush()
        return _stored(row.id, row.created_at, row.options_json, row.summary_json, row.details_json, row.digest)


def analyze_comparison(engine: Engine, comparison: str, options: DriftOptions,
                       progress: Progress | None = None) -> tuple[DriftRun, StoredDrift]:
    """Run output drift and store it with the comparison."""
    run = output_drift(engine, comparison, options, progress)
    return run, store_drift(engine, comparison, options, run)


_STORED_COLUMNS = (DriftResult.id, DriftResult.created_at, DriftResult.options_json, DriftResult.summary_json,
                   DriftResult.details_json, DriftResult.digest)


def latest_result(engine: Engine, comparison: str) -> StoredDrift | None:
    """The newest stored drift result of a comparison (without its report HTML)."""
    with Session(engine) as session:
        comp_id = get_comparison(session, comparison).id
        row = session.exec(select(*_STORED_COLUMNS).where(DriftResult.comparison_id == comp_id)
                           .order_by(DriftResult.created_at.desc(), DriftResult.id.desc())).first()
    return None if row is None else _stored(*row)


def _stored(id_: int, created_at: datetime, options: str, summary: str, details: str, digest: str) -> StoredDrift:
    return StoredDrift(id_, as_utc(created_at), from_json(options), from_json(summary), from_json(details), digest)


def latest_drift(engine: Engine, comparison: str) -> dict | None:
    """What the gate and the decision record use: drifted share, columns, when, and the summary digest."""
    result = latest_result(engine, comparison)
    if result is None:
        return None
    return {**result.summary, "created_at": result.created_at.isoformat(), "digest": result.digest}


def report_html(engine: Engine, result_id: int) -> str:
    with Session(engine) as session:
        blob = session.exec(select(DriftResult.report_html_gz).where(DriftResult.id == result_id)).one()
    return gzip.decompress(blob).decode()


# ---- input drift ----------------------------------------------------------------------------------
_COMPARISON_INPUTS = """
SELECT c.id, c.input_text, MIN(o.logged_at) AS logged_at
FROM "case" c JOIN output o ON o.case_id = c.id AND o.run_id IN (:b, :c)
GROUP BY c.id, c.input_text ORDER BY c.id
"""


def input_drift(engine: Engine, reference: str, current: str | None = None, split_at: datetime | None = None,
                options: DriftOptions | None = None, progress: Progress | None = None) -> DriftRun:
    """Logged inputs of `current` against `reference` (each a comparison or a dataset name).

    With `split_at` and no `current`: `reference` before it against `reference` from it on (two time
    windows of a loaded log, by its timestamps). With both: `current` is only taken from `split_at` on
    (e.g. last week's traffic against the golden set).
    """
    options = options or DriftOptions()
    options.validate()
    ref = _inputs(engine, reference)
    if current is None and split_at is None:
        raise DriftInputError("input drift needs a current comparison or dataset, or a split time")
    cur = ref if current is None else _inputs(engine, current)
    if split_at is not None:
        at = pd.Timestamp(split_at if split_at.tzinfo else split_at.replace(tzinfo=UTC))
        cur = _window(cur, current or reference, at, after=True)
        if current is None:
            ref = _window(ref, reference, at, after=False)
    _require_rows(len(ref), f"the reference window has {len(ref)} inputs")
    _require_rows(len(cur), f"the current window has {len(cur)} inputs")
    samples = [_sample(frame["input_text"].astype(str).reset_index(drop=True), options.regex) for frame in (ref, cur)]
    _embed(engine, samples, options, progress)
    _say(progress, f"running the drift report on {len(ref)} and {len(cur)} inputs")
    from lib.drift.evidently_report import run_report

    return run_report(samples[0], samples[1], categorical=_flag_columns(options))


def _inputs(engine: Engine, name: str) -> pd.DataFrame:
    """One row per case: its input text and when it was first logged (NaT for golden datasets)."""
    with Session(engine) as session:
        comp = session.exec(select(Comparison).where(Comparison.name == name)).first()
        if comp is None:
            try:
                ds = get_dataset(session, name)
            except DatasetNotFound:
                raise NotFoundError(f"no comparison or dataset named '{name}'") from None
    if comp is None:
        sql, params = 'SELECT id, input_text, NULL AS logged_at FROM "case" WHERE dataset_id = :d', {"d": ds.id}
    else:
        sql, params = _COMPARISON_INPUTS, {"b": comp.baseline_run_id, "c": comp.candidate_run_id}
    with engine.connect() as conn:
        frame = pd.read_sql(text(sql), conn, params=params)
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True, format="mixed")
    return frame


def _window(frame: pd.DataFrame, name: str, at: pd.Timestamp, *, after: bool) -> pd.DataFrame:
    if frame["logged_at"].isna().all():
        raise DriftInputError(f"'{name}' has no timestamps to split by (load the log with its timestamp column)")
    keep = frame["logged_at"] >= at if after else frame["logged_at"] < at
    return frame[keep.fillna(False)]
