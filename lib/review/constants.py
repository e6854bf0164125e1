"""One definition each of what every domain names the same way (imports nothing)."""
from __future__ import annotations

ALPHA = 0.05  # the default significance level: reports, policies, the judge, the Overview
BASELINE, CANDIDATE = "baseline", "candidate"
SIDES = (BASELINE, CANDIDATE)  # a comparison's sides, in this order, in the store, the report and exports
SIDE_NAMES = {"b": BASELINE, "c": CANDIDATE}  # the prefixes of checked-frame columns (b_*, c_*)
