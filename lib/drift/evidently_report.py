"""One Evidently report comparing two samples of texts: descriptor, text-content and embedding drift.

Methods (Evidently's defaults, chosen by sample size; README "Drift" says why):
- descriptors, numeric: K-S p-value < 0.05 up to 1,000 rows per side, else normed Wasserstein >= 0.1;
  binary flags: Z-test p-value < 0.05, else Jensen-Shannon distance >= 0.1.
- raw text: Evidently's domain classifier (TF-IDF + linear model) tries to tell the samples apart on
  a held-out half; drift when its ROC AUC exceeds both 0.55 and the 95th percentile of a random
  scorer's AUC (registered below as `text_domain_auc`).
- embeddings: the same domain-classifier idea on the vectors (Evidently's `model` method): ROC AUC above
  the 95th percentile of 100 random scorers (< 1,000 rows per side) or above 0.55.
A descriptor with one identical value on both sides carries no information and is not tested, so it
does not dilute the drifted share.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.descriptors import NonLetterCharacterPercentage, SentenceCount, TextLength, WordCount
from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.metrics.data_drift import embeddings_drift
from evidently.legacy.utils.data_drift_utils import roc_auc_domain_classifier
from evidently.metrics import EmbeddingsDrift, ValueDrift
from evidently.metrics.embeddings import ModelDriftMethod
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

TEXT, EMBEDDING = "text", "embedding"
BOOTSTRAP_BELOW = 1000  # rows per side; Evidently's own switch from bootstrap tests to fixed thresholds
PLOT_SAMPLE = 500  # rows per side the embedding plot projects with t-SNE; the test itself uses all rows
# t-SNE is the slow part of an embeddings report (~25 s for Evidently's 2,500 rows per side here);
# Evidently reads this module constant at call time and has no parameter for it.
embeddings_drift.SAMPLE_CONSTANT = PLOT_SAMPLE
_EMPTY_VOCABULARY = ("no terms remain", "empty vocabulary")  # scikit-learn's TF-IDF messages
# Half the cores for OpenMP (t-SNE): on this shared 2-core machine two threads ran ~8x slower than one.
OPENMP_THREADS = max(1, (os.cpu_count() or 2) // 2)
TEXT_MIN_AUC = 0.55  # an effect-size floor: at 10k rows a random scorer's 95th percentile is ~0.51
TEXT_ALPHA = 0.05


def _random_auc_quantile(labels: pd.Series) -> float:
    """The (1 - alpha) quantile of a random scorer's ROC AUC on these labels: the Mann-Whitney U null,
    normal approximation. Evidently estimates it from 1,000 roc_auc_score calls (3-15 s here)."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    sd = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    return 0.5 + NormalDist().inv_cdf(1 - TEXT_ALPHA) * sd


def _text_domain_auc(reference: pd.Series, current: pd.Series, _type: ColumnType, threshold: float
                     ) -> tuple[float, bool]:
    """Evidently's text-content drift (same split, same classifier) with the exact random baseline."""
    domain = pd.concat([pd.DataFrame({"text": reference, "target": 0}), pd.DataFrame({"text": current, "target": 1})])
    x_train, x_test, y_train, y_test = train_test_split(domain["text"], domain["target"], test_size=0.5,
                                                        random_state=42, shuffle=True)
    auc, _, _ = roc_auc_domain_classifier(x_train, x_test, y_train, y_test)
    return auc, auc > max(threshold, _random_auc_quantile(y_test))


TEXT_STATTEST = StatTest(name="text_domain_auc", display_name="Text domain classifier ROC AUC",
                         allowed_feature_types=[ColumnType.Text], default_threshold=TEXT_MIN_AUC)
register_stattest(TEXT_STATTEST, _text_domain_auc)


@dataclass
class Sample:
    """One side: raw texts, precomputed descriptor columns (same index), optional embeddings."""

    texts: pd.Series
    extra: pd.DataFrame
    embeddings: np.ndarray | None = None


@dataclass
class DriftRun:
    summary: dict[str, Any]  # {"drifted_share": float, "columns": {name: {drifted, score, method}}}
    details: dict[str, Any]  # thresholds, skipped columns with reasons, sample sizes
    html: str = field(repr=False)


def evidently_descriptors() -> list:
    """Text descriptors that need no downloaded data (NLTK-backed ones are computed in lib.drift.analysis)."""
    return [TextLength(TEXT, alias="length"), WordCount(TEXT, alias="word_count"),
            SentenceCount(TEXT, alias="sentence_count"), NonLetterCharacterPercentage(TEXT, alias="non_letter_pct")]


def inert(texts: pd.Series) -> pd.Series:
    """Texts safe inside the report's HTML.

    Evidently embeds example texts raw in a <script> block, so an output containing `</script>` would
    run as the reviewer's page. A fullwidth '<' keeps lengths, non-letter shares and TF-IDF tokens.
    """
    return texts.astype(str).str.replace("<", "\uff1c", regex=False)


def run_report(reference: Sample, current: Sample, categorical: list[str]) -> DriftRun:
    """Drift of `current` against `reference` on every informative column, as summary and HTML."""
    ref, cur = _dataset(reference, categorical), _dataset(current, categorical)
    tested, skipped = _informative(ref.as_dataframe(), cur.as_dataframe(), _descriptor_names(reference))
    method = _embedding_method(len(reference.texts)) if reference.embeddings is not None else None
    tested.append(TEXT)
    try:
        snapshot = _run(ref, cur, tested, method)
    except ValueError as exc:
        if not any(m in str(exc) for m in _EMPTY_VOCABULARY):
            raise
        tested.remove(TEXT)
        skipped[TEXT] = "too few distinct content words to compare (very short or uniform texts)"
        snapshot = _run(ref, cur, tested, method)
    columns, thresholds = _value_drifts(snapshot.dict())
    skipped.update({c: "the drift score is undefined" for c in tested if c not in columns})
    if method is not None:
        columns[EMBEDDING] = _embedding_verdict(_embedding_frame(reference), _embedding_frame(current), method)
        thresholds[EMBEDDING] = method.threshold if not method.bootstrap else None
    drifted = sum(c["drifted"] for c in columns.values())
    summary = {"drifted_share": drifted / len(columns) if columns else 0.0, "columns": columns}
    details = {"thresholds": thresholds, "skipped": skipped, "n_reference": len(reference.texts),
               "n_current": len(current.texts)}
    return DriftRun(summary, details, snapshot.get_html_str(as_iframe=False))


def _descriptor_names(sample: Sample) -> list[str]:
    return [d.alias for d in evidently_descriptors()] + list(sample.extra.columns)


def _embedding_frame(sample: Sample) -> pd.DataFrame:
    """The vectors as columns e0..eN (empty without embeddings), on the sample's index."""
    vectors = sample.embeddings if sample.embeddings is not None else np.empty((len(sample.texts), 0))
    return pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])], index=sample.extra.index)


def _dataset(sample: Sample, categorical: list[str]) -> Dataset:
    vectors = _embedding_frame(sample)
    frame = pd.concat([pd.DataFrame({TEXT: inert(sample.texts)}, index=sample.extra.index), sample.extra, vectors],
                      axis=1)
    emb_cols = list(vectors.columns)
    definition = DataDefinition(
        text_columns=[TEXT],
        categorical_columns=[c for c in sample.extra.columns if c in categorical],
        numerical_columns=[c for c in sample.extra.columns if c not in categorical],
        embeddings={EMBEDDING: emb_cols} if emb_cols else None)
    return Dataset.from_pandas(frame.reset_index(drop=True), data_definition=definition,
                               descriptors=evidently_descriptors())


def _informative(ref: pd.DataFrame, cur: pd.DataFrame, names: list[str]) -> tuple[list[str], dict[str, str]]:
    tested, skipped = [], {}
    for name in names:
        values = pd.concat([ref[name], cur[name]]).unique()
        if len(values) == 1:
            skipped[name] = f"the same value ({values[0]}) everywhere on both sides"
        else:
            tested.append(name)
    return tested, skipped


def _embedding_method(n_reference: int) -> ModelDriftMethod:
    return ModelDriftMethod(bootstrap=n_reference < BOOTSTRAP_BELOW)


def _run(ref: Dataset, cur: Dataset, columns: list[str], method: ModelDriftMethod | None) -> Any:
    metrics: list = [ValueDrift(column=c, method=TEXT_STATTEST.name if c == TEXT else None) for c in columns]
    if method is not None:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING, drift_method=method))
    with warnings.catch_warnings(), threadpool_limits(limits=OPENMP_THREADS, user_api="openmp"):
        # Evidently's internals warn on every run (pandas chained assignment, constant-column
        # correlations); nothing a reviewer can act on.
        warnings.simplefilter("ignore")
        return Report(metrics, include_tests=True).run(current_data=cur, reference_data=ref)


def _value_drifts(report: dict) -> tuple[dict[str, dict], dict[str, float | None]]:
    """Per column: drifted (the report's own test), score and method; thresholds separately."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in report.get("tests", [])
              if t.get("id") == "drift"}
    columns: dict[str, dict] = {}
    thresholds: dict[str, float | None] = {}
    for m in report["metrics"]:
        config = m["config"]
        if not config["type"].endswith(":ValueDrift") or not _finite(m["value"]):
            continue
        method = TEXT_STATTEST.display_name if config["method"] == TEXT_STATTEST.name else str(config["method"])
        columns[config["column"]] = {"drifted": bool(failed.get(m["id"], False)), "score": float(m["value"]),
                                     "method": method}
        thresholds[config["column"]] = float(config["threshold"])
    return columns, thresholds


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _embedding_verdict(reference: pd.DataFrame, current: pd.DataFrame, method: ModelDriftMethod) -> dict:
    # The report's EmbeddingsDrift keeps only the score; the same deterministic method gives the verdict.
    # (The method adds a column to the frames it gets: these are fresh ones.)
    score, drifted, _ = method(current, reference)
    return {"drifted": bool(drifted), "score": float(score), "method": "Embeddings domain classifier (ROC AUC)"}
