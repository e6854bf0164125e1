"""Secrets stay out of the store: credentials are stripped from endpoint URLs before they are stored, and
key-like strings are scrubbed from provider errors and raw responses before they are written.

The call itself still gets the full URL (a key in `?api-key=` or `user:password@` is how some gateways
authenticate); only what is stored, exported, recorded or shown goes through here.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
_SECRET_PARAM = re.compile(r"(?:api[-_]?key|key|token|access[-_]?token|auth|secret|password|passwd|pwd|sig"
                           r"|signature|client[-_]?secret)", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(?:API_KEY|_KEY|_TOKEN|_SECRET|_PASSWORD)$")
_MIN_SECRET = 8  # shorter environment values ("1", "true") are not keys and would scrub ordinary text
_KEY_LIKE = (  # our own fixed, linear patterns (not user input)
    (re.compile(r"\bsk-[A-Za-z0-9_*\-]{16,}"), "sk-" + REDACTED),  # OpenAI-style keys, masked or not
    # A token has a digit: "Bearer of bad news" is English, "Bearer eyJhbGci0..." is a credential.
    (re.compile(r"\bBearer\s+(?=[A-Za-z._~+/=*\-]{0,200}\d)[A-Za-z0-9._~+/=*\-]{8,}", re.IGNORECASE),
     "Bearer " + REDACTED),
    (re.compile(r"(Authorization[\"']?\s*[:=]\s*[\"']?Basic\s+)[A-Za-z0-9+/=]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"([?&;](?:api[-_]?key|key|token|access[-_]?token|auth|secret|password|sig|signature)=)"
                r"[^&;\s\"'<>]+", re.IGNORECASE), r"\1" + REDACTED),
    (re.compile(r"(\b[a-z][a-z0-9+.\-]{1,15}://)[^/\s:@\"'<>]+(?::[^/\s@\"'<>]*)?@", re.IGNORECASE),
     r"\1" + REDACTED + "@"),
    (re.compile(r"((?:x-)?api-key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,}", re.IGNORECASE), r"\1" + REDACTED),
)


def strip_url_credentials(url: str | None) -> str | None:
    """`url` without `user:password@` and without query parameters that carry a key or token."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # not a URL we can take apart: keep nothing that might be a secret
        return scrub(url)
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _SECRET_PARAM.fullmatch(k)]
    return urlunsplit((parts.scheme, netloc if parts.netloc else parts.netloc, parts.path, urlencode(query),
                       parts.fragment))


def _env_secrets() -> list[str]:
    values = {v for k, v in os.environ.items() if _SECRET_ENV.search(k.upper()) and len(v.strip()) >= _MIN_SECRET}
    return sorted(values, key=len, reverse=True)


@overload
def scrub(text: str) -> str: ...
@overload
def scrub(text: None) -> None: ...
def scrub(text: str | None) -> str | None:
    """`text` with key-like strings (sk-..., Bearer ..., key= parameters, URL passwords, the values of the
    provider key variables in the environment) replaced by [redacted]."""
    return _scrub(text, _env_secrets())


def scrubber() -> Callable[[Any], str | None]:
    """`scrub` for many values (a loaded file's error column): the environment is read once; a value that
    is not text (a JSON object in a log) is scrubbed as its text."""
    secrets = _env_secrets()
    return lambda value: _scrub(None if value is None else value if isinstance(value, str) else str(value), secrets)


def _scrub(text: str | None, secrets: list[str]) -> str | None:
    if not text:
        return text
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    for pattern, replacement in _KEY_LIKE:
        text = pattern.sub(replacement, text)
    return text
