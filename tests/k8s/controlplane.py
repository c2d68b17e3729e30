"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
on 127.0.0.1, in a temporary folder, with a static admin token and RBAC on.

    with running_control_plane(tmp_path) as cp:
        api = cp.api_client()          # a kubernetes.client.ApiClient as the admin
        cp.kubeconfig                   # a kubeconfig file for the same user

The binaries are Kubernetes 1.20.2 built by `scripts/k8s-build.sh` into a cache outside the
repository (`$SQLIFIER_K8S_CACHE`, default `~/.cache/sqlifier/k8s-1.20.2`). There is no
kubelet (it cannot run here): tests/k8s/fake_node.py plays the node. What 1.20 lacks is in
docs/development.md ("The test cluster").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.servers import free_port

__all__ = [
    "BIN",
    "CACHE",
    "ControlPlane",
    "ControlPlaneFailed",
    "missing_binaries",
    "running_control_plane",
]

CACHE = Path(
    os.environ.get("SQLIFIER_K8S_CACHE") or Path.home() / ".cache/sqlifier/k8s-1.20.2"
).resolve()
BIN = CACHE / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
# Polling until the API answers; the deadline only stops a run that would hang.
DEADLINE = 120.0
POLL = 0.1


class ControlPlaneFailed(Exception):
    """A process of the control plane exited or never became ready; names it, with its log."""


def missing_binaries(bin_dir: Path = BIN) -> str | None:
    """Why the control plane cannot start here, with what to do; None when it can."""
    absent = [name for name in BINARIES if not os.access(bin_dir / name, os.X_OK)]
    if not absent:
        return None
    return (
        f"the Kubernetes test control plane is not built: {', '.join(absent)} missing in "
        f"{bin_dir}; build it once with scripts/k8s-build.sh (5-8 minutes; needs apt-get, and "
        "installs golang-go, rsync, dpkg-dev, golang-github-modern-go-reflect2-dev and "
        "golang-github-json-iterator-go-dev)"
    )


@dataclass
class ControlPlane:
    workdir: Path
    api_port: int
    token: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca(self) -> Path:
        """The API server's self-signed certificate with its CA (from --cert-dir)."""
        return self.workdir / "certs/apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A kubernetes.client.ApiClient from the kubeconfig (the admin's by default)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def kubeconfig_for(self, name: str) -> Path:
        """A kubeconfig for `name`, one of the `users` the control plane was started with."""
        token = (self.workdir / f"token-{name}").read_text().strip()
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(_kubeconfig(self.url, name, token, self.ca))
        return path

    def log(self, name: str, lines: int = 30) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ControlPlaneFailed(
                    f"{name} exited with {process.returncode}:\n{self.log(name)}"
                )

    def stop(self) -> None:
        """Stop every process (controller-manager, API server, etcd) and wait for it."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _kubeconfig(url: str, user: str, token: str, ca: Path) -> str:
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: test\n  cluster: {{server: '{url}', certificate-authority: '{ca}'}}\n"
        f"users:\n- name: {user}\n  user: {{token: '{token}'}}\n"
        f"contexts:\n- name: test\n  context: {{cluster: test, user: {user}}}\n"
        "current-context: test\n"
    )


def _service_account_keys(workdir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = workdir / "sa.key", workdir / "sa.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def _start(cp: ControlPlane, name: str, argv: list[str]) -> None:
    with (cp.workdir / f"{name}.log").open("wb") as log:
        # A session of its own: a Ctrl-C in the terminal reaches pytest, which stops them.
        cp.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(cp: ControlPlane) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        cp.url + "/readyz", headers={"Authorization": f"Bearer {cp.token}"}
    )
    deadline = time.monotonic() + DEADLINE
    while True:
        cp.check_running()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(request, timeout=2, context=context) as answer,
        ):
            if answer.read() == b"ok":
                return
        if time.monotonic() > deadline:
            raise ControlPlaneFailed(
                f"kube-apiserver not ready after {DEADLINE:.0f} s:\n{cp.log('apiserver')}"
            )
        time.sleep(POLL)


@contextlib.contextmanager
def running_control_plane(
    workdir: Path, users: tuple[tuple[str, tuple[str, ...]], ...] = ()
) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager, ready; stopped on exit. `users`:
    (name, groups) of extra users with a token each (`ControlPlane.kubeconfig_for`), who may do
    only what RBAC objects grant them."""
    workdir.mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir, free_port(), secrets.token_hex(16))
    tokens = [f"{cp.token},admin,admin-uid,system:masters"]
    for name, groups in users:
        token = secrets.token_hex(16)
        (workdir / f"token-{name}").write_text(token)
        tokens.append(f'{token},{name},{name}-uid,"{",".join(groups)}"')
    (workdir / "tokens.csv").write_text("\n".join(tokens) + "\n")
    private, public = _service_account_keys(workdir)
    etcd_port, peer_port = free_port(), free_port()
    etcd = f"http://127.0.0.1:{etcd_port}"
    try:
        _start(cp, "etcd", [
            str(BIN / "etcd"), "--name", "test", "--data-dir", str(workdir / "etcd-data"),
            "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
        ])  # fmt: skip
        _start(cp, "apiserver", [
            str(BIN / "kube-apiserver"),
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={cp.api_port}", f"--cert-dir={workdir / 'certs'}",
            f"--etcd-servers={etcd}", f"--token-auth-file={workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={public}",
            f"--service-account-signing-key-file={private}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--kubelet-preferred-address-types=InternalIP",
        ])  # fmt: skip
        _wait_ready(cp)
        cp.kubeconfig.write_text(_kubeconfig(cp.url, "admin", cp.token, cp.ca))
        # 1.20's controller-manager also opens an insecure port on every address unless told.
        _start(cp, "controller-manager", [
            str(BIN / "kube-controller-manager"), "--port=0", "--address=127.0.0.1",
            f"--kubeconfig={cp.kubeconfig}", "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}", f"--service-account-private-key-file={private}",
            "--leader-elect=false", "--controllers=*", "--use-service-account-credentials=false",
        ])  # fmt: skip
        yield cp
    finally:
        cp.stop()
