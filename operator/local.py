"""`modelfleet local DIR`: the embedded default -- reconcile a folder of manifests on this machine.

    modelfleet local DIR [--state DIR] [--prune] [--workers N] [--poll SECONDS]

Reads every manifest in DIR (`*.yaml`, `*.yml`, `*.json`; multi-document YAML is fine) and checks
them (schema, then the technique catalogue) before it touches the state; then it runs the
operator's own core -- the same planner, run reconciler and status code the kopf operator runs --
against a file-backed store instead of a cluster, with TorchX's `local_cwd` scheduler (really
training, here):

    plan every template -> apply -> reconcile every run in flight -> ... until nothing is in flight

Relative data URIs stay as written (revisions hash them so) and are read from DIR. Each instance's
data is checked before its run is queued (`datachecks.DataChecks`, once per call).

State lives under `--state` (default `.modelfleet/` in the current directory):
`state/<Kind>/<name>.json` (the objects and their status), `state/events.jsonl`, `runs/<ns>/<run>/`
(checkpoints, metrics.json, model), `logs/` (TorchX logs and the launcher's job records),
`source.json` (the folder the state is for) and `lock`/`lock.json`. Because everything is there, a
stopped `modelfleet local` resumes where it was (running jobs are adopted, not started again); a
second call after a technique edit retrains only what changed, and a call with nothing changed
trains nothing. The state cannot be lost by accident: it is one folder's (another folder is refused,
EXIT_OTHER_FOLDER, unless `--prune`), nothing is deleted without `--prune`, and one process at a
time holds it (EXIT_LOCKED for a second one, naming the holder).

Exit status (docs/cli.md): 0 when every instance ends promoted (or is blocked by its serving
budget, or suspended), 1 when any other is not promoted (run failure, gate, paused rollout), 2 for
bad input (manifests, or an instance's data), 3 and 4 as above, 130 when interrupted.

Public functions: `load_manifests(folder) -> Manifests`, `manifest_problems(manifests)`,
`load_checked(folder)`, `sync_store(store, manifests, launcher, *, prune)`, `state_lock(state,
folder)`, `claim_state(state, store, folder, *, prune)`, `reconcile_once(store, launcher, now, *,
output_uri, image, workers, base_dir, data_checks) -> Tick`, `configure`, `run`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelfleet.api.resources import BY_KIND, FINISHED_PHASES, ModelInstance, ModelTemplate, TrainingRun
from modelfleet.errors import CliError
from modelfleet.operator.progress_view import Row, make_view
from modelfleet.trainer.progress import read_progress

DEFAULT_STATE = ".modelfleet"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SOURCE_FILE = "source.json"  # <state>/source.json: the manifests' folder the state was made for
LOCK_FILE = "lock"  # <state>/lock: held by the one `modelfleet local` using the state
OWNER_FILE = "lock.json"  # <state>/lock.json: who holds it (pid, folder, since)

EXIT_OK, EXIT_NOT_PROMOTED, EXIT_INVALID, EXIT_OTHER_FOLDER, EXIT_LOCKED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class ManifestError(ValueError):
    pass


@dataclass
class Manifests:
    templates: list[ModelTemplate] = field(default_factory=list)
    instances: list[ModelInstance] = field(default_factory=list)
    runs: list[TrainingRun] = field(default_factory=list)
    folder: Path | None = None  # resolved; relative data URIs are read from here
    sources: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> file name

    def where(self, kind: str, name: str) -> str:
        """`file: Kind name`, how an error names an object."""
        return f"{self.sources.get((kind, name), '?')}: {kind} {name}"


def load_manifests(folder: str | os.PathLike[str]) -> Manifests:
    """Every modelfleet object in `folder` (not its subfolders), exactly as written.

    Data URIs stay as written (relative ones are read from `folder`, see `Manifests.folder`), so
    revisions do not depend on where the folder lies. Raises ManifestError naming the file, the
    object and the field.
    """
    import yaml

    from modelfleet.errors import validation_message

    root = Path(folder).resolve()
    if not root.is_dir():
        raise ManifestError(f"{folder}: not a directory")
    out = Manifests(folder=root)
    for path in sorted(p for p in root.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        try:
            # bytes: YAML reads UTF-8 and UTF-16 (with a BOM) and names the offending byte otherwise
            docs = list(yaml.safe_load_all(path.read_bytes()))
        except yaml.reader.ReaderError as exc:
            byte = f"0x{exc.character:02x}" if isinstance(exc.character, int) else repr(exc.character)
            raise ManifestError(
                f"{path.name}: not UTF-8 text: byte {byte} at position {exc.position} ({exc.reason}); save the file as UTF-8"
            ) from exc
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path.name}: not valid YAML: {exc}") from exc
        except OSError as exc:
            raise ManifestError(f"{path.name}: cannot be read: {exc}") from exc
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            if kind not in BY_KIND:
                continue  # other objects (ConfigMaps, ...) are not ours to reconcile
            name = (doc.get("metadata") or {}).get("name", "?")
            try:
                obj = BY_KIND[kind].model_validate(doc)
            except ValidationError as exc:
                raise ManifestError(f"{path.name}: {kind} {name}: {validation_message(exc)}") from exc
            key = (kind, obj.metadata.name)
            if key in out.sources:
                raise ManifestError(f"{path.name}: {kind} {obj.metadata.name} is also defined in {out.sources[key]}")
            out.sources[key] = path.name
            {"ModelTemplate": out.templates, "ModelInstance": out.instances, "TrainingRun": out.runs}[kind].append(obj)  # type: ignore[attr-defined]
    if not out.templates and not out.instances:
        raise ManifestError(f"{folder}: no ModelTemplate or ModelInstance manifests found")
    return out


def manifest_problems(manifests: Manifests) -> list[str]:
    """What the API would accept but the catalogue and the templates reject, one line per object:
    `file: Kind name: field: message` (unknown techniques, bad params, overrides, a missing template)."""
    from modelfleet.operator.validation import validate_instance, validate_template

    out = []
    valid: dict[str, ModelTemplate | None] = {}
    for t in manifests.templates:
        problems = validate_template(t)
        valid[t.metadata.name] = None if problems else t
        out += [f"{manifests.where('ModelTemplate', t.metadata.name)}: {p.message}" for p in problems[:1]]
    for i in manifests.instances:
        ref = i.spec.template_ref.name
        if ref in valid and valid[ref] is None:
            continue  # the template's own problem is reported once, above
        problems = validate_instance(i, valid.get(ref))
        if problems and problems[0].reason == "TemplateNotFound":
            problems = [replace(problems[0], message=f"spec.templateRef.name: ModelTemplate {ref!r} is not in {manifests.folder}")]
        out += [f"{manifests.where('ModelInstance', i.metadata.name)}: {p.message}" for p in problems[:1]]
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


def sync_store(store: Any, manifests: Manifests, launcher: Any = None, *, prune: bool = False) -> list[str]:
    """Put the folder's objects into the store (like `kubectl apply`); returns the objects the store
    holds that the folder does not (`Kind name`). With `prune` (like `kubectl apply --prune`) those
    are deleted instead, with the runs of deleted instances (their jobs cancelled); without it
    nothing is deleted: they stay, and are reconciled as before."""
    from modelfleet.operator.runs import cancel_run
    from modelfleet.operator.store import FileStore

    assert isinstance(store, FileStore)
    wanted = {
        "ModelTemplate": {t.metadata.name: t for t in manifests.templates},
        "ModelInstance": {i.metadata.name: i for i in manifests.instances},
    }
    extra: list[str] = []
    for kind, objs in wanted.items():
        for obj in objs.values():
            store.put(kind, _body(obj))
        for body in store.list(kind):
            if body["metadata"]["name"] not in objs:
                extra.append(f"{kind} {body['metadata']['name']}")
                if prune:
                    store.delete(kind, body["metadata"]["name"])
    for run in manifests.runs:  # ad-hoc runs a user wrote
        store.create("TrainingRun", _body(run))
    if not prune:
        return extra
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
    return extra


# --- the state folder: whose it is, and who holds it -------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def state_lock(state: Path, folder: Path) -> Iterator[None]:
    """Hold `<state>/lock` (an OS file lock: released when the process ends, however it ends).

    A second process gets CliError(EXIT_LOCKED) naming the holder, from `<state>/lock.json`.
    """
    from filelock import FileLock, Timeout

    state.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = _read_json(state / OWNER_FILE)
        who = f"process {owner.get('pid', '?')} (modelfleet local {owner.get('folder', '?')}, since {owner.get('since', '?')})"
        raise CliError(
            f"state folder {state} is in use by {who}; wait for it to finish, or use another --state", EXIT_LOCKED
        ) from None
    owner_file = state / OWNER_FILE
    try:
        _write_json(owner_file, {"pid": os.getpid(), "folder": str(folder), "since": _stamp()})
        yield
    finally:
        if _read_json(owner_file).get("pid") == os.getpid():
            owner_file.unlink(missing_ok=True)
        lock.release()


def claim_state(state: Path, store: Any, folder: Path, *, prune: bool) -> None:
    """Make the state `folder`'s, or refuse (CliError(EXIT_OTHER_FOLDER)) when it holds the objects
    of another folder and `prune` was not asked for. Call it holding `state_lock`."""
    source = state / SOURCE_FILE
    recorded = _read_json(source).get("folder")
    if recorded and recorded != str(folder) and not prune:
        counts = {k: len(store.list(k)) for k in ("ModelTemplate", "ModelInstance", "TrainingRun")}
        if counts["ModelTemplate"] or counts["ModelInstance"]:
            raise CliError(
                f"state folder {state} holds the objects of {recorded} ({counts['ModelTemplate']} template(s), "
                f"{counts['ModelInstance']} instance(s), {counts['TrainingRun']} run(s)), not of {folder}. "
                f"Give this folder a state of its own (--state DIR), or run with --prune to make this state "
                f"{folder}'s (objects that are not in it are deleted, with their runs; for the same folder "
                f"moved, nothing is deleted and nothing retrains)",
                EXIT_OTHER_FOLDER,
            )
    if recorded != str(folder):
        _write_json(source, {"folder": str(folder), "since": _stamp()})


def state_folder_of(state: Path) -> str | None:
    """The manifests' folder a state was made for (None: unknown, e.g. an older state)."""
    return _read_json(state / SOURCE_FILE).get("folder")


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    base_dir: str | None = None,
    data_checks: Any = None,
) -> Tick:
    """One pass of the operator over the store: plan + apply every template, then every run.

    `base_dir`: where relative data URIs are read from; `data_checks` (`datachecks.DataChecks`):
    the data pre-flight, cached across passes, so each instance's data is checked once.
    """
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
        problems = data_checks.problems(template, members, runs) if data_checks is not None else None
        plan = plan_template(
            template, members, runs, now, output_uri=output_uri, image=image, base_dir=base_dir, data_problems=problems
        )
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


def summary(store: Any, tick: Tick, manifests: Manifests | None = None) -> tuple[list[str], int, list[str]]:
    """(table lines, exit code, problems) for the end of a `modelfleet local` run.

    The code: EXIT_INVALID when an instance's input is bad (its data failed the pre-flight), else
    EXIT_NOT_PROMOTED when any other instance was not promoted, else EXIT_OK.
    """
    rows, problems, code = [], [], EXIT_OK
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
        elif state == "Invalid":
            result = "invalid"
            code = EXIT_INVALID
            where = manifests.where("ModelInstance", name) if manifests else f"ModelInstance {name}"
            problems.append(f"{where}: {info.get('reason')}: {info.get('message')}")
        else:
            result = "not promoted"
            code = max(code, EXIT_NOT_PROMOTED)
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
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete objects in the state that are not in DIR (with their runs); also makes a state made for another folder DIR's",
    )


def load_checked(folder: str | os.PathLike[str]) -> Manifests:
    """`load_manifests` + `manifest_problems`: CliError(EXIT_INVALID) naming file, object and field."""
    try:
        manifests = load_manifests(folder)
    except ManifestError as exc:
        raise CliError(str(exc), EXIT_INVALID) from exc
    problems = manifest_problems(manifests)
    if len(problems) == 1:
        raise CliError(problems[0], EXIT_INVALID)
    if problems:
        raise CliError(f"{len(problems)} invalid manifests:\n  " + "\n  ".join(problems), EXIT_INVALID)
    return manifests


def run(args: argparse.Namespace) -> int:
    from modelfleet.operator.store import FileStore

    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1", EXIT_INVALID)
    # Everything the folder says is checked before the state is touched: bad input loses nothing.
    manifests = load_checked(args.dir)
    assert manifests.folder is not None
    folder = manifests.folder
    state = Path(args.state or DEFAULT_STATE).resolve()
    with state_lock(state, folder):
        store = FileStore(state / "state")
        claim_state(state, store, folder, prune=args.prune)
        return _reconcile(args, manifests, state, store)


def _reconcile(args: argparse.Namespace, manifests: Manifests, state: Path, store: Any) -> int:
    """The loop of `run`, holding the state's lock."""
    from modelfleet.operator.config import DEFAULT_TRAINER_IMAGE, OperatorConfig
    from modelfleet.operator.datachecks import DataChecks
    from modelfleet.operator.launcher import make_launcher

    output_uri = str(state / "runs")
    image = args.image or DEFAULT_TRAINER_IMAGE
    # torchrun must be found next to this interpreter (a venv that is not on PATH).
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    launcher = make_launcher(
        OperatorConfig(scheduler="local_cwd", output_uri=output_uri, log_dir=str(state / "logs"), trainer_image=image)
    )
    extra = sync_store(store, manifests, launcher, prune=args.prune)
    progress = make_view()
    print(f"modelfleet local: {len(manifests.templates)} template(s), {len(manifests.instances)} instance(s); state in {state}")
    if extra and not args.prune:
        print(
            f"modelfleet local: kept {len(extra)} object(s) of the state that are not in {manifests.folder} "
            f"({', '.join(extra[:5])}{', ...' if len(extra) > 5 else ''}); they are reconciled as before. "
            "--prune deletes them, with their runs",
            file=sys.stderr,
        )
    started = time.monotonic()
    base_dir = str(manifests.folder)
    checks = DataChecks(base_dir=base_dir)  # each instance's data once, not once per pass
    try:
        while True:
            tick = reconcile_once(
                store, launcher, dt.datetime.now(dt.UTC), output_uri=output_uri, image=image, workers=args.workers,
                base_dir=base_dir, data_checks=checks,
            )
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
        return EXIT_INTERRUPTED
    finally:
        progress.close()
        close = getattr(launcher, "close", None)
        if close:
            close()
    lines, code, problems = summary(store, tick, manifests)
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
