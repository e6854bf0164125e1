"""Shared fixtures: a real SQLite file per test (selected through DATABASE_URL like users do) and a local
OpenAI-compatible test server on 127.0.0.1 with injectable faults."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llm_server import LLMServer

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def private_runtime_and_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own runtime directory for resident worker hosts (lib/run/resident.py) and cache directory,
    inherited by the CLI and app processes they start; every host in it is stopped at the end."""
    from lib.run import resident

    directory = tmp_path_factory.mktemp("runtime")
    directory.chmod(0o700)
    os.environ["REVIEW_RUNTIME_DIR"] = str(directory)
    os.environ["REVIEW_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))  # what counts learn stays here
    os.environ["REVIEW_RESIDENT_IDLE_S"] = "300"  # a host the end of a killed session missed goes soon
    yield directory
    resident.stop_all()


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture
def engine(db_url: str):
    from lib.store.engine import get_engine

    return get_engine(db_url)


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A started in-process test server; faults, scripts and the log start empty."""
    with LLMServer() as server:
        yield server


@pytest.fixture
def worse(engine, tmp_path, monkeypatch):
    """Accuracy falls 25 pp (20 regressions in 80 pairs); a policy named after the system is in force."""
    from lib.governance.policy import create_policy
    from tests.gov_helpers import make_comparison, pairs

    monkeypatch.setenv("REVIEW_KEY_DIR", str(tmp_path / "keys"))
    make_comparison(engine, "cmp", pairs(60, 20, category="arithmetic"), system="search")
    create_policy(engine, "search", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    return engine
