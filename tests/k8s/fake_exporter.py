"""A fake of what Prometheus scrapes on a cluster: the kubelet's cAdvisor series and a
Gateway's (Envoy Gateway's) request series. A mock of what cannot run here (no kubelet,
no containers, no Envoy): the agent's queries run against a REAL Prometheus scraping it.

    with FakeExporter() as exporter, running_prometheus(tmp, [exporter.address]) as prom:
        exporter.cpu("ns", "web-1", 0.9)                  # cores the pod uses from now on
        exporter.memory("ns", "web-1", 200 * 2**20)       # working-set bytes
        exporter.traffic("ns", "web", rps=50, errors=0.1, latency_ms=120)

Counters grow at the rate set, continuously (a change of rate does not make them jump), so
`rate(...[1m])` reads the rate set once two scrapes have seen it. Each pod also has the
series cAdvisor writes for the pod's own cgroup (container="") and the pause container
(container="POD"), which the agent's queries must leave out: they hold 100 cores.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers import QuietServer

__all__ = ["FakeExporter"]

BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class _Counter:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.total = 0.0
        self.rate = 0.0
        self.since = clock()

    def value(self) -> float:
        return self.total + self.rate * (self.clock() - self.since)

    def set_rate(self, rate: float) -> None:
        self.total = self.value()
        self.since = self.clock()
        self.rate = rate


class FakeExporter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._cpu: dict[tuple[str, str], _Counter] = {}
        self._memory: dict[tuple[str, str], float] = {}
        # (ns, service) -> requests, 5xx, latency (ms) and its bucket counters
        self._traffic: dict[tuple[str, str], tuple[_Counter, _Counter, float, list[_Counter]]] = {}
        self.scrapes = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = owner.render().encode()
                owner.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def cpu(self, ns: str, pod: str, cores: float) -> None:
        with self._lock:
            self._cpu.setdefault((ns, pod), _Counter(self.clock)).set_rate(cores)

    def memory(self, ns: str, pod: str, size: float) -> None:
        with self._lock:
            self._memory[(ns, pod)] = size

    def traffic(self, ns: str, service: str, rps: float, errors: float, latency_ms: float) -> None:
        with self._lock:
            found = self._traffic.get((ns, service))
            if found is None:
                buckets = [_Counter(self.clock) for _ in BUCKETS_MS]
                found = (_Counter(self.clock), _Counter(self.clock), latency_ms, buckets)
            total, failed, _, buckets = found
            total.set_rate(rps)
            failed.set_rate(rps * errors)
            for bound, counter in zip(BUCKETS_MS, buckets, strict=True):
                counter.set_rate(rps if latency_ms <= bound else 0.0)
            self._traffic[(ns, service)] = (total, failed, latency_ms, buckets)

    def render(self) -> str:
        lines = [
            "# TYPE container_cpu_usage_seconds_total counter",
            "# TYPE container_memory_working_set_bytes gauge",
            "# TYPE envoy_cluster_upstream_rq_total counter",
            "# TYPE envoy_cluster_upstream_rq_xx counter",
            "# TYPE envoy_cluster_upstream_rq_time histogram",
        ]
        with self._lock:
            for (ns, pod), counter in self._cpu.items():
                value = counter.value()
                lines.append(
                    f'container_cpu_usage_seconds_total{{namespace="{ns}",pod="{pod}",container="app"}} {value}'
                )
                for other in ("", "POD"):  # the pod's cgroup and the pause container
                    lines.append(
                        f'container_cpu_usage_seconds_total{{namespace="{ns}",pod="{pod}",container="{other}"}} {value * 100}'
                    )
            for (ns, pod), size in self._memory.items():
                lines.append(
                    f'container_memory_working_set_bytes{{namespace="{ns}",pod="{pod}",container="app"}} {size}'
                )
                lines.append(
                    f'container_memory_working_set_bytes{{namespace="{ns}",pod="{pod}",container=""}} {size * 100}'
                )
            for (ns, service), (total, failed, _, buckets) in self._traffic.items():
                name = f'envoy_cluster_name="httproute/{ns}/{service}/rule/0"'
                lines.append(f"envoy_cluster_upstream_rq_total{{{name}}} {total.value()}")
                lines.append(
                    f'envoy_cluster_upstream_rq_xx{{{name},envoy_response_code_class="5"}} {failed.value()}'
                )
                lines.append(
                    f'envoy_cluster_upstream_rq_xx{{{name},envoy_response_code_class="2"}} {total.value() - failed.value()}'
                )
                for bound, counter in zip(BUCKETS_MS, buckets, strict=True):
                    lines.append(
                        f'envoy_cluster_upstream_rq_time_bucket{{{name},le="{bound}"}} {counter.value()}'
                    )
                lines.append(
                    f'envoy_cluster_upstream_rq_time_bucket{{{name},le="+Inf"}} {total.value()}'
                )
                lines.append(f"envoy_cluster_upstream_rq_time_count{{{name}}} {total.value()}")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> FakeExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
