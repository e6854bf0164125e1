"""Reading the store without SQLAlchemy (~0.5 s to import with the store's tables): for the few decisions the
CLI takes before it needs the store proper. Read-only; anything unexpected answers None ("cannot tell").
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

DEFAULT_DB_PATH = Path("data") / "review.db"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_DB_PATH}"


_CASES = ('SELECT COUNT(*) FROM "case" WHERE dataset_id = '
          "(SELECT id FROM dataset WHERE name = ? ORDER BY version DESC LIMIT 1)")


def dataset_size(url: str, name: str) -> int | None:
    """Cases in the latest version of dataset `name` in the SQLite store at `url`, or None when that cannot be
    told this way (not a plain sqlite:/// path, no such file, table or dataset)."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or "?" in path or path.startswith("file:") or not os.path.isfile(path):
        return None
    try:
        with closing(sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=5)) as conn:
            if conn.execute("SELECT 1 FROM dataset WHERE name = ?", (name,)).fetchone() is None:
                return None
            return int(conn.execute(_CASES, (name,)).fetchone()[0])
    except sqlite3.Error:
        return None
