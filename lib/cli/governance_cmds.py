"""Governance commands: `policy create|list|show`, `gate`, `keys create`, `system claim|transfer|set-owner`,
`comment`, `decide`, `verify`, `export`.

`gate` exits 0 go, 1 no-go, 3 inconclusive (2 bad input). `verify` exits 1 when any record is broken.
"""
from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from lib.cli.app import app, engine, print_json
from lib.errors import ReviewInputError
from lib.governance.outcomes import GATE_EXIT

if TYPE_CHECKING:  # the governance modules load the report (scipy): imported inside each command
    from lib.governance.gate import Verdict
    from lib.governance.owners import OwnerChange

PASSPHRASE_ENV = "REVIEW_PASSPHRASE"

policy_app = typer.Typer(help="Gate policies: create (lock), list, show.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys (Ed25519).", no_args_is_help=True)
system_app = typer.Typer(help="Systems and their owners.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(keys_app, name="keys")
app.add_typer(system_app, name="system")


def _exit(code: int) -> None:
    # SystemExit, not typer.Exit: `lib.cli.main` runs click with standalone_mode=False, where click
    # returns an Exit's code instead of raising it, and main() does not pass that code on.
    if code:
        raise SystemExit(code)


def _passphrase(confirm: bool) -> str:
    """REVIEW_PASSPHRASE, else a hidden prompt (twice when creating a key), else lines piped to stdin."""
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if sys.stdin.isatty():
        return typer.prompt("Passphrase", hide_input=True, confirmation_prompt=confirm)
    # No terminal (a pipe, CI): getpass would warn on stderr and an empty stdin would end in exit 130.
    first = sys.stdin.readline().rstrip("\n")
    if not first:
        raise ReviewInputError(f"no passphrase: set {PASSPHRASE_ENV} or run the command in a terminal")
    if confirm and sys.stdin.readline().rstrip("\n") != first:
        raise ReviewInputError("the two passphrases piped to stdin differ")
    return first


DATASET_HELP = ("The dataset the policy will gate: prints, per criterion, the smallest margin that can pass "
                "on identical outputs and the cases the chosen margin needs.")


def _print_detectability(data: bytes, source: str, dataset: str) -> None:
    from lib.governance.detectability import assess, dataset_counts
    from lib.governance.policy import parse_policy

    counts = dataset_counts(engine(), dataset)
    typer.echo(f"What this policy can detect on dataset {dataset} ({counts.n} cases):")
    for item in assess(parse_policy(data, source), counts):
        typer.echo(f"  {'CANNOT PASS ' if item.can_pass is False else ''}{item.sentence}")


@policy_app.command("create")
def policy_create(name: str = typer.Option(..., "--name", help="Policy name (versions share it)."),
                  file: Path = typer.Option(..., "--file", help="The policy TOML file."),
                  dataset: str = typer.Option(None, "--dataset", help=DATASET_HELP)) -> None:
    """Lock a policy file as a new version (unchanged content keeps the current version)."""
    from lib.governance.policy import create_policy

    if not file.is_file():
        raise ReviewInputError(f"{file}: no such file")
    if dataset:
        _print_detectability(file.read_bytes(), file.name, dataset)
    result = create_policy(engine(), name, file.read_bytes(), source=file.name)
    verb = "Locked" if result.created else "Unchanged: already locked as"
    typer.echo(f"{verb} policy {result.name} v{result.version} sha256 {result.content_hash} "
               f"at {result.created_at.isoformat()}")


@policy_app.command("list")
def policy_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every policy version with its hash and lock time."""
    from lib.governance.policy import list_policies

    rows = [{k: v for k, v in p.items() if k != "toml"} for p in list_policies(engine())]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("No policies yet. Create one with `policy create --name NAME --file policy.toml`.")
        return
    typer.echo(f"{'NAME':<28} {'VERSION':>7}  {'SHA256':<16}  LOCKED AT")
    for p in rows:
        typer.echo(f"{p['name']:<28} {p['version']:>7}  {p['content_hash'][:16]}  {p['locked_at']}")


@policy_app.command("show")
def policy_show(name: str = typer.Argument(..., help="Policy name."),
                version: int = typer.Option(None, "--version", help="A version (default: the latest)."),
                as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """A policy version's canonical TOML, hash and lock time."""
    from sqlmodel import Session

    from lib.governance.policy import describe_policy, get_policy

    with Session(engine()) as session:
        info = describe_policy(get_policy(session, name, version))
    if as_json:
        print_json(info)
        return
    state = "locked (content matches its hash)" if info["locked"] else "BROKEN: content does not match its hash"
    typer.echo(f"# {info['name']} v{info['version']}  sha256 {info['content_hash']}\n"
               f"# locked at {info['locked_at']}, {state}\n{info['toml']}", nl=False)


def _print_verdict(v: Verdict) -> None:
    typer.echo(f"Verdict: {v.verdict.upper()}  (policy {v.policy_name} v{v.policy_version} "
               f"sha256 {v.policy_hash[:16]}, {v.n} pairs, {1 - v.alpha:.0%} intervals)")
    if v.post_hoc:
        typer.echo(f"POST-HOC: the policy was locked at {v.policy_locked_at}, after the candidate's first "
                   f"output at {v.candidate_first_output_at}")
    typer.echo(f"{'CRITERION':<28} {'THRESHOLD':<13} {'MARGIN':>8} {'OBSERVED':>10}  {'CI':<22} RESULT")
    for c in v.criteria:
        ci = f"[{c.ci[0]:.4g}, {c.ci[1]:.4g}]" if c.ci else "-"
        observed = "-" if c.observed is None else f"{c.observed:.4g}"
        flag = "" if c.blocking else " (non-blocking)"
        typer.echo(f"{c.criterion:<28} {c.threshold:<13} {c.margin:>8g} {observed:>10}  {ci:<22} "
                   f"{c.result}{flag}")
        if c.result != "pass":
            typer.echo(f"    {c.reason}")
    for note in v.notes:
        typer.echo(f"note: {note}")


@app.command("gate")
def gate_cmd(comparison: str = typer.Argument(..., help="The comparison to gate."),
             policy: str = typer.Option(..., "--policy", help="Policy name (its latest version)."),
             as_json: bool = typer.Option(False, "--json", help="Print the verdict as JSON.")) -> None:
    """Apply a locked policy to a comparison. Exit 0 go, 1 no-go, 3 inconclusive, 2 bad input."""
    from lib.governance.gate import compute_verdict, record_verdict

    store = engine()
    verdict, report = compute_verdict(store, comparison, policy)
    record_verdict(store, verdict)
    if as_json:
        print_json(verdict.to_dict() | {"settings": report["settings"]})
    else:
        from lib.review.settings import describe, settings_from_dict

        _print_verdict(verdict)
        typer.echo(f"settings: {describe(settings_from_dict(report['settings']))} "
                   f"(change with `./review settings set {comparison} ...`)")
    _exit(GATE_EXIT[verdict.verdict])


@keys_app.command("create")
def keys_create(name: str = typer.Argument(..., help="Signer name (the key's name).")) -> None:
    """Create an Ed25519 key pair: the encrypted private key in REVIEW_KEY_DIR, the public key in the store."""
    from lib.governance.signing import create_key

    info = create_key(engine(), name, _passphrase(confirm=True))
    typer.echo(f"Created key {info.name}: fingerprint sha256 {info.fingerprint}\nprivate key: {info.path}")


def _owner_line(change: OwnerChange) -> str:
    if change.how == "unchanged":
        return f"{change.owner} already owns system {change.system}"
    if change.how == "transfer":
        return f"{change.owner} now owns system {change.system} (transferred by {change.previous}, signed)"
    return f"{change.owner} now owns system {change.system} (claimed)"


@system_app.command("claim")
def system_claim(system: str = typer.Argument(..., help="System name (Comparison.system)."),
                 owner: str = typer.Option(..., "--owner", help="The owner: the only signer.")) -> None:
    """Claim a system that has no owner (exit 2 when it has one: only a signed transfer moves it)."""
    from lib.governance.owners import claim_system

    typer.echo(_owner_line(claim_system(engine(), system, owner, actor=getpass.getuser())))


@system_app.command("transfer")
def system_transfer(system: str = typer.Argument(..., help="System name (Comparison.system)."),
                    to: str = typer.Option(..., "--to", help="The new owner.")) -> None:
    """Hand a system to a new owner, signed with the current owner's key (REVIEW_PASSPHRASE or a prompt)."""
    from lib.governance.owners import transfer_system

    typer.echo(_owner_line(transfer_system(engine(), system, to, _passphrase(confirm=False))))


@system_app.command("set-owner")
def system_set_owner(system: str = typer.Argument(..., help="System name (Comparison.system)."),
                     owner: str = typer.Option(..., "--owner", help="The owner: the only signer.")) -> None:
    """A claim when SYSTEM has no owner; a change of owner is refused (use `system transfer`)."""
    from lib.governance.owners import set_owner

    typer.echo(_owner_line(set_owner(engine(), system, owner, actor=getpass.getuser())))


@app.command("comment")
def comment_cmd(comparison: str = typer.Argument(..., help="The comparison."),
                author: str = typer.Option(..., "--author", help="Your name."),
                text: str = typer.Option(..., "--text", help="The comment.")) -> None:
    """Add a review comment (anyone may comment)."""
    from lib.governance.decisions import add_comment

    comment_id = add_comment(engine(), comparison, author, text)
    typer.echo(f"Comment {comment_id} added to {comparison}")


@app.command("decide")
def decide_cmd(comparison: str = typer.Argument(..., help="The comparison."),
               decision: str = typer.Option(..., "--decision", help="go or no-go."),
               signer: str = typer.Option(..., "--signer", help="The system owner's key name."),
               rationale: str = typer.Option(..., "--rationale", help="Why."),
               conditions: str = typer.Option(None, "--conditions",
                                              help="e.g. canary share and rollback triggers."),
               policy: str = typer.Option(None, "--policy",
                                          help="Policy name (default: the policy of the last gate run).")) -> None:
    """Sign a go/no-go decision over the verdict and the evidence. Exit 2 (nothing written) when refused."""
    from sqlmodel import Session

    from lib.governance.decisions import DecisionRequest, decision_summary, sign_decision
    from lib.governance.signing import registered_key

    store = engine()
    req = DecisionRequest(comparison, decision, signer, rationale, conditions, policy)
    with Session(store) as session:  # a signer without a key is refused before asking for a passphrase
        registered_key(session, signer.strip())
    signed = sign_decision(store, req, _passphrase(confirm=False))
    info = decision_summary(signed.decision)
    if not signed.created:
        typer.echo(f"Already signed as decision #{info['id']}: {info['decision']} by {info['signer']} on the same "
                   "evidence (nothing new written)")
        return
    typer.echo(f"Signed decision {info['id']}: {info['decision']} (verdict {info['verdict']}"
               f"{', POST-HOC' if info['post_hoc'] else ''}) by {info['signer']}, key {info['key_fingerprint'][:16]}")


@app.command("verify")
def verify_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
               anchor: Optional[Path] = typer.Option(
                   None, "--anchor", help="An anchor file (REVIEW_ANCHOR_FILE) or an exported change record (JSON): "
                                          "the store must still extend the chain head it holds.")) -> None:
    """Re-check the audit chain, every signature and every evidence digest. Exit 1 when anything is broken."""
    from lib.governance.verify import anchors_from, verify_store

    result = verify_store(engine(), anchors_from(anchor) if anchor is not None else None)
    if as_json:
        print_json(result.to_dict())
    else:
        counts = ", ".join(f"{n} {k}" for k, n in result.counts.items())
        typer.echo(f"{'INTACT' if result.ok else 'BROKEN'}: checked {counts}")
        for d in result.decisions:
            head = d["chain_head"]
            bound = f"binds audit chain head seq {head['seq']} ({head['hash'][:16]})" if head else d["note"]
            typer.echo(f"decision {d['id']} (comparison '{d['comparison']}'): {bound}")
        for problem in result.problems:
            typer.echo(f"broken: {problem}")
    if not result.ok:
        _exit(1)


@app.command("export")
def export_cmd(comparison: str = typer.Argument(..., help="The comparison."),
               fmt: str = typer.Option("md", "--format", help="md or json.")) -> None:
    """The change-management record (models, dataset, policy, verdict, signed decision) on stdout."""
    from lib.governance.export import export_record

    typer.echo(export_record(engine(), comparison, fmt))
