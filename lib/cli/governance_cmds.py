"""Governance commands: `policy create|list|show`, `gate`, `keys create`, `system set-owner`, `comment`,
`decide`, `verify`, `export`.

`gate` exits 0 go, 1 no-go, 3 inconclusive (2 bad input). `verify` exits 1 when any record is broken.
"""
from __future__ import annotations

import getpass
import os
from pathlib import Path

import typer
from sqlmodel import Session

from lib.cli.app import app, print_json
from lib.errors import ReviewInputError
from lib.governance.decisions import DecisionRequest, add_comment, decide, decision_summary, set_owner
from lib.governance.export import export_record
from lib.governance.gate import GO, INCONCLUSIVE, NO_GO, Verdict, compute_verdict, record_verdict
from lib.governance.policy import create_policy, describe_policy, get_policy, list_policies
from lib.governance.signing import create_key
from lib.governance.verify import verify_store
from lib.store.engine import get_engine

PASSPHRASE_ENV = "REVIEW_PASSPHRASE"
GATE_EXIT = {GO: 0, NO_GO: 1, INCONCLUSIVE: 3}

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
    """REVIEW_PASSPHRASE, else a hidden prompt (twice when creating a key)."""
    return os.environ.get(PASSPHRASE_ENV) or typer.prompt("Passphrase", hide_input=True,
                                                          confirmation_prompt=confirm)


@policy_app.command("create")
def policy_create(name: str = typer.Option(..., "--name", help="Policy name (versions share it)."),
                  file: Path = typer.Option(..., "--file", help="The policy TOML file.")) -> None:
    """Lock a policy file as a new version (unchanged content keeps the current version)."""
    if not file.is_file():
        raise ReviewInputError(f"{file}: no such file")
    result = create_policy(get_engine(), name, file.read_bytes(), source=file.name)
    verb = "Locked" if result.created else "Unchanged: already locked as"
    typer.echo(f"{verb} policy {result.name} v{result.version} sha256 {result.content_hash} "
               f"at {result.created_at.isoformat()}")


@policy_app.command("list")
def policy_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every policy version with its hash and lock time."""
    rows = [{k: v for k, v in p.items() if k != "toml"} for p in list_policies(get_engine())]
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
    with Session(get_engine()) as session:
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
    engine = get_engine()
    verdict, report = compute_verdict(engine, comparison, policy)
    record_verdict(engine, verdict)
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
    info = create_key(get_engine(), name, _passphrase(confirm=True))
    typer.echo(f"Created key {info.name}: fingerprint sha256 {info.fingerprint}\nprivate key: {info.path}")


@system_app.command("set-owner")
def system_set_owner(system: str = typer.Argument(..., help="System name (Comparison.system)."),
                     owner: str = typer.Option(..., "--owner", help="The owner: the only signer.")) -> None:
    """Make NAME the owner of SYSTEM: only they may sign decisions for its comparisons."""
    set_owner(get_engine(), system, owner, actor=getpass.getuser())
    typer.echo(f"{owner} now owns system {system}")


@app.command("comment")
def comment_cmd(comparison: str = typer.Argument(..., help="The comparison."),
                author: str = typer.Option(..., "--author", help="Your name."),
                text: str = typer.Option(..., "--text", help="The comment.")) -> None:
    """Add a review comment (anyone may comment)."""
    comment_id = add_comment(get_engine(), comparison, author, text)
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
    req = DecisionRequest(comparison, decision, signer, rationale, conditions, policy)
    row = decide(get_engine(), req, _passphrase(confirm=False))
    info = decision_summary(row)
    typer.echo(f"Signed decision {info['id']}: {info['decision']} (verdict {info['verdict']}"
               f"{', POST-HOC' if info['post_hoc'] else ''}) by {info['signer']}, key {info['key_fingerprint'][:16]}")


@app.command("verify")
def verify_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Re-check the audit chain, every signature and every evidence digest. Exit 1 when anything is broken."""
    result = verify_store(get_engine())
    if as_json:
        print_json(result.to_dict())
    else:
        counts = ", ".join(f"{n} {k}" for k, n in result.counts.items())
        typer.echo(f"{'INTACT' if result.ok else 'BROKEN'}: checked {counts}")
        for problem in result.problems:
            typer.echo(f"broken: {problem}")
    if not result.ok:
        _exit(1)


@app.command("export")
def export_cmd(comparison: str = typer.Argument(..., help="The comparison."),
               fmt: str = typer.Option("md", "--format", help="md or json.")) -> None:
    """The change-management record (models, dataset, policy, verdict, signed decision) on stdout."""
    typer.echo(export_record(get_engine(), comparison, fmt))
