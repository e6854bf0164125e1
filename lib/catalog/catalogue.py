"""litellm's bundled model map as a searchable catalogue, with the user's overrides applied.

Read offline from the file litellm itself loads with LITELLM_LOCAL_MODEL_COST_MAP=True, without importing
litellm (see `_bundled_map`). `sample_spec` is litellm's documentation of the format, not a model. A price
is None when the map has none, or only 0.0 for both directions (placeholders for paid models): unknown,
never free. Names are matched as given, then without a leading provider prefix (`openai/gpt-4o` -> `gpt-4o`).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from lib.catalog.overrides import Overrides, load_overrides, parse_date
from lib.errors import ReviewError

SAMPLE_SPEC = "sample_spec"
RESERVED_KEYS = frozenset({SAMPLE_SPEC, "fallback_generalizations"})  # documentation and rules, not models
BUNDLED_FILE = "model_prices_and_context_window_backup.json"  # what LITELLM_LOCAL_MODEL_COST_MAP=True loads
CHAT_MODE = "chat"
BUNDLED_SOURCE = "litellm bundled model map"
# A version date inside a model name: 2024-08-06, 20240620, or a trailing YYMM (mistral-large-2407).
_DATED = (re.compile(r"[-@_](20\d{2})-(\d{2})-(\d{2})(?=$|[-:@_])"),
          re.compile(r"[-@_](20\d{2})(\d{2})(\d{2})(?=$|[-:@_])"))
_YYMM = re.compile(r"-(2[3-9])(0[1-9]|1[0-2])$")
_MMDD = re.compile(r"-(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$")  # gpt-4-0613: year not in the name
_RESELLER = re.compile(r"[/:]|\.[a-z]")  # azure/..., ft:..., anthropic.claude (a cloud's copy of a model)
_SUFFIXES = re.compile(r"-(latest|preview|exp|experimental)$")


@dataclass(frozen=True)
class ModelInfo:
    model: str  # the map's key (what litellm calls it)
    provider: str | None
    family: str  # the name without provider prefix and version date
    version_date: date | None
    mode: str | None
    max_input_tokens: int | None
    input_cost_per_token: float | None
    output_cost_per_token: float | None
    deprecation_date: date | None
    successor: str | None  # the map's successor_model, when it names one
    overridden: tuple[str, ...] = ()  # fields taken from the override file
    override_file: str | None = None

    @property
    def priced(self) -> bool:
        return self.input_cost_per_token is not None and self.output_cost_per_token is not None

    @property
    def source(self) -> str:
        """Where the values come from, as shown to users: the override file is named when it applies."""
        if not self.overridden:
            return BUNDLED_SOURCE
        return f"override file {self.override_file} ({', '.join(self.overridden)}); others: {BUNDLED_SOURCE}"

    def search_row(self) -> dict[str, Any]:
        """The `models search --json` row (an interface: keep these keys)."""
        return {"model": self.model, "provider": self.provider, "input_cost_per_token": self.input_cost_per_token,
                "output_cost_per_token": self.output_cost_per_token, "max_input_tokens": self.max_input_tokens,
                "deprecation_date": _iso(self.deprecation_date)}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(version_date=_iso(self.version_date), deprecation_date=_iso(self.deprecation_date),
                    overridden=list(self.overridden), source=self.source)
        return data


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def version_date(name: str) -> date | None:
    """The version date written in a model name, if any (gpt-4o-2024-08-06, claude-3-5-sonnet-20240620,
    mistral-large-2407 -> the 1st of that month); None for undated names and MMDD (gpt-4-0613)."""
    base = name.rsplit("/", 1)[-1]
    for pattern in _DATED:
        for m in pattern.finditer(base):
            try:
                return date(int(m[1]), int(m[2]), int(m[3]))
            except ValueError:
                continue
    month = _YYMM.search(base)
    return date(2000 + int(month[1]), int(month[2]), 1) if month else None


def family_of(name: str) -> str:
    """The name without provider prefix, version date or -latest/-preview: versions of one family share it."""
    base = name.rsplit("/", 1)[-1]
    for pattern in _DATED:
        base = pattern.sub("", base)
    base = _MMDD.sub("", _YYMM.sub("", base))
    return _SUFFIXES.sub("", base)


def _price(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _info(key: str, entry: dict[str, Any], overrides: Overrides) -> ModelInfo:
    inp, out = _price(entry.get("input_cost_per_token")), _price(entry.get("output_cost_per_token"))
    if not inp and not out:
        inp = out = None  # missing, or 0.0 placeholders: unknown
    tokens = entry.get("max_input_tokens")
    values: dict[str, Any] = {
        "input_cost_per_token": inp, "output_cost_per_token": out,
        "max_input_tokens": tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
        "deprecation_date": parse_date(entry.get("deprecation_date"))}
    own = overrides.models.get(key, {})
    values.update(own)
    successor = entry.get("successor_model")
    return ModelInfo(model=key, provider=entry.get("litellm_provider"), family=family_of(key),
                     version_date=version_date(key), mode=entry.get("mode"),
                     successor=successor if isinstance(successor, str) else None,
                     overridden=tuple(sorted(own)), override_file=overrides.path if own else None, **values)


def _custom(name: str, overrides: Overrides) -> ModelInfo:
    """A model the map does not know (a local server's, a new release): only what the name and overrides say."""
    provider = name.split("/", 1)[0] if "/" in name else None
    return _info(name, {"litellm_provider": provider}, overrides)


@dataclass
class Catalogue:
    """Every model of the map (overrides applied), plus override-only models, by name."""

    models: dict[str, ModelInfo]
    overrides: Overrides
    litellm_version: str | None = None
    _families: dict[str, list[ModelInfo]] = field(default_factory=dict, repr=False)

    @property
    def source(self) -> str:
        version = f" (litellm {self.litellm_version})" if self.litellm_version else ""
        return BUNDLED_SOURCE + version + (f"; {self.overrides.label} takes precedence" if self.overrides.path else "")

    def lookup(self, name: str) -> ModelInfo | None:
        """The map's entry for a litellm model string: as given, then without its provider prefix."""
        name = name.strip()
        if name in self.models:
            return self.models[name]
        prefix, _, rest = name.partition("/")
        if rest and rest in self.models:
            found = self.models[rest]
            if found.provider in (None, prefix) or prefix in ("openai", "anthropic", "gemini", "mistral"):
                return found
        return None

    def info(self, name: str) -> ModelInfo:
        """The entry, or what can be said about an unknown name (prices and dates unknown, overrides applied)."""
        return self.lookup(name) or _custom(name.strip(), self.overrides)

    def family(self, family: str, provider: str | None = None) -> list[ModelInfo]:
        """Versions of one family, oldest first (undated versions last: aliases such as gpt-4o)."""
        if not self._families:
            for info in self.models.values():
                self._families.setdefault(info.family, []).append(info)
            for rows in self._families.values():
                rows.sort(key=_version_key)
        return [m for m in self._families.get(family, []) if provider is None or m.provider == provider]

    def search(self, text: str = "", *, provider: str | None = None, mode: str | None = CHAT_MODE,
               limit: int | None = 50) -> list[ModelInfo]:
        """Models whose name contains every word of `text` (case-insensitive), best match first:
        exact name, then name prefix, then by family and newest version."""
        words = text.lower().split()
        hits = [m for m in self.models.values()
                if all(w in m.model.lower() for w in words)
                and (provider is None or m.provider == provider) and (mode is None or m.mode == mode)]
        query = text.strip().lower()
        hits.sort(key=lambda m: (m.model.lower() != query, not m.model.lower().startswith(query),
                                 bool(_RESELLER.search(m.model)), m.family, _newest_first(m), m.model))
        return hits[:limit] if limit else hits

    def recent(self, limit: int = 40) -> list[ModelInfo]:
        """The newest dated chat models under their providers' own names (what an empty search shows)."""
        own = [m for m in self.models.values() if m.mode == CHAT_MODE and m.version_date is not None
               and not _RESELLER.search(m.model) and not _retired(m)]
        return sorted(own, key=_newest_first)[:limit]

    def providers(self) -> list[str]:
        return sorted({m.provider for m in self.models.values() if m.provider})

    def candidates(self, baseline: str, limit: int = 12) -> list[ModelInfo]:
        """What to offer once a baseline is chosen: the map's named successor, newer versions of its family
        (same provider), then newer dated models of the same provider, newest first; deprecated ones left out."""
        base = self.info(baseline)
        after = base.version_date or date.min
        out: list[ModelInfo] = []

        def add(info: ModelInfo | None) -> None:
            if info is not None and info.model != base.model and info not in out and not _retired(info):
                out.append(info)

        add(self.lookup(base.successor) if base.successor else None)
        newer = [m for m in self.family(base.family, base.provider) if (m.version_date or date.min) > after]
        for info in sorted(newer, key=_newest_first):
            add(info)
        if base.provider:
            same = [m for m in self.models.values() if m.provider == base.provider and m.mode == CHAT_MODE
                    and m.version_date is not None and m.version_date > after and not _RESELLER.search(m.model)]
            for info in sorted(same, key=_newest_first):
                add(info)
        return out[:limit]


def _version_key(m: ModelInfo) -> tuple[bool, date, str]:
    return (m.version_date is None, m.version_date or date.min, m.model)


def _newest_first(m: ModelInfo) -> tuple[bool, int, str]:
    return (m.version_date is None, -(m.version_date or date.min).toordinal(), m.model)


def _retired(info: ModelInfo) -> bool:
    return info.deprecation_date is not None and info.deprecation_date <= date.today()


def _bundled_map() -> tuple[dict[str, dict[str, Any]], str | None]:
    """litellm's bundled map, read from its package file without importing litellm (~2.5 s, ~200 MB): the
    Overview's banner and cost card, and `models search`, stay fast. The same file litellm loads offline,
    with its aliases expanded as litellm expands them (tests/test_catalog.py compares every field used here
    with `litellm.model_cost`, so a change in litellm's processing fails a test rather than drifting)."""
    spec = importlib.util.find_spec("litellm")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ReviewError("litellm is not installed: the model map comes from its package")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    raw = json.loads(path.read_bytes())
    try:
        litellm_version: str | None = importlib.metadata.version("litellm")
    except importlib.metadata.PackageNotFoundError:
        litellm_version = None
    return expand_aliases({k: v for k, v in raw.items() if k not in RESERVED_KEYS and isinstance(v, dict)}), \
        litellm_version


def expand_aliases(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Serve a row whose `alias_of` names another row as that row, and add each name of a row's `aliases`
    list (unless it is a model of its own or already claimed), as litellm does when it loads the map."""
    pointers = {name: e["alias_of"] for name, e in entries.items() if isinstance(e.get("alias_of"), str)}
    out = {name: e for name, e in entries.items() if name not in pointers}
    claimed: set[str] = set()
    for entry in list(out.values()):
        aliases = entry.get("aliases")
        for alias in aliases if isinstance(aliases, list) else ():
            if alias in out or alias in claimed:
                continue
            claimed.add(alias)
            out[alias] = entry
    for alias, target in pointers.items():
        if target in entries and target not in pointers and alias not in claimed:
            out[alias] = entries[target]
    return out


@lru_cache(maxsize=4)
def _catalogue(overrides_path: str | None, _mtime: float | None = None) -> Catalogue:
    overrides = load_overrides(overrides_path) if overrides_path else Overrides(None, {})
    raw, litellm_version = _bundled_map()
    models = {key: _info(key, entry, overrides) for key, entry in raw.items()}
    for name in overrides.models.keys() - models.keys():  # a model only the override file knows
        models[name] = _custom(name, overrides)
    return Catalogue(models, overrides, litellm_version)


def bundled_catalogue() -> Catalogue:
    """litellm's bundled map alone, no override file: the prices a live run records per call (cached)."""
    return _catalogue(None)


def catalogue(overrides_path: str | None = None) -> Catalogue:
    """The catalogue with the override file at `overrides_path` (else $REVIEW_MODEL_OVERRIDES) applied.
    Cached per path and modification time."""
    from lib.catalog.overrides import overrides_path as resolve

    path = resolve(overrides_path)
    return _catalogue(path, _mtime(path))


def _mtime(path: str | None) -> float | None:
    """Part of the cache key: an edited override file is read again."""
    try:
        return os.stat(path).st_mtime if path else None
    except OSError:
        return None  # load_overrides says what is wrong with it

