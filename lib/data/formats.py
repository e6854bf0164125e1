"""The recorded-file formats `load` reads (light: the CLI's help text imports it)."""
from __future__ import annotations

FORMATS = ("wide", "long", "promptfoo", "shadow")
