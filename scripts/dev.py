#!/usr/bin/env python3
"""Bootstrap and run: `python3 scripts/dev.py app` or `python3 scripts/dev.py test [pytest args]`.

Needs only python3. Creates .venv on first use and re-installs when a requirements file changed
(a stamp holds their hash), so the same two commands work on a fresh machine and after a pull.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"
REQS = {"app": ["requirements.txt"], "test": ["requirements.txt", "requirements-dev.txt"]}


def _hash(files: list[str]) -> str:
    h = hashlib.sha256()
    for name in files:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_venv(files: list[str]) -> None:
    if not PY.exists():
        print("Creating .venv …", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _hash(files)
    done = STAMP.read_text().split() if STAMP.exists() else []
    if wanted in done:
        return
    print("Installing requirements (first run takes a few minutes) …", file=sys.stderr)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    args = [str(PY), "-m", "pip", "install", "-q"]
    for name in files:
        args += ["-r", str(ROOT / name)]
    subprocess.run(args, check=True)
    STAMP.write_text(" ".join(done + [wanted]))


def run_app(extra: list[str]) -> int:
    ensure_venv(REQS["app"])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if (ROOT / "lib" / "demo.py").exists():  # load the offline demo comparison when present
        subprocess.run([str(PY), "-m", "lib", "demo"], cwd=ROOT, env=env, check=False)
    cmd = [str(PY), "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), *extra]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def run_tests(extra: list[str]) -> int:
    ensure_venv(REQS["test"])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.call([str(PY), "-m", "pytest", *extra], cwd=ROOT, env=env)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("app", "test"):
        print("usage: python3 scripts/dev.py app|test [args...]", file=sys.stderr)
        return 2
    command, extra = sys.argv[1], sys.argv[2:]
    return run_app(extra) if command == "app" else run_tests(extra)


if __name__ == "__main__":
    sys.exit(main())
