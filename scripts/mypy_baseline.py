#!/usr/bin/env python3
"""mypy on lib/ against a recorded baseline: fails on any error not in it, says when it can shrink.

The baseline (`scripts/mypy_baseline.txt`) lists known errors as `path: [code] message`, without line
numbers, so moving code does not break it. `--update` rewrites it from the current errors: run it after
fixing some, never to accept new ones.
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scripts" / "mypy_baseline.txt"
ERROR = re.compile(r"^(?P<path>[^:]+):\d+: error: (?P<message>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def current_errors() -> Counter[str]:
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    found = (ERROR.match(line) for line in out.splitlines())
    return Counter(f"{m['path']}: [{m['code']}] {m['message']}" for m in found if m)


def main() -> int:
    errors = current_errors()
    if "--update" in sys.argv:
        BASELINE.write_text("".join(f"{e}\n" for e in sorted(errors.elements())))
        print(f"mypy baseline: {sum(errors.values())} errors recorded")
        return 0
    known = Counter(BASELINE.read_text().splitlines()) if BASELINE.exists() else Counter()
    new, fixed = errors - known, known - errors
    for line in sorted(new.elements()):
        print(f"new mypy error: {line}")
    print(f"mypy: {sum(errors.values())} errors, baseline {sum(known.values())}, new {sum(new.values())}"
          + (f" ({sum(fixed.values())} fixed: `scripts/mypy_baseline.py --update` records it)" if fixed else ""))
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
