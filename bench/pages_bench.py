"""Page speed in a real browser: the app under `streamlit run`, driven by headless Chromium (Playwright).

One temporary store holds the offline demo and a synthetic comparison of N pairs (bench/synth.py, messy),
each with a stored drift result; the synthetic one also has a signed decision, so its Overview and Decision
pages verify a signature and recompute the evidence (cached per store version). For each comparison, after
one warm-up walk (a warm server), it prints the median of R runs of:
- new tab -> usable Overview: a new tab opens `/?comparison=NAME`; done when the Overview's title is
  shown and the script has finished (no running script, no spinner); the time to the title alone, and to
  the forest plot drawn (the plotting library loads in each new tab), too;
- each page switch through the sidebar's links, in the sidebar's order: done when the page's title is
  shown and its script has finished; on Distributions' first visit, the time to its first chart drawn too
  (plotly.js loads in the tab then);
- Drift with the stored result (its summary table shown), and Evidently's full report shown on demand.

    .venv/bin/python bench/pages_bench.py [--pairs 10000] [--runs 5]

Goals (issue 13): new tab <= 2 s, page switch <= 1 s, Drift with a stored report <= 1.5 s, at 10k pairs too.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run"]
# sidebar link -> the page's title (what shows once it rendered)
PAGES = {"Overview": "Overview", "Diffs": "Diffs", "Distributions": "Distributions", "Drift": "Drift",
         "Safety": "Safety", "Judge": "Judge", "Comparisons": "Comparisons", "Policy": "Policies",
         "Decision": "Decision", "Canary": "Canary", "Monitor": "Monitor", "Timeline": "Timeline",
         "Datasets": "Golden datasets",
         "Run": "Run a comparison", "Load": "Load a recorded comparison"}
SYNTH = "synthetic"
TIMEOUT_MS = 120_000


def _python(env: dict[str, str], code: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"setup failed:\n{done.stderr[-3000:]}")


def build_store(env: dict[str, str], n_pairs: int) -> str:
    """The demo and the synthetic comparison, both checked and with a stored drift result."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lib", "demo"], cwd=ROOT, env=env, capture_output=True, check=True)
    demo = subprocess.run([sys.executable, "-c", "from lib.data.demo import demo_comparison_name as d; print(d())"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    _python(env, "import sys; sys.path.insert(0, 'bench'); import synth; import lib.drift.entities; "
                 "from lib.store.engine import get_engine, database_url; "
                 "from lib.review.checked import ensure_checked; e = get_engine(database_url()); "
                 "synth.build(e, sys.argv[1], int(sys.argv[2]), messy=True); ensure_checked(e, sys.argv[1])",
            SYNTH, str(n_pairs))
    for name in (demo, SYNTH):
        _python(env, "import sys; import lib.drift.entities; from lib.store.engine import get_engine, database_url; "
                     "from lib.drift.analysis import DriftOptions, analyze_comparison; "
                     "analyze_comparison(get_engine(database_url()), sys.argv[1], DriftOptions())", name)
    sign(env)
    print(f"store built in {time.perf_counter() - t:.0f} s (demo + {n_pairs:,} synthetic pairs, drift stored, "
          "a decision signed on the synthetic one)", flush=True)
    return demo


def sign(env: dict[str, str]) -> None:
    """A key, the owner of the synthetic comparison's system, and a signed no-go on it."""
    signer = {**env, "REVIEW_PASSPHRASE": "bench passphrase"}
    system = subprocess.run([sys.executable, "-c", "import sys; from lib.store.engine import get_engine, database_url;"
                             " from lib.review.comparisons import list_comparisons; print(next(c['system'] for c in "
                             "list_comparisons(get_engine(database_url())) if c['name'] == sys.argv[1]))", SYNTH],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    for args in (["keys", "create", "bench"], ["system", "claim", system, "--owner", "bench"],
                 ["decide", SYNTH, "--decision", "no-go", "--signer", "bench", "--rationale", "benchmark",
                  "--policy", system]):  # the demo's policy, named after the system
        done = subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=signer, capture_output=True,
                              text=True)
        if done.returncode:
            raise SystemExit(f"setup failed ({' '.join(args[:2])}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.headless",
                             "true", "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"the app did not start:\n{log.read_text()[-3000:]}")


def settled(pg, title: str) -> None:  # type: ignore[no-untyped-def]
    """The page's title is shown and its script run is over, with nothing pending."""
    pg.get_by_test_id("stHeading").filter(has_text=title).first.wait_for(state="visible", timeout=TIMEOUT_MS)
    pg.wait_for_function(
        "() => { const app = document.querySelector('[data-testid=stApp]');"
        " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=stStatusWidget]')"
        " && !document.querySelector('[data-testid=stSpinner]'); }", timeout=TIMEOUT_MS, polling=25)


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def new_tab(context, url: str, name: str):  # type: ignore[no-untyped-def]
    """A new tab on the Overview: seconds until its title shows, until it is usable (script done), until its
    forest plot is drawn, and the CPU seconds of the tab's main thread by then (the browser's own work, which
    the load of the machine inflates far less than wall-clock times)."""
    pg = context.new_page()
    cdp = context.new_cdp_session(pg)
    cdp.send("Performance.enable")
    start = time.perf_counter()
    pg.goto(f"{url}/?comparison={name}")
    pg.get_by_test_id("stHeading").filter(has_text="Overview").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    title = time.perf_counter() - start
    settled(pg, "Overview")
    usable = time.perf_counter() - start
    pg.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    plotted = time.perf_counter() - start
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cdp.detach()
    return pg, title, usable, plotted, metrics["ThreadTime"]


def switch(pg, link: str) -> float:  # type: ignore[no-untyped-def]
    def go() -> None:
        pg.get_by_test_id("stSidebarNav").get_by_role("link", name=link, exact=True).click()
        settled(pg, PAGES[link])
    return timed(go)


def full_report(pg) -> float:  # type: ignore[no-untyped-def]
    """Evidently's report on demand: the toggle until its frame has loaded."""
    def go() -> None:
        pg.locator(".st-key-drift_show_report label").click()
        frame = pg.frame_locator("iframe").first
        frame.locator("body *").first.wait_for(state="attached", timeout=TIMEOUT_MS)
        settled(pg, "Drift")
    return timed(go)


def walk(context, url: str, name: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """One new tab, every page in sidebar order, back to Drift for the report on demand."""
    pg, title, usable, plotted, cpu = new_tab(context, url, name)
    times = {"new tab -> Overview title shown": title, "new tab -> usable Overview": usable,
             "new tab -> forest plot drawn": plotted, "new tab: browser main-thread CPU": cpu}
    for link in list(PAGES)[1:] + ["Overview"]:
        start = time.perf_counter()
        times[f"switch to {link}"] = switch(pg, link)
        if link == "Distributions":  # its charts are plotly's: the tab loads plotly.js here, after the script
            pg.locator(".js-plotly-plot").first.wait_for(state="visible", timeout=TIMEOUT_MS)
            times["Distributions (first visit): first chart drawn"] = time.perf_counter() - start
    # a second visit in the same tab: the browser has the chart library loaded by now
    times["switch to Distributions (second visit)"] = switch(pg, "Distributions")
    times["switch to Drift (stored result)"] = switch(pg, "Drift")
    times["Drift: show the full Evidently report"] = full_report(pg)
    pg.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{Path(tmp) / 'review.db'}",
               "REVIEW_KEY_DIR": str(Path(tmp) / "keys"), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        demo = build_store(env, args.pairs)
        proc, url = start_app(env, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                for name, label in ((demo, f"demo ({demo})"), (SYNTH, f"synthetic, {args.pairs:,} pairs")):
                    walk(context, url, name)  # warm-up: imports, caches, the browser's static files
                    runs = [walk(context, url, name) for _ in range(args.runs)]
                    report(label, runs)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def report(label: str, runs: list[dict[str, float]]) -> None:
    print(f"\n{label}: median of {len(runs)} (min-max), seconds", flush=True)
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:<42} {statistics.median(values):6.2f}  ({min(values):.2f}-{max(values):.2f})", flush=True)
    switches = [v for r in runs for k, v in r.items() if k.startswith("switch to ")]  # title shown, script done
    print(f"  {'slowest page switch (median over runs)':<42} "
          f"{max(statistics.median([r[k] for r in runs]) for k in runs[0] if k.startswith('switch to ')):6.2f}"
          f"  (all switches {min(switches):.2f}-{max(switches):.2f})", flush=True)


if __name__ == "__main__":
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} · {os.cpu_count()} cores", flush=True)
    main()
    print(f"\n{time.strftime('%H:%M UTC', time.gmtime())} · load average at the end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
