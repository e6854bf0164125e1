"""Store entities (SQLModel). JSON-valued fields are stored as text, suffixed `_json`.

Golden datasets are versioned: a file with changed content is a new version, so the cases a
run used never change under it. API keys are never stored anywhere in this schema.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import DDL, Column, Index, LargeBinary, Text, UniqueConstraint, event
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow

# Run and comparison sources / statuses (plain strings in the store).
SOURCE_LIVE, SOURCE_RECORDED = "live", "recorded"
STATUS_PENDING, STATUS_RUNNING, STATUS_COMPLETE = "pending", "running", "complete"
STATUS_PARTIAL, STATUS_RECORDED = "partial", "recorded"  # partial: finished with error outputs
INPUT_PLACEHOLDER = "{{input}}"  # in a prompt template: where the case input goes
MATCH_RULES = ("exact", "normalized", "contains", "not_contains", "regex", "numeric")


class Dataset(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int = 1
    content_hash: str  # sha256 of the canonical case list: same content -> same version
    source: Optional[str] = None  # file name it came from
    n_cases: int = 0
    created_at: datetime = Field(default_factory=utcnow)


class Case(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("dataset_id", "case_key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    case_key: str  # the stable id from the file (or a content hash when the file has none)
    position: int = 0  # order in the file
    input_text: str = Field(sa_column=Column(Text, nullable=False))  # text, or a readable transcript
    messages_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # chat input: [{role, content}]
    expected: Optional[str] = Field(default=None, sa_column=Column(Text))
    match: Optional[str] = None  # one of MATCH_RULES
    pattern: Optional[str] = None
    json_schema: Optional[str] = Field(default=None, sa_column=Column(Text))  # JSON text of the schema
    category: Optional[str] = Field(default=None, index=True)
    metadata_json: Optional[str] = Field(default=None, sa_column=Column(Text))


class ModelConfig(SQLModel, table=True):
    """The system's exact configuration for one side: model, endpoint, parameters, prompt stack."""

    id: Optional[int] = Field(default=None, primary_key=True)
    config_hash: str = Field(unique=True)  # sha256 of every field below: identical configs share a row
    model: str  # litellm model string, or the model value a recorded file names
    api_base: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    response_format_json: Optional[str] = Field(default=None, sa_column=Column(Text))
    tools_json: Optional[str] = Field(default=None, sa_column=Column(Text))
    system_prompt: Optional[str] = Field(default=None, sa_column=Column(Text))
    prompt_template: Optional[str] = Field(default=None, sa_column=Column(Text))  # "{{input}}" placeholder
    extra_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # other provider params
    created_at: datetime = Field(default_factory=utcnow)


class Run(SQLModel, table=True):
    """One configuration over one dataset version."""

    id: Optional[int] = Field(default=None, primary_key=True)
    config_id: int = Field(foreign_key="modelconfig.id", index=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    source: str = SOURCE_LIVE
    status: str = STATUS_PENDING
    repeats: int = 1
    system_fingerprint: Optional[str] = None  # as reported by the provider (last seen)
    served_model: Optional[str] = None  # the model id the provider says answered
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class Output(SQLModel, table=True):
    """One model answer (or error) for one (case, repeat) of a run, written the moment it returns."""

    __table_args__ = (UniqueConstraint("run_id", "case_id", "repeat"), Index("ix_output_run_case", "run_id", "case_id"))
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="run.id")
    case_id: int = Field(foreign_key="case.id")
    repeat: int = 0
    text: Optional[str] = Field(default=None, sa_column=Column(Text))
    finish_reason: Optional[str] = None
    latency_s: Optional[float] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    cost_usd: Optional[float] = None  # None = unknown, never 0 for unknown
    error: Optional[str] = Field(default=None, sa_column=Column(Text))  # set when retries ran out
    error_kind: Optional[str] = None  # rate_limit | server | timeout | malformed | bad_request | other
    attempts: int = 1
    system_fingerprint: Optional[str] = None
    served_model: Optional[str] = None
    raw_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # the provider's response body
    logged_at: Optional[datetime] = None  # recorded traffic: the log's own timestamp
    created_at: datetime = Field(default_factory=utcnow)


class Comparison(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    baseline_run_id: int = Field(foreign_key="run.id")
    candidate_run_id: int = Field(foreign_key="run.id")
    system: str = "default"
    source: str = "run"  # run | wide | long | promptfoo
    notes_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # e.g. load report (unpaired rows)
    # Reviewer settings for this comparison: extra refusal patterns, a match rule for all cases, ...
    settings_json: Optional[str] = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)



class CheckSegment(SQLModel, table=True):
    """Stored check results (lib/store/check_store.py): an Arrow IPC blob of rows keyed by output id.

    Per-output segments (`other_run_id` NULL) hold one run's check columns under a key that hashes the
    reviewer settings and the check code version; pair segments hold values of (baseline run,
    candidate run) pairs, such as similarity. Runs and loads that add outputs append segments.
    """

    __table_args__ = (Index("ix_checksegment_scope", "run_id", "other_run_id", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int  # no foreign key: the run_delete trigger removes a deleted run's segments
    other_run_id: Optional[int] = None
    key: str
    epoch: int = 0  # CheckEpoch of run_id when computed; another epoch means stale
    other_epoch: int = 0
    n_rows: int
    max_output_id: int  # highest output id covered (per-output segments); new outputs have higher ids
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class CheckEpoch(SQLModel, table=True):
    """Bumped by triggers whenever an output or case of the run is updated or deleted: stored checks
    computed at an older epoch are stale. Appends don't bump it (new outputs have higher ids)."""

    run_id: int = Field(primary_key=True)
    epoch: int = 0


def _bump(runs_select: str) -> str:
    return (f"INSERT INTO checkepoch (run_id, epoch) {runs_select} "
            "ON CONFLICT(run_id) DO UPDATE SET epoch = epoch + 1;")


_RUN = "SELECT {run}, 1 WHERE {run} IS NOT NULL"
_RUNS_OF_DATASET = "SELECT id, 1 FROM run WHERE dataset_id = {ds}"
_TRIGGERS = {
    "output_update": ("AFTER UPDATE ON output", _bump(_RUN.format(run="OLD.run_id"))
                      + _bump(_RUN.format(run="NEW.run_id"))),
    "output_delete": ("AFTER DELETE ON output", _bump(_RUN.format(run="OLD.run_id"))),
    "case_update": ('AFTER UPDATE ON "case"', _bump(_RUNS_OF_DATASET.format(ds="OLD.dataset_id"))
                    + _bump(_RUNS_OF_DATASET.format(ds="NEW.dataset_id"))),
    "case_delete": ('AFTER DELETE ON "case"', _bump(_RUNS_OF_DATASET.format(ds="OLD.dataset_id"))),
    "run_delete": ("AFTER DELETE ON run", "DELETE FROM checksegment WHERE run_id = OLD.id OR other_run_id = OLD.id;"
                   " DELETE FROM checkepoch WHERE run_id = OLD.id;"),
}
for _name, (_when, _body) in _TRIGGERS.items():
    event.listen(SQLModel.metadata, "after_create", DDL(
        f"CREATE TRIGGER IF NOT EXISTS checks_{_name} {_when} BEGIN {_body} END").execute_if(dialect="sqlite"))


class AuditEvent(SQLModel, table=True):
    """One link of the append-only hash chain. `seq` is the key and is hashed: no field is outside the hash."""

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: str  # ISO 8601 UTC, hashed verbatim
    kind: str = Field(index=True)
    actor: Optional[str] = None
    payload_json: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    prev_hash: str
    hash: str


class AuditHead(SQLModel, table=True):
    """The chain's last link (one row). Lets `verify` notice a truncated tail."""

    id: Optional[int] = Field(default=1, primary_key=True)
    seq: int
    hash: str
