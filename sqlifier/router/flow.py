"""Flow between a client's connection and an instance's: writes gathered per turn of
the event loop, and why a client's reading is paused.

Writes are gathered during a turn and made together at its end (`Outbox`): a write wakes
the process that reads it, and waking one that sleeps on another CPU costs more than the
write itself. Reading is paused for reasons that add up, bits of `Client.holds`: reading
resumes when the last reason is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["BODY_WAITS", "READ_AHEAD", "Outbox"]

# Why a client's reading is paused: bits of `Client.holds`.
BODY_WAITS = 1  # the request body has nowhere to go: no connection yet, or it is full
READ_AHEAD = 2  # the next request came early, and more than a head of it is waiting


class Outbox:
    """Writes gathered during a turn of the event loop, and made together at its end.

    A write wakes the process that reads it; when that process sleeps on another CPU,
    waking it costs this one more than the write does (an interprocessor interrupt, and
    in a virtual machine a trip through the hypervisor). Made one after the other, the
    writes of a turn find their readers awake after the first. A connection to close
    is closed in its turn, after what was written to it.

    An outbox serves one event loop, the one running at its first write; it keeps that
    loop's `call_soon` rather than ask for the running loop on every turn (in Python
    3.11 that asks the kernel for the process id each time)."""

    __slots__ = ("_items", "_soon")

    def __init__(self) -> None:
        self._items: list[tuple[asyncio.Transport, bytes | None]] = []
        self._soon: Callable[[Callable[[], None]], object] | None = None

    def write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not self._items:
            soon = self._soon
            if soon is None:
                soon = self._soon = asyncio.get_running_loop().call_soon
            soon(self._flush)
        self._items.append((transport, data))

    def close(self, transport: asyncio.Transport) -> None:
        if not self._items:
            soon = self._soon
            if soon is None:
                soon = self._soon = asyncio.get_running_loop().call_soon
            soon(self._flush)
        self._items.append((transport, None))

    def _flush(self) -> None:
        items, self._items = self._items, []
        for transport, data in items:
            if transport.is_closing():
                continue
            if data is None:
                transport.close()
            else:
                transport.write(data)
