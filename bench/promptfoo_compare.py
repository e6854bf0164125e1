"""The whole `./review run` process against promptfoo's `eval` on the same local server and settings.

Both tools send the same 1000 questions (by default) to two models of the project's test server (latency
0.2 s), at most 32 requests in flight, and store every result (promptfoo in its own database, in a temporary
config directory). Runs alternate (promptfoo, then ours) so both see the same machine; the medians and their
ratio are printed. Our first run starts the resident worker host (lib/run/resident.py) and is shown on its
own line as well; the later runs reuse it, as every run of a session but the first does.

promptfoo is not a dependency of this project; install the version to compare with, once, outside the repo:

    mkdir -p /tmp/pf && cd /tmp/pf && npm install --no-audit --no-fund promptfoo@0.120.0
    ln -sfn dist/drizzle node_modules/promptfoo/drizzle   # 0.120.0 looks for its migrations there

then, from the repository root:

    .venv/bin/python bench/promptfoo_compare.py --promptfoo /tmp/pf/node_modules/.bin/promptfoo --runs 3
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT  # noqa: E402
from lib.run import resident  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402
from tests.llm_server import LLMServer  # noqa: E402

MODELS = ("bench-a", "bench-b")


def _question(i: int) -> str:
    return f"Benchmark question number {i}: what is {i} plus {i}?"


def _make_dataset(db_url: str, n: int) -> None:
    from sqlalchemy import insert

    from lib.store.engine import session_scope
    from lib.store.entities import Case, Dataset

    with session_scope(get_engine(db_url)) as session:
        ds = Dataset(name="bench", version=1, content_hash=f"bench-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.execute(insert(Case), [{"dataset_id": ds.id, "case_key": f"c{i}", "position": i,
                                        "input_text": _question(i)} for i in range(n)])


def _promptfoo_config(tmp: Path, url: str, n: int) -> Path:
    with open(tmp / "cases.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question"])
        writer.writerows([_question(i)] for i in range(n))
    providers = "".join(f"  - id: openai:chat:{m}\n    config:\n      apiBaseUrl: {url}\n      apiKey: sk-bench\n"
                        for m in MODELS)
    config = tmp / "promptfooconfig.yaml"
    config.write_text(f"prompts:\n  - '{{{{question}}}}'\nproviders:\n{providers}tests: file://{tmp / 'cases.csv'}\n")
    return config


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode not in (0, 100):  # promptfoo exits 100 when a test fails an assertion (none here)
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--promptfoo", required=True, help="the promptfoo executable (see this file's docstring)")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name, LLMServer(latency=args.latency) as server:
        tmp = Path(tmp_name)
        db_url = f"sqlite:///{tmp}/bench.db"
        _make_dataset(db_url, args.cases)
        config = _promptfoo_config(tmp, server.url, args.cases)
        env = {**os.environ, "DATABASE_URL": db_url, "REVIEW_RUNTIME_DIR": str(tmp / "runtime"),
               "REVIEW_CACHE_DIR": str(tmp / "cache"),
               "PROMPTFOO_CONFIG_DIR": str(tmp / "promptfoo"), "PROMPTFOO_DISABLE_TELEMETRY": "1",
               "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_CACHE_ENABLED": "false"}
        theirs, ours = [], []
        try:
            for i in range(args.runs + 1):  # our first run starts the host: one more round, shown apart
                server.log.clear()
                theirs.append(_timed([args.promptfoo, "eval", "-c", str(config), "-j", str(args.concurrency),
                                      "--no-cache", "--no-progress-bar", "--no-table"], env, tmp))
                if len(server.log) != 2 * args.cases:  # both tools must make every call once
                    raise SystemExit(f"promptfoo made {len(server.log)} calls, not {2 * args.cases}")
                server.log.clear()
                ours.append(_timed([str(ROOT / "review"), "run", "--dataset", "bench", "--baseline",
                                    f"openai/{MODELS[0]}", "--candidate", f"openai/{MODELS[1]}", "--name", f"run-{i}",
                                    "--api-base", server.url, "--concurrency", str(args.concurrency)], env, ROOT))
                if len(server.log) != 2 * args.cases:
                    raise SystemExit(f"./review run made {len(server.log)} calls, not {2 * args.cases}")
                print(f"round {i + 1}: promptfoo {theirs[-1]:.2f}s, ./review run {ours[-1]:.2f}s "
                      f"({'cold: starts the worker host' if i == 0 else 'warm host'}); load {os.getloadavg()[0]:.2f}")
        finally:
            os.environ["REVIEW_RUNTIME_DIR"] = env["REVIEW_RUNTIME_DIR"]
            resident.stop_all()
    pf, warm = statistics.median(theirs), statistics.median(ours[1:])
    print(f"{args.cases} cases x 2 models, latency {args.latency}s, {args.concurrency} in flight: promptfoo "
          f"{pf:.2f}s (median of {len(theirs)}); ./review run {warm:.2f}s (median of {len(ours) - 1}, warm host) "
          f"= {pf / warm:.2f}x faster; cold first run {ours[0]:.2f}s = {theirs[0] / ours[0]:.2f}x its round")


if __name__ == "__main__":
    main()
