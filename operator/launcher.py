"""Launchers: submit, find (adopt), poll and cancel the TorchX job of one TrainingRun attempt.

One launcher per operator, chosen by `OperatorConfig.scheduler` (see docs/schedulers.md):
- `local_cwd` (`LocalLauncher`): TorchX's local scheduler; really trains on this machine.
- `kubernetes` (`VolcanoLauncher`): TorchX's built-in scheduler, a `batch.volcano.sh/v1alpha1` Job.
- `kueue` (`KueueLauncher`): our TorchX scheduler (`modelfleet.operator.kueue_scheduler`), a
  suspended batch/v1 Indexed Job queued by Kueue.

Restart safety: TorchX appends a random suffix to app names, so a job cannot be found by name.
Every job carries the labels `modelfleet.dev/run` and `modelfleet.dev/attempt`; after any restart
the operator calls `find(run, attempt)` before `submit`, and adopts what it finds instead of
submitting the same attempt twice. The operator records the returned handle in the run's status
right after `submit`.

The operator never imports torch; TorchX and the trainer's component module are torch-free.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import sys
import time
import weakref
from collections.abc import Mapping
from typing import Any, Protocol

from torchx.specs.api import AppDef, AppState, parse_app_handle

from modelfleet.api.resources import TrainingRunSpec
from modelfleet.operator import naming
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.diagnose import JobState, diagnose
from modelfleet.trainer.report import PERMANENT_EXIT_CODES, reason_for

__all__ = [
    "JobState",
    "Launcher",
    "LocalLauncher",
    "VolcanoLauncher",
    "KueueLauncher",
    "make_launcher",
    "LauncherError",
]

log = logging.getLogger(__name__)

SESSION = "modelfleet"
VOLCANO_GROUP, VOLCANO_VERSION, VOLCANO_PLURAL = "batch.volcano.sh", "v1alpha1", "jobs"
TORCHX_INSTANCE_LABEL = "app.kubernetes.io/instance"  # TorchX puts the app id on every pod
# The app name is the prefix of the Kubernetes job and pod names TorchX derives from it
# (`<app>-<random>-<role>-<replica>` for Volcano pods), which must stay within 63 characters.
_MAX_APP_NAME = 30

_APP_STATE_PHASE: dict[AppState, str] = {
    AppState.UNSUBMITTED: "Pending",
    AppState.SUBMITTED: "Pending",
    AppState.PENDING: "Pending",
    AppState.RUNNING: "Running",
    AppState.SUCCEEDED: "Succeeded",
    AppState.FAILED: "Failed",
    AppState.CANCELLED: "Cancelled",
    AppState.UNKNOWN: "Unknown",
}


class LauncherError(RuntimeError):
    """A job could not be submitted, e.g. the scheduler rejected it; the message says why."""


class Launcher(Protocol):
    scheduler: str

    def submit(self, run_name: str, attempt: int, spec: TrainingRunSpec, labels: dict[str, str]) -> str: ...

    def find(self, run_name: str, attempt: int) -> str | None: ...

    def state(self, handle: str) -> JobState: ...

    def cancel(self, handle: str) -> None: ...


def make_launcher(config: OperatorConfig, *, api_client: Any = None) -> Launcher:
    """The launcher for `config.scheduler`. `api_client` (tests: an emulator) for the cluster ones."""
    if config.scheduler == "local_cwd":
        return LocalLauncher(config)
    if config.scheduler == "kubernetes":
        return VolcanoLauncher(config, api_client=api_client)
    if config.scheduler == "kueue":
        return KueueLauncher(config, api_client=api_client)
    raise ValueError(f"scheduler {config.scheduler!r} is not one of local_cwd, kubernetes, kueue")


# --- shared pieces ---------------------------------------------------------------------------


def build_app(
    run_name: str,
    spec: TrainingRunSpec,
    image: str,
    env: dict[str, str] | None = None,
    config: OperatorConfig | None = None,
) -> AppDef:
    """The trainer's AppDef for this run, named after the run (short: it prefixes job/pod names).

    With `config.output_pvc` the shared output claim is mounted into every replica, so the
    outputs a job writes to a path URI are where the operator reads metrics.json from.
    """
    from torchx.specs import VolumeMount

    from modelfleet.trainer.component import app_for

    app = app_for(spec.training, image, spec.resources, env)
    app.name = naming.label_value(run_name[:_MAX_APP_NAME]).lower().strip("-_.") or "run"
    if config is not None and config.output_pvc and config.output_mount:
        for role in app.roles:
            role.mounts.append(VolumeMount(src=config.output_pvc, dst_path=config.output_mount))
    return app


def job_labels(run_name: str, attempt: int, labels: Mapping[str, str]) -> dict[str, str]:
    """The caller's labels plus run and attempt, which adoption depends on, so they always win."""
    out = {k: str(v) for k, v in labels.items()}
    out[naming.LABEL_RUN] = naming.label_value(run_name)
    out[naming.LABEL_ATTEMPT] = str(int(attempt))
    return out


def _selector(run_name: str, attempt: int) -> dict[str, str]:
    return {naming.LABEL_RUN: naming.label_value(run_name), naming.LABEL_ATTEMPT: str(int(attempt))}


def _matches(obj: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _newest_live(items: list[dict[str, Any]], selector: Mapping[str, str]) -> dict[str, Any] | None:
    """The job to adopt: matching labels (checked here too, not only by the server), not being
    deleted (a cancelled attempt must not be adopted), newest first if a race made two."""
    live = [o for o in items if _matches(o, selector) and not o["metadata"].get("deletionTimestamp")]
    live.sort(key=lambda o: str(o["metadata"].get("creationTimestamp") or ""))
    return live[-1] if live else None


def _label_selector(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _default_namespace(config: OperatorConfig) -> str:
    """Where jobs go: `extra['namespace']`, else the operator's own namespace in a pod, else default."""
    ns = config.extra.get("namespace") if config.extra else None
    if ns:
        return ns
    with contextlib.suppress(OSError):
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or "default"
    return "default"


# --- local_cwd -------------------------------------------------------------------------------


class LocalLauncher:
    """TorchX `local_cwd`: torchrun processes on this machine, in the current directory.

    TorchX keeps local apps in the memory of its Runner, so a handle means nothing to a new
    process. To survive an operator restart, `submit` writes a record per app under
    `<log_dir>/modelfleet/apps/<app_id>.json` (run, attempt, labels, the replicas' process ids and
    start ticks, TorchX's log dir for the app, the output URI). A launcher that does not know a
    handle answers from the record:
    - `cancelled` set by `cancel` -> Cancelled;
    - TorchX's `SUCCESS` file in the app's log dir (written when TorchX saw the app finish) -> its
      `final_state`;
    - a replica process still alive (same pid *and* start time, so a reused pid does not count)
      -> Running;
    - `metrics.json` at the run's output URI -> Succeeded (the trainer writes it last);
    - otherwise -> Failed (the processes are gone without a result), with the stderr tail.
    A failed job's reason is that of the replicas' permanent exit code (`trainer/report.py`:
    `DataNotFound`, `InvalidLabels`, ...; from the live processes or TorchX's SUCCESS file),
    else `Error`; the run reconciler does not retry the permanent ones.
    `find` scans the records by run and attempt. `cancel` of an unknown handle kills the recorded
    process groups (TorchX starts every replica in its own session).
    """

    scheduler = "local_cwd"

    def __init__(self, config: OperatorConfig):
        from torchx.runner import Runner
        from torchx.schedulers import local_scheduler

        self.config = config
        self.log_dir = _local_log_dir(config)
        self._records = os.path.join(self.log_dir, "modelfleet", "apps")
        self._runner = Runner(SESSION, scheduler_factories={"local_cwd": local_scheduler.create_scheduler})

        # TorchX's LocalScheduler kills every app it knows when it is closed or garbage collected
        # (`__del__`), i.e. on any operator exit. Jobs must outlive the operator (a restarted one
        # adopts them), so the scheduler forgets its apps first, at our end or at interpreter exit.
        weakref.finalize(self, _detach_local_apps, self._runner)

    def close(self) -> None:
        """Forget the running jobs without stopping them (they run in their own sessions)."""
        _detach_local_apps(self._runner)

    # submit -------------------------------------------------------------------------------------

    def submit(self, run_name: str, attempt: int, spec: TrainingRunSpec, labels: dict[str, str]) -> str:
        env = {"MODELFLEET_RUN": run_name, "MODELFLEET_ATTEMPT": str(attempt)}
        if shutil.which("torchrun") is None:
            # local_cwd runs `torchrun` from PATH; the operator's own environment provides one.
            env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        app = build_app(run_name, spec, spec.image or self.config.trainer_image, env)
        os.makedirs(self._records, exist_ok=True)
        try:
            handle = self._runner.schedule(
                self._runner.dryrun(app, "local_cwd", cfg={"log_dir": self.log_dir})
            )
        except Exception as exc:  # torchx raises plain ValueErrors/OSErrors for a bad app
            raise LauncherError(f"local_cwd: could not start run {run_name} attempt {attempt}: {exc}") from exc
        _, _, app_id = parse_app_handle(handle)
        record = {
            "handle": handle,
            "app_id": app_id,
            "run": run_name,
            "attempt": int(attempt),
            "labels": job_labels(run_name, attempt, labels),
            "output_uri": spec.training.output_uri,
            "app_log_dir": os.path.join(self.log_dir, SESSION, app_id),
            "processes": self._processes(app_id),
            "submitted_at": time.time(),
        }
        self._write(app_id, record)
        return handle

    def _processes(self, app_id: str) -> list[dict[str, int]]:
        # TorchX exposes no public way to the replicas' pids; without them a restarted operator
        # falls back to the SUCCESS file and metrics.json (it cannot then tell running from dead).
        out = []
        with contextlib.suppress(Exception):
            scheduler = self._runner._scheduler("local_cwd")
            for replicas in scheduler._apps[app_id].role_replicas.values():
                for r in replicas:
                    out.append({"pid": r.proc.pid, "start": _start_ticks(r.proc.pid) or 0})
        return out

    # find ---------------------------------------------------------------------------------------

    def find(self, run_name: str, attempt: int) -> str | None:
        found = [
            r
            for r in self._all_records()
            if r.get("run") == run_name and r.get("attempt") == int(attempt) and not r.get("cancelled")
        ]
        found.sort(key=lambda r: r.get("submitted_at", 0))
        return found[-1]["handle"] if found else None

    # state --------------------------------------------------------------------------------------

    def state(self, handle: str) -> JobState:
        _, _, app_id = parse_app_handle(handle)
        record = self._read(app_id)
        if record and record.get("cancelled"):
            return JobState("Cancelled", "Cancelled", f"local job {app_id} was cancelled")
        if self._knows(app_id):
            status = self._runner.status(handle)
            if status is not None:
                phase = _APP_STATE_PHASE[status.state]
                if phase == "Failed":
                    return self._failed(app_id, record)
                return JobState(phase, None, f"local job {app_id} is {status.state.name.lower()}")  # type: ignore[arg-type]
        if record is None:
            return JobState("Unknown", "NotFound", f"no local job {app_id} under {self._records}")
        return self._state_from_record(app_id, record)

    def _state_from_record(self, app_id: str, record: dict[str, Any]) -> JobState:
        success = os.path.join(record.get("app_log_dir", ""), "SUCCESS")
        if os.path.exists(success):
            with contextlib.suppress(OSError, ValueError):
                with open(success) as fh:
                    final = str(json.load(fh).get("final_state", ""))
                phase = {"SUCCEEDED": "Succeeded", "FAILED": "Failed", "CANCELLED": "Cancelled"}.get(final)
                if phase == "Failed":
                    return self._failed(app_id, record)
                if phase:
                    return JobState(phase, None, f"local job {app_id} finished: {final}")  # type: ignore[arg-type]
        if any(_alive(p["pid"], p.get("start", 0)) for p in record.get("processes", [])):
            return JobState("Running", None, f"local job {app_id} is running")
        if _exists(f"{record['output_uri'].rstrip('/')}/metrics.json"):
            return JobState("Succeeded", None, f"local job {app_id} wrote metrics.json")
        if not record.get("processes"):
            return JobState("Unknown", "Unknown", f"local job {app_id}: no process ids recorded and no result yet")
        return self._failed(app_id, record)

    def _failed(self, app_id: str, record: dict[str, Any] | None) -> JobState:
        """Failed, with the reason of a permanent exit code (DataNotFound, ...) or `Error`."""
        code = self._exit_code(app_id, record)
        message = self._failure_message(app_id, record)
        if code is not None:
            message = f"{message}; exit code {code}"
        return JobState("Failed", reason_for(code) or "Error", message)

    def _exit_code(self, app_id: str, record: dict[str, Any] | None) -> int | None:
        """The replicas' exit code that explains the failure: a permanent one first, else any non-zero."""
        codes: list[int] = []
        with contextlib.suppress(Exception):  # TorchX's private state, as in `_processes`
            scheduler = self._runner._scheduler_instances["local_cwd"]
            for replicas in scheduler._apps[app_id].role_replicas.values():
                codes += [r.proc.returncode for r in replicas if r.proc.returncode is not None]
        if not codes and record:  # a launcher that did not start the job: TorchX's SUCCESS file has them
            with contextlib.suppress(OSError, ValueError, AttributeError):
                with open(os.path.join(record.get("app_log_dir", ""), "SUCCESS")) as fh:
                    roles = json.load(fh).get("roles") or {}
                codes = [r["exitcode"] for replicas in roles.values() for r in replicas if isinstance(r.get("exitcode"), int)]
        failed = sorted((c for c in codes if c), key=lambda c: reason_for(c) is None)
        return failed[0] if failed else None

    def _failure_message(self, app_id: str, record: dict[str, Any] | None) -> str:
        log_dir = (record or {}).get("app_log_dir") or os.path.join(self.log_dir, SESSION, app_id)
        tail = ""
        for path in sorted(glob.glob(os.path.join(log_dir, "**", "stderr.log"), recursive=True)):
            with contextlib.suppress(OSError):
                with open(path, errors="replace") as fh:
                    lines = [ln.strip() for ln in fh.read()[-20_000:].splitlines() if ln.strip()]
                errors = [ln for ln in lines if "error" in ln.lower()]
                if lines:
                    tail = (errors or lines)[-1]
        return f"local job {app_id} failed" + (f": {tail[:500]}" if tail else "") + f" (logs: {log_dir})"

    # cancel -------------------------------------------------------------------------------------

    def cancel(self, handle: str) -> None:
        _, _, app_id = parse_app_handle(handle)
        record = self._read(app_id)
        if self._knows(app_id):
            self._runner.cancel(handle)
        if record is None:
            return
        for p in record.get("processes", []):
            if _alive(p["pid"], p.get("start", 0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p["pid"], signal.SIGTERM)  # the replica's session: torchrun and workers
        if not self._finished_ok(record):
            record["cancelled"] = True
            self._write(app_id, record)

    def _finished_ok(self, record: dict[str, Any]) -> bool:
        state = self._state_from_record(record["app_id"], {**record, "cancelled": False})
        return state.phase == "Succeeded"

    # records ------------------------------------------------------------------------------------

    def _knows(self, app_id: str) -> bool:
        scheduler = self._runner._scheduler_instances.get("local_cwd")
        return scheduler is not None and app_id in getattr(scheduler, "_apps", {})

    def _path(self, app_id: str) -> str:
        return os.path.join(self._records, f"{app_id}.json")

    def _write(self, app_id: str, record: dict[str, Any]) -> None:
        tmp = self._path(app_id) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(record, fh, indent=2)
        os.replace(tmp, self._path(app_id))  # atomic: a crash never leaves half a record

    def _read(self, app_id: str) -> dict[str, Any] | None:
        try:
            with open(self._path(app_id)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def _all_records(self) -> list[dict[str, Any]]:
        out = []
        for path in glob.glob(os.path.join(self._records, "*.json")):
            with contextlib.suppress(OSError, ValueError):
                with open(path) as fh:
                    out.append(json.load(fh))
        return out


def _detach_local_apps(runner: Any) -> None:
    with contextlib.suppress(Exception):
        scheduler = runner._scheduler_instances.get("local_cwd")
        if scheduler is not None:
            scheduler._apps.clear()


def _local_log_dir(config: OperatorConfig) -> str:
    """`config.log_dir`, else next to the local output base; never a temporary dir that TorchX
    would delete, since the records there are what a restarted operator reads."""
    if config.log_dir:
        return os.path.abspath(config.log_dir)
    base = config.output_uri
    if base.startswith("file://"):
        base = base[len("file://") :]
    elif "://" in base:  # an object store: logs and records still need a local directory
        import tempfile

        base = os.path.join(tempfile.gettempdir(), "modelfleet")
    return os.path.abspath(os.path.join(base, "_torchx_logs"))


def _start_ticks(pid: int) -> int | None:
    """Process start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])  # field 22 of stat(5); fields[0] is field 3


def _alive(pid: int, start: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        if not os.path.isdir("/proc"):  # not Linux: trust the pid alone
            try:
                os.kill(pid, 0)
            except (ProcessLookupError, PermissionError):
                return False
            return True
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie finished; its parent (an old Runner) just did not reap it
        return False
    return not start or int(fields[19]) == start


def _exists(uri: str) -> bool:
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        return bool(fs.exists(path))
    except Exception:  # an unreachable store is "not there yet", never a crash of the poll loop
        return False


# --- Kubernetes-based launchers -----------------------------------------------------------------


class _KubeLauncher:
    scheduler: str

    def __init__(self, config: OperatorConfig, *, api_client: Any = None):
        if not config.queue:
            raise ValueError(
                f"MODELFLEET_QUEUE: the {self.scheduler} scheduler needs a queue "
                f"({'Volcano queue' if self.scheduler == 'kubernetes' else 'Kueue LocalQueue'})"
            )
        self.config = config
        self.namespace = _default_namespace(config)
        self._client = api_client

    def api_client(self) -> Any:
        if self._client is None:
            from modelfleet.operator.kube import make_api_client

            self._client = make_api_client()
        return self._client

    def _runner(self) -> Any:
        from torchx.runner import Runner

        return Runner(SESSION, scheduler_factories={self.scheduler: self._factory})

    def _factory(self, session_name: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _cfg(self, namespace: str) -> dict[str, Any]:
        raise NotImplementedError

    def _label_request(self, request: Any, labels: dict[str, str]) -> None:
        raise NotImplementedError

    def render(self, run_name: str, attempt: int, spec: TrainingRunSpec, labels: dict[str, str], *, namespace: str | None = None) -> Any:
        """The TorchX dry run of this attempt, with our labels on the job and its pods."""
        app = build_app(
            run_name,
            spec,
            spec.image or self.config.trainer_image,
            {"MODELFLEET_RUN": run_name, "MODELFLEET_ATTEMPT": str(attempt)},
            config=self.config,
        )
        info = self._runner().dryrun(app, self.scheduler, cfg=self._cfg(namespace or self.namespace))
        self._label_request(info.request, job_labels(run_name, attempt, labels))
        self._fail_fast(info.request)
        return info

    def _fail_fast(self, request: Any) -> None:
        """Make the scheduler fail the job at once on the trainer's permanent exit codes (the kueue
        scheduler does it through its run option `fail_on_exit_codes`, see `_cfg`)."""

    def submit(
        self, run_name: str, attempt: int, spec: TrainingRunSpec, labels: dict[str, str], *, namespace: str | None = None
    ) -> str:
        from kubernetes.client.rest import ApiException

        info = self.render(run_name, attempt, spec, labels, namespace=namespace)
        try:
            return self._runner().schedule(info)
        except ApiException as exc:
            raise LauncherError(
                f"{self.scheduler}: the API server rejected the job of run {run_name} attempt {attempt}: "
                f"{exc.status} {exc.reason}: {_api_message(exc)}"
            ) from exc

    def find(self, run_name: str, attempt: int, *, namespace: str | None = None) -> str | None:
        ns = namespace or self.namespace
        selector = _selector(run_name, attempt)
        job = _newest_live(self._list_jobs(ns, _label_selector(selector)), selector)
        if job is None:
            return None
        return f"{self.scheduler}://{SESSION}/{ns}:{job['metadata']['name']}"

    def _list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    @staticmethod
    def _app_id(handle: str) -> tuple[str, str]:
        _, _, app_id = parse_app_handle(handle)
        namespace, _, name = app_id.partition(":")
        return namespace or "default", name


class VolcanoLauncher(_KubeLauncher):
    """TorchX's `kubernetes` scheduler: one `batch.volcano.sh/v1alpha1` Job, gang-scheduled by Volcano.

    The job and every pod template carry our labels. `state` reads the Volcano job and its pods
    (by TorchX's `app.kubernetes.io/instance` label) and lets `diagnose` name the reason. `cancel`
    deletes the Volcano job (TorchX's own cancel writes the job's status, which is the Volcano
    controller's field and needs the status subresource); the pods go with it.
    """

    scheduler = "kubernetes"

    def _factory(self, session_name: str, **kwargs: Any) -> Any:
        from torchx.schedulers import kubernetes_scheduler

        return kubernetes_scheduler.create_scheduler(session_name, client=self.api_client())

    def _cfg(self, namespace: str) -> dict[str, Any]:
        # validate_spec would make a server-side dry-run create; the real create validates anyway.
        return {"queue": self.config.queue, "namespace": namespace, "validate_spec": False}

    def _label_request(self, request: Any, labels: dict[str, str]) -> None:
        from torchx.schedulers.kubernetes_scheduler import sanitize_for_serialization

        resource = request.resource
        meta = resource.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        for task in resource["spec"]["tasks"]:
            pod = task["template"]
            if not isinstance(pod, dict):  # TorchX builds V1Pod objects; the API takes JSON as well
                pod = task["template"] = sanitize_for_serialization(pod)
            pmeta = pod.setdefault("metadata", {})
            pmeta["labels"] = {**(pmeta.get("labels") or {}), **labels}

    def _fail_fast(self, request: Any) -> None:
        # Volcano's task policies: a pod that exits with one of these codes terminates the whole
        # job (its failed pods are kept for the exit code); first-match, so ours go first.
        policies = [{"exitCode": c, "action": "TerminateJob"} for c in sorted(PERMANENT_EXIT_CODES)]
        for task in request.resource["spec"]["tasks"]:
            task["policies"] = policies + list(task.get("policies") or [])

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client())

    def _list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        resp = self._custom().list_namespaced_custom_object(
            VOLCANO_GROUP, VOLCANO_VERSION, namespace, VOLCANO_PLURAL, label_selector=label_selector
        )
        return list(resp.get("items", []))

    def state(self, handle: str) -> JobState:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        namespace, name = self._app_id(handle)
        try:
            job = self._custom().get_namespaced_custom_object(VOLCANO_GROUP, VOLCANO_VERSION, namespace, VOLCANO_PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return diagnose(None)
            raise
        core = client.CoreV1Api(self.api_client())
        pods = core.list_namespaced_pod(namespace=namespace, label_selector=f"{TORCHX_INSTANCE_LABEL}={name}").items
        pods = [p for p in self.api_client().sanitize_for_serialization(pods) if _matches(p, {TORCHX_INSTANCE_LABEL: name})]
        return diagnose(job, pods)

    def cancel(self, handle: str) -> None:
        from kubernetes.client.rest import ApiException

        namespace, name = self._app_id(handle)
        try:
            self._custom().delete_namespaced_custom_object(
                VOLCANO_GROUP, VOLCANO_VERSION, namespace, VOLCANO_PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


class KueueLauncher(_KubeLauncher):
    """Our `kueue` TorchX scheduler: a suspended batch/v1 Indexed Job (+ headless Service) that
    Kueue admits from the LocalQueue `config.queue`. `state` adds the Kueue Workload's conditions
    (QuotaReserved / Admitted / Evicted) to what the Job and its pods say."""

    scheduler = "kueue"

    def _factory(self, session_name: str, **kwargs: Any) -> Any:
        from modelfleet.operator.kueue_scheduler import create_scheduler

        return create_scheduler(session_name, client=self.api_client())

    def _cfg(self, namespace: str) -> dict[str, Any]:
        # fail_on_exit_codes: the Job's podFailurePolicy fails it at once on bad input
        return {
            "queue": self.config.queue,
            "namespace": namespace,
            "fail_on_exit_codes": [str(c) for c in PERMANENT_EXIT_CODES],
        }

    def _label_request(self, request: Any, labels: dict[str, str]) -> None:
        for obj in (request.job, request.job["spec"]["template"], request.service):
            meta = obj.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **labels}

    def _list_jobs(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        from kubernetes import client

        resp = client.BatchV1Api(self.api_client()).list_namespaced_job(namespace=namespace, label_selector=label_selector)
        return list(self.api_client().sanitize_for_serialization(resp.items))

    def state(self, handle: str) -> JobState:
        from modelfleet.operator.kueue_scheduler import create_scheduler

        _, _, app_id = parse_app_handle(handle)
        return create_scheduler(SESSION, client=self.api_client()).job_state(app_id)

    def cancel(self, handle: str) -> None:
        from kubernetes import client

        from modelfleet.operator.kueue_scheduler import delete_job

        _, _, app_id = parse_app_handle(handle)
        delete_job(client.BatchV1Api(self.api_client()), app_id)


def _api_message(exc: Any) -> str:
    with contextlib.suppress(Exception):
        return str(json.loads(exc.body).get("message"))
    return str(getattr(exc, "body", "") or "")
