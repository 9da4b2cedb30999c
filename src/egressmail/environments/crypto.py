"""Secrets at rest: AES-256-GCM under a master key that never lives in the database file.

Theory of operation
-------------------
Each secret value is sealed on its own with AES-256-GCM (a fresh 96-bit nonce per seal). The
associated data binds the ciphertext to its row, ``program / environment / service / name``, so a
ciphertext copied into another row, or another environment's database, fails authentication
instead of decrypting to the wrong variable.

Master keys are identified by a *key id*: a truncated SHA-256 fingerprint of the key (a one-way
function of 256 random bits, so it reveals nothing). Each row records the id of the key that sealed
it, which makes rotation restartable: during a rotation the key file holds the old keys *and* the
new current key, every row can be opened with the key its id names, and the old keys are retired
only once no row uses them any more.

Where the key comes from (:func:`key_provider_for`):

- ``$EGRESSMAIL_MASTER_KEY``: 32 bytes, base64 (``urlsafe`` or standard) or 64 hex digits. Handy for
  containers that inject it; it cannot be rotated by egressmail (it does not own it).
- otherwise the key file ``master.key`` next to the database, mode 0600, created on first use.
  The file is JSON: ``{"version": 1, "current": ID, "keys": {ID: base64-key, ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets as _random
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from egressmail.environments.errors import MasterKeyError, SecretDecryptionError

MASTER_KEY_ENV_VAR = "EGRESSMAIL_MASTER_KEY"
KEY_FILE_NAME = "master.key"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_FILE_VERSION = 1
_AAD_PREFIX = b"egressmail/secret/v1"


def key_id(key: bytes) -> str:
    """The public identifier of a key (a fingerprint; safe to store and print)."""
    return hashlib.sha256(b"egressmail master key id\0" + key).hexdigest()[:16]


def new_key() -> bytes:
    """A fresh random 256-bit key."""
    return _random.token_bytes(KEY_BYTES)


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The master keys in use: ``current`` seals new values, every key in ``keys`` may open old ones."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __repr__(self) -> str:  # the keys themselves never appear
        return f"KeyRing(current={self.current!r}, ids={sorted(self.keys)!r})"

    @property
    def current_key(self) -> bytes:
        return self.keys[self.current]

    def get(self, kid: str) -> bytes | None:
        return self.keys.get(kid)


class KeyProvider(Protocol):
    """Where the store gets its master keys (a seam: a file, the environment, a KMS later)."""

    def load(self) -> KeyRing | None:
        """The key ring, or ``None`` when no key exists yet."""

    def load_or_create(self) -> KeyRing:
        """The key ring, creating a first key if none exists."""

    @property
    def can_rotate(self) -> bool:
        """Whether :meth:`write` may replace the ring (False for a key given by the environment)."""

    def write(self, ring: KeyRing) -> None:
        """Replace the stored ring atomically (old file or new file, never a mix)."""

    def describe(self) -> str:
        """Where the key lives, for messages (never the key)."""


def _decode_env_key(text: str) -> bytes:
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.urlsafe_b64decode, base64.standard_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for raw in candidates:
        if len(raw) == KEY_BYTES:
            return raw
    raise MasterKeyError(
        f"${MASTER_KEY_ENV_VAR} is not a 256-bit key",
        hint='give 32 random bytes as base64, e.g. python -c "import os,base64;'
             'print(base64.b64encode(os.urandom(32)).decode())"')


@dataclass(slots=True)
class EnvironmentKey:
    """A master key given in ``$EGRESSMAIL_MASTER_KEY`` (read-only: rotate it where it comes from)."""

    encoded: str = field(repr=False)

    def load(self) -> KeyRing:
        key = _decode_env_key(self.encoded)
        kid = key_id(key)
        return KeyRing(current=kid, keys={kid: key})

    def load_or_create(self) -> KeyRing:
        return self.load()

    @property
    def can_rotate(self) -> bool:
        return False

    def write(self, ring: KeyRing) -> None:
        raise MasterKeyError(f"the master key comes from ${MASTER_KEY_ENV_VAR} and cannot be replaced here",
                             hint=f"unset ${MASTER_KEY_ENV_VAR} to use (and rotate) the key file")

    def describe(self) -> str:
        return f"${MASTER_KEY_ENV_VAR}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(slots=True)
class KeyFile:
    """The key ring in a file readable by its owner only (``master.key`` in the home folder)."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    @property
    def can_rotate(self) -> bool:
        return True

    def load(self) -> KeyRing | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MasterKeyError(f"cannot read the master key file {self.path}: {exc.strerror}",
                                 hint="check the file belongs to you and is readable") from None
        try:
            doc = json.loads(raw)
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in doc["keys"].items()}
            ring = KeyRing(current=str(doc["current"]), keys=keys)
            ok = (doc.get("version") == _KEY_FILE_VERSION and ring.current in keys
                  and all(len(k) == KEY_BYTES and key_id(k) == kid for kid, k in keys.items()))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            ok = False
        if not ok:
            # No detail from the parser: it could quote key material.
            raise MasterKeyError(f"the master key file {self.path} is damaged or not an egressmail key file",
                                 hint="restore it from a backup; without it the secrets cannot be read")
        return ring

    def _serialize(self, ring: KeyRing) -> bytes:
        doc = {"version": _KEY_FILE_VERSION, "current": ring.current,
               "keys": {kid: base64.b64encode(k).decode("ascii") for kid, k in ring.keys.items()}}
        return json.dumps(doc, indent=1).encode("ascii")

    def _write_temp(self, ring: KeyRing) -> Path:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the key is never readable by others, not even briefly.
        fd, tmp = tempfile.mkstemp(prefix=".master.key.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._serialize(ring))
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def load_or_create(self) -> KeyRing:
        ring = self.load()
        if ring is not None:
            return ring
        key = new_key()
        kid = key_id(key)
        tmp = self._write_temp(KeyRing(current=kid, keys={kid: key}))
        try:
            # link() fails if the file appeared meanwhile: two first writers agree on one key.
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        ring = self.load()
        assert ring is not None  # noqa: S101 - we just created it
        return ring

    def write(self, ring: KeyRing) -> None:
        tmp = self._write_temp(ring)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


def key_provider_for(home: Path, environ: Mapping[str, str] | None = None) -> KeyProvider:
    """The key provider of a home folder: ``$EGRESSMAIL_MASTER_KEY`` if set, else the key file."""
    environ = os.environ if environ is None else environ
    encoded = environ.get(MASTER_KEY_ENV_VAR)
    if encoded:
        return EnvironmentKey(encoded)
    return KeyFile(home / KEY_FILE_NAME)


def associated_data(program: str, environment: str, service: str | None, name: str) -> bytes:
    """What binds a ciphertext to its row (NUL-separated: none of the parts can hold a NUL)."""
    parts = (program, environment, service or "*", name)
    return b"\0".join([_AAD_PREFIX, *(p.encode("utf-8") for p in parts)])


def seal(key: bytes, plaintext: str, aad: bytes) -> bytes:
    """Encrypt one value: ``nonce || ciphertext-with-tag``."""
    nonce = _random.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext.encode("utf-8"), aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes, *, what: str) -> str:
    """Decrypt one value sealed by :func:`seal`.

    Args:
        what: names the secret for the error message (e.g. ``secret EMAIL_PASSWORD of 1001/2002``).

    Raises:
        SecretDecryptionError: the ciphertext was altered, moved to another row, or the key is wrong.
    """
    try:
        plain = AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise SecretDecryptionError(
            f"{what} cannot be decrypted: it was altered, copied from another row, or sealed with "
            "another master key",
            hint="set the secret again; if every secret fails, check the master key") from None
    return plain.decode("utf-8")
