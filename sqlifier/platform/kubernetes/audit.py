"""The audit log kept in the cluster: append-only and hash-chained exactly as the local one
(store/audit.py, whose entry and hash code this reuses), stored in ConfigMaps.

    ConfigMap sqlifier-audit-000001     data["000000000001"] = the entry, a JSON array:
    ConfigMap sqlifier-audit-000002       [id, at, who, what, target, result, why, service,
    ...                                    details (JSON text), prev_hash, hash]
    ConfigMap sqlifier-audit-head       data: id, hash, chunk of the newest entry

An entry's hash is the local log's (SHA-256 of its fields and the hash before it), so an
entry means the same thing wherever it is kept. A ConfigMap holds at most 1 MiB: a chunk
is filled up to `CHUNK_BYTES` (768 KiB), then **sealed** (annotation
`sqlifier.dev/next-chunk`) and the next one is created, its first entry chained to the
sealed chunk's last.

Appending is optimistic, so that two writers (two agents, an agent and a CLI command) can
never fork the chain: an entry is added with a merge patch that carries the resourceVersion
the chunk was read at, and the API server refuses it (409) when anyone added one since;
the writer reads the chunk again and chains to the new last entry. Rolling to a new chunk
seals the old one the same way before creating the next (create fails when it exists), so
no entry can be added to a chunk after a newer one began.

The head, written after each append (it may lag; the next append moves it on), is what
shows that the last entries were removed, as `audit.head` does locally. The same limit
holds as locally: whoever may edit these ConfigMaps can rebuild the chain and the head;
this detects edits and removals, not a determined forger (the Role the agent is given
should be the only one allowed to write them).

DORA (`sqlifier dora`) reads the local log only, for now: reading this one is a follow-up.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.api import Cluster, Resource
from sqlifier.platform.kubernetes.errors import ClusterError
from sqlifier.platform.kubernetes.locks import record_labels
from sqlifier.store.audit import (
    _HASHED,
    GENESIS,
    AuditEntry,
    VerifyResult,
    _digest,
    _entry,
    _json,
    _link_problem,
    _service_of,
)

__all__ = ["CHUNK_BYTES", "ClusterAudit", "EntryTooLarge"]

PREFIX = "sqlifier-audit-"
HEAD = "sqlifier-audit-head"
NEXT = "sqlifier.dev/next-chunk"
CHUNK_BYTES = 768 * 1024  # of entries per ConfigMap, under its 1 MiB with room to spare
ATTEMPTS = 50  # appends lost to other writers in a row before giving up
_CHUNK = re.compile(r"sqlifier-audit-(\d{6})\Z")


class EntryTooLarge(UserError):
    """An audit entry larger than a chunk may hold."""


@dataclass(slots=True)
class _Tip:
    """The chunk entries are appended to, as last read."""

    index: int
    resource_version: str | None  # None: the chunk does not exist yet
    last_id: int
    last_hash: str
    size: int


class ClusterAudit:
    """The audit log of one stack and environment, in ConfigMaps; the local AuditLog's
    `record`, `entries` and `verify`."""

    def __init__(
        self,
        cluster: Cluster,
        stack: str,
        env: str,
        clock: Callable[[], float] = time.time,
        *,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.cluster = cluster
        self.stack = stack
        self.env = env
        self.clock = clock
        self.chunk_bytes = chunk_bytes
        self._tip: _Tip | None = None
        self._head: dict[str, Any] | None = None  # the head as this writer last wrote it
        self._configmaps: Resource | None = None

    @property
    def where(self) -> str:
        """As messages name the log: ConfigMaps sqlifier-audit-* in namespace shop."""
        return f"ConfigMaps {PREFIX}* in namespace {self.cluster.namespace}"

    # --- appending --------------------------------------------------------------------

    def record(
        self,
        who: str,
        what: str,
        target: str,
        result: str,
        *,
        why: str = "",
        details: Mapping[str, Any] | None = None,
        service: str | None = None,
    ) -> AuditEntry:
        """Append an entry and return it (as the local AuditLog.record)."""
        if service is None:
            service = _service_of(target)
        text = None if details is None else _json(details)
        for _ in range(ATTEMPTS):
            tip = self._tip or self._find_tip()
            fields = (tip.last_id + 1, self.clock(), who, what, target, result, why,
                      service or None, text)  # fmt: skip
            row = [*fields, tip.last_hash, _digest(fields, tip.last_hash)]
            value = json.dumps(row, separators=(",", ":"))
            if len(value) > self.chunk_bytes // 2:
                raise EntryTooLarge(
                    f"an audit entry of {len(value)} bytes ({what} {target}) is larger than "
                    f"the audit log in the cluster keeps ({self.chunk_bytes // 2} bytes)"
                )
            if self._append(tip, value):
                self._write_head(tip)
                return _entry(row)
        raise ClusterError(
            f"the audit log ({self.where}) was appended to by others at each of {ATTEMPTS} "
            "attempts; try again"
        )

    def _append(self, tip: _Tip, value: str) -> bool:
        """Add the entry after `tip`; False when someone else appended first (the tip is
        forgotten, to be read again)."""
        key = _key(tip.last_id + 1)
        try:
            if tip.resource_version is None:
                stored = self._create(tip.index, {key: value})
            elif tip.size and tip.size + len(value) > self.chunk_bytes:
                self._seal(tip)
                tip.index += 1
                stored = self._create(tip.index, {key: value})
                tip.size = 0
            else:
                stored = self._patch(
                    _name(tip.index),
                    {
                        "metadata": {"resourceVersion": tip.resource_version},
                        "data": {key: value},
                    },
                )
        except ClusterError as e:
            if e.status != 409:
                raise
            self._tip = None
            return False
        row = json.loads(value)
        tip.resource_version = stored["metadata"]["resourceVersion"]
        tip.last_id, tip.last_hash = row[0], row[-1]
        tip.size += len(value)
        self._tip = tip
        return True

    def _seal(self, tip: _Tip) -> None:
        self._patch(
            _name(tip.index),
            {"metadata": {"resourceVersion": tip.resource_version,
                          "annotations": {NEXT: _name(tip.index + 1)}}},
        )  # fmt: skip

    def _find_tip(self) -> _Tip:
        """The newest chunk: from the head's hint, following the seals forward."""
        head = self._get(HEAD)
        index = _int((head or {}).get("data", {}).get("chunk"), 1)
        floor = _int((head or {}).get("data", {}).get("id"), 0)
        chunk = self._get(_name(index))
        if chunk is None and index > 1:  # a head that names no chunk: look at them all
            chunks = list(self._chunks())
            if chunks:
                index, chunk = chunks[-1]
        last_id, last_hash = 0, GENESIS
        while chunk is not None:
            last_id, last_hash = _last(chunk, last_id, last_hash)
            sealed = (chunk["metadata"].get("annotations") or {}).get(NEXT)
            if not sealed:
                size = sum(len(v) for v in (chunk.get("data") or {}).values())
                version = chunk["metadata"]["resourceVersion"]
                return _Tip(index, version, max(last_id, floor), last_hash, size)
            index += 1
            chunk = self._get(_name(index))
        return _Tip(index, None, max(last_id, floor), last_hash, 0)

    def _write_head(self, tip: _Tip) -> None:
        """Move the head to the entry just appended, unless another writer moved it
        further; a head left behind is harmless (the next append moves it)."""
        data = {"id": str(tip.last_id), "hash": tip.last_hash, "chunk": str(tip.index)}
        for _ in range(3):
            # The head as this writer left it, if it wrote it last (one request, not two);
            # else (a 409: another writer moved it) read again.
            head = self._head or self._get(HEAD)
            try:
                if head is None:
                    stored = self._create_named(HEAD, data, "audit-head")
                elif _int(head.get("data", {}).get("id"), 0) >= tip.last_id:
                    return
                else:
                    version = head["metadata"]["resourceVersion"]
                    patch = {"metadata": {"resourceVersion": version}, "data": data}
                    stored = self._patch(HEAD, patch)
            except ClusterError as e:
                self._head = None
                if e.status in (404, 409):  # moved by another writer, or removed: read it
                    continue
                # The entry is in: failing its record now would have it written twice.
                # A head left behind is harmless; the next append moves it on.
                return
            self._head = stored
            return

    # --- reading and verifying --------------------------------------------------------

    def entries(
        self, since: float | None = None, service: str | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        """Entries, oldest first: those at or after `since`, about `service`, the last
        `limit` of them."""
        found = [
            _entry(row)
            for _, _, row in self._rows()
            if isinstance(row, list)
            and len(row) == len(_HASHED) + 2
            and (since is None or row[1] >= since)
            and (service is None or row[7] == service)
        ]
        return found[-limit:] if limit is not None else found

    def verify(self) -> VerifyResult:
        """Recompute the chain over every chunk and compare its end with the head; a
        problem names the entry, its ConfigMap and key."""
        head = self._get(HEAD)
        head_id = (head or {}).get("data", {}).get("id")
        entries, prev_id, prev_hash = 0, 0, GENESIS
        head_hash: str | None = None
        problem: tuple[str, int | None] | None = None
        for name, key, row in self._rows():
            entries += 1  # all of them are counted, as locally; the first problem is told
            if problem is not None:
                continue
            where = f" (ConfigMap {self.cluster.namespace}/{name}, key {key})"
            if not _is_row(row) or _key(row[0]) != key:
                problem = f"entry {key} is not an audit entry{where}", _int(key, 0) or None
                continue
            link = _link_problem(row, prev_id, prev_hash)
            if link is not None:
                problem = link[0] + where, link[1]
                continue
            prev_id, prev_hash = row[0], row[-1]
            if str(row[0]) == head_id:
                head_hash = row[-1]
        if problem is not None:
            return VerifyResult(False, entries, *problem)
        return self._check_head(head, entries, prev_id, head_hash)

    def _check_head(
        self, head: Mapping[str, Any] | None, entries: int, last_id: int, head_hash: str | None
    ) -> VerifyResult:
        shown = f"ConfigMap {self.cluster.namespace}/{HEAD}"
        if head is None:
            if entries == 0:
                return VerifyResult(True, 0)
            problem = f"{shown} is missing: the removal of the last entries cannot be ruled out"
            return VerifyResult(False, entries, problem)
        data = head.get("data") or {}
        head_id = _int(data.get("id"), -1)
        if head_id < 0:
            return VerifyResult(False, entries, f"{shown} names no entry id")
        if head_id > last_id:
            removed = head_id - last_id
            which = "the last entry was" if removed == 1 else f"the last {removed} entries were"
            problem = f"{which} removed (the head names entry {head_id})"
            return VerifyResult(False, entries, problem, last_id + 1)
        if head_hash != data.get("hash"):
            problem = f"entry {head_id} was changed: its hash is not the one {shown} names"
            return VerifyResult(False, entries, problem, head_id)
        return VerifyResult(True, entries)

    def _rows(self) -> Iterator[tuple[str, str, Any]]:
        """(chunk name, key, the entry as stored) over every chunk, in order."""
        for index, chunk in self._chunks():
            for key, value in sorted((chunk.get("data") or {}).items()):
                try:
                    row = json.loads(value)
                except ValueError:
                    row = None
                yield _name(index), key, row

    def _chunks(self) -> Iterator[tuple[int, dict[str, Any]]]:
        labels = record_labels(self.stack, self.env, "audit")
        answer = self.cluster.request(
            "GET",
            self._resource().path(self.cluster.namespace),
            verb="list",
            what=f"the audit log of {self.stack} ({self.env})",
            resource=self._resource(),
            query=[("labelSelector", ",".join(f"{k}={v}" for k, v in labels.items()))],
        )
        found = []
        for item in answer.get("items", []):
            match = _CHUNK.match(item["metadata"]["name"])
            if match:
                found.append((int(match.group(1)), item))
        yield from sorted(found, key=lambda pair: pair[0])

    # --- the API ----------------------------------------------------------------------

    def _create(self, index: int, data: dict[str, str]) -> dict[str, Any]:
        return self._create_named(_name(index), data, "audit")

    def _create_named(self, name: str, data: dict[str, str], record: str) -> dict[str, Any]:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": record_labels(self.stack, self.env, record)},
            "data": data,
        }
        created: dict[str, Any] = self.cluster.request(
            "POST",
            self._resource().path(self.cluster.namespace),
            verb="create",
            what=self._what(name),
            resource=self._resource(),
            body=body,
        )
        return created

    def _patch(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A merge patch; its metadata.resourceVersion makes it conditional (409)."""
        patched: dict[str, Any] = self.cluster.request(
            "PATCH",
            self._resource().path(self.cluster.namespace, name),
            verb="patch",
            what=self._what(name),
            resource=self._resource(),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return patched

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.cluster.request(
                "GET",
                self._resource().path(self.cluster.namespace, name),
                verb="get",
                what=self._what(name),
                resource=self._resource(),
            )
        except ClusterError as e:
            if e.status == 404:
                return None
            raise
        return found

    def _resource(self) -> Resource:
        if self._configmaps is None:
            self._configmaps = self.cluster.resource("v1", "ConfigMap")
        return self._configmaps

    def _what(self, name: str) -> str:
        return f"ConfigMap {self.cluster.namespace}/{name}"


def _name(index: int) -> str:
    return f"{PREFIX}{index:06d}"


def _key(entry_id: int) -> str:
    return f"{entry_id:012d}"


def _int(text: object, default: int) -> int:
    try:
        return int(str(text))
    except ValueError:
        return default


def _is_row(row: Any) -> bool:
    return isinstance(row, list) and len(row) == len(_HASHED) + 2 and isinstance(row[0], int)


def _last(chunk: Mapping[str, Any], last_id: int, last_hash: str) -> tuple[int, str]:
    """The id and hash of a chunk's last entry (those given when it has none)."""
    data = chunk.get("data") or {}
    if not data:
        return last_id, last_hash
    key = max(data)
    try:
        row = json.loads(data[key])
    except ValueError:
        row = None
    if not _is_row(row):
        name = chunk.get("metadata", {}).get("name", "?")
        raise UserError(
            f"the audit log's last entry (ConfigMap {name}, key {key}) is damaged, so no entry "
            "can be chained to it: sqlifier audit verify says what was changed; restore it "
            "from a backup of the ConfigMap"
        )
    return int(row[0]), str(row[-1])
