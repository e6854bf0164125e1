"""Typed row access: a row the store references by id is there, or a named error says it is not."""
from __future__ import annotations

from typing import TypeVar

from sqlmodel import Session, SQLModel

from lib.errors import StoreIntegrityError

Row = TypeVar("Row", bound=SQLModel)


def get_row(session: Session, model: type[Row], row_id: int | None) -> Row:
    """`session.get` for an id another row holds: never None (a missing row means a broken store)."""
    row = None if row_id is None else session.get(model, row_id)
    if row is None:
        raise StoreIntegrityError(f"{model.__name__} #{row_id} is referenced but missing from the store")
    return row


def id_of(row: SQLModel) -> int:
    """The primary key of a row that was flushed (SQLModel types ids as Optional until then)."""
    value = getattr(row, "id", None)
    if value is None:
        raise StoreIntegrityError(f"{type(row).__name__} has no id yet (not flushed)")
    return int(value)
