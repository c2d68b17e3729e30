"""The embedded secret provider `secret://local/NAME`: one encrypted store per environment.

Two files in the environment's state folder (`.sqlifier/<env>/`), both 0600:

    secret.key   32 random bytes, written by the first `set` — unless $SQLIFIER_SECRET_KEY
                 holds the key (URL-safe base64); then no key file is read or written
    secrets.db   SQLite (WAL): per name, the last 5 versions, each sealed on its own

Each value is sealed with AES-256-GCM under a fresh 12-byte nonce. The associated data binds
the environment, the name and the version, so a value copied into another environment's
store, renamed or renumbered does not decrypt. A `check` row, sealed with the environment
alone, lets `set` refuse a key other than the store's instead of mixing two keys in one file.

Values never reach a log, an exception message, or a file in clear.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sqlifier.secrets.errors import SecretError

__all__ = ["KEPT_VERSIONS", "KEY_VARIABLE", "MAX_VALUE_BYTES", "LocalStore", "SecretInfo"]

KEY_VARIABLE = "SQLIFIER_SECRET_KEY"
KEPT_VERSIONS = 5
MAX_VALUE_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")  # the stack file's secret://local/NAME
_KEY_TEXT = re.compile(r"[A-Za-z0-9_-]{43}=?\Z")  # 32 bytes in URL-safe base64
_NONCE = 12
_CHECK = b"sqlifier local secret store"
_LAYOUT = 1

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS secrets (
        name TEXT PRIMARY KEY,
        current INTEGER NOT NULL,
        created REAL NOT NULL,
        delivered INTEGER
    )""",
    # sealed: the nonce, then the ciphertext and its tag
    """CREATE TABLE IF NOT EXISTS versions (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        sealed BLOB NOT NULL,
        at REAL NOT NULL,
        who TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    f"PRAGMA user_version = {_LAYOUT}",  # for a later change of these tables
)
_INFO = """
SELECT s.name, s.current, (SELECT COUNT(*) FROM versions k WHERE k.name = s.name),
       s.created, v.at, v.who, s.delivered
FROM secrets s JOIN versions v ON v.name = s.name AND v.version = s.current
"""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What is known about a secret, never its value."""

    name: str
    version: int  # the current one
    versions: int  # how many are kept
    created: float
    updated: float
    updated_by: str
    delivered: int | None  # the version last delivered to instances (rotate)


class LocalStore:
    """The encrypted secrets of one environment, in `state_dir` (`.sqlifier/<env>/`)."""

    def __init__(self, state_dir: Path, env: str) -> None:
        self.env = env
        self.db_path = state_dir / "secrets.db"
        self.key_path = state_dir / "secret.key"

    def set(self, name: str, value: str, who: str) -> int:
        """Store a new version of `name` and return its number (1, 2, ...); keeps the last 5."""
        self.check_name(name)
        data = self._encode(name, value)
        self._create()
        key, source = self._key(create=True)
        aead = AESGCM(key)
        with self._transaction() as db:
            self._check_key(db, aead, source)
            row = db.execute("SELECT current FROM secrets WHERE name = ?", (name,)).fetchone()
            version = row[0] + 1 if row else 1
            now = time.time()
            if row:
                db.execute("UPDATE secrets SET current = ? WHERE name = ?", (version, name))
            else:
                db.execute(
                    "INSERT INTO secrets (name, current, created) VALUES (?, ?, ?)",
                    (name, version, now),
                )
            sealed = self._seal(aead, data, "value", name, version)
            db.execute(
                "INSERT INTO versions (name, version, sealed, at, who) VALUES (?, ?, ?, ?, ?)",
                (name, version, sealed, now, who),
            )
            db.execute(
                "DELETE FROM versions WHERE name = ? AND version <= ?",
                (name, version - KEPT_VERSIONS),
            )
        return version

    def get(self, name: str, version: int | None = None) -> str:
        """The value of `name`'s current version, or of `version` while it is kept."""
        self.check_name(name)
        with self._reading() as db:
            current = (
                db and db.execute("SELECT current FROM secrets WHERE name = ?", (name,)).fetchone()
            )
            if not db or not current:
                raise SecretError(
                    f"no secret {name} in {self.env}; "
                    f"set it with sqlifier secret set {name} --env {self.env}",
                    name=name,
                    env=self.env,
                )
            wanted = current[0] if version is None else version
            found = db.execute(
                # as a BLOB whatever the column holds: tampered text must not fail to decode
                "SELECT CAST(sealed AS BLOB) FROM versions WHERE name = ? AND version = ?",
                (name, wanted),
            ).fetchone()
            if found is None:
                kept = db.execute(
                    "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,)
                )
                raise SecretError(
                    f"secret {name} in {self.env} has no version {wanted}; kept: "
                    + ", ".join(str(v) for (v,) in kept),
                    name=name,
                    env=self.env,
                )
        key, _ = self._key(create=False)
        if not key:
            raise SecretError(
                f"cannot decrypt secret {name} in {self.env}: the key file {self.key_path} "
                f"is missing; restore it, or set {KEY_VARIABLE} to the store's key",
                name=name,
                env=self.env,
            )
        data = self._open(AESGCM(key), found[0], "value", name, wanted)
        if data is None:
            raise SecretError(
                f"cannot decrypt secret {name} in {self.env}: wrong key or tampered store",
                name=name,
                env=self.env,
            )
        return data.decode("utf-8")

    def info(self, name: str) -> SecretInfo | None:
        """What is known about `name` (never its value), or None if there is no such secret."""
        self.check_name(name)
        with self._reading() as db:
            row = db and db.execute(_INFO + " WHERE s.name = ?", (name,)).fetchone()
        return SecretInfo(*row) if row else None

    def require(self, name: str) -> SecretInfo:
        """What is known about `name`; an unknown name is a SecretError naming the known ones."""
        info = self.info(name)
        if info is None:
            raise self._unknown(name)
        return info

    def remove(self, name: str) -> None:
        """Forget `name` and all its versions; an unknown name is a SecretError."""
        self.check_name(name)
        if not self.db_path.exists():
            raise self._unknown(name)
        with self._transaction() as db:
            db.execute("DELETE FROM versions WHERE name = ?", (name,))
            gone = db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount
        if not gone:
            raise self._unknown(name)

    def mark_delivered(self, name: str, version: int) -> None:
        """Record that running instances now hold `version` of `name` (a kept version)."""
        self.check_name(name)
        if not self.db_path.exists():
            raise self._unknown(name)
        with self._transaction() as db:
            kept = db.execute(
                "SELECT 1 FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if kept:
                db.execute("UPDATE secrets SET delivered = ? WHERE name = ?", (version, name))
        if not kept:
            if self.info(name) is None:
                raise self._unknown(name)
            raise SecretError(
                f"secret {name} in {self.env} has no version {version} to deliver",
                name=name,
                env=self.env,
            )

    def list(self) -> list[SecretInfo]:
        """Every secret of the environment by name, without values."""
        with self._reading() as db:
            rows = db.execute(_INFO + " ORDER BY s.name").fetchall() if db else []
        return [SecretInfo(*row) for row in rows]

    # --- checks -------------------------------------------------------------------------

    def check_name(self, name: str) -> None:
        if not _NAME.match(name):
            raise SecretError(
                f"invalid secret name {name!r} in {self.env}; a name is 1 to 128 letters, "
                "digits, '_', '.' or '-', as in secret://local/NAME",
                name=name,
                env=self.env,
            )

    def _encode(self, name: str, value: str) -> bytes:
        where = f"secret {name} in {self.env}"
        if not value:
            raise SecretError(
                f"the value of {where} is empty; nothing was stored", name=name, env=self.env
            )
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError:
            raise SecretError(
                f"the value of {where} is not valid text; nothing was stored",
                name=name,
                env=self.env,
            ) from None  # the exception would carry the value
        if len(data) > MAX_VALUE_BYTES:
            raise SecretError(
                f"the value of {where} is {len(data)} bytes; at most {MAX_VALUE_BYTES} "
                "(64 KiB) are stored; nothing was stored",
                name=name,
                env=self.env,
            )
        return data

    def _unknown(self, name: str) -> SecretError:
        names = [info.name for info in self.list()]
        known = f"{self.env} holds: {', '.join(names)}" if names else "it holds no secrets"
        return SecretError(f"no secret {name} in {self.env}; {known}", name=name, env=self.env)

    # --- the key ------------------------------------------------------------------------

    def _key(self, create: bool) -> tuple[bytes, str]:
        """The key and where it came from; b"" when there is none and `create` is false."""
        text = os.environ.get(KEY_VARIABLE)
        if text is not None:
            return _decode_key(text, self.env), KEY_VARIABLE
        source = str(self.key_path)
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                return b"", source
            if not self._holds_values():
                return self._make_key(), source
            if self.key_path.exists():  # another writer made it and stored a value since
                return self._key(create=False)
            raise SecretError(
                f"the key file {self.key_path} of {self.env} is missing, and the store "
                f"holds secrets sealed with it; restore it, or set {KEY_VARIABLE} to "
                "the store's key; nothing was stored",
                env=self.env,
            ) from None
        except OSError as exc:
            raise SecretError(
                f"cannot read the key file {self.key_path} of {self.env}: {exc.strerror}",
                env=self.env,
            ) from None
        if len(key) != 32:
            raise SecretError(
                f"the key file {self.key_path} of {self.env} is damaged: {len(key)} bytes, "
                "not 32; restore it from a backup",
                env=self.env,
            )
        return key, source

    def _make_key(self) -> bytes:
        """Write a new key file; if another process wrote one first, that one is the key."""
        key = AESGCM.generate_key(bit_length=256)
        draft = self.key_path.with_name(f".{self.key_path.name}.{secrets.token_hex(8)}")
        old = os.umask(0o077)
        try:
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(draft, self.key_path)  # never replaces a key another writer made
            except FileExistsError:
                return self._key(create=False)[0]
            finally:
                draft.unlink()
            _sync_dir(self.key_path.parent)
        finally:
            os.umask(old)
        return key

    def _check_key(self, db: sqlite3.Connection, aead: AESGCM, source: str) -> None:
        """Refuse a key other than the one the store's values are sealed with."""
        row = db.execute("SELECT CAST(value AS BLOB) FROM meta WHERE key = 'check'").fetchone()
        if row is not None and self._open(aead, row[0], "check") == _CHECK:
            return
        if row is not None and db.execute("SELECT 1 FROM versions LIMIT 1").fetchone():
            raise SecretError(
                f"{source} is not the key of the secret store of {self.env} ({self.db_path}): "
                "wrong key, or a store copied from another environment; nothing was stored",
                env=self.env,
            )
        # a new store, or one without values: this key is its key from now on
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('check', ?)",
            (self._seal(aead, _CHECK, "check"),),
        )

    def _seal(self, aead: AESGCM, data: bytes, *context: str | int) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + aead.encrypt(nonce, data, self._bound(*context))

    def _open(self, aead: AESGCM, sealed: object, *context: str | int) -> bytes | None:
        """The data, or None when the key is wrong or the sealed bytes were changed."""
        if not isinstance(sealed, bytes) or len(sealed) < _NONCE:
            return None
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._bound(*context))
        except InvalidTag:
            return None

    def _bound(self, *context: str | int) -> bytes:
        """The associated data: JSON, so no two (env, name, version) encode alike."""
        return json.dumps(["sqlifier-secret", self.env, *context]).encode()

    # --- the database -------------------------------------------------------------------

    def _create(self) -> None:
        """The folder (0700) and the database (0600, WAL, with its tables), if missing.

        The database is made under another name and linked into place, so no writer ever
        sees it half made (switching a shared file to WAL fails at once, without waiting).
        """
        if self.db_path.exists():
            return
        old = os.umask(0o077)  # the -wal and -shm files SQLite makes take the db's mode
        try:
            self.db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            draft = self.db_path.with_name(f".{self.db_path.name}.{secrets.token_hex(8)}")
            try:
                with closing(sqlite3.connect(draft, isolation_level=None)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    for statement in _SCHEMA:
                        db.execute(statement)
                with contextlib.suppress(FileExistsError):  # another writer made it first
                    os.link(draft, self.db_path)
            except sqlite3.Error as exc:
                raise SecretError(
                    f"cannot create the secret store {self.db_path} of {self.env}: {exc}",
                    env=self.env,
                ) from None
            finally:
                draft.unlink(missing_ok=True)
        finally:
            os.umask(old)

    def _holds_values(self) -> bool:
        with self._reading() as db:
            return bool(db and db.execute("SELECT 1 FROM versions LIMIT 1").fetchone())

    @contextmanager
    def _connected(self) -> Iterator[sqlite3.Connection]:
        try:
            with closing(sqlite3.connect(self.db_path, timeout=10, isolation_level=None)) as db:
                yield db
        except sqlite3.Error as exc:
            raise SecretError(
                f"the secret store {self.db_path} of {self.env} cannot be used: {exc}",
                env=self.env,
            ) from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """A connection, or None when the store was never written (reads create no file)."""
        if not self.db_path.exists():
            yield None
            return
        with self._connected() as db:
            yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; concurrent writers wait for each other (10 s at most)."""
        with self._connected() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


def _decode_key(text: str, env: str) -> bytes:
    text = text.strip()
    if not _KEY_TEXT.match(text):
        # never repeat the text: it may be a real key with a typo
        raise SecretError(
            f"{KEY_VARIABLE} is not a key (for {env}): it must be 32 bytes in URL-safe "
            "base64, 44 characters, like the output of: python3 -c 'import base64, os; "
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode())'",
            env=env,
        )
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sync_dir(path: Path) -> None:
    """Make a new file's name durable: losing the key loses every secret."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
