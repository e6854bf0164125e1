"""Recorded comparisons: load outputs two models already produced (wide, long, promptfoo files,
shadow-traffic logs).

`load_recorded` parses the file into the common shape (`store.Recorded`) and writes a dataset,
two recorded runs and a comparison in one transaction: a failed load writes nothing. Shadow logs
(`shadow.py`) are streamed instead: `load_recorded_file` never reads them whole.
"""
from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from lib.data.formats import FORMATS
from lib.data.loaders import long, promptfoo, wide
from lib.data.loaders.store import (
    SIDES,
    OutputValues,
    Recorded,
    StoredRecorded,
    comparison_exists,
    output_values,
    recorded_config_row,
    store_recorded,
)
from lib.data.table_stream import gc_paused, release_freed_memory
from lib.data.tables import Table, decode_text, file_kind, open_input, read_rows
from lib.errors import RecordedLoadError
from lib.release import shadow

if TYPE_CHECKING:
    from lib.review.check_worker import CheckWorker
    from lib.review.checked import Checker
    from lib.review.settings import ReviewSettings

# A file this big has its outputs checked by a helper process while they are written (lib.review.check_worker):
# ~35k pairs of short outputs. The helper is ready ~1.2 s after the load starts and costs ~0.7-1 s of CPU; below
# ~22k pairs the load is done parsing and writing before it is ready, and checking in-process is faster.
HELPER_MIN_BYTES = 16_000_000


@dataclass
class LoadMapping:
    """Column names (and model values) in the file; None means the default or "not in the file"."""

    id_col: str | None = None
    input_col: str | None = None
    output_col: str | None = None  # long
    model_col: str | None = None  # long
    baseline: str | None = None  # the baseline's model value (long), provider id (promptfoo) or name (wide)
    candidate: str | None = None
    baseline_col: str | None = None  # wide
    candidate_col: str | None = None  # wide
    expected_col: str | None = None
    category_col: str | None = None
    latency_col: str | None = None  # wide: the part after the side prefix (baseline_<latency_col>)
    cost_col: str | None = None
    prompt_tokens_col: str | None = None
    completion_tokens_col: str | None = None
    timestamp_col: str | None = None
    timestamp_format: str | None = None  # strftime, for text that is not ISO 8601 or epoch
    role_col: str | None = None  # shadow: serving/shadow per row (instead of --baseline/--candidate)
    match: str | None = None  # one rule for every case
    pattern: str | None = None
    # Reviewer settings stored with the comparison before its outputs are checked (refusal patterns, a
    # schema for every case, the input token limit): lib.review.settings.ReviewSettings.
    review: ReviewSettings | None = None


@dataclass
class LoadResult:
    comparison: str
    fmt: str
    n_pairs: int
    baseline: str
    candidate: str
    baseline_only: int  # outputs of the baseline with no candidate counterpart
    candidate_only: int
    first_unpaired_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was applied by default (the match rule)


def _tabular_format(table: Table, m: LoadMapping) -> str:
    if m.model_col or m.output_col:
        return "long"
    if m.baseline_col or m.candidate_col:
        return "wide"
    if all(any(c in table.columns for c in cols) for cols in wide.OUTPUT_COLS.values()):
        return "wide"
    if any(c in table.columns for c in long.MODEL_COLS):
        return "long"
    raise RecordedLoadError(table.source, "cannot tell the format: no 'model' column (long) and no "
                                          "'baseline_output'/'candidate_output' columns (wide); pass "
                                          f"--format; available columns: {', '.join(table.columns)}")


def _detect(data: bytes, filename: str, m: LoadMapping) -> tuple[str, Table | None]:
    """The format and, for wide/long, the parsed rows (so a load reads the file once)."""
    kind = file_kind(filename, RecordedLoadError)
    if promptfoo.looks_like(decode_text(data, filename, RecordedLoadError), kind):
        return "promptfoo", None
    table = read_rows(data, filename, RecordedLoadError)
    return _tabular_format(table, m), table


def detect_format(data: bytes, filename: str, mapping: LoadMapping | None = None) -> str:
    """wide | long | promptfoo, from the file's shape and columns."""
    return _detect(data, filename, mapping or LoadMapping())[0]


def _parse(data: bytes, filename: str, fmt: str | None, m: LoadMapping) -> tuple[str, Recorded]:
    if fmt is None:
        fmt, table = _detect(data, filename, m)
    elif fmt in FORMATS:
        table = None
    else:
        raise RecordedLoadError(filename, f"unknown format '{fmt}' (use {', '.join(FORMATS)})", field="format")
    if fmt == "promptfoo":
        return fmt, promptfoo.parse(data, filename, m)
    table = table or read_rows(data, filename, RecordedLoadError)
    return fmt, (wide if fmt == "wide" else long).parse(table, m)


def _report(rec: Recorded, fmt: str, filename: str) -> dict[str, Any]:
    return {"format": fmt, "file": filename, "baseline": rec.baseline, "candidate": rec.candidate,
            "n_pairs": rec.n_pairs, "baseline_only": rec.baseline_only, "candidate_only": rec.candidate_only,
            "first_unpaired_ids": rec.first_unpaired_ids, "warnings": rec.warnings, "notes": rec.notes,
            "has_input": rec.has_input}


def _check_name(engine: Engine, name: str, filename: str) -> str:
    name = name.strip()
    if not name:
        raise RecordedLoadError(filename, "the comparison name is empty")
    if comparison_exists(engine, name):
        raise RecordedLoadError(filename, f"a comparison named '{name}' already exists; pick another name")
    return name


def _no_input_limit(filename: str, mapping: LoadMapping | None) -> None:
    """An input token limit on a log without inputs would count nothing and report 0% over the limit."""
    if mapping is not None and mapping.review is not None and mapping.review.input_token_limit:
        raise RecordedLoadError(filename, "has no input column, so the input token limit cannot be checked; "
                                          "name the input column (--input-col) or drop --input-token-limit",
                                field="input_token_limit")


def _check_now(engine: Engine, name: str, mapping: LoadMapping | None,
               written: dict[int, dict[str, Any]] | None = None, checker: Checker | None = None) -> None:
    # Check and store every output now, so the first report of this comparison reads stored columns;
    # `written` (store_recorded's): the outputs as just stored, checked without reading them back (by
    # `checker`: a helper process's results, lib.review.check_worker).
    from lib.review.checked import check_here, ensure_checked  # heavy (pyarrow, jsonschema): only for a load
    from lib.review.settings import save_settings

    if mapping is not None and mapping.review is not None:
        save_settings(engine, name, mapping.review)
    ensure_checked(engine, name, written=written, checker=checker or check_here)


def _start_worker(size: int, mapping: LoadMapping | None) -> CheckWorker | None:
    """A helper process for the checks of a file of `size` bytes: from HELPER_MIN_BYTES (below, its start and
    imports cost more than it saves)."""
    if size < HELPER_MIN_BYTES:
        return None
    from lib.review.check_worker import CheckWorker

    return CheckWorker.start((mapping.baseline, mapping.candidate) if mapping is not None else ())


def _submit_checks(worker: CheckWorker, rec: Recorded, values: OutputValues, mapping: LoadMapping | None) -> None:
    """Hand the helper both sides' outputs, under the settings and prompts the load will store them with."""
    from lib.review.settings import ReviewSettings
    from lib.review.tokens import RunPrompt

    settings = mapping.review if mapping is not None and mapping.review is not None else ReviewSettings()
    prompts = {}
    for side, model in zip(SIDES, (rec.baseline, rec.candidate)):
        row = recorded_config_row(model)
        prompts[side] = RunPrompt(row["model"], row["system_prompt"], row["prompt_template"])
    worker.submit({side: values.checks[side] for side in SIDES if side in values.checks}, settings, prompts)


def _import_litellm_quietly() -> None:
    from lib.run.llm import litellm_module

    try:
        litellm_module()
    except Exception:  # noqa: BLE001 - the import where it is used raises it again, as it would have
        pass


def _start_importing_litellm(mapping: LoadMapping | None) -> None:
    """The checks at the end of a load count tokens with litellm, whose import costs ~2.5 s: started here on
    a thread, it overlaps parsing and writing the file (SQLite and file reads release the GIL). The checks'
    own `import litellm` waits for it if it is not done. The modules the load itself imports are imported
    first, so the two threads never wait on each other's module locks. Not at all when both models are
    named and counted with tiktoken without litellm (lengths.tiktoken_encoding_name)."""
    from lib.review.checks.lengths import tiktoken_encoding_name

    models = (mapping.baseline, mapping.candidate) if mapping is not None else (None, None)
    if "litellm" in sys.modules or all(m is not None and tiktoken_encoding_name(m) for m in models):
        return
    import lib.data.loaders.rule_advice  # noqa: F401
    import lib.review.checked  # noqa: F401
    import lib.review.settings  # noqa: F401
    import lib.run.llm  # noqa: F401

    threading.Thread(target=_import_litellm_quietly, name="import-litellm", daemon=True).start()


def load_recorded(engine: Engine, data: bytes, filename: str, name: str, fmt: str | None = None,
                  mapping: LoadMapping | None = None, system: str = "default") -> LoadResult:
    """Load a recorded comparison named `name` from a wide, long or promptfoo file."""
    name = _check_name(engine, name, filename)
    shadow_log = fmt == shadow.FORMAT or (fmt is None and filename.lower().endswith(".gz"))
    worker = None if shadow_log else _start_worker(len(data), mapping)
    if worker is None:
        _start_importing_litellm(mapping)  # else the helper counts the tokens (and imports what it needs)
    if shadow_log:
        return _load_shadow(engine, io.BytesIO(data), filename, name, mapping, system)
    try:
        fmt, rec = _parse(data, filename, fmt, mapping or LoadMapping())
        del data  # the file's bytes: not held through the writes and checks (load_recorded_file keeps no copy)
        release_freed_memory()  # the parse's rows and frames, freed: not kept resident through the rest
        from lib.review.checks.matching import shared_normalize

        # The rule advice and the checks normalise the same outputs for the default rule: once.
        with shared_normalize():
            stored, result = _store(engine, rec, filename, name, fmt, mapping, system, worker)
            del rec  # the parsed file: the checks take the outputs as stored (`stored.written`)
            release_freed_memory()  # the rows inserted: while the helper still checks, both are resident
            _check_now(engine, name, mapping, stored.written,
                       worker.checker(stored.run_ids) if worker is not None else None)
    finally:
        if worker is not None:
            worker.close()
    return result


def _store(engine: Engine, rec: Recorded, filename: str, name: str, fmt: str, mapping: LoadMapping | None,
           system: str, worker: CheckWorker | None) -> tuple[StoredRecorded, LoadResult]:
    """Store a parsed file with the default rule's advice; a `worker` is handed the outputs to check meanwhile."""
    if not rec.has_input:
        _no_input_limit(filename, mapping)
    values = output_values(rec)
    if worker is not None and values.checks:
        _submit_checks(worker, rec, values, mapping)
    if mapping is None or mapping.match is None:
        from lib.data.loaders.rule_advice import default_rule_notes  # imports the matching checks

        notes, warnings = default_rule_notes(rec)
        rec.notes.extend(notes)
        rec.warnings.extend(warnings)
    stored = store_recorded(engine, rec, name=name, source=filename, fmt=fmt, system=system,
                            report=_report(rec, fmt, filename), values=values)
    return stored, LoadResult(comparison=name, fmt=fmt, n_pairs=rec.n_pairs, baseline=rec.baseline,
                              candidate=rec.candidate, baseline_only=rec.baseline_only,
                              candidate_only=rec.candidate_only, first_unpaired_ids=rec.first_unpaired_ids,
                              warnings=rec.warnings, notes=rec.notes)


def _load_shadow(engine: Engine, raw: Any, filename: str, name: str, mapping: LoadMapping | None, system: str,
                 progress: Callable[[int], None] | None = None) -> LoadResult:
    report = shadow.load_shadow(engine, raw, filename, name, mapping or LoadMapping(), system, progress=progress)
    _check_now(engine, name, mapping)
    return LoadResult(comparison=name, fmt=shadow.FORMAT, n_pairs=report["n_pairs"], baseline=report["baseline"],
                      candidate=report["candidate"], baseline_only=report["baseline_only"],
                      candidate_only=report["candidate_only"], first_unpaired_ids=report["first_unpaired_ids"],
                      warnings=report["warnings"])


def load_recorded_file(engine: Engine, path: Path, name: str, fmt: str | None = None,
                       mapping: LoadMapping | None = None, system: str = "default",
                       progress: Callable[[int], None] | None = None) -> LoadResult:
    """`load_recorded` from a path; a shadow log (or any .gz) is streamed, never read whole."""
    with open_input(path, RecordedLoadError) as raw:
        if fmt == shadow.FORMAT or (fmt is None and path.name.lower().endswith(".gz")):
            name = _check_name(engine, name, path.name)
            return _load_shadow(engine, raw, path.name, name, mapping, system, progress)
        with gc_paused():  # rows, cells and frames by the hundred thousand: see table_stream.gc_paused
            return load_recorded(engine, raw.read(), path.name, name, fmt, mapping, system)

__all__ = ["FORMATS", "LoadMapping", "LoadResult", "detect_format", "load_recorded", "load_recorded_file"]
