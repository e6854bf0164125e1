"""The probe families' names (light: the CLI's help text imports it)."""
from __future__ import annotations

FAMILIES = ("injection", "harmful", "over_refusal", "instructions")
