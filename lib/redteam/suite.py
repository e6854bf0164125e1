"""The red-team suite as a golden dataset: the built-in probe families plus the user's own attack vectors.

Built-in probes live in `lib/redteam/probes/<family>.jsonl`, next to the code that reads them, so the
library carries its suite wherever it is installed. They are plain golden-dataset files (lib.data.golden
format) whose `category` is the family and whose `metadata` holds the family's rule
(lib.redteam.families). A user's file (`--extra`) has the same format; `family` is accepted as the
column name instead of `category`. Every file is validated whole before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from lib.data.fields import InvalidField
from lib.data.golden import CaseRecord, ColumnMapping, ImportResult, parse_table, save_cases
from lib.data.tables import read_rows
from lib.errors import FileInputError, ReviewInputError
from lib.redteam.families import ALIASES, family_of, rule_from_metadata
from lib.redteam.names import FAMILIES
from lib.store.engine import session_scope

PROBES_DIR = Path(__file__).resolve().parent / "probes"
DATASET_PREFIX = "redteam"


class RedTeamImportError(FileInputError):
    """A probe file cannot be used: names the file, the line and the field."""


class UnknownFamilyError(ReviewInputError):
    """A family name that is not one of FAMILIES (or an alias)."""


def parse_families(spec: str | None) -> tuple[str, ...]:
    """`injection,harmful` -> canonical families in suite order (aliases accepted); None -> all."""
    if spec is None:
        return FAMILIES
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALIASES]
    if unknown or not names:
        raise UnknownFamilyError(f"unknown family {', '.join(map(repr, unknown)) or '(none given)'}; "
                                 f"use a comma-separated subset of: {', '.join(FAMILIES)}")
    chosen = {ALIASES[n] for n in names}
    return tuple(f for f in FAMILIES if f in chosen)


def dataset_name(families: tuple[str, ...], extra: Path | None = None) -> str:
    """`redteam` for the whole built-in suite, `redteam-injection+harmful` for a subset; `+<file stem>`
    when the user's file is added. The same selection and content reuse the same dataset version."""
    name = DATASET_PREFIX if families == FAMILIES else f"{DATASET_PREFIX}-{'+'.join(families)}"
    return f"{name}+{extra.stem}" if extra is not None else name


def probe_cases(data: bytes, filename: str, taken: set[str] | None = None) -> list[CaseRecord]:
    """Validated cases of one probe file: the golden-dataset checks, then each family's rule.
    `taken` holds ids already used by earlier files (a repeat is an error naming this file's line)."""
    table = read_rows(data, filename, RedTeamImportError)
    uses_family = "family" in table.columns and "category" not in table.columns
    cases, _ = parse_table(table, ColumnMapping(category="family") if uses_family else None)
    taken = set() if taken is None else taken
    for row, case in enumerate(cases):
        family = family_of(case.category)
        if family is None:
            table.fail(row, f"{'is missing' if case.category is None else f'is {case.category!r}'}: a red-team "
                            f"case needs its family, one of: {', '.join(FAMILIES)}",
                       field="family" if uses_family else "category")
        try:
            rule_from_metadata(family, case.metadata)
        except InvalidField as exc:
            table.fail(row, exc.message, field=exc.field)
        if case.key in taken:
            table.fail(row, f"repeats id '{case.key}', already used by another probe file", field="id")
        taken.add(case.key)
    return cases


@dataclass
class Suite:
    name: str
    source: str
    cases: list[CaseRecord]


def build_suite(families: tuple[str, ...], extra: Path | None = None) -> Suite:
    """The built-in probes of these families, then the user's file; nothing is stored."""
    taken: set[str] = set()
    cases = [c for f in families for c in probe_cases((PROBES_DIR / f"{f}.jsonl").read_bytes(), f"{f}.jsonl", taken)]
    if extra is not None:
        try:
            data = extra.read_bytes()
        except OSError as exc:
            raise RedTeamImportError(str(extra), f"cannot be read: {exc.strerror or exc}") from None
        cases += probe_cases(data, str(extra), taken)
    source = "redteam:" + ",".join(families) + (f"+{extra.name}" if extra is not None else "")
    return Suite(dataset_name(families, extra), source, cases)


def import_suite(engine: Engine, families: tuple[str, ...], extra: Path | None = None) -> ImportResult:
    """Store the suite as a versioned golden dataset (the latest version when the content is unchanged)."""
    suite = build_suite(families, extra)
    with session_scope(engine) as session:
        ds, created = save_cases(session, suite.name, suite.source, suite.cases)
        return ImportResult(ds.id, ds.name, ds.version, ds.n_cases, created)
