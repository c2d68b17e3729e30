"""A fake node for the test control plane (kwok-like): a mock of the kubelet, which cannot run
here (no container runtime, no cgroups of our own). It plays what a kubelet shows the API:

- registers a Node (127.0.0.1) and keeps it Ready: renews its Ready condition and its Lease
  in `kube-node-lease` (without that the node controller marks it NotReady after 40 s and
  evicts its pods after 300 s);
- binds Pending pods to itself (there is no scheduler either) and reports them Running with
  every container ready;
- finishes the deletion of pods whose deletion has begun (else they stay Terminating);
- on request makes a pod crash (restartCount up, CrashLoopBackOff), turn unready, or be
  OOM-killed, with the Events a kubelet records (BackOff, Unhealthy, Failed);
- serves the kubelet's log endpoint (HTTPS, as the API server's `pods/log` expects), with
  the lines a test gives a pod, each stamped with when it was given: `timestamps`,
  `sinceSeconds`, `tailLines` and `follow` work as a kubelet's do.

A pod can ask for its fate from the start with the annotation `fake-node/start: crash`,
`oom`, `unready` or `image-pull-error`; an image whose registry ends in `.invalid` never
pulls either. No container runs: a pod's "logs" are what `set_log` gave it.

    node = FakeNode(api_client); node.start() ... node.crash("ns", "web-0"); node.stop()
    python -m tests.k8s.fake_node KUBECONFIG      # run it by hand against a cluster
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["START_ANNOTATION", "FakeNode"]

START_ANNOTATION = "fake-node/start"
RENEW = 5.0  # seconds between heartbeats (a kubelet's default: 10 s)
CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeNode:
    """One fake node, its threads started by `start()` and joined by `stop()`."""

    def __init__(self, api_client: Any, name: str = "fake-node-1") -> None:
        from kubernetes import client

        self.name = name
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._logs: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self._written = threading.Condition()  # a line was added to a log
        self._ips = 10
        self._started: set[str] = set()  # pod uids: a watch shows a pod Pending more than once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- running -------------------------------------------------------------------

    def start(self) -> None:
        self._server = _log_server(self)
        self._register(self._server.server_address[1])
        for target in (self._heartbeat, self._watch_pods, self._server.serve_forever):
            thread = threading.Thread(target=target, name=f"{self.name}:{target.__name__}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=15)

    def _register(self, kubelet_port: int) -> None:
        from kubernetes.client.rest import ApiException

        capacity = {"cpu": "32", "memory": "256Gi", "pods": "500"}
        body = {
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self.core.patch_node_status(self.name, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
            "nodeInfo": {"kubeletVersion": "v1.20.2-fake", "containerRuntimeVersion": "fake://0",
                         "operatingSystem": "linux", "architecture": "amd64"},
        }})  # fmt: skip
        self._renew()

    def _renew(self) -> None:
        from kubernetes.client.rest import ApiException

        t = _now()
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "fake node is posting ready status",
                 "lastHeartbeatTime": t, "lastTransitionTime": t}  # fmt: skip
        self.core.patch_node_status(self.name, {"status": {"conditions": [ready]}})
        lease = {
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                     "renewTime": _micro_now()},
        }  # fmt: skip
        try:  # a merge patch: a Lease takes no update without its resourceVersion
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", lease)
        except ApiException as e:
            if e.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", lease)

    def _heartbeat(self) -> None:
        while not self._stopping.wait(RENEW):
            try:
                self._renew()
            except Exception as e:  # the API may be going away at the end of a session
                print(f"fake node: heartbeat failed: {e}", file=sys.stderr)

    def _watch_pods(self) -> None:
        from kubernetes import watch

        while not self._stopping.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_pod_for_all_namespaces,
                                           timeout_seconds=2):  # fmt: skip
                    if self._stopping.is_set():
                        break
                    if event["type"] != "DELETED":
                        self._handle(event["object"])
            except Exception as e:
                if not self._stopping.is_set():
                    print(f"fake node: pod watch failed: {e}", file=sys.stderr)
                    self._stopping.wait(0.5)
            finally:
                stream.stop()

    def _handle(self, pod: Any) -> None:
        from kubernetes.client.rest import ApiException

        meta = pod.metadata
        try:
            if meta.deletion_timestamp is not None:
                if pod.spec.node_name in (None, self.name):
                    self.core.delete_namespaced_pod(meta.name, meta.namespace,
                                                    grace_period_seconds=0)  # fmt: skip
            elif pod.status.phase == "Pending" and pod.spec.node_name in (None, self.name):
                if not pod.spec.node_name:
                    self._bind(pod)
                self._first_start(pod)
        except ApiException as e:
            # Gone meanwhile, bound by an earlier event, or its namespace is being deleted
            # (403: no new content, such as an Event, in a terminating namespace).
            if e.status not in (403, 404, 409):
                print(f"fake node: {meta.namespace}/{meta.name}: {e.reason}", file=sys.stderr)

    def _bind(self, pod: Any) -> None:
        self.core.create_namespaced_binding(
            pod.metadata.namespace,
            {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.metadata.name},
             "target": {"apiVersion": "v1", "kind": "Node", "name": self.name}},
            _preload_content=False,
        )  # fmt: skip

    def _first_start(self, pod: Any) -> None:
        ns, name = pod.metadata.namespace, pod.metadata.name
        with self._lock:
            if pod.metadata.uid in self._started:
                return
            self._started.add(pod.metadata.uid)
        fate = (pod.metadata.annotations or {}).get(START_ANNOTATION, "")
        if not fate and any(_registry(c.image).endswith(".invalid") for c in pod.spec.containers):
            fate = "image-pull-error"
        with self._lock:
            self._ips += 1
            ip = f"10.244.{self._ips // 250}.{self._ips % 250}"
        if (ns, name) not in self._logs:
            self.append_log(ns, name, [f"fake node: started {name}"])
        t = _now()
        base = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1",
                "startTime": t}  # fmt: skip
        self.core.patch_namespaced_pod_status(name, ns, {"status": base})
        if fate == "crash":
            self.crash(ns, name)
        elif fate == "oom":
            self.oom(ns, name)
        elif fate == "unready":
            self.unready(ns, name)
        elif fate == "image-pull-error":
            image = pod.spec.containers[0].image
            self._set(ns, name, ready=False, state={"waiting": {
                "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}})  # fmt: skip
            self.event(ns, name, "Failed", f'Failed to pull image "{image}": not found')
        else:
            self.run(ns, name)

    # --- what a test asks of a pod -----------------------------------------------------

    def run(self, ns: str, pod: str) -> None:
        """Every container running and ready (again)."""
        self._set(ns, pod, ready=True, state={"running": {"startedAt": _now()}})

    def crash(self, ns: str, pod: str, exit_code: int = 1) -> None:
        """The containers exited with `exit_code`: restartCount up, CrashLoopBackOff."""
        self._terminated(ns, pod, "Error", exit_code)
        self.event(ns, pod, "BackOff", "Back-off restarting failed container")

    def oom(self, ns: str, pod: str) -> None:
        """The containers were OOM-killed (exit 137): restartCount up, CrashLoopBackOff."""
        self._terminated(ns, pod, "OOMKilled", 137)
        self.event(ns, pod, "BackOff", "Back-off restarting failed container")

    def unready(self, ns: str, pod: str) -> None:
        """Running, but the readiness probe fails."""
        self._set(ns, pod, ready=False, state={"running": {"startedAt": _now()}})
        self.event(ns, pod, "Unhealthy", "Readiness probe failed: HTTP probe failed with "
                   "statuscode: 503")  # fmt: skip

    def set_log(self, ns: str, pod: str, lines: list[str], at: float | None = None) -> None:
        """What `pods/log` of the pod answers from now on (written `at`, else now)."""
        when = time.time() if at is None else at
        with self._written:
            self._logs[(ns, pod)] = [(when, line) for line in lines]
            self._written.notify_all()

    def append_log(self, ns: str, pod: str, lines: list[str]) -> None:
        """Lines the pod writes now (a following `pods/log` sees them)."""
        with self._written:
            self._logs.setdefault((ns, pod), []).extend((time.time(), line) for line in lines)
            self._written.notify_all()

    def logs(self, ns: str, pod: str) -> list[str]:
        return [line for _, line in self.stamped_logs(ns, pod)]

    def stamped_logs(self, ns: str, pod: str, start: int = 0) -> list[tuple[float, str]]:
        with self._written:
            return list(self._logs.get((ns, pod), [])[start:])

    def wait_for_lines(self, ns: str, pod: str, count: int, timeout: float) -> None:
        """Until the pod's log has more than `count` lines, or `timeout` seconds."""
        with self._written:
            self._written.wait_for(
                lambda: len(self._logs.get((ns, pod), [])) > count or self._stopping.is_set(),
                timeout,
            )

    def event(self, ns: str, pod: str, reason: str, message: str) -> None:
        """An Event about the pod as its kubelet would record it (a Warning)."""
        t = _now()
        uid = self.core.read_namespaced_pod(pod, ns).metadata.uid
        self.core.create_namespaced_event(ns, {
            "metadata": {"name": f"{pod}.{uuid.uuid4().hex[:12]}", "namespace": ns},
            "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod, "uid": uid,
                               "apiVersion": "v1"},
            "reason": reason, "message": message, "type": "Warning", "count": 1,
            "source": {"component": "kubelet", "host": self.name},
            "firstTimestamp": t, "lastTimestamp": t,
        })  # fmt: skip

    def _terminated(self, ns: str, pod: str, reason: str, exit_code: int) -> None:
        t = _now()
        last = {"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": t,
                               "finishedAt": t}}  # fmt: skip
        waiting = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": "back-off 10s restarting failed container"}}  # fmt: skip
        self._set(ns, pod, ready=False, state=waiting, last=last, restart=1)

    def _set(
        self,
        ns: str,
        pod: str,
        *,
        ready: bool,
        state: dict[str, Any],
        last: dict[str, Any] | None = None,
        restart: int = 0,
    ) -> None:
        current = self.core.read_namespaced_pod(pod, ns)
        before = {s.name: s for s in current.status.container_statuses or []}
        t = _now()
        statuses = []
        for c in current.spec.containers:
            old = before.get(c.name)
            status: dict[str, Any] = {
                "name": c.name, "image": c.image, "imageID": f"fake://{c.image}",
                "containerID": f"fake://{ns}/{pod}/{c.name}", "ready": ready,
                "started": "running" in state,
                "restartCount": (old.restart_count if old else 0) + restart, "state": state,
            }  # fmt: skip
            if last is not None:
                status["lastState"] = last
            elif old is not None and old.last_state is not None:
                status["lastState"] = self.core.api_client.sanitize_for_serialization(
                    old.last_state
                )
            statuses.append(status)
        conditions = [
            {"type": kind, "status": "True" if ready or kind in CONDITIONS[:2] else "False",
             "lastTransitionTime": t}
            for kind in CONDITIONS
        ]  # fmt: skip
        self.core.patch_namespaced_pod_status(pod, ns, {"status": {
            "phase": "Running", "conditions": conditions, "containerStatuses": statuses}})  # fmt: skip


def _log_text(lines: list[tuple[float, str]], stamps: bool) -> bytes:
    """Log lines as a kubelet sends them: with `timestamps`, each after its RFC 3339 time."""
    if not stamps:
        return "".join(line + "\n" for _, line in lines).encode()
    return "".join(
        datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ")
        + line
        + "\n"
        for t, line in lines
    ).encode()


def _registry(image: str) -> str:
    first = image.split("/", 1)[0]
    return first if "/" in image and ("." in first or ":" in first) else "docker.io"


def _log_server(node: FakeNode) -> ThreadingHTTPServer:
    """The kubelet's /containerLogs/{namespace}/{pod}/{container} over HTTPS (the API server
    does not check a kubelet's certificate unless given a CA: a self-signed one does)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404)
                return
            query = urllib.parse.parse_qs(url.query)
            ns, pod = parts[1], parts[2]
            lines = node.stamped_logs(ns, pod)
            seen = len(lines)
            if "sinceSeconds" in query:
                start = time.time() - int(query["sinceSeconds"][0])
                lines = [(t, line) for t, line in lines if t >= start]
            if "tailLines" in query:
                lines = lines[len(lines) - int(query["tailLines"][0]) :] if lines else []
            stamps = query.get("timestamps", ["false"])[0] == "true"
            if query.get("follow", ["false"])[0] != "true":
                body = _log_text(lines, stamps)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            # Following: what there is, then each line as it comes, until the client goes
            # or the node stops (the body ends with the connection: HTTP/1.0).
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                self.wfile.write(_log_text(lines, stamps))
                self.wfile.flush()
                while not node._stopping.is_set():
                    node.wait_for_lines(ns, pod, seen, timeout=1.0)
                    more = node.stamped_logs(ns, pod, seen)
                    seen += len(more)
                    self.wfile.write(_log_text(more, stamps))
                    self.wfile.flush()
            except OSError:
                return  # the client went away

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert, key = _self_signed(Path(folder))
        context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return folder / "cert.pem", folder / "key.pem"


if __name__ == "__main__":
    from kubernetes import config

    node = FakeNode(config.new_client_from_config(config_file=sys.argv[1]))
    node.start()
    print(f"fake node {node.name} running; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        node.stop()
