"""Named exceptions. Everything a user can cause derives from ReviewInputError:
the CLI turns it into exit 2 with one line, pages show it with st.error."""
from __future__ import annotations


class ReviewError(Exception):
    """Base class of every error this library raises on purpose."""


class ReviewInputError(ReviewError):
    """Bad input from the user: a file, a flag, a name. CLI exit code 2."""


class FileInputError(ReviewInputError):
    """Bad content in a user's file: the message names the file, the line (when known) and the field."""

    def __init__(self, source: str, message: str, *, line: int | None = None, field: str | None = None):
        self.source, self.line, self.field = source, line, field
        where = source + (f", line {line}" if line is not None else "")
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {message}")


class StoreURLError(ReviewInputError):
    """DATABASE_URL names a store this tool cannot keep honest (anything but SQLite)."""


class DatasetImportError(FileInputError):
    """A golden-dataset file cannot be imported."""


class RecordedLoadError(FileInputError):
    """A recorded comparison (wide, long, promptfoo) cannot be loaded."""


class NotFoundError(ReviewInputError):
    """A named object (dataset, comparison, policy, ...) does not exist."""


class DatasetNotFound(NotFoundError):
    """No golden dataset with that name (and version)."""


class ComparisonNotFound(NotFoundError):
    """No comparison with that name."""


class ConfigMismatchError(ReviewInputError):
    """Resuming a comparison with a different dataset or model configuration."""


class ProviderError(ReviewError):
    """A provider call failed after all retries (stored as an error output, not raised to users)."""


class StoreIntegrityError(ReviewError):
    """A row the store references by id is missing: the database was edited outside the tool."""
