"""The app's Streamlit configuration keeps the two settings the page benchmark depends on."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_streamlit_reads_the_apps_speed_settings_from_its_config_file() -> None:
    # Read by Streamlit itself, from the repository root as `scripts/dev.py app` starts it: no garbage
    # collection after each script run (0.25-0.5 s holding the GIL on this app's heap) and no file watcher
    # (a pass over every imported module in each new session), see docs/performance.md.
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('runner.postScriptGC'), config.get_option('server.fileWatcherType'), "
            "config.get_option('server.runOnSave'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "none", "False"]
