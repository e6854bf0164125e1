"""Verdict and criterion outcomes, and the gate's exit code for each (light: the CLI imports it at start)."""
from __future__ import annotations

GO, NO_GO, INCONCLUSIVE = "go", "no-go", "inconclusive"
PASS, FAIL = "pass", "fail"
GATE_EXIT = {GO: 0, NO_GO: 1, INCONCLUSIVE: 3}  # `gate`: CI pipelines branch on these
