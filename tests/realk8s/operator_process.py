"""`modelfleet operator` as users start it, against the real API server, as the chart's ServiceAccount.

`install_operator_rbac(plane, ...)` renders the chart (the real Helm SDK, as tests/chart does) with
the watched namespace, scheduler and peering of the test, applies its ServiceAccount, RBAC (and
peering object), and returns a kubeconfig that authenticates as that ServiceAccount with a
TokenRequest token -- the operator under test has exactly the chart's least privilege, not admin.

`OperatorProcess` runs `python -m modelfleet operator --kubeconfig ...` in its own process group,
logs to a file, and is stopped (or killed, SIGKILL) by its process id. Its API client's
User-Agent carries the process id, so the audit log tells two replicas apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PEERING_CRDS = REPO / "charts" / "modelfleet" / "files" / "kopf-peering-crds.yaml"


@dataclass
class OperatorAccess:
    kubeconfig: Path
    system_namespace: str  # the release namespace: the ServiceAccount, and where jobs go
    service_account: str
    username: str  # as the audit log names it


def install_operator_rbac(
    plane: Any, watch: str | list[str], workdir: Path, *, scheduler: str = "kueue", peering: bool = False
) -> OperatorAccess:
    sys.path.insert(0, str(REPO / "tests"))
    from chart import chart_tools

    watched = [watch] if isinstance(watch, str) else list(watch)
    release = f"mf{uuid.uuid4().hex[:6]}"  # cluster-scoped RBAC names stay apart between tests
    system = f"{watched[0]}-sys"
    values = {
        "fullnameOverride": release,
        "operator": {"scheduler": scheduler, "queue": "q", "watchNamespaces": watched},
        "peering": {"enabled": peering, "name": "modelfleet"},
    }
    rendered = chart_tools.chart().render(values, name=release, namespace=system, is_install=True)
    docs = []
    for path in ("serviceaccount.yaml", "rbac.yaml") + (("peering.yaml",) if peering else ()):
        docs += [d for d in yaml.safe_load_all(rendered[f"modelfleet/templates/{path}"]) if d]
    if peering:
        plane.apply(PEERING_CRDS, server_side=True)
    plane.core().create_namespace({"metadata": {"name": system}})
    plane.apply(docs, server_side=True)
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    kubeconfig = plane.service_account_kubeconfig(system, sa, Path(workdir) / f"{sa}.kubeconfig")
    return OperatorAccess(kubeconfig, system, sa, f"system:serviceaccount:{system}:{sa}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    def __init__(
        self,
        access: OperatorAccess,
        watch: str | list[str],
        output_uri: Path,
        log: Path,
        *,
        scheduler: str = "kueue",
        peering: bool = False,
        priority: int | None = None,
        env: dict[str, str] | None = None,
    ):
        self.access = access
        self.log = Path(log)
        args = [sys.executable, "-P", "-m", "modelfleet", "operator", "--kubeconfig", str(access.kubeconfig)]
        for ns in [watch] if isinstance(watch, str) else watch:
            args += ["--namespace", ns]
        args += ["--peering", "modelfleet"] if peering else ["--standalone"]
        if priority is not None:
            args += ["--priority", str(priority)]
        self.args = args
        self.env = {
            **os.environ,
            "MODELFLEET_SCHEDULER": scheduler,
            "MODELFLEET_QUEUE": "q",
            "MODELFLEET_TRAINER_IMAGE": "ghcr.io/modelfleet/trainer:0.1.0",
            "MODELFLEET_OUTPUT_URI": str(output_uri),
            "MODELFLEET_POLL_SECONDS": "1",
            "MODELFLEET_DEBOUNCE_SECONDS": "0.2",
            "MODELFLEET_RESYNC_SECONDS": "5",
            "MODELFLEET_METRICS_PORT": str(_free_port()),
            **(env or {}),
        }
        self.env.pop("KUBECONFIG", None)  # only what --kubeconfig says
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def start(self) -> OperatorProcess:
        self.env["MODELFLEET_METRICS_PORT"] = str(_free_port())
        with open(self.log, "ab") as log:
            log.write(f"--- life {self.lives + 1}: {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.log.parent
            )
        self.lives += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye (a crashed pod, an OOM kill)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, wait=20)
        if self.alive():
            self.kill()

    def _signal(self, sig: int, wait: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # its own session: the operator and anything it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=wait)

    def wait_ready(self, timeout: float = 120) -> None:
        """Until this life has logged in (kopf's first authentication): it is about to act."""
        from envtest import wait_for

        marker = "Initial authentication has finished"
        wait_for(lambda: self.log.read_text(errors="replace").count(marker) >= self.lives or not self.alive(), timeout, interval=0.1, what=f"operator life {self.lives} up")

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# --- tiny manifests: synthetic data, a few steps (restart, HA and defect tests train little) ---


def tiny_template(name: str, *, techniques: list[dict] | None = None, **rollout: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": name},
        "spec": {
            "architecture": {
                "embedding": {"dim": 4, "buckets": 50},
                "bottomMlp": [8, 4],
                "interaction": {"kind": "dot"},
                "overArch": [8],
                "tasks": [{"name": "click"}],
            },
            "techniques": techniques if techniques is not None else [{"name": "mlp-layernorm"}],
            "recipe": {"epochs": 1, "batchSize": 64, "evalBatchSize": 256},
            "rollout": {"maxConcurrentRuns": 2, "canary": {"count": 1}, "backoffSeconds": 1, **rollout},
        },
    }


def tiny_instance(name: str, template: str, **spec: Any) -> dict[str, Any]:
    """The kmock harness's instance manifest (small synthetic data), asking for one small node."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    from operator_harness import instance

    return instance(name, template, **{"resources": {"cpu": 1, "memoryMb": 512}, **spec})


class Fleet:
    """Reads of one namespace's modelfleet objects, as the admin."""

    GROUP, VERSION = "modelfleet.dev", "v1alpha1"

    def __init__(self, api_client: Any, namespace: str):
        from kubernetes import client

        self.ns = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(self.GROUP, self.VERSION, self.ns, plural, name)

    def list(self, plural: str) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(self.GROUP, self.VERSION, self.ns, plural)["items"]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plural = {"ModelTemplate": "modeltemplates", "ModelInstance": "modelinstances", "TrainingRun": "trainingruns"}[body["kind"]]
        return self.custom.create_namespaced_custom_object(self.GROUP, self.VERSION, self.ns, plural, body)

    def delete(self, plural: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(self.GROUP, self.VERSION, self.ns, plural, name)

    def jobs(self, jobs_namespace: str, **labels: str) -> list[Any]:
        selector = ",".join([f"modelfleet.dev/run-namespace={self.ns}"] + [f"modelfleet.dev/{k}={v}" for k, v in labels.items()])
        return self.batch.list_namespaced_job(jobs_namespace, label_selector=selector).items

    def events(self, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(self.ns).items if e.involved_object.name == name]


def condition(obj: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})
