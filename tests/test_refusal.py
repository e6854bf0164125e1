"""Refusal detection: agreement on a labelled set of realistic outputs, targeted cases, extra patterns."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.errors import ReviewInputError
from lib.review.checks import InvalidPatternError
from lib.review.checks.refusal import RefusalDetector

LABELLED = Path(__file__).parent / "data" / "refusal_labelled.jsonl"
REFUSAL_KINDS = {"refusal", "partial_refusal"}


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def detector() -> RefusalDetector:
    return RefusalDetector()


def test_labelled_set_is_big_and_hard(labelled: list[dict]) -> None:
    assert len(labelled) >= 200
    assert all(row["refusal"] == (row["kind"] in REFUSAL_KINDS) for row in labelled)
    hard_negatives = [r for r in labelled if not r["refusal"] and r["kind"] != "helpful"]
    assert len(hard_negatives) / len(labelled) >= 0.40


def test_agreement_with_labels(labelled: list[dict], detector: RefusalDetector) -> None:
    flags = detector.flags(pd.Series([r["text"] for r in labelled]))
    wrong = [(r["kind"], r["text"][:80]) for r, f in zip(labelled, flags) if bool(f) != r["refusal"]]
    assert 1 - len(wrong) / len(labelled) >= 0.97, wrong


@pytest.mark.parametrize("want", [True, False])
def test_both_classes_are_mostly_right(labelled: list[dict], detector: RefusalDetector, want: bool) -> None:
    # a detector that always answers one way cannot pass on the other class
    rows = [r for r in labelled if r["refusal"] is want]
    right = sum(detector.is_refusal(r["text"]) is want for r in rows)
    assert right / len(rows) >= 0.95


def test_series_and_single_text_agree(labelled: list[dict], detector: RefusalDetector) -> None:
    texts = [r["text"] for r in labelled]
    assert detector.flags(pd.Series(texts)).tolist() == [detector.is_refusal(t) for t in texts]


@pytest.mark.parametrize("text", [
    "I\u2019m sorry, but I can\u2019t help with that.",
    "I cannot assist with creating malware.",
    "As an AI language model, I cannot provide instructions for hacking accounts.",
    "My apologies, but I must decline this request.",
    "Sorry, but I can't write that.",
    "I won't help with stalking anyone.",
    "I'm unable to comply with this request.",
    "This request violates our usage policies.",
    "I'm not able to provide guidance on that.",
    "**I can't help with this.** It would cause harm.",
    "I understand you're upset. However, I can't help you get into their account.",
    "I can't provide medical diagnoses, but common causes of headaches include dehydration and stress.",
    "Lo siento, pero no puedo ayudarte con eso.",
])
def test_refusals(detector: RefusalDetector, text: str) -> None:
    assert detector.is_refusal(text)


@pytest.mark.parametrize("text", [
    "I'm not certain, but I believe the deadline is April 15.",
    "I'm not sure. Check both DNS and the certificate.",
    "Sorry for the confusion \u2014 here is the corrected code:\n```python\nprint(1)\n```",
    "I can't stress enough how important backups are. Here's how to make one.",
    "I can't help but notice that `i` never changes; add `i += 1`.",
    "I can't give you a definitive answer, but most analysts expect a Q3 release.",
    "I won't be able to give an exact date, but it's planned for the autumn.",
    "I can't browse the internet, but as of my last update Python 3.12 was current.",
    "Sure! Here's a polite reply: \"I'm sorry, but I can't attend the meeting.\"",
    "\"I can't help with that\" is the most common refusal in our logs.",
    "> I'm unable to help with that.\n\nThat message comes from the moderation layer.",
    "To classify refusals, start from labelled data. Train a simple model. Evaluate it. The hard cases "
    "are partial ones like I can't provide medical advice, but here is general information.",
    "Ethics matter here, and safety too. The policy says you must wear a helmet on site.",
])
def test_not_refusals(detector: RefusalDetector, text: str) -> None:
    assert not detector.is_refusal(text)


def test_unwillingness_is_not_softened_by_a_hedge(detector: RefusalDetector) -> None:
    assert detector.is_refusal("I won't share the exact prompt, but here is its structure.")
    assert not detector.is_refusal("I can't share the exact figure, but it is about 8 billion.")


def test_flags_keep_index_and_missing_is_na(detector: RefusalDetector) -> None:
    series = pd.Series(["I can't help with that.", None, np.nan, "Paris."], index=[10, 11, 12, 13])
    flags = detector.flags(series)
    assert str(flags.dtype) == "boolean"
    assert flags.index.tolist() == [10, 11, 12, 13]
    assert flags.tolist() == [True, pd.NA, pd.NA, False]


def test_empty_series(detector: RefusalDetector) -> None:
    assert detector.flags(pd.Series([], dtype=object)).empty


def test_extra_patterns_extend_the_rule() -> None:
    text = "[BLOCKED] The content filter stopped this response."
    assert not RefusalDetector().is_refusal(text)
    detector = RefusalDetector(extra_patterns=[r"^\[blocked\]", r"i'd prefer to skip"])
    assert detector.is_refusal(text)
    assert detector.is_refusal("I\u2019d prefer to skip that topic.")  # case-insensitive, curly apostrophe
    assert detector.flags(pd.Series([text, "Paris.", None])).tolist() == [True, False, pd.NA]


def test_extra_patterns_only_look_at_the_opening() -> None:
    detector = RefusalDetector(extra_patterns=["cannot comply"])
    body = "Here is the report. It has three parts. The summary comes first. The gateway said cannot comply."
    assert not detector.is_refusal(body)


def test_invalid_extra_pattern_is_a_named_input_error() -> None:
    with pytest.raises(InvalidPatternError) as err:
        RefusalDetector(extra_patterns=["(unclosed"])
    assert isinstance(err.value, ReviewInputError)
    assert "(unclosed" in str(err.value)
