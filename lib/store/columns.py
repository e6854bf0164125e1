"""Column values shared by every entity module: aware UTC timestamps and canonical JSON text.

Entity modules import this, never the engine, so registering tables (`lib.store.engine`) imports no cycle."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """Timezone-aware UTC now (SQLModel rejects naive datetimes here)."""
    return datetime.now(UTC)


def to_json(value: Any) -> str | None:
    """Canonical JSON text for storage (sorted keys so hashes are stable); None stays None."""
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False)


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
