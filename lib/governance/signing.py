"""Ed25519 signing keys: the private key stays in the signer's key directory, encrypted with a
passphrase (PKCS8, BestAvailableEncryption); only the public key and its fingerprint enter the store."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.errors import ReviewInputError
from lib.governance.entities import SigningKey
from lib.store.audit import record_row_event, sha256_hex
from lib.store.engine import session_scope

KEY_DIR_ENV = "REVIEW_KEY_DIR"
APP_NAME = "upgrade-review"
MIN_PASSPHRASE_CHARS = 8  # the CLI and the Decision page refuse shorter ones
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # also a safe file name


class SigningKeyError(ReviewInputError):
    """A key cannot be created or used: exists, missing, wrong passphrase, not the registered key."""


@dataclass(frozen=True)
class KeyInfo:
    name: str
    fingerprint: str
    path: Path


def key_dir() -> Path:
    """REVIEW_KEY_DIR, else the user's config directory for the app (a `keys` folder in it)."""
    configured = os.environ.get(KEY_DIR_ENV)
    return Path(configured) if configured else Path(platformdirs.user_config_dir(APP_NAME)) / "keys"


def key_path(name: str, directory: Path | None = None) -> Path:
    if not _NAME_RE.match(name):
        raise SigningKeyError(f"key name '{name}': use 1-64 letters, digits, '.', '_' or '-'")
    return (directory or key_dir()) / f"{name}.pem"


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public: Ed25519PublicKey) -> str:
    return sha256_hex(raw_public(public))


def _write_private(path: Path, key: Ed25519PrivateKey, passphrase: str) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(passphrase.encode()))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # O_EXCL: never overwrite a key; mode 0600 from creation, not chmod'ed after a readable moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def create_key(engine: Engine, name: str, passphrase: str, directory: Path | None = None) -> KeyInfo:
    """Generate a key pair, write the encrypted private key, register the public key (with an event)."""
    path = key_path(name, directory)
    if len(passphrase or "") < MIN_PASSPHRASE_CHARS:
        raise SigningKeyError(f"a passphrase must be at least {MIN_PASSPHRASE_CHARS} characters")
    private = Ed25519PrivateKey.generate()
    row = SigningKey(name=name, public_key=raw_public(private.public_key()).hex(),
                     fingerprint=fingerprint(private.public_key()))
    written = False
    try:
        with session_scope(engine) as session:
            if session.exec(select(SigningKey).where(SigningKey.name == name)).first():
                raise SigningKeyError(f"a key named '{name}' is already registered")
            if path.exists():
                raise SigningKeyError(f"a key file already exists at {path}")
            _write_private(path, private, passphrase)
            written = True
            session.add(row)
            record_row_event(session, "key_registered", row, name, name=name, fingerprint=row.fingerprint)
    except BaseException:
        if written:  # the store rolled back: leave no orphan key file either
            path.unlink(missing_ok=True)
        raise
    return KeyInfo(name, row.fingerprint, path)


def registered_names(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(SigningKey.name).order_by(SigningKey.name)).all())


def registered_key(session: Session, name: str) -> SigningKey:
    row = session.exec(select(SigningKey).where(SigningKey.name == name)).first()
    if row is None:
        raise SigningKeyError(f"no key registered for '{name}' (create one on the Decision page, or with "
                              f"`./review keys create {name}`)")
    return row


def load_private_key(registered: SigningKey, passphrase: str, directory: Path | None = None) -> Ed25519PrivateKey:
    """Decrypt the signer's private key and check it is the one whose public key the store holds."""
    path = key_path(registered.name, directory)
    if not path.exists():
        raise SigningKeyError(f"no private key for '{registered.name}' at {path} (set {KEY_DIR_ENV}?)")
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), passphrase.encode())
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"cannot unlock the key of '{registered.name}': wrong passphrase") from exc
    if not isinstance(private, Ed25519PrivateKey) or fingerprint(private.public_key()) != registered.fingerprint:
        raise SigningKeyError(f"the key file at {path} is not the key registered for '{registered.name}'")
    return private


def verify_signature(public_key_hex: str, signature_hex: str, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True

