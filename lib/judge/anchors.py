"""The judge drift check: a fixed anchor set of (input, output) pairs re-judged on every judge run.

Anchors are always scored with the default rubric and the current pointwise template, whatever
rubric the run uses, so every run of a judge model string is comparable with that model's first
(reference) run. The judge "itself changed" when the mean absolute change of its anchor scores
exceeds a threshold, or when the provider reports another fingerprint or served model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lib.judge.rubric import Rubric, load_rubric
from lib.review import fmt
from lib.review.stats import wilcoxon_p

ANCHOR_FILE = Path(__file__).resolve().parent / "data" / "anchors_v1.jsonl"
DEFAULT_DRIFT_THRESHOLD = 0.5  # points on the 1-5 scale, mean absolute change over (anchor, dimension)


@dataclass(frozen=True)
class Anchor:
    key: str
    input: str
    output: str
    expected: str | None
    intended: dict[str, int]  # the score the authors intend per default-rubric dimension
    note: str


@lru_cache(maxsize=1)
def load_anchors() -> tuple[tuple[Anchor, ...], str]:
    """The shipped anchors and the sha256 of the file (which anchor set a run used)."""
    raw = ANCHOR_FILE.read_bytes()
    anchors = tuple(Anchor(**json.loads(line)) for line in raw.decode("utf-8").splitlines() if line.strip())
    return anchors, hashlib.sha256(raw).hexdigest()


def anchor_rubric() -> Rubric:
    return load_rubric()


@dataclass
class DriftCheck:
    status: str  # reference (this run is the first) | stable | changed | insufficient | skipped
    threshold: float
    mean_abs_change: float | None = None
    mean_change: float | None = None  # signed: positive = the judge scores higher now
    p_value: float | None = None  # Wilcoxon signed-rank on the paired changes
    n: int = 0  # (anchor, dimension) scores present in both runs
    reference_run_id: int | None = None
    reference_at: str | None = None
    fingerprint_changed: bool = False
    reference_fingerprints: list[list[str | None]] = field(default_factory=list)
    current_fingerprints: list[list[str | None]] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.status == "changed" or self.fingerprint_changed

    def message(self) -> str:
        parts = []
        if self.status == "changed":
            parts.append(f"anchor scores moved by {self.mean_abs_change:.2f} points on average "
                         f"(n={self.n}, threshold {self.threshold:g}, Wilcoxon p={fmt.p_value(self.p_value)}) "
                         f"since reference judge run #{self.reference_run_id}")
        if self.fingerprint_changed:
            parts.append(f"the provider reports {_fps(self.current_fingerprints)} where the reference run "
                         f"had {_fps(self.reference_fingerprints)}")
        if parts:
            return "the judge itself changed: " + "; ".join(parts)
        return {"reference": "this run is the reference for the judge's anchor scores",
                "stable": f"anchor scores stable (mean absolute change {self.mean_abs_change or 0:.2f}, "
                          f"n={self.n}, threshold {self.threshold:g}) vs judge run #{self.reference_run_id}",
                "insufficient": "anchor scores could not be compared (no anchor judgement parsed)",
                "skipped": "anchor drift check skipped"}.get(self.status, self.status)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flagged": self.flagged, "message": self.message()}


def _fps(fps: list[list[str | None]]) -> str:
    return ", ".join(f"{fp or '-'} ({served or '-'})" for fp, served in fps) or "none"


_SCORES_SQL = text("""
SELECT j.anchor_key, s.dimension, s.score FROM judgement j JOIN judgescore s ON s.judgement_id = j.id
WHERE j.judge_run_id = :run AND j.kind = 'anchor'
""")
_FINGERPRINTS_SQL = text("""
SELECT DISTINCT system_fingerprint, served_model FROM judgement
WHERE judge_run_id = :run AND status != 'error' ORDER BY 1, 2
""")
_REFERENCE_SQL = text("""
SELECT r.id, r.started_at FROM judgerun r JOIN judgeconfig c ON c.id = r.config_id
WHERE c.model = :model AND r.anchor_set_hash = :anchors AND r.id < :run
  AND EXISTS (SELECT 1 FROM judgement j JOIN judgescore s ON s.judgement_id = j.id
              WHERE j.judge_run_id = r.id AND j.kind = 'anchor')
ORDER BY r.id LIMIT 1
""")


def _scores(conn: Any, run_id: int) -> dict[tuple[str, str], int]:
    return {(k, d): s for k, d, s in conn.execute(_SCORES_SQL, {"run": run_id})}


def _fingerprints(conn: Any, run_id: int) -> list[list[str | None]]:
    return [[fp, served] for fp, served in conn.execute(_FINGERPRINTS_SQL, {"run": run_id})]


def check_drift(engine: Engine, run_id: int, model: str, anchor_set_hash: str, threshold: float) -> DriftCheck:
    """Compare this run's anchor scores (and fingerprints) with the model string's reference run."""
    with engine.connect() as conn:
        current = _scores(conn, run_id)
        current_fps = _fingerprints(conn, run_id)
        ref = conn.execute(_REFERENCE_SQL, {"model": model, "anchors": anchor_set_hash, "run": run_id}).first()
        if ref is None:
            status = "reference" if current else "insufficient"
            return DriftCheck(status, threshold, current_fingerprints=current_fps)
        reference, ref_fps = _scores(conn, ref[0]), _fingerprints(conn, ref[0])
    check = DriftCheck("insufficient", threshold, reference_run_id=ref[0], reference_at=str(ref[1]),
                       reference_fingerprints=ref_fps, current_fingerprints=current_fps,
                       fingerprint_changed=bool(ref_fps and current_fps and ref_fps != current_fps))
    keys = sorted(set(current) & set(reference))
    if keys:
        diff = np.array([current[k] - reference[k] for k in keys], dtype=float)
        check.n, check.mean_abs_change = len(keys), float(np.abs(diff).mean())
        check.mean_change, check.p_value = float(diff.mean()), wilcoxon_p(diff)
        check.status = "changed" if check.mean_abs_change > threshold else "stable"
    return check
