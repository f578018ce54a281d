"""A real Kubernetes control plane on loopback for tests and benchmarks (envtest-style).

`ControlPlane(assets, workdir).start()` runs etcd, kube-apiserver and kube-controller-manager from
`assets` (the envtest convention: `$KUBEBUILDER_ASSETS` holds the three binaries) bound to
127.0.0.1 only, each in its own process group, and `.stop()` stops exactly those processes. It
gives an admin kubeconfig, a ServiceAccount kubeconfig maker, and the API server's audit log
(Metadata level: one JSON event per request, with verb, objectRef, user and userAgent), which is
how benchmarks count a client's real API requests.

There is no scheduler and no kubelet: Pods stay Pending unless a test moves them. The
controller-manager gives the real Job controller, the garbage collector, namespace lifecycle and
the ServiceAccount/token controllers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
ASSETS_ENV = "KUBEBUILDER_ASSETS"
KUBECTL = os.environ.get("KUBECTL", "kubectl")

AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # One event per request, when the response is complete; no request or response bodies.
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [{"level": "Metadata"}],
}


def assets_dir() -> Path | None:
    """`$KUBEBUILDER_ASSETS` when it holds all three binaries, else None."""
    value = os.environ.get(ASSETS_ENV)
    if not value:
        return None
    path = Path(value).expanduser().resolve()
    if all(os.access(path / b, os.X_OK) for b in BINARIES):
        return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    def __init__(self, assets: Path, workdir: Path):
        self.assets = Path(assets)
        self.dir = Path(workdir)
        self.pki = self.dir / "pki"
        self.logs = self.dir / "logs"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.etcd_port = _free_port()
        self.etcd_peer_port = _free_port()
        self.port = _free_port()
        self.kcm_port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca_file = self.pki / "ca.crt"
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self.audit_log = self.logs / "audit.log"

    # --- certificates ------------------------------------------------------------------------

    def _cert(self, name: str, subject: str, usage: str, san: str | None = None, ca: str = "ca") -> None:
        ext = self.pki / f"{name}.ext"
        lines = [f"extendedKeyUsage={usage}", "keyUsage=critical,digitalSignature,keyEncipherment"]
        if san:
            lines.append(f"subjectAltName={san}")
        ext.write_text("\n".join(lines) + "\n")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=self.pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=self.pki)

    def _make_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        for ca in ("ca", "front-proxy-ca"):
            _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=modelfleet-envtest-{ca}",
                     cwd=self.pki)
        self._cert("apiserver", "/CN=kube-apiserver", "serverAuth",
                   "IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,IP:10.0.0.1")
        self._cert("admin", "/O=system:masters/CN=modelfleet-envtest-admin", "clientAuth")
        self._cert("kcm", "/CN=system:kube-controller-manager", "clientAuth")
        self._cert("front-proxy-client", "/CN=front-proxy-client", "clientAuth", ca="front-proxy-ca")
        _openssl("genrsa", "-out", "sa.key", "2048", cwd=self.pki)
        _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.pki)

    def _client_kubeconfig(self, path: Path, user: str, cert: str) -> None:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
                    "users": [{"name": user, "user": {"client-certificate": str(self.pki / f"{cert}.crt"), "client-key": str(self.pki / f"{cert}.key")}}],
                    "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
                    "current-context": "envtest",
                }
            )
        )

    # --- processes ---------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        out = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 -- lives as long as the process
        self.procs[name] = subprocess.Popen(
            [str(self.assets / name), *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends it and nothing else
        )

    def _wait(self, name: str, check: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {proc.returncode}: {self._tail(name)}")
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.2)
        raise ControlPlaneError(f"{name} not ready after {timeout:.0f}s: {self._tail(name)}")

    def _tail(self, name: str, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _https_ok(self, path: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        with urllib.request.urlopen(f"{self.url}{path}", context=ctx, timeout=5) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"

    def start(self) -> ControlPlane:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._make_pki()
        etcd = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            "--data-dir", str(self.dir / "etcd"), "--name", "envtest",
            "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"envtest={peer}", "--unsafe-no-fsync",
        ])

        def etcd_ok() -> bool:
            with urllib.request.urlopen(f"{etcd}/health", timeout=2) as resp:
                return json.loads(resp.read()).get("health") == "true"

        self._wait("etcd", etcd_ok)
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        p = self.pki
        self._spawn("kube-apiserver", [
            "--etcd-servers", etcd, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port), "--cert-dir", str(self.dir / "apiserver-certs"),
            "--tls-cert-file", str(p / "apiserver.crt"), "--tls-private-key-file", str(p / "apiserver.key"),
            "--client-ca-file", str(p / "ca.crt"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(p / "sa.pub"), "--service-account-signing-key-file", str(p / "sa.key"),
            "--service-cluster-ip-range", "10.0.0.0/24", "--endpoint-reconciler-type", "none",
            "--authorization-mode", "RBAC",
            "--requestheader-client-ca-file", str(p / "front-proxy-ca.crt"),
            "--requestheader-allowed-names", "front-proxy-client",
            "--requestheader-username-headers", "X-Remote-User", "--requestheader-group-headers", "X-Remote-Group",
            "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
            "--proxy-client-cert-file", str(p / "front-proxy-client.crt"),
            "--proxy-client-key-file", str(p / "front-proxy-client.key"),
            "--audit-policy-file", str(policy), "--audit-log-path", str(self.audit_log),
            "--audit-log-mode", "blocking",  # every event is on disk once its request is answered
        ])
        self._wait("kube-apiserver", lambda: self._https_ok("/readyz"), timeout=90)
        self._client_kubeconfig(self.admin_kubeconfig, "admin", "admin")
        kcm_config = self.dir / "kcm.kubeconfig"
        self._client_kubeconfig(kcm_config, "kcm", "kcm")
        plugins = self.dir / "flexvolume"
        plugins.mkdir(exist_ok=True)
        self._spawn("kube-controller-manager", [
            "--kubeconfig", str(kcm_config), "--authentication-kubeconfig", str(kcm_config),
            "--authorization-kubeconfig", str(kcm_config), "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(p / "sa.key"), "--root-ca-file", str(p / "ca.crt"),
            "--flex-volume-plugin-dir", str(plugins), "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", str(self.kcm_port),
            "--cert-dir", str(self.dir / "kcm-certs"),
        ])
        # Ready once the ServiceAccount controller made `default` in the default namespace (what
        # every Pod the Job controller creates needs to pass admission).
        core = self.core()
        self._wait("kube-controller-manager", lambda: core.read_namespaced_service_account("default", "default") is not None)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)
        self.procs.clear()

    # --- clients -----------------------------------------------------------------------------

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.admin_kubeconfig))

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path, *, hours: int = 12) -> Path:
        """A kubeconfig that authenticates as ServiceAccount `namespace/name` (created if missing)."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = self.core()
        with contextlib.suppress(ApiException):
            core.create_namespace({"metadata": {"name": namespace}})
        with contextlib.suppress(ApiException):
            core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600))
        token = core.create_namespaced_service_account_token(name, namespace, request).status.token
        user = f"system:serviceaccount:{namespace}:{name}"
        Path(path).write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
                    "users": [{"name": user, "user": {"token": token}}],
                    "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user, "namespace": namespace}}],
                    "current-context": "envtest",
                }
            )
        )
        return Path(path)

    def kubectl(self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`kubectl ARGS` against this control plane (admin unless `kubeconfig`)."""
        cmd = [KUBECTL, "--kubeconfig", str(kubeconfig or self.admin_kubeconfig), *args]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise ControlPlaneError(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
        return out

    def apply(self, target: str | Path | Iterable[dict[str, Any]], *, server_side: bool = True, namespace: str | None = None, kubeconfig: Path | None = None) -> str:
        """`kubectl apply` of a file/folder path or of documents; returns kubectl's output."""
        args = ["apply"]
        if server_side:
            args += ["--server-side", "--field-manager", "modelfleet-tests"]
        if namespace:
            args += ["-n", namespace]
        if isinstance(target, str | Path):
            return self.kubectl(*args, "-f", str(target), kubeconfig=kubeconfig).stdout
        return self.kubectl(*args, "-f", "-", kubeconfig=kubeconfig, input=yaml.safe_dump_all(list(target))).stdout

    # --- the audit log -----------------------------------------------------------------------

    def audit_events(self, since: int = 0) -> Iterator[dict[str, Any]]:
        """Audit events from byte offset `since` (see `audit_offset`)."""
        with contextlib.suppress(FileNotFoundError):
            with open(self.audit_log, "rb") as fh:
                fh.seek(since)
                for line in fh:
                    with contextlib.suppress(ValueError):
                        yield json.loads(line)

    def audit_offset(self) -> int:
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0


def wait_for(check: Any, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a transient API error while polling is not the answer
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


def install_crds(plane: ControlPlane, paths: Iterable[Path], timeout: float = 60.0) -> list[str]:
    """Server-side apply of CRD files; waits until each is Established. Returns their names."""
    from kubernetes import client

    names = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
        plane.apply(path, server_side=True)
    ext = client.ApiextensionsV1Api(plane.api_client())

    def established(name: str) -> bool:
        crd = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    for name in names:
        wait_for(lambda n=name: established(n), timeout, what=f"CRD {name} Established")
    return names
