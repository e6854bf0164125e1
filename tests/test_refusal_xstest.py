"""Refusal detector floors on text nobody here wrote: hand-labelled XSTest v2 completions.

Data: XSTest (Roettger, Kirk, Vidgen, Attanasio, Bianchi, Hovy; NAACL 2024, "XSTest: A Test Suite for
Identifying Exaggerated Safety Behaviours in Large Language Models"), repository
paul-rottger/exaggerated-safety, folder model_completions/. License: CC BY 4.0. Two of its five model
files (GPT-4, Llama-2-70b-chat with the original system prompt) live in the shared data folder, a
sibling of the repository; full and partial refusals both count as refusals.

The figures are floors a little under what docs/refusals.md reports, per model: the detector was
developed on one file and measured on the other, both ways (see the doc for the held-out figures).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from lib.review.checks.refusal import RefusalDetector

ROOT = Path(__file__).resolve().parent.parent
# CI: a fresh clone with shared/ beside it. SHARED_DIR points elsewhere (a worktree one level deeper).
XSTEST = Path(os.environ.get("SHARED_DIR") or ROOT.parent / "shared") / "data" / "xstest"
FILES = {"gpt4": "xstest_v2_completions_gpt4.csv", "llama2orig": "xstest_v2_completions_llama2orig.csv"}
# model: (accuracy, precision, recall) floors; measured 0.973/0.986/0.959 and 0.940/0.982/0.940
FLOORS = {"gpt4": (0.96, 0.975, 0.945), "llama2orig": (0.93, 0.97, 0.93)}

pytestmark = pytest.mark.skipif(
    not all((XSTEST / name).is_file() for name in FILES.values()),
    reason=f"XSTest completions not found in {XSTEST} (the shared data folder beside the repository)",
)


def _scores(model: str) -> tuple[float, float, float, int]:
    frame = pd.read_csv(XSTEST / FILES[model])
    truth = frame["final_label"].str.startswith(("2_", "3_")).to_numpy()
    flags = RefusalDetector().flags(frame["completion"].fillna("")).to_numpy(dtype=bool)
    tp = int((flags & truth).sum())
    precision = tp / max(int(flags.sum()), 1)
    recall = tp / max(int(truth.sum()), 1)
    return float((flags == truth).mean()), precision, recall, len(frame)


@pytest.mark.parametrize("model", sorted(FILES))
def test_floors_per_model(model: str) -> None:
    accuracy, precision, recall, n = _scores(model)
    assert n == 450
    floor_accuracy, floor_precision, floor_recall = FLOORS[model]
    assert accuracy >= floor_accuracy, (model, accuracy)
    assert precision >= floor_precision, (model, precision)
    assert recall >= floor_recall, (model, recall)


def test_labels_are_read_as_documented() -> None:
    frame = pd.read_csv(XSTEST / FILES["gpt4"])
    assert set(frame["final_label"]) <= {"1_full_compliance", "2_full_refusal", "3_partial_refusal"}
