"""What sqlifier's records in a cluster cost, against the local ones, side by side.

    .venv/bin/python benchmarks/cluster_records.py [--entries 300]

Starts the test control plane (etcd + kube-apiserver 1.20, tests/k8s/; `scripts/k8s-
build.sh` builds it) and measures, on the same machine in the same run:

- an audit append in the cluster (ConfigMaps, a conditional merge patch and the head)
  against an append to the local SQLite log (the baseline): median and worst;
- `audit verify` over all those entries, both;
- a lock taken and released as a Lease, against the local lock file;
- a fenced state write (the Lease checked, then the ConfigMap replaced).

The targets are what the agent needs: it appends a few entries a second at its busiest and
renews a Lease every 5 s, so an append or a lock under 50 ms leaves it ample room. The
figures come from a loaded machine (several processes share 2 cores): read the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlifier.delivery.locks import ServiceLock
from sqlifier.platform.kubernetes.api import connect
from sqlifier.platform.kubernetes.audit import ClusterAudit
from sqlifier.platform.kubernetes.leader import Elector
from sqlifier.platform.kubernetes.locks import LeaseLock
from sqlifier.platform.kubernetes.state import ClusterState
from sqlifier.store.audit import AuditLog
from tests.k8s.controlplane import missing_binaries, running_control_plane

TARGET_MS = 50.0


def timed(action: Callable[[int], object], count: int) -> list[float]:
    """Milliseconds of each of `count` calls of `action(n)`."""
    out = []
    for n in range(count):
        start = time.perf_counter()
        action(n)
        out.append((time.perf_counter() - start) * 1000)
    return out


def line(what: str, ours: list[float], base: list[float] | None, target: float | None) -> None:
    median, worst = statistics.median(ours), max(ours)
    text = f"{what:<34} median {median:8.2f} ms  worst {worst:8.2f} ms"
    if base is not None:
        ratio = median / statistics.median(base)
        text += f"  local {statistics.median(base):7.2f} ms  ratio {ratio:6.1f}x"
    if target is not None:
        text += f"  target < {target:g} ms {'ok' if median < target else 'MISSED'}"
    print(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300)
    args = parser.parse_args()
    missing = missing_binaries()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder, running_control_plane(Path(folder) / "k8s") as cp:
        api = cp.api_client()
        from kubernetes import client

        client.CoreV1Api(api).create_namespace({"metadata": {"name": "bench"}})
        api.close()
        cluster = connect("bench", kubeconfig=cp.kubeconfig)
        local = AuditLog(Path(folder) / "state" / "audit.db")
        in_cluster = ClusterAudit(cluster, "shop", "bench")

        def entry(log: AuditLog | ClusterAudit) -> Callable[[int], object]:
            return lambda n: log.record(
                "agent", "scale", f"shop/bench/web {n}", "ok", details={"cpu": 0.91, "n": n}
            )

        print(f"{args.entries} audit entries each; figures from a busy machine (2 shared cores)")
        base = timed(entry(local), args.entries)
        line("audit append", timed(entry(in_cluster), args.entries), base, TARGET_MS)
        base = timed(lambda _n: local.verify(), 3)
        verify = timed(lambda _n: in_cluster.verify(), 3)
        line(f"audit verify ({args.entries} entries)", verify, base, None)

        state_dir = Path(folder) / "state"

        def local_lock(n: int) -> None:
            with ServiceLock(state_dir, "bench", f"s{n}", "deploy", "alice"):
                pass

        def lease_lock(n: int) -> None:
            with LeaseLock(cluster, "shop", "bench", f"s{n}", "deploy", "alice"):
                pass

        base = timed(local_lock, 50)
        line("lock taken and released", timed(lease_lock, 50), base, TARGET_MS)

        elector = Elector(cluster, "shop", "bench", "bench-agent")
        elector.tick()
        store = ClusterState(cluster, "shop", "bench", elector.fence)
        document = {"rules": [{"rule": "hot", "service": f"s{n}"} for n in range(50)]}
        writes = timed(lambda _n: store.save("engine", document), 50)
        line("fenced state write", writes, None, TARGET_MS)
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
