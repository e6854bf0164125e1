"""How a run places its calls (light: the CLI's help text imports it)."""
from __future__ import annotations

WORKER_MODES = ("auto", "in-process", "per-side")
