"""Tables for LLM-as-judge (registered by lib.store.engine.get_engine).

A `JudgeConfig` pins everything that shapes a judgement except the endpoint: model string, sampling
parameters, prompt template versions and content hashes, and the rubric. Every `Judgement` keeps the
provider's reported fingerprint and served model, the raw reply and whether it parsed, so an
unparseable judgement is stored and counted, never dropped. Anchor judgements (the drift check)
live in the same table with `kind = "anchor"` and no comparison.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow

KINDS = ("pointwise", "pairwise", "anchor")
ORDERS = ("ab", "ba")  # ab: A = baseline, B = candidate; ba: swapped
STATUS_OK, STATUS_UNPARSEABLE, STATUS_ERROR = "ok", "unparseable", "error"
RUN_INTERRUPTED = "interrupted"  # a judge run stopped by Ctrl-C or the page (its judgements are kept)


class JudgeConfig(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    config_hash: str = Field(unique=True)  # sha256 of every field below: identical configs share a row
    model: str  # litellm model string of the judge
    temperature: Optional[float] = None
    seed: Optional[int] = None
    max_tokens: Optional[int] = None
    json_mode: bool = True  # response_format json_object requested (when the provider supports it)
    pointwise_template: str  # version id, e.g. "pointwise-v1"
    pointwise_template_hash: str
    pairwise_template: str
    pairwise_template_hash: str
    rubric_json: str = Field(sa_column=Column(Text, nullable=False))  # canonical rubric (dimensions)
    rubric_hash: str
    created_at: datetime = Field(default_factory=utcnow)


class JudgeRun(SQLModel, table=True):
    """One invocation of the judge on a comparison, with the anchor drift check it ran."""

    id: Optional[int] = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    config_id: int = Field(foreign_key="judgeconfig.id", index=True)
    api_base: Optional[str] = None  # where the judge was reached (not part of the pinned config)
    sample: Optional[str] = None  # as given: "0.05", "200", or None for every pair
    pairwise: bool = False
    n_selected: int = 0  # pairs in the sample
    n_sent: int = 0  # judgements requested by this invocation (anchors included)
    n_resumed: int = 0  # judgements already stored under this config, not sent again
    status: str = "running"  # running | complete | partial (provider errors remain) | interrupted (stopped)
    anchor_set_hash: Optional[str] = None
    drift_status: Optional[str] = None  # reference | stable | changed | insufficient | skipped
    drift_mac: Optional[float] = None  # mean absolute change of anchor scores vs the reference run
    drift_p_value: Optional[float] = None  # Wilcoxon signed-rank on the paired anchor score changes
    drift_n: Optional[int] = None  # paired (anchor, dimension) scores compared
    drift_threshold: Optional[float] = None
    reference_run_id: Optional[int] = None
    fingerprint_changed: Optional[bool] = None
    fingerprints_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # [[fingerprint, served]]
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class Judgement(SQLModel, table=True):
    """One judge call's outcome: pointwise (one side, every dimension), pairwise (one order), anchor."""

    __table_args__ = (UniqueConstraint("config_id", "item_key"),
                      Index("ix_judgement_comparison_config", "comparison_id", "config_id"))
    id: Optional[int] = Field(default=None, primary_key=True)
    judge_run_id: int = Field(foreign_key="judgerun.id", index=True)
    config_id: int = Field(foreign_key="judgeconfig.id")
    item_key: str  # what was judged; unique per config, so a resumed run never judges it again
    comparison_id: Optional[int] = Field(default=None, foreign_key="comparison.id")
    case_id: Optional[int] = Field(default=None, foreign_key="case.id")
    repeat: int = 0
    anchor_key: Optional[str] = None
    kind: str  # pointwise | pairwise | anchor
    side: Optional[str] = None  # pointwise: baseline | candidate
    order: Optional[str] = None  # pairwise: ab | ba
    preference: Optional[str] = None  # pairwise, as the judge said: A | B | tie
    winner: Optional[str] = None  # pairwise, mapped to sides: baseline | candidate | tie
    status: str = STATUS_OK  # ok | unparseable (answered, not valid JSON) | error (call failed)
    rationale: Optional[str] = Field(default=None, sa_column=Column(Text))
    raw_text: Optional[str] = Field(default=None, sa_column=Column(Text))  # the judge's last reply
    parse_error: Optional[str] = Field(default=None, sa_column=Column(Text))
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    error_kind: Optional[str] = None
    attempts: int = 1  # HTTP requests made (transport retries and malformed-reply retries)
    malformed: int = 0  # replies that failed JSON/schema validation
    system_fingerprint: Optional[str] = None
    served_model: Optional[str] = None
    latency_s: Optional[float] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    created_at: datetime = Field(default_factory=utcnow)


class JudgeScore(SQLModel, table=True):
    """A 1-5 rubric score of a pointwise or anchor judgement on one dimension."""

    __table_args__ = (UniqueConstraint("judgement_id", "dimension"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    judgement_id: int = Field(foreign_key="judgement.id", index=True)
    dimension: str
    score: int
