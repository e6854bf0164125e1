"""Imported by the run workers' fork server only (lib/run/executor.py): what every worker needs, done once
there, so each worker forked from it starts in milliseconds instead of ~3.5 s (litellm's import and
first-call set-up, the store's dialect and table definitions)."""
import lib.run.executor  # noqa: F401  (the workers' code)
from lib.run import llm
from lib.store.engine import get_engine

llm.warm_up_calls()
get_engine("sqlite:///:memory:").dispose()  # imports every table module and the SQLite dialect
