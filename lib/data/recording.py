"""Recordings: one comparison (both runs, all outputs) as a compact, portable JSONL file.

A recording is what a real run produced, so it can be replayed on another machine without the models,
an API key or a network (the offline demo ships one). It travels next to its golden dataset file,
which is imported through `lib.data.golden`; the recording names the dataset's content hash so a recording
is never attached to different cases.

Format (UTF-8 JSONL):

line 1, the meta object::

    {"kind": "meta", "format": "upgrade-review-recording", "version": 1,
     "comparison": NAME, "system": "default", "source": "run", "notes": {...} | null,
     "recorded_at": ISO-8601,
     "dataset": {"name", "version", "content_hash", "n_cases"},
     "baseline":  {"config": {"config_hash", "model", "api_base", "temperature", "top_p", "max_tokens",
                              "seed", "response_format", "tools", "system_prompt", "prompt_template",
                              "extra"},
                   "run": {"source", "status", "repeats", "system_fingerprint", "served_model",
                           "started_at", "finished_at"}},
     "candidate": {...same...}}

then one line per output (absent keys are null; no raw response bodies)::

    {"c": case id, "s": "b" | "c" (side), "r": repeat, "t": text, "f": finish_reason,
     "l": latency_s, "pt": prompt_tokens, "ct": completion_tokens, "usd": cost_usd,
     "e": error, "ek": error_kind, "a": attempts (absent = 1), "ts": logged_at,
     "fp": system_fingerprint, "m": served_model}

`fp` and `m` are written only where they differ from the run's values in the meta line (absent = the
run's value; an explicit null = none reported).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lib.data.golden import content_hash, parse_cases, save_cases
from lib.data.tables import load_json
from lib.errors import DatasetImportError, RecordedLoadError
from lib.review.constants import SIDE_NAMES
from lib.run.redact import scrub, strip_url_credentials
from lib.store.columns import from_json, to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import (
    SOURCE_LIVE,
    SOURCE_RECORDED,
    STATUS_COMPLETE,
    STATUS_PARTIAL,
    STATUS_PENDING,
    STATUS_RECORDED,
    STATUS_RUNNING,
    Case,
    Comparison,
    Dataset,
    ModelConfig,
    Output,
    Run,
)
from lib.store.rows import get_row, id_of

FORMAT, VERSION = "upgrade-review-recording", 1
RUN_STATUSES = (STATUS_PENDING, STATUS_RUNNING, STATUS_COMPLETE, STATUS_PARTIAL, STATUS_RECORDED)
RUN_SOURCES = (SOURCE_LIVE, SOURCE_RECORDED)

# Output column -> compact key. fp/m are handled separately (defaults from the run).
_KEYS = {"text": "t", "finish_reason": "f", "latency_s": "l", "prompt_tokens": "pt",
         "completion_tokens": "ct", "cost_usd": "usd", "error": "e", "error_kind": "ek",
         "attempts": "a", "logged_at": "ts"}
_TYPES: dict[str, tuple[type, ...]] = {"t": (str,), "f": (str,), "l": (int, float), "pt": (int,),
                                       "ct": (int,), "usd": (int, float), "e": (str,), "ek": (str,),
                                       "a": (int,), "ts": (str,), "fp": (str,), "m": (str,)}
_LINE_KEYS = {"c", "s", "r", *_TYPES}
_CONFIG_FIELDS = ("model", "api_base", "temperature", "top_p", "max_tokens", "seed", "system_prompt",
                  "prompt_template")
_CONFIG_JSON_FIELDS = {"response_format": "response_format_json", "tools": "tools_json",
                       "extra": "extra_json"}


@dataclass
class RecordingImport:
    """What `load_recording` did."""

    comparison: str
    created: bool  # False: the comparison was already in the store (nothing written)
    dataset: str
    dataset_version: int
    dataset_created: bool
    n_outputs: int


# ---------------------------------------------------------------- export

def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; the store writes UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _config_dict(cfg: ModelConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"config_hash": cfg.config_hash}
    out.update({f: getattr(cfg, f) for f in _CONFIG_FIELDS})
    out["api_base"] = strip_url_credentials(cfg.api_base)  # a config stored before stripping existed
    out.update({key: from_json(getattr(cfg, col)) for key, col in _CONFIG_JSON_FIELDS.items()})
    return out


def _run_dict(run: Run) -> dict[str, Any]:
    return {"source": run.source, "status": run.status, "repeats": run.repeats,
            "system_fingerprint": run.system_fingerprint, "served_model": run.served_model,
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at)}


def _output_line(out: Output, key: str, side: str, run: Run) -> dict[str, Any]:
    line: dict[str, Any] = {"c": key, "s": side, "r": out.repeat}
    for column, short in _KEYS.items():
        value = getattr(out, column)
        if column == "logged_at":
            value = _iso(value)
        if value is None or (column == "attempts" and value == 1):
            continue
        line[short] = scrub(value) if column == "error" else value  # one stored before scrubbing existed
    if out.system_fingerprint != run.system_fingerprint:
        line["fp"] = out.system_fingerprint
    if out.served_model != run.served_model:
        line["m"] = out.served_model
    return line


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def export_recording(engine: Engine, comparison: str) -> bytes:
    """The comparison as recording bytes (see the module docstring for the format)."""
    from lib.review.comparisons import get_comparison

    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        runs = {"b": get_row(session, Run, comp.baseline_run_id), "c": get_row(session, Run, comp.candidate_run_id)}
        ds = get_row(session, Dataset, runs["b"].dataset_id)
        finished = [r.finished_at for r in runs.values() if r.finished_at is not None]
        meta = {"kind": "meta", "format": FORMAT, "version": VERSION, "comparison": comp.name,
                "system": comp.system, "source": comp.source, "notes": from_json(comp.notes_json),
                "recorded_at": _iso(max(finished) if len(finished) == 2 else utcnow()),
                "dataset": {"name": ds.name, "version": ds.version, "content_hash": ds.content_hash,
                            "n_cases": ds.n_cases}}
        for side, run in runs.items():
            meta[SIDE_NAMES[side]] = {"config": _config_dict(get_row(session, ModelConfig, run.config_id)),
                                      "run": _run_dict(run)}
        lines = [_dumps(meta)]
        for side, run in runs.items():
            rows = session.exec(
                select(Output, Case.case_key).join(Case, col(Case.id) == col(Output.case_id))
                .where(Output.run_id == run.id).order_by(col(Case.position), col(Output.repeat))
            ).all()
            lines.extend(_dumps(_output_line(out, key, side, run)) for out, key in rows)
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------- parse and validate

@dataclass
class _Recording:
    meta: dict[str, Any]
    outputs: list[dict[str, Any]]  # output lines as parsed


def _fail(source: str, message: str, line: int | None = None, field: str | None = None) -> RecordedLoadError:
    return RecordedLoadError(source, message, line=line, field=field)


def _want(obj: dict[str, Any], key: str, types: tuple[type, ...], source: str, line: int,
          prefix: str = "", optional: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if optional:
            return None
        raise _fail(source, "is missing", line, prefix + key)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise _fail(source, f"must be {names}, got {type(value).__name__}", line, prefix + key)
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(source, "must be a finite number", line, prefix + key)
    return value


def _parse_time(value: Any, source: str, line: int, field: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(source, "must be an ISO-8601 timestamp", line, field)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(source, f"'{value}' is not an ISO-8601 timestamp", line, field) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _check_side(meta: dict[str, Any], side: str, source: str) -> None:
    block = meta.get(side)
    if not isinstance(block, dict) or not isinstance(block.get("config"), dict) \
            or not isinstance(block.get("run"), dict):
        raise _fail(source, "must be an object with 'config' and 'run'", 1, side)
    cfg, run = block["config"], block["run"]
    _want(cfg, "config_hash", (str,), source, 1, f"{side}.config.", optional=False)
    _want(cfg, "model", (str,), source, 1, f"{side}.config.", optional=False)
    for key, types in (("api_base", (str,)), ("temperature", (int, float)), ("top_p", (int, float)),
                       ("max_tokens", (int,)), ("seed", (int,)), ("system_prompt", (str,)),
                       ("prompt_template", (str,)), ("response_format", (dict,)), ("tools", (list,)),
                       ("extra", (dict,))):
        _want(cfg, key, types, source, 1, f"{side}.config.")
    status = _want(run, "status", (str,), source, 1, f"{side}.run.", optional=False)
    if status not in RUN_STATUSES:
        raise _fail(source, f"unknown status '{status}'", 1, f"{side}.run.status")
    if run.get("source", SOURCE_LIVE) not in RUN_SOURCES:
        raise _fail(source, f"unknown source '{run.get('source')}'", 1, f"{side}.run.source")
    repeats = _want(run, "repeats", (int,), source, 1, f"{side}.run.")
    if repeats is not None and repeats < 1:
        raise _fail(source, "must be at least 1", 1, f"{side}.run.repeats")
    for key in ("system_fingerprint", "served_model"):
        _want(run, key, (str,), source, 1, f"{side}.run.")
    for key in ("started_at", "finished_at"):
        _parse_time(run.get(key), source, 1, f"{side}.run.{key}")


def _parse(data: bytes, source: str) -> _Recording:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(source, "is not UTF-8 text", data[: exc.start].count(b"\n") + 1) from None
    objects: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = load_json(raw)  # deep, huge-number and lone-surrogate JSON: a clean error
        except json.JSONDecodeError as exc:
            raise _fail(source, f"invalid JSON: {exc.msg} (column {exc.colno})", number) from None
        if not isinstance(value, dict):
            raise _fail(source, f"expected a JSON object, got {type(value).__name__}", number)
        objects.append((number, value))
    if not objects:
        raise _fail(source, "the recording is empty")
    first_line, meta = objects[0]
    if meta.get("kind") != "meta" or meta.get("format") != FORMAT:
        raise _fail(source, f"the first line must be the meta object (\"format\": \"{FORMAT}\")", first_line)
    if meta.get("version") != VERSION:
        raise _fail(source, f"unsupported recording version {meta.get('version')!r} (this reads {VERSION})",
                    first_line, "version")
    name = _want(meta, "comparison", (str,), source, first_line, optional=False)
    if not name.strip():
        raise _fail(source, "is empty", first_line, "comparison")
    ds = meta.get("dataset")
    if not isinstance(ds, dict):
        raise _fail(source, "must be an object", first_line, "dataset")
    _want(ds, "name", (str,), source, first_line, "dataset.", optional=False)
    _want(ds, "content_hash", (str,), source, first_line, "dataset.", optional=False)
    for name in ("system", "source"):
        _want(meta, name, (str,), source, first_line)
    _want(meta, "notes", (dict,), source, first_line)
    for side in SIDE_NAMES.values():
        _check_side(meta, side, source)

    outputs: list[dict[str, Any]] = []
    seen: dict[tuple[str, Any, int], int] = {}
    for number, obj in objects[1:]:
        unknown = sorted(set(obj) - _LINE_KEYS)
        if unknown:
            raise _fail(source, f"unknown key(s) {', '.join(unknown)}", number)
        key = obj.get("c")
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str) or not key:
            raise _fail(source, "must be the case id (a string)", number, "c")
        if obj.get("s") not in SIDE_NAMES:
            raise _fail(source, "must be 'b' (baseline) or 'c' (candidate)", number, "s")
        repeat = obj.get("r", 0)
        if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
            raise _fail(source, "must be a repeat number (0, 1, ...)", number, "r")
        for short, types in _TYPES.items():
            _want(obj, short, types, source, number)
        _parse_time(obj.get("ts"), source, number, "ts")
        ident = (key, obj["s"], repeat)
        if ident in seen:
            raise _fail(source, f"duplicate output for case '{key}', side '{obj['s']}', repeat {repeat} "
                                f"(first at line {seen[ident]})", number)
        seen[ident] = number
        outputs.append({**obj, "c": key, "r": repeat, "_line": number})
    return _Recording(meta, outputs)


# ---------------------------------------------------------------- import

def _config_row(cfg: dict[str, Any]) -> dict[str, Any]:
    row = {f: cfg.get(f) for f in _CONFIG_FIELDS}
    row["api_base"] = strip_url_credentials(row["api_base"])  # a recording written before stripping existed
    row.update({col: to_json(cfg.get(key)) for key, col in _CONFIG_JSON_FIELDS.items()})
    row["config_hash"] = cfg["config_hash"]
    return row


def _config_id(session: Session, cfg: dict[str, Any], source: str, side: str) -> int:
    """The config row with the recorded hash: reused when identical, created when absent."""
    row = _config_row(cfg)
    existing = session.exec(select(ModelConfig).where(ModelConfig.config_hash == row["config_hash"])).first()
    if existing is None:
        created = ModelConfig(**row, created_at=utcnow())
        session.add(created)
        session.flush()
        return id_of(created)
    different = [k for k, v in row.items() if getattr(existing, k) != v]
    if different:
        raise _fail(source, f"config_hash names a stored configuration with different "
                            f"{', '.join(different)}", 1, f"{side}.config.config_hash")
    return id_of(existing)


def _dataset_for(session: Session, meta_ds: dict[str, Any], cases: list, filename: str) -> tuple[Dataset, bool]:
    """The stored version with this content (any version of that name), else a new version."""
    found = session.exec(select(Dataset).where(Dataset.name == meta_ds["name"],
                                               Dataset.content_hash == meta_ds["content_hash"])).first()
    if found is not None:
        return found, False
    return save_cases(session, meta_ds["name"], filename, cases)


def _same_comparison(session: Session, comp: Comparison, meta: dict[str, Any]) -> bool:
    runs = [get_row(session, Run, comp.baseline_run_id), get_row(session, Run, comp.candidate_run_id)]
    ds = get_row(session, Dataset, runs[0].dataset_id)
    models = [get_row(session, ModelConfig, r.config_id).model for r in runs]
    return ds.content_hash == meta["dataset"]["content_hash"] and models == [
        meta["baseline"]["config"]["model"], meta["candidate"]["config"]["model"]]


def _output_row(obj: dict[str, Any], run_id: int, case_id: int, run_meta: dict[str, Any]) -> dict[str, Any]:
    row = {"run_id": run_id, "case_id": case_id, "repeat": obj["r"], "created_at": utcnow(),
           "system_fingerprint": obj["fp"] if "fp" in obj else run_meta.get("system_fingerprint"),
           "served_model": obj["m"] if "m" in obj else run_meta.get("served_model"), "raw_json": None}
    for column, short in _KEYS.items():
        row[column] = obj.get(short)
    row["attempts"] = obj.get("a", 1)
    row["error"] = scrub(row["error"])  # a recording written before errors were scrubbed
    row["logged_at"] = _parse_time(obj.get("ts"), "", 0, "ts")
    return row


def load_recording(engine: Engine, data: bytes, *, dataset_data: bytes, dataset_filename: str,
                   name: str | None = None, source: str = "recording.jsonl") -> RecordingImport:
    """Import a recording and its dataset in one transaction; a no-op when already present.

    Everything is validated before anything is written: a malformed line, a dataset file whose content
    differs from the one recorded, or an output for a case the dataset lacks raises RecordedLoadError.
    """
    rec = _parse(data, source)
    meta = rec.meta
    comp_name = (name or meta["comparison"]).strip()
    if not comp_name:
        raise _fail(source, "the comparison name is empty")
    try:
        cases = parse_cases(dataset_data, dataset_filename)
    except DatasetImportError as exc:
        raise RecordedLoadError(source, f"its dataset file is invalid: {exc}") from None
    digest = content_hash(cases)
    if digest != meta["dataset"]["content_hash"]:
        raise _fail(source, f"the dataset file {dataset_filename} is not the dataset this recording was "
                            f"made on (content hash {digest[:12]} != {meta['dataset']['content_hash'][:12]})",
                    1, "dataset.content_hash")
    keys = {c.key for c in cases}
    for obj in rec.outputs:
        if obj["c"] not in keys:
            raise _fail(source, f"case '{obj['c']}' is not in the dataset {dataset_filename}", obj["_line"], "c")
        repeats = meta[SIDE_NAMES[obj["s"]]]["run"].get("repeats") or 1
        if obj["r"] >= repeats:
            raise _fail(source, f"repeat {obj['r']} is beyond the run's {repeats} repeat(s)", obj["_line"], "r")

    with session_scope(engine) as session:
        existing = session.exec(select(Comparison).where(Comparison.name == comp_name)).first()
        if existing is not None:
            if not _same_comparison(session, existing, meta):
                raise _fail(source, f"a different comparison named '{comp_name}' is already in the store; "
                                    "import under another name")
            ds = get_row(session, Dataset, get_row(session, Run, existing.baseline_run_id).dataset_id)
            return RecordingImport(comp_name, False, ds.name, ds.version, False, 0)
        ds, ds_created = _dataset_for(session, meta["dataset"], cases, dataset_filename)
        case_ids: dict[str, int] = dict(
            session.exec(select(Case.case_key, Case.id).where(Case.dataset_id == ds.id)).all())  # type: ignore[arg-type]
        run_ids: dict[str, int] = {}
        for short, side in SIDE_NAMES.items():
            block = meta[side]
            run_meta = block["run"]
            run = Run(config_id=_config_id(session, block["config"], source, side), dataset_id=id_of(ds),
                      source=run_meta.get("source") or SOURCE_LIVE, status=run_meta["status"],
                      repeats=run_meta.get("repeats") or 1,
                      system_fingerprint=run_meta.get("system_fingerprint"),
                      served_model=run_meta.get("served_model"), created_at=utcnow(),
                      started_at=_parse_time(run_meta.get("started_at"), source, 1, "started_at"),
                      finished_at=_parse_time(run_meta.get("finished_at"), source, 1, "finished_at"))
            session.add(run)
            session.flush()
            run_ids[short] = id_of(run)
        rows = [_output_row(o, run_ids[o["s"]], case_ids[o["c"]], meta[SIDE_NAMES[o["s"]]]["run"])
                for o in rec.outputs]
        if rows:
            session.connection().execute(insert(Output.__table__), rows)
        notes = dict(meta.get("notes") or {})
        notes["recording"] = {"recorded_at": meta.get("recorded_at"), "imported_at": utcnow().isoformat()}
        session.add(Comparison(name=comp_name, baseline_run_id=run_ids["b"], candidate_run_id=run_ids["c"],
                               system=meta.get("system") or "default", source=meta.get("source") or "run",
                               notes_json=to_json(notes), created_at=utcnow()))
        return RecordingImport(comp_name, True, ds.name, ds.version, ds_created, len(rows))


def import_recording(engine: Engine, data: bytes, *, dataset_data: bytes, dataset_filename: str,
                     name: str | None = None) -> str:
    """Import a recording (see `load_recording`); returns the comparison's name."""
    return load_recording(engine, data, dataset_data=dataset_data, dataset_filename=dataset_filename,
                          name=name).comparison


def read_meta(data: bytes, source: str = "recording.jsonl") -> dict[str, Any]:
    """The meta object of a recording (first line only; cheap)."""
    first = data.split(b"\n", 1)[0]
    return _parse(first, source).meta
