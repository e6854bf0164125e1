"""Tables for production logs (registered by lib.store.engine.get_engine): one model over time.

A `ProductionLog` is one imported file; each `LogRecord` one logged request with the per-output checks
computed at import (refusal, empty, JSON validity, length), so a timeline is one indexed read.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow


class ProductionLog(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    source: str  # the file name
    sha256: str = ""
    n_rows: int = 0
    has_input: bool = True
    notes_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # columns used, warnings
    created_at: datetime = Field(default_factory=utcnow)


class LogRecord(SQLModel, table=True):
    __table_args__ = (Index("ix_logrecord_log_model_ts", "log_id", "model", "ts"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    log_id: int = Field(foreign_key="productionlog.id")
    ts: datetime
    model: str
    request_id: Optional[str] = None
    input_text: Optional[str] = Field(default=None, sa_column=Column(Text))
    output_text: Optional[str] = Field(default=None, sa_column=Column(Text))
    error: Optional[str] = Field(default=None, sa_column=Column(Text))
    latency_s: Optional[float] = None
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    cost_usd: Optional[float] = None
    metadata_json: Optional[str] = Field(default=None, sa_column=Column(Text))
    # Checks at import (NULL for a request that errored): what the timeline aggregates.
    refused: Optional[bool] = None
    empty: Optional[bool] = None
    json_valid: Optional[bool] = None
    length_chars: Optional[int] = None
