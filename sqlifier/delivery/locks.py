"""Locks per service and environment, held for a whole deploy or rollback.

Never global: each service of an environment has its own lock, so two services deploy in
parallel. The lock is a file, `<state_dir>/locks/<service>.lock` (`state_dir` being the
environment's `.sqlifier/<env>/`), that says who holds it, since when and why (JSON), and
its holder keeps an OS lock (`flock`) on that file for as long as it holds it.

Three rules make it safe between processes that race:

- A lock file is born complete: written and `flock`ed under a temporary name, then
  hard-linked into place — `link` fails when the name is taken, so of two processes
  creating it at once exactly one wins, and no one ever reads a half-written record.
- Only the process holding a file's `flock` removes it (its holder, on release), and it
  removes the file *before* letting go of the `flock`. So whoever obtains the `flock` of a
  file still at the path knows its holder ended without releasing: the lock is **stale**.
- A stale lock is never broken on its own — its deploy died half-way, and someone should
  look — but reported, until `force_release` (`sqlifier lock release S --force`) breaks it.

A process that dies loses its `flock` with it (the kernel's doing), and its record stays
behind: that is how a killed deploy is told from a running one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import secrets
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import TracebackType

import psutil

from sqlifier.errors import UserError
from sqlifier.runtime.process import is_same_process
from sqlifier.store.audit import AuditLog

__all__ = [
    "LockInfo",
    "Locked",
    "ServiceLock",
    "force_release",
    "held_locks",
    "read_lock",
]

POLL = 0.05  # seconds between two looks at a lock being waited for
_HOST = socket.gethostname()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}\Z")


@dataclass(frozen=True, slots=True)
class LockInfo:
    """Who holds a service's lock in an environment, since when, and why."""

    service: str
    env: str
    user: str
    pid: int
    started: float  # the holder process's start time: with `pid`, which process it is
    since: float
    what: str  # "deploy", "rollback", "rule NAME", ...
    version: str | None
    reason: str
    host: str
    stale: bool = False  # its holder process has ended (computed when read)

    def describe(self) -> str:
        """`locked by alice since 2026-11-26 10:00:03Z (deploy v2: fix checkout)`, and for a
        stale lock what has become of its holder and how to break the lock."""
        where = "" if self.host == _HOST else f" on {self.host}"
        text = f"locked by {self.user}{where} since {_stamp(self.since)} ({_purpose(self)})"
        if self.stale:
            text += (
                f" — stale: its process {self.pid} has ended; sqlifier lock release "
                f"{self.service} --env {self.env} --force breaks it"
            )
        return text


class Locked(UserError):
    """The service's lock is held by someone else (or stale); `info` says by whom."""

    def __init__(self, info: LockInfo, note: str = "") -> None:
        super().__init__(info.describe() + note)
        self.info = info


class ServiceLock:
    """The lock of one service in one environment, for one deploy, rollback or action.

    `with ServiceLock(...):` takes it (waiting up to `wait` seconds) and releases it; the
    agent uses `async with` or `acquire_async`, which wait without blocking its loop.
    Not re-entrant: `acquire` refuses at once a lock its own process holds already (a
    wait could only time out); `acquire_async` waits for it, as another task may let go.
    """

    def __init__(
        self,
        state_dir: Path,
        env: str,
        service: str,
        what: str,
        user: str,
        version: str | None = None,
        reason: str = "",
        *,
        wait: float = 0.0,
    ) -> None:
        self.path = _lock_path(state_dir, service)
        self.env = env
        self.service = service
        self.what = what
        self.user = user
        self.version = version
        self.reason = reason
        self.wait = wait
        self.info: LockInfo | None = None  # our record, while held
        self._record: LockInfo | None = None  # the record an acquire in progress puts
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for its holder to release it.

        Locked when it is still held then; at once, without waiting, when it is stale
        (no one would release it) or held by this same process (a wait could only time
        out: locks are not re-entrant).
        """
        deadline = self._start(wait)
        while (holder := self._attempt()) is not None:
            if holder.pid == os.getpid() and holder.host == _HOST:
                raise Locked(holder, " — by this same process: locks are not re-entrant")
            left = deadline - time.monotonic()
            if holder.stale or left <= 0:
                raise Locked(holder)
            time.sleep(min(POLL, left))

    async def acquire_async(self, wait: float = 0.0) -> None:
        """As `acquire`, without blocking the event loop while waiting; a holder in this same
        process (another task of the agent) is waited for like any other."""
        deadline = self._start(wait)
        while (holder := self._attempt()) is not None:
            left = deadline - time.monotonic()
            if holder.stale or left <= 0:
                raise Locked(holder)
            await asyncio.sleep(min(POLL, left))

    def release(self) -> None:
        """Remove the record and let go of the lock; nothing when it is not held."""
        fd, self._fd, self.info = self._fd, None, None
        if fd is None:
            return
        try:
            # Only the file this lock created goes: after a forced release the path may
            # hold someone else's lock by now.
            if _same_file(fd, self.path):
                os.unlink(self.path)
        finally:
            # Unlocked only once removed: a waiter that gets this flock must find the path
            # gone, not a record without its lock (which would read as stale). LOCK_UN and
            # not only close: a forked child sharing the descriptor would keep the flock.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> ServiceLock:
        self.acquire(self.wait)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> ServiceLock:
        await self.acquire_async(self.wait)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()

    def _start(self, wait: float) -> float:
        """Check this lock is free to be taken; the deadline of a wait of `wait` seconds."""
        if self._fd is not None:
            raise RuntimeError(
                f"{self.service} in {self.env}: this lock is held already; locks are not re-entrant"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._record = LockInfo(
            self.service,
            self.env,
            self.user,
            os.getpid(),
            psutil.Process().create_time(),
            time.time(),
            self.what,
            self.version,
            self.reason,
            _HOST,
        )
        return time.monotonic() + wait

    def _attempt(self) -> LockInfo | None:
        """One try: None when the lock is ours now, else the record of its holder."""
        while True:  # each turn follows a race lost to another process; never a wait
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if self._create():
                    return None
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return _read(fd, self.path, self.env)
                if _same_file(fd, self.path):
                    # A record without its flock: its holder ended without releasing.
                    return _read(fd, self.path, self.env)
                # Released (or broken) between our open and our flock: look again.
            finally:
                os.close(fd)

    def _create(self) -> bool:
        """Put a new lock file with our record in place, its flock ours from the start;
        False when another process put one there first."""
        assert self._record is not None
        temporary = self.path.with_name(f".{self.service}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a new file no one else knows: never blocks
            _write_all(fd, _encode(self._record))
            os.fsync(fd)  # after a power cut the record is there, read as stale
            os.link(temporary, self.path)
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, FileExistsError):
                return False
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._fd, self.info = fd, self._record
        return True


def read_lock(state_dir: Path, env: str, service: str) -> LockInfo | None:
    """Who holds the service's lock in `env` (stale or not), or None when it is free."""
    return _read_path(_lock_path(state_dir, service), env)


def held_locks(state_dir: Path, env: str) -> list[LockInfo]:
    """The locks held in `env` (stale ones included), by service name."""
    found = (_read_path(path, env) for path in sorted((state_dir / "locks").glob("*.lock")))
    return [info for info in found if info is not None]


def force_release(
    state_dir: Path,
    env: str,
    service: str,
    who: str,
    audit: AuditLog | None,
    *,
    alive_ok: bool = False,
) -> LockInfo:
    """Break a stale lock (`sqlifier lock release S --force`), audited; the record broken.

    A lock whose holder still runs (or runs on another host, where it cannot be checked)
    is refused unless `alive_ok`: the CLI passes that only when a second confirmation flag
    is given, because the deploy holding it goes on as if it still had it.
    """
    path = _lock_path(state_dir, service)
    target = f"{env}/{service}"

    def record(result: str, broken: LockInfo | None = None) -> None:
        if audit is not None:
            details = None if broken is None else _fields(broken)
            audit.record(
                who, "lock release --force", target, result, details=details, service=service
            )

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        record("refused: not locked")
        raise UserError(f"{service} in {env} is not locked") from None
    try:
        info = _read(fd, path, env)
        if not info.stale and not alive_ok:
            running = "is still running" if info.host == _HOST else f"runs on {info.host}"
            record(f"refused: {info.what} by {info.user}, process {info.pid} {running}", info)
            raise UserError(
                f"{service} in {env} is {info.describe()}, and its process {info.pid} "
                f"{running}: let it finish or stop it; breaking the lock of a live "
                "process needs a second confirmation"
            )
        # With the flock (free when the holder is gone) no one else can remove or replace
        # the file while we do; a live holder (or a forked child of a dead one) keeps it.
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same_file(fd, path):
            os.unlink(path)
    finally:
        os.close(fd)
    state = "stale" if info.stale else "live"
    record(
        f"ok: broke the {state} lock of {info.user} ({_purpose(info)}), process {info.pid}", info
    )
    return info


def _lock_path(state_dir: Path, service: str) -> Path:
    if not _NAME.match(service):
        raise UserError(f"not a service name: {service!r}")
    return state_dir / "locks" / f"{service}.lock"


def _read_path(path: Path, env: str) -> LockInfo | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _read(fd, path, env)
    finally:
        os.close(fd)


def _read(fd: int, path: Path, env: str) -> LockInfo:
    """The record in an open lock file, `stale` computed: its holder process has ended."""
    data = b""
    while chunk := os.pread(fd, 65536, len(data)):
        data += chunk
    try:
        raw = json.loads(data)
        version = raw["version"]
        info = LockInfo(
            service=str(raw["service"]),
            env=str(raw["env"]),
            user=str(raw["user"]),
            pid=int(raw["pid"]),
            started=float(raw["started"]),
            since=float(raw["since"]),
            what=str(raw["what"]),
            version=None if version is None else str(version),
            reason=str(raw["reason"]),
            host=str(raw["host"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is not a lock record ({type(exc).__name__}: {exc}); if no deploy or "
            "rollback of this service is running, delete the file"
        ) from None
    if info.env != env:
        raise UserError(f"{path} is a lock of environment {info.env!r}, not {env!r}")
    gone = info.host == _HOST and not is_same_process(info.pid, info.started)
    return replace(info, stale=gone)


def _fields(info: LockInfo) -> dict[str, object]:
    """The record as stored: all but `stale`, which is computed when read."""
    fields = asdict(info)
    del fields["stale"]
    return fields


def _encode(info: LockInfo) -> bytes:
    return (json.dumps(_fields(info)) + "\n").encode()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _same_file(fd: int, path: Path) -> bool:
    """Is the open file `fd` still the one at `path` (not removed, not replaced)?"""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def _purpose(info: LockInfo) -> str:
    """`deploy v2: fix checkout`"""
    version = f" {info.version}" if info.version else ""
    reason = f": {info.reason}" if info.reason else ""
    return f"{info.what}{version}{reason}"


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
