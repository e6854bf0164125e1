"""Store entities of drift analysis: stored results per comparison and the embedding cache."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow


class DriftResult(SQLModel, table=True):
    """One drift analysis of a comparison's outputs (baseline = reference, candidate = current).

    The report HTML (~4 MB, ~1.2 MB gzipped) is kept in the row rather than as a file under data/: it
    then lives and is backed up with the summary it belongs to, whatever DATABASE_URL points at, and a
    failed write leaves neither half behind.
    """

    id: Optional[int] = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    created_at: datetime = Field(default_factory=utcnow)
    options_json: str = Field(sa_column=Column(Text, nullable=False))  # embeddings, regex descriptors, ...
    summary_json: str = Field(sa_column=Column(Text, nullable=False))  # {"drifted_share", "columns"}
    digest: str  # sha256 of summary_json: what a gate verdict or decision record cites
    details_json: str = Field(sa_column=Column(Text, nullable=False))  # thresholds, skipped columns, sizes
    report_html_gz: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class EmbeddingCache(SQLModel, table=True):
    """One text's embedding under one model (key includes the api_base for remote models)."""

    __table_args__ = (UniqueConstraint("model", "text_hash"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    model: str
    text_hash: str  # sha256 hex of the UTF-8 text
    dim: int
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # float32, little-endian
    created_at: datetime = Field(default_factory=utcnow)

