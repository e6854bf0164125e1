"""Tables for monitor (registered by lib.store.engine.get_engine): the time series of a pinned model.

A series is one model identifier with one exact configuration (ModelConfig hash) over one golden
dataset. Each `monitor run` adds a point: its run, and (except for a baseline snapshot) the comparison
of the series' baseline run with it, the alerts and the provider's reported fingerprint.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Index, Text
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow

POINT_BASELINE, POINT_OK, POINT_ALERT = "baseline", "ok", "alert"


class MonitorPoint(SQLModel, table=True):
    __table_args__ = (Index("ix_monitorpoint_series", "model", "dataset", "config_hash"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    model: str  # the model identifier as called (unchanged between points: that is the point)
    dataset: str  # golden dataset name
    dataset_id: int = Field(foreign_key="dataset.id")  # the exact version run
    config_hash: str  # ModelConfig.config_hash: same flags, same series
    run_id: int = Field(foreign_key="run.id")
    comparison_id: Optional[int] = Field(default=None, foreign_key="comparison.id")  # baseline run vs this run
    baseline_point_id: Optional[int] = None  # the baseline this point was compared with
    is_baseline: bool = False  # the series' current baseline snapshot (one per series)
    status: str = POINT_OK  # baseline | ok | alert
    system_fingerprint: Optional[str] = None  # as the provider reported it (last seen on the run)
    served_model: Optional[str] = None
    policy_name: Optional[str] = None  # the bands came from this policy version; None: the defaults
    policy_version: Optional[int] = None
    summary_json: Optional[str] = Field(default=None, sa_column=Column(Text))  # metrics, alerts, findings
    created_at: datetime = Field(default_factory=utcnow)
