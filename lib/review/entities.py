"""Review entities (registered by lib.store.engine): reviewers' refusal labels."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow


class RefusalLabel(SQLModel, table=True):
    """One reviewer verdict on one output; the latest per output counts (None: cleared)."""

    __tablename__ = "refusal_label"
    id: Optional[int] = Field(default=None, primary_key=True)
    output_id: int = Field(foreign_key="output.id", index=True)
    refused: Optional[bool] = None
    labelled_by: str
    created_at: datetime = Field(default_factory=utcnow)
