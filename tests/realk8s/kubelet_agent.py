"""Stand-ins for what a real API server has no part of: the kubelet and Kueue's admission.

`KubeletAgent` plays the kubelet for one namespace: it finds the Pods the real Job controller
creates, runs each Pod's container command on this machine for real (the trainer image's
entrypoint is this checkout's venv: its `bin/` leads PATH, so `torchrun ... -m modelfleet train`
is the real trainer), with the Pod's env incl. downward-API values (the Indexed Job's
JOB_COMPLETION_INDEX comes from the completion-index annotation) and `$(VAR)` expansion as the
kubelet does, and writes the Pod's status through the pods/status subresource: Running, then
Succeeded or Failed with the container's exit code. The real Job controller counts those Pods
and completes or fails the Job; a Pod that disappears (its Job was deleted) has its process
group killed.

With `admit=True` it also plays Kueue: a suspended Job carrying the `kueue.x-k8s.io/queue-name`
label is admitted by setting `spec.suspend=false`, as Kueue does once the queue has quota.

Everything it writes, it writes as the admin (the test's user), so the API server's audit log
tells its requests from the operator's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
VENV_BIN = Path(sys.executable).parent
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion: defined variables are replaced, `$$` escapes, the rest stays."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, text)


def _field(pod: dict[str, Any], path: str) -> str:
    meta = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    return {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": "envtest-node",
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", ""),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }.get(path, "")


def pod_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (values, fieldRefs, in order)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item.get("value") or ""), env)
        elif (item.get("valueFrom") or {}).get("fieldRef"):
            env[item["name"]] = _field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
    return env


class KubeletAgent:
    def __init__(
        self, api_client: Any, namespace: str, workdir: Path, *, admit: bool = True, interval: float = 0.3, crash: int | None = None
    ):
        from kubernetes import client

        self.namespace = namespace
        self.workdir = Path(workdir)
        self.admit = admit
        self.interval = interval
        self.crash = crash  # a container that exits at once with this code (a crash, an OOM kill)
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._json = api_client.sanitize_for_serialization
        self._procs: dict[str, tuple[subprocess.Popen[bytes], dict[str, Any], str]] = {}  # pod uid -> ...
        self._done: set[str] = set()
        self.started: list[str] = []  # pod names, in the order they were run
        self.exit_codes: dict[str, int] = {}
        self.admitted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kubelet-{namespace}", daemon=True)
        self.errors: list[str] = []

    def __enter__(self) -> KubeletAgent:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for uid, (proc, _, _) in list(self._procs.items()):
            self._kill(proc)
            self._procs.pop(uid, None)

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.admit:
                    self._admit()
                self._sync_pods()
            except Exception as exc:  # an API hiccup: try again next round, keep the reason
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval)

    def _admit(self) -> None:
        jobs = self._batch.list_namespaced_job(self.namespace, label_selector=QUEUE_LABEL).items
        for job in jobs:
            if job.spec.suspend and not job.metadata.deletion_timestamp:
                self._batch.patch_namespaced_job(job.metadata.name, self.namespace, {"spec": {"suspend": False}})
                self.admitted.append(job.metadata.name)

    def _sync_pods(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self._json(self._core.list_namespaced_pod(self.namespace).items)}
        for uid, (proc, pod, started) in list(self._procs.items()):
            live = pods.get(uid)
            if live is None or live["metadata"].get("deletionTimestamp"):
                self._kill(proc)  # deleted with its Job: the container dies with the pod
                del self._procs[uid]
                self._done.add(uid)
                continue
            code = proc.poll()
            if code is not None:
                self._terminated(pod, started, code)
                del self._procs[uid]
                self._done.add(uid)
        for uid, pod in pods.items():
            if uid in self._procs or uid in self._done or pod["metadata"].get("deletionTimestamp"):
                continue
            if (pod.get("status") or {}).get("phase") not in (None, "Pending"):
                continue
            self._run(pod)

    # --- one pod -----------------------------------------------------------------------------

    def _run(self, pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        env = pod_env(pod, container)
        argv = [expand(a, env) for a in (container.get("command") or []) + (container.get("args") or [])]
        if self.crash is not None:
            argv = [sys.executable, "-c", f"raise SystemExit({int(self.crash)})"]
        name = pod["metadata"]["name"]
        rundir = self.workdir / name
        rundir.mkdir(parents=True, exist_ok=True)
        full_env = {
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "/usr/bin:/bin")]),
            "HOME": str(rundir),
            "HOSTNAME": name,
            **env,
        }
        with open(rundir / "log.txt", "wb") as log:
            proc = subprocess.Popen(argv, cwd=rundir, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started = _now()
        self._procs[pod["metadata"]["uid"]] = (proc, pod, started)
        self.started.append(name)
        image = container.get("image", "")
        self._patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "podIP": "127.0.0.1",
                "hostIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": image,
                        "imageID": image,
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )

    def _terminated(self, pod: dict[str, Any], started: str, code: int) -> None:
        container = pod["spec"]["containers"][0]
        self.exit_codes[pod["metadata"]["name"]] = code
        finished = _now()
        image = container.get("image", "")
        self._patch_status(
            pod,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": finished}],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": image,
                        "imageID": image,
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": code,
                                "reason": "Completed" if code == 0 else "Error",
                                "startedAt": started,
                                "finishedAt": finished,
                            }
                        },
                    }
                ],
            },
        )

    def _patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.patch_namespaced_pod_status(pod["metadata"]["name"], self.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to report on
                raise

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # the container's own session (start_new_session)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
