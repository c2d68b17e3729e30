"""Load through a stack's router for deploy tests: clients on kept-alive connections,
every answer kept with its time, status and the release that gave it."""

from __future__ import annotations

import http.client
import json
import threading
import time


class Load:
    """Clients sending GETs through the router until stopped; every answer is kept with
    its time, status and the release that gave it."""

    def __init__(self, port: int, path: str, clients: int = 3) -> None:
        self.port, self.path = port, path
        self.answers: list[tuple[float, int, str]] = []
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
            except (OSError, http.client.HTTPException):
                self.answers.append((time.time(), 0, "?"))
                if connection is not None:
                    connection.close()
                connection = None
            time.sleep(0.005)
        if connection is not None:
            connection.close()

    @property
    def failed(self) -> dict[str, int]:
        """Answers that were not a 200 (0: no answer at all), by status."""
        counts: dict[str, int] = {}
        for _, status, _ in list(self.answers):
            if status != 200:
                counts[str(status)] = counts.get(str(status), 0) + 1
        return counts

    def since(self, t: float) -> list[tuple[float, int, str]]:
        return [a for a in list(self.answers) if a[0] >= t]
