#!/usr/bin/env python3
"""Bootstrap and run: `python3 scripts/dev.py app | test [pytest args] | lint | cli [args]`.

`./review ARGS` (the CLI) is `scripts/dev.py cli ARGS`. Needs only python3. Creates .venv on first use and
re-installs when a requirements file changed (a stamp holds their hash), so the same two commands work on a
fresh machine and after a pull.
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


def _hashes(files: list[str]) -> list[str]:
    """One sha256 per requirements file: the test set (which includes requirements.txt) then also satisfies
    the app and `./review` (whose shell wrapper checks requirements.txt's hash in the stamp itself)."""
    return [hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in files]


def ensure_venv(files: list[str]) -> None:
    if not PY.exists():
        print("Creating .venv …", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = _hashes(files)
    done = STAMP.read_text().split() if STAMP.exists() else []
    if all(h in done for h in wanted):
        return
    print("Installing requirements (first run takes a few minutes) …", file=sys.stderr)
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    args = [str(PY), "-m", "pip", "install", "-q"]
    for name in files:
        args += ["-r", str(ROOT / name)]
    subprocess.run(args, check=True)
    # The project itself, editable and without dependencies: the `upgrade-review` console script.
    subprocess.run([str(PY), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(" ".join(dict.fromkeys(done + wanted)))


def run_app(extra: list[str]) -> int:
    ensure_venv(REQS["app"])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if (ROOT / "lib" / "data" / "demo.py").exists():  # load the offline demo comparison when present
        subprocess.run([str(PY), "-m", "lib", "demo"], cwd=ROOT, env=env, check=False)
    cmd = [str(PY), "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), *extra]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def run_tests(extra: list[str]) -> int:
    ensure_venv(REQS["test"])
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.call([str(PY), "-m", "pytest", *extra], cwd=ROOT, env=env)


def run_cli(extra: list[str]) -> int:
    """`./review ARGS`: the CLI in .venv, replacing this process (exit codes and signals pass through)."""
    ensure_venv(REQS["app"])
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.execv(str(PY), [str(PY), "-m", "lib", *extra])
    return 0  # not reached


def run_lint(extra: list[str]) -> int:
    """ruff over the tree, then mypy on lib/ against the recorded baseline (a new error fails)."""
    ensure_venv(REQS["test"])
    ruff = subprocess.call([str(VENV / "bin" / "ruff"), "check", *extra, "."], cwd=ROOT)
    types = subprocess.call([str(PY), str(ROOT / "scripts" / "mypy_baseline.py")], cwd=ROOT)
    return ruff or types


COMMANDS = {"app": run_app, "test": run_tests, "lint": run_lint, "cli": run_cli}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print("usage: python3 scripts/dev.py app|test|lint|cli [args...]", file=sys.stderr)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
