"""The offline demo: a golden dataset written by the team and a real comparison recorded on it.

`demo/golden.jsonl` is the dataset; `demo/recording.jsonl` is a real run of it through two local
builds of the same model (SmolLM2-135M-Instruct served at Q4_1 and requantized to Q2_K: the same
name at lower fidelity). `load_demo` puts both into the store when they are not there yet, so the app's
first launch opens on a real comparison with no API key and no network. Re-record it with
`scripts/local_models.py record`. `demo/policy.toml` is locked after the recording is stored, named after
the demo's system, so the first Overview shows a verdict, honestly post-hoc: the policy was written
after those outputs were.

It runs before every app start, so once the demo is stored nothing heavy is imported: no litellm. The
first load checks and stores every output, token counts included, and that does import litellm (~3 s,
once per store).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.errors import ReviewInputError
from lib.store.entities import Comparison

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo"
DATASET_FILE = DEMO_DIR / "golden.jsonl"
RECORDING_FILE = DEMO_DIR / "recording.jsonl"
POLICY_FILE = DEMO_DIR / "policy.toml"  # locked under the demo system's name: in force for its comparisons
DATASET_NAME = "demo-golden"


class DemoMissing(ReviewInputError):
    """The demo files are not in this checkout."""


@dataclass
class DemoResult:
    comparison: str | None  # None: no recording shipped (the dataset alone was loaded)
    created: bool  # anything written this time
    dataset: str
    dataset_version: int | None
    n_outputs: int
    message: str


def demo_comparison_name(recording_file: Path = RECORDING_FILE) -> str:
    """The demo comparison's name, from the recording's first line."""
    from lib.data.recording import read_meta

    with recording_file.open("rb") as fh:
        return read_meta(fh.readline(), recording_file.name)["comparison"]


def _lock_policy(engine: Engine, comparison: str, policy_file: Path) -> str:
    """Lock the demo policy under the comparison's system name, unless a policy of that name exists."""
    if not policy_file.exists():
        return ""
    from lib.governance.entities import Policy
    from lib.governance.policy import create_policy

    with Session(engine) as session:
        system = session.exec(select(Comparison.system).where(Comparison.name == comparison)).one()
        if session.exec(select(Policy.id).where(Policy.name == system)).first() is not None:
            return ""
    res = create_policy(engine, system, policy_file.read_bytes(), source=policy_file.name)
    return f"; policy '{res.name}' v{res.version} locked"


def load_demo(engine: Engine, *, dataset_file: Path = DATASET_FILE, recording_file: Path = RECORDING_FILE,
              policy_file: Path = POLICY_FILE) -> DemoResult:
    """Load the demo dataset, recorded comparison and policy unless already there (idempotent)."""
    if not dataset_file.exists():
        raise DemoMissing(f"the demo dataset {dataset_file} is missing from this checkout")
    if not recording_file.exists():
        from lib.data.golden import import_dataset

        res = import_dataset(engine, dataset_file.read_bytes(), dataset_file.name, DATASET_NAME)
        what = "loaded" if res.created else "already loaded"
        return DemoResult(None, res.created, res.name, res.version, 0,
                          f"demo dataset '{res.name}' v{res.version} {what} ({res.n_cases} cases); "
                          f"no recording at {recording_file}")
    name = demo_comparison_name(recording_file)
    with Session(engine) as session:  # fast path: nothing to parse when the comparison is there
        stored = session.exec(select(Comparison.id).where(Comparison.name == name)).first() is not None
    if stored:
        locked = _lock_policy(engine, name, policy_file)  # a store from before the demo shipped a policy
        return DemoResult(name, bool(locked), DATASET_NAME, None, 0,
                          f"demo comparison '{name}' is already in the store{locked}")
    from lib.data.recording import load_recording

    res = load_recording(engine, recording_file.read_bytes(), dataset_data=dataset_file.read_bytes(),
                         dataset_filename=dataset_file.name, source=recording_file.name)
    if not res.created:
        return DemoResult(name, False, res.dataset, res.dataset_version, 0,
                          f"demo comparison '{name}' is already in the store")
    from lib.review.checked import ensure_checked  # the first Overview then reads stored check columns

    ensure_checked(engine, name)
    locked = _lock_policy(engine, name, policy_file)
    ds_what = "loaded" if res.dataset_created else "reused"
    return DemoResult(name, True, res.dataset, res.dataset_version, res.n_outputs,
                      f"demo comparison '{name}' loaded: {res.n_outputs} recorded outputs; "
                      f"dataset '{res.dataset}' v{res.dataset_version} {ds_what}{locked}")
