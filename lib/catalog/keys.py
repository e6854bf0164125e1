"""Which providers have a key set: in the environment or the app's secrets file. Never the key itself.

litellm says which environment variables a model needs (`validate_environment`, offline). Streamlit turns the
top-level keys of `.streamlit/secrets.toml` into environment variables when the app runs; the CLI reads
the same file so both answer alike. Only the presence of a name is looked at.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lib.errors import ReviewInputError

SECRETS_FILE = Path(".streamlit") / "secrets.toml"
ENVIRONMENT, APP_SECRETS = "environment", "app secrets"


@dataclass(frozen=True)
class KeyStatus:
    model: str
    needed: tuple[str, ...]  # environment variable names litellm wants for this model
    present: bool
    where: str | None  # environment | app secrets | None (missing, or not needed)

    @property
    def message(self) -> str:
        if not self.needed:
            return "no key needed" if self.present else "no provider known for this name (add a prefix: openai/...)"
        if self.present:
            return f"key set ({', '.join(self.needed)} in {self.where})"
        return f"key missing: set {' or '.join(self.needed)}"


class MissingKeyError(ReviewInputError):
    """The provider key a model needs is set neither in the environment nor in the app's secrets file."""


def require_keys(pairs: list[tuple[str, str | None]],
                 statuses: Callable[[list[tuple[str, str | None]]], list[KeyStatus]] | None = None) -> None:
    """Refuse before any call when a model clearly needs a key that is not set (every call would fail).
    `statuses`: how to ask (a run's command passes `lib.run.resident.key_statuses`, which asks the worker host
    so the command never imports litellm); default: `key_status` here."""
    found = statuses(pairs) if statuses else [key_status(model, api_base) for model, api_base in pairs]
    missing = [s for s in found if s.needed and not s.present]
    if missing:
        raise MissingKeyError("; ".join(f"{s.model}: {s.message}" for s in missing)
                              + " (in the environment or .streamlit/secrets.toml); nothing was called")


def _secret_names(path: Path = SECRETS_FILE) -> set[str]:
    try:
        return {k for k, v in tomllib.loads(path.read_text(encoding="utf-8")).items() if v}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return set()  # no secrets file, or one Streamlit would reject too: nothing found there


def _present_names(model: str) -> tuple[str, ...]:
    from lib.run.llm import litellm_module

    provider = model.split("/", 1)[0] if "/" in model else None
    guess = f"{provider.upper()}_API_KEY" if provider else None
    if guess and os.environ.get(guess):
        return (guess,)
    info = litellm_module().model_cost.get(model) or {}
    guess = f"{str(info.get('litellm_provider', '')).upper()}_API_KEY"
    return (guess,) if os.environ.get(guess) else ()


def key_status(model: str, api_base: str | None = None, secrets_path: Path = SECRETS_FILE) -> KeyStatus:
    """Whether the key `model` needs is set, and where (never its value)."""
    from lib.run.llm import litellm_module

    model = model.strip()
    if api_base and model.startswith(("openai/", "hosted_vllm/")):
        return KeyStatus(model, (), True, None)
    try:
        found = litellm_module().validate_environment(model=model, api_base=api_base)
    except Exception:  # noqa: BLE001
        return KeyStatus(model, (), False, None)
    missing = tuple(found.get("missing_keys") or ())
    if found.get("keys_in_environment"):
        names = _present_names(model)  # litellm also says "in environment" for names it cannot route
        return KeyStatus(model, names, bool(names), ENVIRONMENT if names else None)
    if not missing:
        return KeyStatus(model, (), True, None)
    secrets = _secret_names(secrets_path)
    if all(name in secrets for name in missing):
        return KeyStatus(model, missing, True, APP_SECRETS)
    return KeyStatus(model, missing, False, None)
