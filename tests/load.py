"""Load through a stack's router: clients on kept-alive connections, every answer kept
with its time, status and the release that gave it, and counted by outcome."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter


class Load:
    """Clients sending GETs through the router until stopped; every answer is kept with
    its time, status and the release that gave it."""

    def __init__(self, port: int, path: str = "/", clients: int = 3, pause: float = 0.005) -> None:
        self.port, self.path, self.pause = port, path, pause
        self.answers: list[tuple[float, int, str]] = []
        # "200", "503 b'no instance ready'" (status and the body's start), or the error.
        self.outcomes: Counter[str] = Counter()
        self.instances: dict[tuple[str, str], float] = {}  # (release, instance) -> first seen
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", self.path)
                response = connection.getresponse()
                body = response.read()
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {}
                release = str(payload.get("release", "?"))
                now = time.time()
                self.answers.append((now, response.status, release))
                self.instances.setdefault((release, str(payload.get("instance"))), now)
                status = str(response.status)
                self.outcomes[status if status == "200" else f"{status} {body[:40]!r}"] += 1
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self.answers.append((time.time(), 0, "?"))
                self.outcomes[type(exc).__name__] += 1
                if connection is not None:
                    connection.close()
                connection = None
            if self.pause:
                time.sleep(self.pause)
        if connection is not None:
            connection.close()

    @property
    def failed(self) -> dict[str, int]:
        """Outcomes other than a 200, counted."""
        return {k: v for k, v in list(self.outcomes.items()) if k != "200"}

    def since(self, t: float) -> list[tuple[float, int, str]]:
        return [a for a in list(self.answers) if a[0] >= t]
