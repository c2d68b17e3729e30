"""The local secret store: real SQLite files and real keys in a temporary state folder."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.local import KEY_VARIABLE, LocalStore, SecretInfo
from sqlifier.store.audit import AuditLog

ENV = "staging"
VALUE = "correct horse battery staple 7f3a9c"
OTHER_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()
WRONG = "cannot decrypt secret db_password in {}: wrong key or tampered store"


@pytest.fixture(autouse=True)
def _no_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_VARIABLE, raising=False)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / ".sqlifier" / ENV


@pytest.fixture
def store(state: Path) -> LocalStore:
    return LocalStore(state, ENV)


def clear_forms(value: str) -> list[bytes]:
    """The value as it could appear in a file without encryption."""
    data = value.encode()
    return [data, base64.b64encode(data), base64.urlsafe_b64encode(data), data.hex().encode()]


def files_holding(folder: Path, *values: str) -> list[str]:
    """Every file under `folder` that holds one of `values` in clear, in any form."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [path.name for value in values for form in clear_forms(value) if form in data]
    return found


def refusal(action: Callable[[], object]) -> str:
    """The message of the SecretError `action` raises."""
    with pytest.raises(SecretError) as caught:
        action()
    return str(caught.value)


@pytest.fixture
def wal_kept(store: LocalStore) -> Iterator[None]:
    """An open reader, so SQLite keeps the -wal and -shm files after each write."""
    store.set("warmup", "w", "ana")
    with closing(sqlite3.connect(store.db_path)) as reader:
        reader.execute("SELECT COUNT(*) FROM secrets").fetchone()
        yield


# --- values and versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [VALUE, "é€😀 multi\nline\r\n with trailing newline\n", "x", "y" * 64 * 1024],
    ids=["words", "unicode-and-newlines", "one-character", "64-KiB"],
)
def test_a_value_comes_back_exactly_as_it_was_set(store: LocalStore, value: str) -> None:
    assert store.set("db_password", value, "ana") == 1
    assert store.get("db_password") == value


def test_each_set_is_a_new_version_and_earlier_ones_stay_readable(store: LocalStore) -> None:
    assert [store.set("db_password", f"v{n}", "ana") for n in (1, 2, 3)] == [1, 2, 3]
    assert store.get("db_password") == "v3"
    assert [store.get("db_password", n) for n in (1, 2, 3)] == ["v1", "v2", "v3"]


def test_only_the_last_five_versions_are_kept(store: LocalStore) -> None:
    for n in range(1, 8):
        store.set("db_password", f"v{n}", "ana")
    info = store.info("db_password")
    assert info is not None and (info.version, info.versions) == (7, 5)
    assert store.get("db_password", 3) == "v3"
    with pytest.raises(SecretError) as caught:
        store.get("db_password", 2)
    assert (
        str(caught.value) == "secret db_password in staging has no version 2; kept: 3, 4, 5, 6, 7"
    )


def test_secrets_are_kept_apart_by_name(store: LocalStore) -> None:
    store.set("a", "first", "ana")
    store.set("b", "second", "ana")
    assert (store.get("a"), store.get("b")) == ("first", "second")


def test_info_and_list_describe_secrets_without_their_values(store: LocalStore) -> None:
    store.set("db_password", "v1", "ana")
    store.set("db_password", "v2", "bob")
    store.set("api_token", "t1", "ana")
    info = store.info("db_password")
    assert info is not None
    assert (info.name, info.version, info.versions, info.updated_by, info.delivered) == (
        "db_password",
        2,
        2,
        "bob",
        None,
    )
    assert info.created <= info.updated
    assert [i.name for i in store.list()] == ["api_token", "db_password"]
    assert all(isinstance(i, SecretInfo) for i in store.list())
    assert store.info("missing") is None


def test_mark_delivered_records_a_kept_version(store: LocalStore) -> None:
    store.set("db_password", "v1", "ana")
    store.set("db_password", "v2", "ana")
    store.mark_delivered("db_password", 2)
    info = store.info("db_password")
    assert info is not None and info.delivered == 2
    assert refusal(lambda: store.mark_delivered("db_password", 9)) == (
        "secret db_password in staging has no version 9 to deliver"
    )
    assert refusal(lambda: store.mark_delivered("nope", 1)) == (
        "no secret nope in staging; staging holds: db_password"
    )


def test_an_unknown_secret_says_how_to_set_it(store: LocalStore) -> None:
    for _ in range(2):  # without a store file, then with one
        with pytest.raises(SecretError) as caught:
            store.get("db_password")
        assert str(caught.value) == (
            "no secret db_password in staging; "
            "set it with sqlifier secret set db_password --env staging"
        )
        assert (caught.value.name, caught.value.env) == ("db_password", ENV)
        store.set("other", "x", "ana")


def test_remove_forgets_every_version(store: LocalStore) -> None:
    store.set("db_password", "v1", "ana")
    store.set("db_password", "v2", "ana")
    store.remove("db_password")
    assert store.info("db_password") is None and store.list() == []
    assert store.set("db_password", "again", "ana") == 1  # numbering starts over
    assert store.get("db_password") == "again"


def test_removing_an_unknown_secret_names_the_known_ones(store: LocalStore) -> None:
    assert refusal(lambda: store.remove("nope")) == "no secret nope in staging; it holds no secrets"
    store.set("b", "x", "ana")
    store.set("a", "x", "ana")
    known = "no secret nope in staging; staging holds: a, b"
    assert refusal(lambda: store.remove("nope")) == known
    assert refusal(lambda: store.require("nope")) == known


def test_reading_an_empty_environment_creates_no_file(store: LocalStore, state: Path) -> None:
    assert store.list() == [] and store.info("a") is None
    with pytest.raises(SecretError):
        store.get("a")
    assert not state.parent.exists()


@pytest.mark.parametrize("name", ["A.b-c_1", "x" * 128])
def test_names_the_stack_file_accepts_are_accepted(store: LocalStore, name: str) -> None:
    store.set(name, "v", "ana")
    assert store.get(name) == "v"


@pytest.mark.parametrize("name", ["", "a/b", "a b", "x" * 129, "café", "a\nb"])
def test_names_the_stack_file_refuses_are_refused(store: LocalStore, name: str) -> None:
    with pytest.raises(SecretError) as caught:
        store.set(name, "v", "ana")
    assert str(caught.value) == (
        f"invalid secret name {name!r} in staging; a name is 1 to 128 letters, digits, "
        "'_', '.' or '-', as in secret://local/NAME"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "the value of secret s in staging is empty; nothing was stored"),
        (
            "z" * (64 * 1024 + 1),
            "the value of secret s in staging is 65537 bytes; at most 65536 (64 KiB) are "
            "stored; nothing was stored",
        ),
        (
            "pass\udc80word",
            "the value of secret s in staging is not valid text; nothing was stored",
        ),
    ],
    ids=["empty", "over-64-KiB", "lone-surrogate"],
)
def test_values_that_cannot_be_stored_are_refused(
    store: LocalStore, state: Path, value: str, message: str
) -> None:
    with pytest.raises(SecretError) as caught:
        store.set("s", value, "ana")
    assert str(caught.value) == message
    assert not state.exists()


# --- keys -------------------------------------------------------------------------------


def test_a_wrong_key_does_not_decrypt(store: LocalStore) -> None:
    store.set("db_password", VALUE, "ana")
    store.key_path.write_bytes(os.urandom(32))
    with pytest.raises(SecretError) as caught:
        store.get("db_password")
    assert str(caught.value) == WRONG.format(ENV)


def test_setting_with_another_key_is_refused_rather_than_mixing_keys(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set("db_password", VALUE, "ana")
    monkeypatch.setenv(KEY_VARIABLE, OTHER_KEY)
    with pytest.raises(SecretError, match=f"^{KEY_VARIABLE} is not the key of the secret store"):
        store.set("api_token", "t", "ana")
    monkeypatch.delenv(KEY_VARIABLE)
    assert [i.name for i in store.list()] == ["db_password"]
    assert store.get("db_password") == VALUE


def test_an_emptied_store_takes_a_new_key(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.set("db_password", VALUE, "ana")
    store.remove("db_password")
    monkeypatch.setenv(KEY_VARIABLE, OTHER_KEY)
    store.set("db_password", "new", "ana")
    assert store.get("db_password") == "new"


@pytest.mark.parametrize("shared_key", [False, True], ids=["key-file-copied", "same-key-variable"])
def test_a_store_copied_to_another_environment_does_not_decrypt(
    state: Path, monkeypatch: pytest.MonkeyPatch, shared_key: bool
) -> None:
    if shared_key:
        monkeypatch.setenv(KEY_VARIABLE, OTHER_KEY)
    LocalStore(state, ENV).set("db_password", VALUE, "ana")
    production = state.parent / "production"
    shutil.copytree(state, production)
    copied = LocalStore(production, "production")
    assert [i.name for i in copied.list()] == ["db_password"]
    with pytest.raises(SecretError) as caught:
        copied.get("db_password")
    assert str(caught.value) == WRONG.format("production")
    with pytest.raises(SecretError, match="is not the key of the secret store of production"):
        copied.set("other", "x", "ana")


def flip(data: bytes, index: int) -> bytes:
    """`data` with one bit of its byte at `index` changed."""
    changed = bytearray(data)
    changed[index] ^= 1
    return bytes(changed)


def change(store: LocalStore, statement: str) -> None:
    with closing(sqlite3.connect(store.db_path)) as db, db:
        db.create_function("flip", 2, flip)
        db.execute(statement)


@pytest.mark.parametrize(
    "tampering",
    [
        "UPDATE secrets SET name = 'api_token' WHERE name = 'db_password';"
        "UPDATE versions SET name = 'api_token' WHERE name = 'db_password'",
        "UPDATE versions SET version = version + 10; UPDATE versions SET version = 13 - version",
        "UPDATE versions SET sealed = flip(sealed, 0)",
        "UPDATE versions SET sealed = flip(sealed, 12)",
        "UPDATE versions SET sealed = flip(sealed, -1)",
        "UPDATE versions SET sealed = x'0102'",
        "UPDATE versions SET sealed = 'text'",
    ],
    ids=[
        "renamed",
        "versions-swapped",
        "nonce-changed",
        "ciphertext-changed",
        "tag-changed",
        "cut-short",
        "not-bytes",
    ],
)
def test_a_tampered_store_does_not_decrypt(store: LocalStore, tampering: str) -> None:
    store.set("db_password", "v1", "ana")
    store.set("db_password", "v2", "ana")
    for statement in tampering.split(";"):
        change(store, statement)
    name = store.list()[0].name
    with pytest.raises(SecretError) as caught:
        store.get(name, 1)
    assert str(caught.value) == WRONG.format(ENV).replace("db_password", name)


def test_the_key_variable_is_used_and_no_key_file_is_written(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, OTHER_KEY.rstrip("="))  # the padding is optional
    store.set("db_password", VALUE, "ana")
    assert store.get("db_password") == VALUE
    assert not store.key_path.exists()
    monkeypatch.delenv(KEY_VARIABLE)
    with pytest.raises(SecretError) as caught:
        store.get("db_password")
    assert str(caught.value) == (
        f"cannot decrypt secret db_password in staging: the key file {store.key_path} is "
        f"missing; restore it, or set {KEY_VARIABLE} to the store's key"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hunter2",
        base64.urlsafe_b64encode(os.urandom(16)).decode(),
        base64.urlsafe_b64encode(os.urandom(33)).decode(),
        base64.b64encode(b"\xfb" * 32).decode(),  # standard base64: '+' and '/'
    ],
    ids=["empty", "words", "16-bytes", "33-bytes", "not-url-safe"],
)
def test_a_bad_key_variable_is_refused_without_repeating_it(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv(KEY_VARIABLE, bad)
    with pytest.raises(SecretError) as caught:
        store.set("db_password", VALUE, "ana")
    message = str(caught.value)
    assert message.startswith(
        f"{KEY_VARIABLE} is not a key (for staging): it must be 32 bytes in URL-safe base64"
    )
    assert not bad or bad not in message
    assert not store.key_path.exists()


def test_a_missing_key_file_is_not_replaced_while_values_need_it(store: LocalStore) -> None:
    store.set("db_password", VALUE, "ana")
    store.key_path.unlink()
    with pytest.raises(SecretError, match=r"^the key file .* is missing, and the store holds"):
        store.set("db_password", "v2", "ana")
    assert not store.key_path.exists()


def test_a_damaged_key_file_is_reported(store: LocalStore) -> None:
    store.set("db_password", VALUE, "ana")
    store.key_path.write_bytes(b"short")
    with pytest.raises(SecretError, match=r"is damaged: 5 bytes, not 32; restore it"):
        store.get("db_password")


# --- files ------------------------------------------------------------------------------


def test_files_are_private_whatever_the_umask(state: Path) -> None:
    old = os.umask(0o022)
    try:
        store = LocalStore(state, ENV)
        store.set("warmup", "w", "ana")
        with closing(sqlite3.connect(store.db_path)) as reader:
            reader.execute("SELECT COUNT(*) FROM secrets").fetchone()
            store.set("db_password", VALUE, "ana")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
    finally:
        os.umask(old)
    assert modes == {
        "secret.key": 0o600,
        "secrets.db": 0o600,
        "secrets.db-wal": 0o600,
        "secrets.db-shm": 0o600,
    }
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


@pytest.mark.usefixtures("wal_kept")
def test_no_value_is_in_any_file_in_clear(store: LocalStore, state: Path) -> None:
    values = [f"{VALUE} version {n}" for n in range(1, 8)]
    for value in values:
        store.set("db_password", value, "ana")
    AuditLog(state / "audit.db").record("ana", "secret set", "t/staging/db_password", "version 7")
    assert (state / "secrets.db-wal").exists()
    assert files_holding(state.parent, *values) == []


def test_no_value_is_in_any_file_once_closed(store: LocalStore, state: Path) -> None:
    store.set("db_password", VALUE, "ana")
    assert sorted(p.name for p in state.iterdir()) == ["secret.key", "secrets.db"]
    assert files_holding(state.parent, VALUE) == []


WRITER = """
import sys, time
from pathlib import Path
from sqlifier.secrets.local import LocalStore
store = LocalStore(Path(sys.argv[1]), "staging")
go = Path(sys.argv[3])
while not go.exists():  # all start together, to race for the first key too
    time.sleep(0.001)
for n in range(25):
    store.set("shared", f"writer {sys.argv[2]} value {n}", "w")
    store.set(f"own{sys.argv[2]}", f"value {n}", "w")
"""


def test_concurrent_writers_share_one_key_and_lose_no_version(state: Path) -> None:
    go = state.parent.parent / "go"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(state), str(n), str(go)])
        for n in range(6)
    ]
    time.sleep(1)  # every writer has imported sqlifier and waits
    go.touch()
    assert [w.wait(timeout=60) for w in writers] == [0] * 6
    store = LocalStore(state, ENV)
    shared = store.info("shared")
    assert shared is not None and (shared.version, shared.versions) == (150, 5)
    kept = [store.get("shared", n) for n in range(146, 151)]
    assert all(value.startswith("writer ") for value in kept)
    for n in range(6):
        assert store.get(f"own{n}") == "value 24"
