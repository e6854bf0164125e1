"""The change-management record of a comparison: what was compared, under which locked policy, the
verdict, the signed decision and its integrity, as JSON or Markdown."""
from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from lib.errors import ReviewInputError
from lib.governance.decisions import current_owner, decision_summary, list_comments, list_decisions
from lib.governance.entities import Decision, Policy
from lib.governance.verify import verify_decision
from lib.review.comparisons import describe, get_comparison
from lib.review.constants import SIDES
from lib.store.audit import as_utc, chain_head, iso_now, sha256_hex

EXPORT_FORMATS = ("md", "json")


def _model(run: dict) -> dict[str, Any]:
    return {k: run[k] for k in ("model", "api_base", "served_model", "system_fingerprint", "status",
                                "n_outputs", "n_errors", "source")}


def _policy(session: Session, decision: Decision) -> dict[str, Any]:
    policy = session.get(Policy, decision.policy_id)
    if policy is None:
        return {"name": decision.policy_name, "version": decision.policy_version, "hash": decision.policy_hash,
                "lock": "missing from the store"}
    intact = sha256_hex(policy.content_toml) == policy.content_hash == decision.policy_hash
    return {"name": policy.name, "version": policy.version, "hash": policy.content_hash,
            "locked_at": as_utc(policy.created_at).isoformat(), "lock": "intact" if intact else "BROKEN",
            "toml": policy.content_toml}


def _decision(engine: Engine, row: Decision) -> dict[str, Any]:
    problems = verify_decision(engine, row.id)
    return {**decision_summary(row), "data_digest": row.data_digest,
            "integrity": "intact" if not problems else "; ".join(p.message for p in problems)}


def change_record(engine: Engine, comparison: str) -> dict[str, Any]:
    """Everything a change-management ticket needs; the latest decision first, history after."""
    decisions = list_decisions(engine, comparison)
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        info = describe(session, comp)
        owner = current_owner(session, comp.system)
        policy = _policy(session, decisions[0]) if decisions else None
    latest = decisions[0] if decisions else None
    with engine.connect() as conn:
        head = chain_head(conn)  # an anchor outside the store: `./review verify --anchor THIS_FILE`
    return {"comparison": comp.name, "system": comp.system, "owner": owner, "source": comp.source,
            "created_at": info["created_at"], "exported_at": iso_now(),
            "dataset": {"name": info["dataset"], "version": info["dataset_version"], "n_cases": info["n_cases"]},
            "baseline": _model(info["baseline_run"]), "candidate": _model(info["candidate_run"]),
            "policy": policy, "verdict": json.loads(latest.verdict_json) if latest else None,
            "post_hoc": bool(latest.post_hoc) if latest else None,
            "decision": _decision(engine, latest) if latest else None,
            "history": [decision_summary(d) for d in decisions[1:]],
            "comments": list_comments(engine, comparison), "chain_head": head}


# CommonMark lets any ASCII punctuation be backslash-escaped. These start inline markup anywhere (code,
# emphasis, links, images, raw HTML, entities, table cells); names, rationale, conditions and comments are
# untrusted, so `<script>` and `![x](http://...)` stay text. Block markers matter only at a line's start.
_MD_INLINE = frozenset("\\`*_[]<>!|&~")
_MD_LINE_START = re.compile(r"^(\s*)([-+=#]|\d+[.)])")


def _md(value: Any) -> str:
    """One line of untrusted text as literal Markdown (CommonMark)."""
    text = "".join("\\" + ch if ch in _MD_INLINE else ch for ch in str(value))
    return _MD_LINE_START.sub(lambda m: m[1] + m[2][:-1] + "\\" + m[2][-1], text, count=1)


def _cell(value: Any) -> str:
    """Untrusted text for one line or table cell: escaped, line breaks folded into spaces."""
    return "" if value is None else _md(" ".join(str(value).splitlines()))


def _quote(text: str | None) -> list[str]:
    return [f"> {_md(line)}" for line in (text or "(none)").splitlines()] or ["> (none)"]


def _md_models(rec: dict) -> list[str]:
    lines = ["## Models", "", "| side | model | served model | fingerprint | status | outputs | errors |",
             "|---|---|---|---|---|---|---|"]
    for side in SIDES:
        m = rec[side]
        lines.append(f"| {side} | {_cell(m['model'])} | {_cell(m['served_model'])} | "
                     f"{_cell(m['system_fingerprint'])} | {m['status']} | {m['n_outputs']} | {m['n_errors']} |")
    ds = rec["dataset"]
    return lines + ["", f"Dataset: {_cell(ds['name'])} v{ds['version']} ({ds['n_cases']} cases)", ""]


def _md_verdict(rec: dict) -> list[str]:
    v, p = rec["verdict"], rec["policy"]
    post_hoc = " — **POST-HOC**: the policy was locked after the candidate's first output." if rec["post_hoc"] else "."
    lines = ["## Policy and verdict", "",
             f"Policy {_cell(p['name'])} v{p['version']}, sha256 `{p['hash']}`, locked {p.get('locked_at')}, "
             f"lock {p['lock']}.", "",
             f"Verdict: **{v['verdict'].upper()}** on {v['n']} pairs at {v['ci_level']:.0%} confidence"
             + post_hoc, "",
             "| criterion | threshold | margin | observed | CI | result | blocking |", "|---|---|---|---|---|---|---|"]
    for c in v["criteria"]:
        ci = f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]" if c["ci"] else ""
        observed = "" if c["observed"] is None else f"{c['observed']:.4g}"
        lines.append(f"| {_cell(c['criterion'])} | {c['threshold']} | {c['margin']:g} | {observed} | {ci} | "
                     f"{c['result']} | {'yes' if c['blocking'] else 'no'} |")
    return lines + [""] + [f"- {_cell(n)}" for n in v["notes"]] + [""]


def _md_decision(rec: dict) -> list[str]:
    d = rec["decision"]
    return ["## Decision", "", f"**{d['decision'].upper()}** signed by {_cell(d['signer'])} at {d['signed_at']}.",
            "", "Rationale:", *_quote(d["rationale"]), "", "Conditions:", *_quote(d["conditions"]), "",
            f"- public-key fingerprint (sha256): `{d['key_fingerprint']}`",
            f"- signature (Ed25519): `{d['signature']}`",
            f"- evidence digest: `{d['evidence_digest']}`", f"- audit chain head at signing: {_bound(d)}",
            f"- integrity: {_cell(d['integrity'])}", ""]


def _bound(d: dict) -> str:
    head = d.get("chain_head")
    return f"seq {head['seq']}, sha256 `{head['hash']}`" if head else "not bound (signed before chain heads were bound)"


def record_markdown(rec: dict) -> str:
    lines = [f"# Change record: {_cell(rec['comparison'])}", "",
             f"System {_cell(rec['system'])}, owner {_cell(rec['owner'] or '(none)')}. "
             f"Comparison created {rec['created_at']}; exported {rec['exported_at']}.", ""]
    lines += _md_models(rec)
    if rec["decision"] is None:
        lines += ["## Decision", "", "No signed decision yet.", ""]
    else:
        lines += _md_verdict(rec) + _md_decision(rec)
    if rec["history"]:
        lines += ["## Earlier decisions", ""] + [f"- {h['signed_at']}: {h['decision']} by {_cell(h['signer'])} "
                                                  f"(verdict {h['verdict']})" for h in rec["history"]] + [""]
    if rec.get("chain_head"):
        head = rec["chain_head"]
        lines += ["## Audit chain head", "", f"seq {head['seq']}, sha256 `{head['hash']}`. Keep this record: "
                  "`./review verify --anchor` with the JSON export checks that the store still extends this head.",
                  ""]
    if rec["comments"]:
        lines += ["## Comments", ""] + [f"- {c['created_at']} {_cell(c['author'])}: {_cell(c['text'])}"
                                        for c in rec["comments"]] + [""]
    return "\n".join(lines)


def export_record(engine: Engine, comparison: str, fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise ReviewInputError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got '{fmt}'")
    rec = change_record(engine, comparison)
    return record_markdown(rec) if fmt == "md" else json.dumps(rec, indent=2, ensure_ascii=False)
