"""`up` and `ps` on a Kubernetes environment, against the test control plane.

    .venv/bin/python benchmarks/kubernetes.py [--pods 1000] [--repeat 5]

Starts the control plane of the tests (tests/k8s/: etcd, kube-apiserver,
kube-controller-manager) with its fake node, which plays the kubelet (it binds every pod
and reports it Running and Ready at once: no image is pulled, no container runs), then:

- `sqlifier up --detach --env cluster` of the example shop (21 objects, 7 pods) in a
  fresh namespace, as a user types it: applied, pruned and every workload ready. Target:
  under 10 s. Beside it, the same objects applied and waited for inside one process (no
  start-up of the command, no import of the Kubernetes client): what the cluster itself
  takes.
- `sqlifier ps --json` of a stack whose one service runs `--pods` pods (1,000 by default,
  brought up by `up`). Target: under 1 s. Beside it, in rounds (a busy moment of a shared
  machine falls on every case alike): the floor (`python -c pass`), the baseline (the
  official client listing the same pods in a fresh process, which is what kubectl-like
  tools pay), and sqlifier's listing and rows inside one process (no start-up).

Printed per case: the median wall time, the spread, the target and the ratio to it. The
figures of a machine shared with other work are noisy; the ratios between cases of one
run are what to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file's name is the client's: its folder must not shadow the `kubernetes` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))

from tests.k8s.controlplane import missing_binaries, running_control_plane  # noqa: E402
from tests.k8s.crds import install_gateway_api  # noqa: E402
from tests.k8s.fake_node import FakeNode  # noqa: E402
from tests.platform.kubernetes.cli_helpers import copy_shop, small_stack  # noqa: E402

BIN = Path(sys.executable).parent
SQLIFIER = str(BIN / "sqlifier")

BASELINE = """
from kubernetes import client, config
config.load_kube_config()
pods = client.CoreV1Api().list_namespaced_pod({namespace!r}).items
assert len(pods) >= {pods}, len(pods)
"""


def timed(command: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return took


def line(name: str, times: list[float], target: float | None) -> str:
    median = statistics.median(times)
    spread = f"{min(times):.2f}-{max(times):.2f}"
    goal = f"target < {target:g} s, {median / target:.2f}x of it" if target else ""
    return f"  {name:<48} {median:7.3f} s  ({spread})  {goal}"


def bench_up(api: object, kubeconfig: Path, work: Path) -> None:
    from kubernetes import client

    from sqlifier.platform.kubernetes.api import connect
    from sqlifier.platform.kubernetes.environment import bring_up, objects_to_apply
    from sqlifier.platform.kubernetes.render_common import Target
    from sqlifier.secrets.redact import Redactor
    from sqlifier.stack.stackfile import load_stack

    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "bench-up"}})
    core.create_namespace({"metadata": {"name": "bench-up-inside"}})
    shop = copy_shop(work / "cli", "bench-up")
    took = timed([SQLIFIER, "up", "--detach", "--env", "cluster"], cwd=shop)

    inside_folder = copy_shop(work / "inside", "bench-up-inside")
    stack, _ = load_stack(inside_folder / "sqlifier.toml")
    start = time.perf_counter()
    target = Target.of(stack, "cluster")
    with connect(target.namespace, kubeconfig=kubeconfig) as cluster:
        objects = objects_to_apply(stack, "cluster", target, inside_folder, Redactor())
        bring_up(cluster, target, objects, 120.0)
    inside = time.perf_counter() - start
    print("up of the example shop (21 objects, 7 pods), applied and ready:")
    print(line("sqlifier up --detach --env cluster", [took], 10.0))
    print(line("the same, inside one process (the cluster's part)", [inside], None))


def bench_ps(api: object, kubeconfig: Path, work: Path, pods: int, repeat: int) -> None:
    from kubernetes import client

    from sqlifier.platform.kubernetes.api import connect
    from sqlifier.platform.kubernetes.pods import pod_rows
    from sqlifier.platform.kubernetes.render_common import Target
    from sqlifier.stack.stackfile import load_stack

    namespace = "bench-ps"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    folder = small_stack(work, namespace, instances=pods)
    start = time.perf_counter()
    subprocess.run(
        [SQLIFIER, "up", "--detach", "--env", "cluster", "--timeout", "900"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    print(f"\n{pods} pods brought up in {time.perf_counter() - start:.1f} s (the fake node's pace)")
    stack, _ = load_stack(folder / "sqlifier.toml")
    target = Target.of(stack, "cluster")

    def inside() -> float:
        begin = time.perf_counter()
        with connect(namespace, kubeconfig=kubeconfig) as cluster:
            rows = pod_rows(cluster, target)
        assert len(rows) == pods, len(rows)
        return time.perf_counter() - begin

    baseline = BASELINE.format(namespace=namespace, pods=pods)
    cases: dict[str, tuple[Callable[[], float], float | None]] = {
        "python -c pass (the floor)": (lambda: timed([sys.executable, "-c", "pass"]), None),
        "official client lists the pods (baseline)": (
            lambda: timed([sys.executable, "-c", baseline]),
            None,
        ),
        "sqlifier ps --json --env cluster": (
            lambda: timed([SQLIFIER, "ps", "--json", "--env", "cluster"], cwd=folder),
            1.0,
        ),
        "sqlifier's rows inside one process": (inside, None),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, (case, _) in cases.items():
            times[name].append(case())
    print(f"ps with {pods} pods, {repeat} rounds:")
    for name, (_, goal) in cases.items():
        print(line(name, times[name], goal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    reason = missing_binaries()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with running_control_plane(work / "k8s") as cp:
            os.environ["KUBECONFIG"] = str(cp.kubeconfig)
            api = cp.api_client()
            node = FakeNode(api)
            node.start()
            try:
                install_gateway_api(api)
                bench_up(api, cp.kubeconfig, work)
                bench_ps(api, cp.kubeconfig, work, args.pods, args.repeat)
            finally:
                node.stop()
                api.close()
    print("\n(figures from a machine shared with other work: compare the ratios of one run)")


if __name__ == "__main__":
    main()
