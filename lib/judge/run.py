"""Run the judge over a stored comparison: pointwise rubric scores for both sides of each sampled
pair, optionally a pairwise preference in both orders, and the anchor set for the drift check.

Each judgement is written the moment it returns (one short transaction, one writer thread). A
judgement is identified by its `item_key` under the pinned config, so running the same judge again
resumes: stored judgements (parsed or unparseable) are not requested again; failed calls are.
"""
from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import delete, insert, text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.errors import ReviewInputError
from lib.judge.anchors import DEFAULT_DRIFT_THRESHOLD, DriftCheck, anchor_rubric, check_drift, load_anchors
from lib.judge.calls import CallOptions, JudgeCaller, Reply
from lib.judge.config import JudgeSettings, judge_config
from lib.judge.entities import (
    RUN_INTERRUPTED,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNPARSEABLE,
    JudgeConfig,
    Judgement,
    JudgeRun,
    JudgeScore,
)
from lib.judge.parsing import PAIRWISE_SCHEMA, pointwise_schema, score_keys
from lib.judge.rubric import Rubric
from lib.judge.sampling import Sample, select_sample
from lib.judge.templates import Template, clip
from lib.review.checked import with_texts
from lib.review.comparisons import get_comparison
from lib.review.constants import SIDES
from lib.run import llm, stoppable
from lib.run.redact import strip_url_credentials
from lib.store.audit import record_event
from lib.store.columns import to_json, utcnow
from lib.store.engine import session_scope, write_engine
from lib.store.entities import Comparison

_JSON_MODE_ERROR = re.compile(r"response_format|json[_ ]?(object|mode)", re.IGNORECASE)
WINNER = {"ab": {"A": "baseline", "B": "candidate", "tie": "tie"},
          "ba": {"A": "candidate", "B": "baseline", "tie": "tie"}}


@dataclass
class JudgeOptions:
    sample: Sample | None = None  # None: every pair
    pairwise: bool = False
    drift_threshold: float = DEFAULT_DRIFT_THRESHOLD
    api_base: str | None = None
    calls: CallOptions = field(default_factory=CallOptions)

    def validate(self) -> None:
        c = self.calls
        if c.concurrency < 1 or c.timeout <= 0 or c.max_retries < 0 or c.parse_retries < 0:
            raise ReviewInputError("concurrency must be >= 1, timeout > 0, retries >= 0")
        if self.drift_threshold < 0:
            raise ReviewInputError("the drift threshold must be >= 0")


@dataclass(frozen=True)
class JudgeProgress:
    done: int  # judgements finished, including those already stored
    total: int
    errors: int  # calls that failed after retries, this invocation
    unparseable: int  # replies that stayed invalid after correction turns, this invocation


@dataclass
class JudgeRunResult:
    run_id: int
    comparison: str
    model: str
    config_hash: str
    n_pairs: int  # pairs with an answer on both sides
    n_selected: int  # pairs in the sample
    n_sent: int  # judgements requested now (anchors included)
    n_resumed: int  # judgements already stored, not requested again
    n_errors: int  # of those sent: calls that failed after retries (re-run to retry them)
    n_unparseable: int  # of those sent: replies that never parsed (stored and counted)
    status: str  # complete | partial
    json_mode: bool  # response_format json_object actually sent
    drift: DriftCheck
    wall_s: float
    rpm: float | None = None  # successful judge calls per minute this invocation achieved (lib.run.quota)
    rate_limited: int = 0  # judge attempts answered 429 in this invocation


@dataclass(frozen=True)
class _Item:
    key: str
    kind: str  # pointwise | pairwise | anchor
    messages: list[dict[str, Any]]
    schema: dict[str, Any]
    case_id: int | None = None
    repeat: int = 0
    side: str | None = None
    order: str | None = None
    anchor_key: str | None = None


def item_key(comparison_id: int, case_id: int, repeat: int, kind: str, target: str) -> str:
    return f"cmp{comparison_id}/case{case_id}/r{repeat}/{kind}/{target}"


def supports_json_mode(model: str) -> bool:
    """Whether litellm knows the provider takes `response_format` (unknown: no)."""
    try:
        params = llm.litellm_module().get_supported_openai_params(model=model)
    except Exception:  # noqa: BLE001  - litellm raises for unknown providers
        return False
    return bool(params) and "response_format" in params


# ---- prompts -------------------------------------------------------------------------------------
def pointwise_messages(template: Template, rubric: Rubric, question: str, expected: str | None,
                       output: str) -> list[dict[str, Any]]:
    return template.messages({"rubric": rubric.prompt_text(), "input": clip(question), "reference": clip(expected),
                              "output": clip(output), "score_keys": score_keys(rubric.names)})


def pairwise_messages(template: Template, rubric: Rubric, question: str, expected: str | None,
                      output_a: str, output_b: str) -> list[dict[str, Any]]:
    return template.messages({"rubric": rubric.prompt_text(), "input": clip(question), "reference": clip(expected),
                              "output_a": clip(output_a), "output_b": clip(output_b)})


def _pair_items(row: Any, comparison_id: int, settings: JudgeSettings, pairwise: bool) -> list[_Item]:
    t, rubric = settings.templates(), settings.rubric
    schema = pointwise_schema(rubric.names)
    texts = {"baseline": row.b_text, "candidate": row.c_text}
    base = dict(case_id=int(row.case_id), repeat=int(row.repeat))
    items = [_Item(item_key(comparison_id, row.case_id, row.repeat, "pointwise", side), "pointwise",
                   pointwise_messages(t["pointwise"], rubric, row.input_text, row.expected, texts[side]),
                   schema, side=side, **base) for side in SIDES]
    if pairwise:
        for order, (a, b) in (("ab", SIDES), ("ba", SIDES[::-1])):
            items.append(_Item(item_key(comparison_id, row.case_id, row.repeat, "pairwise", order), "pairwise",
                               pairwise_messages(t["pairwise"], rubric, row.input_text, row.expected,
                                                 texts[a], texts[b]), PAIRWISE_SCHEMA, order=order, **base))
    return items


def _anchor_items(run_id: int, settings: JudgeSettings) -> list[_Item]:
    rubric, template = anchor_rubric(), settings.templates()["pointwise"]
    schema = pointwise_schema(rubric.names)
    anchors, _ = load_anchors()
    return [_Item(f"run{run_id}/anchor/{a.key}", "anchor",
                  pointwise_messages(template, rubric, a.input, a.expected, a.output), schema, anchor_key=a.key)
            for a in anchors]


# ---- preparing -----------------------------------------------------------------------------------
_ELIGIBLE_SQL = text("""
SELECT ca.id AS case_id, ca.case_key, b.repeat, b.id AS b_output_id, o.id AS c_output_id
FROM output b
JOIN output o ON o.run_id = :c AND o.case_id = b.case_id AND o.repeat = b.repeat
JOIN "case" ca ON ca.id = b.case_id
WHERE b.run_id = :b AND b.text IS NOT NULL AND o.text IS NOT NULL AND b.error IS NULL AND o.error IS NULL
ORDER BY ca.position, ca.id, b.repeat
""")


def eligible_pairs(engine: Engine, comparison: Comparison) -> pd.DataFrame:
    """Keys of the pairs with an answer on both sides (a provider error is not an answer to judge), without
    texts: a 5% sample of a million logged calls reads only the sampled texts (`with_texts`)."""
    with engine.connect() as conn:
        return pd.read_sql(_ELIGIBLE_SQL, conn,
                           params={"b": comparison.baseline_run_id, "c": comparison.candidate_run_id})


def sampled_pairs(engine: Engine, comparison: Comparison, sample: Sample | None,
                  config_hash: str) -> tuple[int, pd.DataFrame]:
    """(how many pairs are eligible, the sampled ones with their texts): keys first, texts of the sample only."""
    pairs = eligible_pairs(engine, comparison)
    keys = list(zip(pairs["case_key"].astype(str), pairs["repeat"].astype(int)))
    return len(pairs), with_texts(engine, pairs.iloc[select_sample(keys, sample, comparison.name, config_hash)])


def _stored_keys(session: Session, config_id: int, comparison_id: int) -> dict[str, str]:
    rows = session.exec(select(Judgement.item_key, Judgement.status).where(
        Judgement.config_id == config_id, Judgement.comparison_id == comparison_id)).all()
    return dict(rows)


@dataclass
class _Plan:
    run_id: int
    comparison_id: int
    config: JudgeConfig
    n_pairs: int
    n_selected: int
    items: list[_Item]  # to send
    error_keys: set[str]  # stored as failed calls: replaced when sent again
    n_resumed: int


def _prepare(engine: Engine, comparison: str, settings: JudgeSettings, options: JudgeOptions) -> _Plan:
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        comp_id = comp.id
    config = judge_config(engine, settings)
    n_pairs, chosen = sampled_pairs(engine, comp, options.sample, config.config_hash)
    _, anchor_hash = load_anchors()
    with session_scope(engine) as session:
        stored = _stored_keys(session, config.id, comp_id)
        run = JudgeRun(comparison_id=comp_id, config_id=config.id, api_base=strip_url_credentials(options.api_base),
                       sample=options.sample.text if options.sample else None, pairwise=options.pairwise,
                       n_selected=len(chosen), anchor_set_hash=anchor_hash, drift_threshold=options.drift_threshold)
        session.add(run)
        session.flush()
        run_id = run.id
    wanted = [item for row in chosen.itertuples(index=False)
              for item in _pair_items(row, comp_id, settings, options.pairwise)]
    todo = [i for i in wanted if stored.get(i.key) in (None, STATUS_ERROR)]
    errors = {i.key for i in todo if stored.get(i.key) == STATUS_ERROR}
    return _Plan(run_id, comp_id, config, n_pairs, len(chosen), todo + _anchor_items(run_id, settings),
                 errors, len(wanted) - len(todo))


# ---- storing -------------------------------------------------------------------------------------
def _mark_interrupted(engine: Engine, run_id: int) -> None:
    with session_scope(engine) as session:
        session.execute(update(JudgeRun).where(JudgeRun.id == run_id)
                        .values(status=RUN_INTERRUPTED, finished_at=utcnow()))


def _judgement_row(plan: _Plan, item: _Item, reply: Reply) -> dict[str, Any]:
    c, parsed = reply.completion, reply.parsed
    status = STATUS_ERROR if reply.error else STATUS_OK if parsed.ok else STATUS_UNPARSEABLE
    value = parsed.value if parsed is not None and parsed.ok else {}
    preference = value.get("preference")
    return {"judge_run_id": plan.run_id, "config_id": plan.config.id, "item_key": item.key,
            "comparison_id": None if item.kind == "anchor" else plan.comparison_id, "case_id": item.case_id,
            "repeat": item.repeat, "anchor_key": item.anchor_key, "kind": item.kind, "side": item.side,
            "order": item.order, "preference": preference,
            "winner": WINNER[item.order][preference] if preference and item.order else None,
            "status": status, "rationale": value.get("rationale"), "raw_text": c.text if c else None,
            "parse_error": parsed.error if parsed is not None else None,
            "error": reply.error.message if reply.error else None,
            "error_kind": reply.error.kind if reply.error else None, "attempts": reply.attempts,
            "malformed": reply.malformed, "system_fingerprint": c.system_fingerprint if c else None,
            "served_model": c.served_model if c else None, "latency_s": round(reply.latency_s, 4),
            "prompt_tokens": c.prompt_tokens if c else None, "completion_tokens": c.completion_tokens if c else None,
            "created_at": utcnow()}


def _store(engine: Engine, plan: _Plan, item: _Item, reply: Reply) -> str:
    row = _judgement_row(plan, item, reply)
    with write_engine(engine).begin() as conn:
        if item.key in plan.error_keys:  # a failed call stored earlier: replace it
            conn.execute(delete(Judgement).where(Judgement.config_id == plan.config.id,
                                                 Judgement.item_key == item.key))
        judgement_id = conn.execute(insert(Judgement).values(**row)).inserted_primary_key[0]
        if row["status"] == STATUS_OK and item.kind != "pairwise":
            scores = reply.parsed.value["scores"]  # validated: every rubric dimension is an integer 1-5
            conn.execute(insert(JudgeScore), [{"judgement_id": judgement_id, "dimension": d, "score": int(scores[d])}
                                              for d in item.schema["properties"]["scores"]["required"]])
    return row["status"]


# ---- executing -----------------------------------------------------------------------------------
def _rejects_json_mode(reply: Reply) -> bool:
    """A 400 that names response_format / JSON mode (other 400s are stored as they are)."""
    error = reply.error
    return error is not None and error.kind == "bad_request" and bool(_JSON_MODE_ERROR.search(error.message))


class _Executor:
    def __init__(self, engine: Engine, plan: _Plan, settings: JudgeSettings, options: JudgeOptions,
                 progress: Callable[[JudgeProgress], None] | None) -> None:
        self.engine, self.plan, self.progress = engine, plan, progress
        self.json_mode = settings.json_mode and supports_json_mode(settings.model)
        self.base_kwargs = llm.call_kwargs(settings.model, options.api_base, settings.params(), options.calls.timeout)
        self.options = options.calls
        self.done = plan.n_resumed
        self.total = plan.n_resumed + len(plan.items)
        self.counts = {STATUS_OK: 0, STATUS_ERROR: 0, STATUS_UNPARSEABLE: 0}
        self.pace: dict[str, Any] = {}  # the judge model's lib.run.quota.PaceStats, once the calls have run

    async def _one(self, caller: JudgeCaller, writer: ThreadPoolExecutor, item: _Item) -> None:
        kwargs = {**self.base_kwargs, "messages": item.messages}
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        reply = await caller.judge(kwargs, item.schema)
        if self.json_mode and _rejects_json_mode(reply):
            self.json_mode = False  # the provider rejects response_format: the prompt still asks for JSON
            kwargs.pop("response_format")
            reply = await caller.judge(kwargs, item.schema)
        status = await asyncio.get_running_loop().run_in_executor(writer, _store, self.engine, self.plan,
                                                                  item, reply)
        self.counts[status] += 1
        self.done += 1
        self.report()

    def report(self) -> None:
        stoppable.report(self.progress, JudgeProgress(self.done, self.total, self.counts[STATUS_ERROR],
                                                      self.counts[STATUS_UNPARSEABLE]))

    async def run(self) -> BaseException | None:
        """Every item; returns what the progress callback raised to stop the run (lib.run.stoppable)."""
        caller = JudgeCaller(self.options)
        # One writer thread: a commit waiting on the disk or another writer must not stall the loop.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="judgement-writer")
        try:
            self.report()
            return await stoppable.gather_stoppable(self._one(caller, writer, item) for item in self.plan.items)
        finally:
            writer.shutdown(wait=True)
            self.pace = caller.pacer.stats.as_dict()


def _finish(engine: Engine, comparison: str, plan: _Plan, settings: JudgeSettings, options: JudgeOptions,
            executor: _Executor) -> tuple[DriftCheck, str]:
    _, anchor_hash = load_anchors()
    drift = check_drift(engine, plan.run_id, settings.model, anchor_hash, options.drift_threshold)
    status = "partial" if executor.counts[STATUS_ERROR] else "complete"
    with session_scope(engine) as session:
        session.execute(update(JudgeRun).where(JudgeRun.id == plan.run_id).values(
            n_sent=len(plan.items), n_resumed=plan.n_resumed, status=status, finished_at=utcnow(),
            drift_status=drift.status, drift_mac=drift.mean_abs_change, drift_p_value=drift.p_value,
            drift_n=drift.n, reference_run_id=drift.reference_run_id,
            fingerprint_changed=drift.fingerprint_changed, fingerprints_json=to_json(drift.current_fingerprints)))
        # Judgements feed the report and the decision's evidence: their provenance goes in the audit trail.
        record_event(session, "judge_run_finished", {
            "judge_run_id": plan.run_id, "comparison": comparison, "model": settings.model,
            "config_hash": plan.config.config_hash, "status": status, "n_sent": len(plan.items),
            "n_errors": executor.counts[STATUS_ERROR], "n_unparseable": executor.counts[STATUS_UNPARSEABLE],
            "drift_status": drift.status, "fingerprint_changed": drift.fingerprint_changed})
    return drift, status


def run_judge(engine: Engine, comparison: str, settings: JudgeSettings, options: JudgeOptions | None = None,
              progress: Callable[[JudgeProgress], None] | None = None) -> JudgeRunResult:
    """Judge (or resume judging) a stored comparison; call failures are stored, never raised.

    Raises ComparisonNotFound, or ReviewInputError for bad settings or options.
    """
    options = options or JudgeOptions()
    settings.validate()
    options.validate()
    from lib.catalog.keys import require_keys

    require_keys([(settings.model, options.api_base)])  # else every call fails, is stored, and the run "resumes"
    started = time.monotonic()
    plan = _prepare(engine, comparison, settings, options)
    executor = _Executor(engine, plan, settings, options, progress)
    try:
        stoppable.run(executor.run())
    except BaseException:
        _mark_interrupted(engine, plan.run_id)  # what was judged is stored; the same command resumes
        raise
    drift, status = _finish(engine, comparison, plan, settings, options, executor)
    return JudgeRunResult(plan.run_id, comparison, settings.model, plan.config.config_hash, plan.n_pairs,
                          plan.n_selected, len(plan.items), plan.n_resumed, executor.counts[STATUS_ERROR],
                          executor.counts[STATUS_UNPARSEABLE], status, executor.json_mode, drift,
                          round(time.monotonic() - started, 3), executor.pace.get("rpm"),
                          executor.pace.get("rate_limited", 0))
