"""`modelfleet local DIR`: the embedded default -- reconcile a folder of manifests on this machine.

    modelfleet local DIR [--state DIR] [--workers N] [--poll SECONDS]

Reads every manifest in DIR (`*.yaml`, `*.yml`, `*.json`; multi-document YAML is fine), validates
them, resolves relative data URIs against DIR, and then runs the operator's own core -- the same
planner, run reconciler and status code the kopf operator runs -- against a file-backed store
instead of a cluster, with TorchX's `local_cwd` scheduler (really training, here):

    plan every template -> apply -> reconcile every run in flight -> ... until nothing is in flight

State lives under `--state` (default `.modelfleet/` in the current directory):
`state/<Kind>/<name>.json` (the objects and their status), `state/events.jsonl`, `runs/<ns>/<run>/`
(checkpoints, metrics.json, model) and `logs/` (TorchX logs and the launcher's job records). Because
everything is there, a stopped `modelfleet local` resumes where it was (running jobs are adopted,
not started again); a second call after a technique edit retrains only what changed, and a call
with nothing changed trains nothing. The folder is the source of truth: objects removed from it are
removed from the state (an in-flight run of a removed instance is cancelled).

Exit status: 0 when every instance ends promoted (or is blocked by its serving budget, or
suspended), 1 when any fails (run failure, gate, paused rollout), 2 for bad manifests.

Public functions: `load_manifests(folder) -> Manifests`, `sync_store(store, manifests, launcher)`,
`reconcile_once(store, launcher, now, *, output_uri, image, workers) -> Tick`, `configure`, `run`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelfleet.api.resources import BY_KIND, FINISHED_PHASES, ModelInstance, ModelTemplate, TrainingRun
from modelfleet.operator.progress_view import Row, make_view
from modelfleet.trainer.progress import read_progress

DEFAULT_STATE = ".modelfleet"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    pass


@dataclass
class Manifests:
    templates: list[ModelTemplate] = field(default_factory=list)
    instances: list[ModelInstance] = field(default_factory=list)
    runs: list[TrainingRun] = field(default_factory=list)


def _is_uri_relative(uri: str) -> bool:
    return "://" not in uri and not os.path.isabs(uri)


def _error_text(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))
    return str(exc)


def load_manifests(folder: str | os.PathLike[str]) -> Manifests:
    """Every modelfleet object in `folder` (not its subfolders), data URIs made absolute.

    Raises ManifestError naming the file, the object and the field.
    """
    import yaml

    root = Path(folder).resolve()
    if not root.is_dir():
        raise ManifestError(f"{folder}: not a directory")
    out = Manifests()
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted(p for p in root.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path.name}: not valid YAML: {exc}") from None
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            if kind not in BY_KIND:
                continue  # other objects (ConfigMaps, ...) are not ours to reconcile
            name = (doc.get("metadata") or {}).get("name", "?")
            if kind == "ModelInstance":
                data = (doc.get("spec") or {}).get("data") or {}
                for key in ("trainUri", "evalUri"):
                    if isinstance(data.get(key), str) and _is_uri_relative(data[key]):
                        data[key] = str((root / data[key]).resolve())
            try:
                obj = BY_KIND[kind].model_validate(doc)
            except Exception as exc:
                raise ManifestError(f"{path.name}: {kind} {name}: {_error_text(exc)}") from None
            key = (kind, obj.metadata.name)
            if key in seen:
                raise ManifestError(f"{path.name}: {kind} {obj.metadata.name} is also defined in {seen[key].name}")
            seen[key] = path
            {"ModelTemplate": out.templates, "ModelInstance": out.instances, "TrainingRun": out.runs}[kind].append(obj)  # type: ignore[attr-defined]
    if not out.templates and not out.instances:
        raise ManifestError(f"{folder}: no ModelTemplate or ModelInstance manifests found")
    return out


def _body(obj: Any) -> dict[str, Any]:
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    body.pop("status", None)
    meta = body.get("metadata", {})
    for key in ("generation", "uid"):
        meta.pop(key, None)
    return body


def parse(cls: type, body: dict[str, Any]) -> Any:
    return cls.model_validate({k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "spec", "status")})


def sync_store(store: Any, manifests: Manifests, launcher: Any = None) -> None:
    """Make the store's templates and instances those of the folder (like `kubectl apply --prune`)."""
    from modelfleet.operator.runs import cancel_run
    from modelfleet.operator.store import FileStore

    assert isinstance(store, FileStore)
    wanted = {
        "ModelTemplate": {t.metadata.name: t for t in manifests.templates},
        "ModelInstance": {i.metadata.name: i for i in manifests.instances},
    }
    for kind, objs in wanted.items():
        for obj in objs.values():
            store.put(kind, _body(obj))
        for body in store.list(kind):
            if body["metadata"]["name"] not in objs:
                store.delete(kind, body["metadata"]["name"])
    for run in manifests.runs:  # ad-hoc runs a user wrote
        store.create("TrainingRun", _body(run))
    # A run's owner is its instance: removing the instance removes its runs (cancelling the job).
    adhoc = {r.metadata.name for r in manifests.runs}
    for body in store.list("TrainingRun"):
        inst = (body.get("spec") or {}).get("instance")
        if inst in wanted["ModelInstance"] or body["metadata"]["name"] in adhoc:
            continue
        run = parse(TrainingRun, body)
        if run.status is None or run.status.phase not in FINISHED_PHASES:
            cancel_run(run, launcher, dt.datetime.now(dt.UTC), reason="InstanceDeleted")
        store.delete("TrainingRun", body["metadata"]["name"])


@dataclass
class Tick:
    """What one reconcile pass did and saw."""

    actions: int = 0  # planner actions other than status patches and Events
    in_flight: int = 0
    run_updates: int = 0  # run status patches (a run that just finished needs one more plan)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance -> what it shows
    requeue_after: float | None = None


def reconcile_once(
    store: Any,
    launcher: Any,
    now: dt.datetime,
    *,
    output_uri: str,
    image: str,
    workers: int | None = None,
    read_metrics: Any = None,
) -> Tick:
    """One pass of the operator over the store: plan + apply every template, then every run."""
    from modelfleet.operator import runs as core_runs
    from modelfleet.operator import status as st
    from modelfleet.operator.actions import CancelRun, CreateRun, DeleteRun, Promote
    from modelfleet.operator.apply import apply_plan
    from modelfleet.operator.planner import plan_template
    from modelfleet.operator.validation import validate_instance

    tick = Tick()
    templates = {b["metadata"]["name"]: parse(ModelTemplate, b) for b in store.list("ModelTemplate")}
    instances = [parse(ModelInstance, b) for b in store.list("ModelInstance")]
    runs_by_instance: dict[str, list[TrainingRun]] = {}
    for b in store.list("TrainingRun"):
        run = parse(TrainingRun, b)
        runs_by_instance.setdefault(run.spec.instance, []).append(run)
    by_template: dict[str, list[ModelInstance]] = {}
    for inst in instances:
        by_template.setdefault(inst.spec.template_ref.name, []).append(inst)

    for name, template in templates.items():
        if workers:
            # --workers caps concurrent jobs on this machine without editing the user's template.
            rollout = template.spec.rollout.model_copy(update={"max_concurrent_runs": min(workers, template.spec.rollout.max_concurrent_runs)})
            template = template.model_copy(update={"spec": template.spec.model_copy(update={"rollout": rollout})})
        members = by_template.get(name, [])
        runs = [r for i in members for r in runs_by_instance.get(i.metadata.name, [])]
        plan = plan_template(template, members, runs, now, output_uri=output_uri, image=image)
        apply_plan(plan, store, launcher=launcher, now=now)
        tick.actions += sum(1 for a in plan.actions if isinstance(a, CreateRun | CancelRun | DeleteRun | Promote))
        if plan.requeue_after is not None:
            tick.requeue_after = min(tick.requeue_after or plan.requeue_after, plan.requeue_after)
        for iname, info in plan.instances.items():
            tick.rows[iname] = {**info, "template": name}

    # Instances whose template is not in the folder: TemplateNotFound, like the operator says it.
    for inst in instances:
        if inst.spec.template_ref.name in templates:
            continue
        [p] = validate_instance(inst, None)
        gen = inst.metadata.generation
        old = inst.status.model_dump(mode="json", by_alias=True, exclude_none=True) if inst.status else {}
        new = {"observedGeneration": gen, "conditions": st.stalled(p.reason, p.message, gen, now, old.get("conditions"))}
        if st.status_changed(old, new):
            store.patch_status("ModelInstance", inst.metadata.name, new)
            store.record_event("ModelInstance", inst.metadata.name, "Warning", p.reason, p.message)
        tick.rows[inst.metadata.name] = {"state": "Invalid", "reason": p.reason, "message": p.message, "template": inst.spec.template_ref.name}

    kwargs = {"read_metrics": read_metrics} if read_metrics else {}
    for b in store.list("TrainingRun"):
        run = parse(TrainingRun, b)
        if run.status is not None and run.status.phase in FINISHED_PHASES:
            continue
        template = templates.get((run.metadata.labels or {}).get("modelfleet.dev/template", ""))
        policy = template.spec.rollout if template else None
        update = core_runs.reconcile_run(run, launcher, now, policy=policy, **kwargs)
        if update.status_patch:
            store.patch_status("TrainingRun", run.metadata.name, update.status_patch)
            tick.run_updates += 1
        for ev in update.events:
            store.record_event(ev.kind, ev.name, ev.type, ev.reason, ev.message)
        phase = (update.status_patch or {}).get("phase") or (run.status.phase if run.status else None) or "Pending"
        if phase not in FINISHED_PHASES:
            tick.in_flight += 1
        row = tick.rows.get(run.spec.instance)
        if row is not None and row.get("run") == run.metadata.name:
            row["runPhase"] = phase
            if phase not in FINISHED_PHASES and update.status_patch and update.status_patch.get("reason"):
                row["runReason"] = update.status_patch.get("reason")
    return tick


# --- output ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return [line(headers), *(line(r) for r in rows)]


def _progress_rows(store: Any, tick: Tick) -> list[Row]:
    rows = []
    for name in sorted(tick.rows):
        info = tick.rows[name]
        body = store.get("ModelInstance", name) or {}
        status = body.get("status") or {}
        training = info.get("state") == "Training"
        phase = info.get("runPhase") if training else info.get("state")
        ne = (status.get("metrics") or {}).get("ne")
        progress = None
        if training and phase == "Running" and info.get("run"):
            # the trainer's file itself, not status.progress: that is rate-limited for an API server
            run = store.get("TrainingRun", info["run"]) or {}
            progress = read_progress(run.get("spec", {}).get("training", {}).get("outputUri", ""))
        rows.append(Row(name, info.get("revision") or "-", phase or "-", _fmt(ne), info.get("reason") or "", progress))
    return rows


def summary(store: Any, tick: Tick) -> tuple[list[str], int, list[str]]:
    """(table lines, exit code, problems) for the end of a `modelfleet local` run."""
    rows, problems, code = [], [], 0
    for name in sorted(tick.rows):
        info = tick.rows[name]
        status = (store.get("ModelInstance", name) or {}).get("status") or {}
        state = info.get("state")
        m = status.get("metrics") or {}
        if state != "UpToDate" and info.get("run"):
            # not promoted: show what its latest run measured, so the reason can be judged
            run = store.get("TrainingRun", info["run"]) or {}
            m = (run.get("status") or {}).get("metrics") or m
        if state == "UpToDate":
            result = f"promoted {status.get('promotedRevision')}"
        elif state == "Blocked":
            result = "blocked"
        elif state == "Suspended":
            result = "suspended"
        else:
            result = "not promoted"
            code = 1
            problems.append(f"{name}: {info.get('reason')}: {info.get('message')}")
        rows.append(
            [
                name,
                _fmt(m.get("ne")),
                _fmt(m.get("auc")),
                _fmt(m.get("calibration"), 3),
                result,
                status.get("modelUri") or "-",
                "" if state == "UpToDate" else f"{info.get('reason')}: {info.get('message')}",
            ]
        )
    return _table(["INSTANCE", "NE", "AUC", "CALIBRATION", "RESULT", "MODEL", "WHY"], rows), code, problems


# --- the command ------------------------------------------------------------------------------


def _signal_exception() -> type[BaseException]:
    """TorchX's local scheduler turns SIGINT/SIGTERM into its own exception; both mean "stop"."""
    try:
        from torchx.schedulers.local_scheduler import SignalException
    except ImportError:
        return KeyboardInterrupt
    return SignalException


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="folder of ModelTemplate/ModelInstance manifests")
    parser.add_argument(
        "--state",
        default=None,
        help=f"state folder (objects, runs, logs); default {DEFAULT_STATE}/ in the current directory",
    )
    parser.add_argument("--workers", type=int, default=None, help="at most N training jobs at once on this machine")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between reconcile passes (default 2)")
    parser.add_argument("--image", default=None, help="trainer image recorded in runs (local_cwd runs this checkout)")


def run(args: argparse.Namespace) -> int:
    from modelfleet.operator.config import DEFAULT_TRAINER_IMAGE, OperatorConfig
    from modelfleet.operator.store import FileStore

    if args.workers is not None and args.workers < 1:
        print("modelfleet local: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        manifests = load_manifests(args.dir)
    except ManifestError as exc:
        print(f"modelfleet local: {exc}", file=sys.stderr)
        return 2
    state = Path(args.state or DEFAULT_STATE).resolve()
    store = FileStore(state / "state")
    output_uri = str(state / "runs")
    image = args.image or DEFAULT_TRAINER_IMAGE
    from modelfleet.operator.launcher import make_launcher

    # torchrun must be found next to this interpreter (a venv that is not on PATH).
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    launcher = make_launcher(
        OperatorConfig(scheduler="local_cwd", output_uri=output_uri, log_dir=str(state / "logs"), trainer_image=image)
    )
    sync_store(store, manifests, launcher)
    progress = make_view()
    print(f"modelfleet local: {len(manifests.templates)} template(s), {len(manifests.instances)} instance(s); state in {state}")
    started = time.monotonic()
    try:
        while True:
            tick = reconcile_once(store, launcher, dt.datetime.now(dt.UTC), output_uri=output_uri, image=image, workers=args.workers)
            elapsed = int(time.monotonic() - started)
            progress.show(_progress_rows(store, tick), f"{tick.in_flight} run(s) in flight, {elapsed}s")
            if tick.in_flight == 0 and tick.actions == 0 and tick.run_updates == 0:
                break
            time.sleep(args.poll if tick.in_flight else min(args.poll, tick.requeue_after or args.poll))
    except (KeyboardInterrupt, _signal_exception()):
        print(
            "\nmodelfleet local: stopped. Jobs in flight keep running; run the same command again to pick them up.",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.close()
        close = getattr(launcher, "close", None)
        if close:
            close()
    lines, code, problems = summary(store, tick)
    print()
    print("\n".join(lines))
    for t in store.list("ModelTemplate"):
        s = t.get("status") or {}
        print(
            f"\ntemplate {t['metadata']['name']}: revision {s.get('revision')}, {s.get('upToDate', 0)}/{s.get('instances', 0)} "
            f"up to date, rollout {s.get('rolloutPhase')}"
            + "".join(f"\n  {c['type']}={c['status']} {c['reason']}: {c['message']}" for c in s.get("conditions", []) if c.get("message") and c["status"] == "True" or c["type"] == "Ready" and c["status"] == "False")
        )
    if problems:
        print("\nmodelfleet local: not every instance was promoted:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
    return code


def state_json(store: Any) -> str:
    """The whole state as JSON (debugging aid)."""
    return json.dumps({k: store.list(k) for k in BY_KIND}, indent=2)
