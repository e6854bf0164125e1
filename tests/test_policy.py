"""Policy files: strict parsing, canonical locking, versioning by name."""
from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.entities import Policy
from lib.governance.policy import (
    KNOWN_METRICS,
    PolicyError,
    PolicyNotFound,
    create_policy,
    get_policy,
    list_policies,
    parse_policy,
)
from lib.store.entities import AuditEvent

MINIMAL = b"""alpha = 0.05
[criteria.refusal_rate]
max_increase = 0.02     # absolute, as a fraction
[criteria.accuracy]
max_decrease = 0.02     # non-inferiority margin
[criteria.json_valid_rate]
min = 0.9
"""


def test_minimal_shape_parses_with_blocking_default() -> None:
    spec = parse_policy(MINIMAL, "p.toml")
    assert spec.alpha == 0.05
    by_name = {c.name: c for c in spec.criteria}
    assert by_name["refusal_rate"].thresholds == {"max_increase": 0.02}
    assert by_name["accuracy"].thresholds == {"max_decrease": 0.02}
    assert by_name["json_valid_rate"].thresholds == {"min": 0.9}
    assert all(c.blocking for c in spec.criteria)


def test_per_category_and_future_red_team_metrics() -> None:
    spec = parse_policy(b'[criteria."accuracy@math"]\nmax_decrease = 0\nblocking = false\n'
                        b'[criteria.injection_resistance_rate]\nmin = 0.95\n[criteria.drift]\nmax = 0.1\n')
    acc = next(c for c in spec.criteria if c.name == "accuracy@math")
    assert (acc.metric, acc.category, acc.blocking) == ("accuracy", "math", False)
    assert spec.alpha == 0.05  # default
    assert {"injection_resistance_rate", "harmful_refusal_rate", "over_refusal_rate",
            "instruction_following_rate", "drift"} <= set(KNOWN_METRICS)


@pytest.mark.parametrize("text, criterion, key", [
    (b"[criteria.acuracy]\nmin = 0.9\n", "acuracy", None),                       # unknown metric
    (b"[criteria.accuracy]\nmax_decrase = 0.02\n", "accuracy", "max_decrase"),   # unknown key
    (b"[criteria.accuracy]\nblocking = false\n", "accuracy", None),              # no threshold
    (b"[criteria.accuracy]\nmax_decrease = -0.01\n", "accuracy", "max_decrease"),  # negative margin
    (b"[criteria.refusal_rate]\nmax_increase = 2\n", "refusal_rate", "max_increase"),  # a rate above 1
    (b"[criteria.accuracy]\nmin = 0.9\nmax = 0.5\n", "accuracy", "min"),
    (b'[criteria.accuracy]\nmin = "high"\n', "accuracy", "min"),
    (b"[criteria.accuracy]\nmin = 0.9\nblocking = 1\n", "accuracy", "blocking"),
    (b'[criteria."drift@math"]\nmax = 0.1\n', "drift@math", None),
    (b'[criteria."accuracy@"]\nmin = 0.1\n', "accuracy@", None),
    (b"[criteria.similarity]\nmax_decrease = 0.1\n", "similarity", "max_decrease"),  # no delta to bound
    (b"[criteria.drift]\nmax_increase = 0.1\n", "drift", "max_increase"),
    (b"[criteria.judge_score]\nmax_decrease = 0.5\n", "judge_score", None),  # which dimension?
    (b'[criteria."judge_score:"]\nmax_decrease = 0.5\n', "judge_score:", None),
    (b'[criteria."accuracy:math"]\nmin = 0.5\n', "accuracy:math", None),  # only judge_score has one
    (b'[criteria."judge_score:accuracy@math"]\nmin = 3\n', "judge_score:accuracy@math", None),
    (b'[criteria."judge_score:accuracy"]\nmin = 6\n', "judge_score:accuracy", "min"),  # scores are 1-5
    (b"[criteria.judge_win_rate]\nmax_decrease = 0.1\n", "judge_win_rate", "max_decrease"),
    (b"[criteria.judge_loss_rate]\nmax = 1.5\n", "judge_loss_rate", "max"),
])
def test_invalid_criteria_name_file_criterion_and_key(text: bytes, criterion: str, key: str | None) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "gate.toml")
    assert err.value.source == "gate.toml" and err.value.criterion == criterion and err.value.key == key
    assert str(err.value).startswith("gate.toml:") and f"criterion '{criterion}'" in str(err.value)
    if key:
        assert f"key '{key}'" in str(err.value)


@pytest.mark.parametrize("text, key", [
    (b"alpha = 0\n[criteria.accuracy]\nmin = 0.9\n", "alpha"),
    (b"alpha = 1.5\n[criteria.accuracy]\nmin = 0.9\n", "alpha"),
    (b"alfa = 0.05\n[criteria.accuracy]\nmin = 0.9\n", "alfa"),
    (b"alpha = 0.05\n", "criteria"),
])
def test_invalid_top_level(text: bytes, key: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "gate.toml")
    assert err.value.key == key and f"key '{key}'" in str(err.value)


def test_not_toml_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        parse_policy(b"[criteria.accuracy\n", "gate.toml")


def test_canonical_hash_ignores_formatting_and_explicit_defaults() -> None:
    reformatted = (b"# same meaning, another layout\nalpha = 5e-2\n[criteria.json_valid_rate]\nmin=0.9\n"
                   b"blocking=true\n[criteria.accuracy]\nmax_decrease=0.02\n[criteria.refusal_rate]\n"
                   b"max_increase=0.02\n")
    assert parse_policy(reformatted).content_hash() == parse_policy(MINIMAL).content_hash()
    changed = MINIMAL.replace(b"min = 0.9", b"min = 0.91")
    assert parse_policy(changed).content_hash() != parse_policy(MINIMAL).content_hash()


def test_versioning_same_content_returns_existing_different_is_next(engine) -> None:
    v1 = create_policy(engine, "strict", MINIMAL, source="p.toml", actor="alice")
    again = create_policy(engine, "strict", MINIMAL.replace(b"# non-inferiority margin", b""))
    v2 = create_policy(engine, "strict", MINIMAL.replace(b"min = 0.9", b"min = 0.95"))
    other = create_policy(engine, "lenient", MINIMAL)
    assert (v1.version, v1.created) == (1, True)
    assert (again.version, again.created, again.policy_id) == (1, False, v1.policy_id)
    assert (v2.version, v2.created) == (2, True) and v2.content_hash != v1.content_hash
    assert (other.version, other.content_hash) == (1, v1.content_hash)
    with Session(engine) as s:
        assert get_policy(s, "strict").version == 2
        assert get_policy(s, "strict", 1).content_hash == v1.content_hash
        assert s.exec(select(func.count(Policy.id))).one() == 3
        assert s.exec(select(func.count(AuditEvent.seq)).where(AuditEvent.kind == "policy_created")).one() == 3
        with pytest.raises(PolicyNotFound):
            get_policy(s, "strict", 7)
    listed = list_policies(engine, "strict")
    assert [p["version"] for p in listed] == [2, 1] and all(p["locked"] for p in listed)
    assert listed[1]["locked_at"].endswith("+00:00")


def test_invalid_policy_writes_nothing(engine) -> None:
    with pytest.raises(PolicyError):
        create_policy(engine, "bad", b"[criteria.accuracy]\nmin = 2\n")
    with Session(engine) as s:
        assert s.exec(select(func.count(Policy.id))).one() == 0
        assert s.exec(select(func.count(AuditEvent.seq))).one() == 0


def test_a_policy_without_canary_keeps_its_canonical_text() -> None:
    """Adding the optional [canary] section must not change the locked form (and hash) of older policies."""
    assert parse_policy(MINIMAL).canonical_toml() == (
        "alpha = 0.05\n\n"
        "[criteria.accuracy]\nmax_decrease = 0.02\nblocking = true\n\n"
        "[criteria.json_valid_rate]\nmin = 0.9\nblocking = true\n\n"
        "[criteria.refusal_rate]\nmax_increase = 0.02\nblocking = true\n")


def test_judge_criteria_parse_with_their_dimension() -> None:
    spec = parse_policy(b'[criteria."judge_score:accuracy"]\nmax_decrease = 0.3\nmin = 3.5\n'
                        b"[criteria.judge_win_rate]\nmin = 0.4\n[criteria.judge_position_consistency]\nmin = 0.8\n")
    score, win, consistency = spec.criteria
    assert (score.metric, score.dimension, score.category) == ("judge_score", "accuracy", None)
    assert score.thresholds == {"max_decrease": 0.3, "min": 3.5}
    assert (win.metric, win.dimension, consistency.metric) == ("judge_win_rate", None, "judge_position_consistency")
