"""`modelfleet plan -f DIR`: a dry run -- what a change would retrain and why, what it would cost.

    modelfleet plan -f DIR [--state DIR] [--cluster [--namespace NS] [--server URL]] [-o text|json]

Reads the manifests in DIR (as `modelfleet local` does), takes the current state -- statuses and
runs -- from the `modelfleet local` state folder (`--state`, default `.modelfleet/`, when present)
or, with `--cluster`, from the cluster (kubeconfig or in-cluster config, read-only list calls), and
runs the operator's planner over them without applying anything. Nothing is written anywhere.

It prints, per template: the revision change and the technique diff (added, removed, params
changed) against what each instance's promoted model was trained with; per instance: retrain /
training / up to date / blocked / failed, and why; and the estimated cost of the retraining:

- runs: how many training runs the change needs (one per instance that is not up to date);
- training FLOPs: 3 x the catalogue's forward FLOPs/example (forward + backward ~ 2x forward)
  x examples processed (recipe.steps x batchSize; for epochs, rows x epochs when the data is the
  synthetic generator, whose row count is in the spec; otherwise per training example only);
- accelerators: jobs x nodes x GPUs per node from each instance's resources (GPU-hours need a
  measured throughput, which a dry run does not have).

Data pre-flight: each instance that would retrain has its data checked (`trainer/preflight.py`:
the URI's scheme, the files exist and are not empty, ...); one with problems is `invalid` with the
reason and the field (`DataNotFound: spec.data.trainUri: ...`), as the operator would say it.

Exit status: 0; 2 for bad input -- a manifest the API or the catalogue rejects (file, object and
field named on stderr; a schema error stops before planning, the others are shown in the plan
too), or an instance whose data fails the pre-flight.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from modelfleet.api.resources import ModelInstance, ModelTemplate, TrainingRun

RETRAIN_STATES = ("Training", "Waiting")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", dest="dir", required=True, metavar="DIR", help="folder of manifests")
    parser.add_argument("--state", default=None, help="modelfleet local state folder (default .modelfleet/ if present)")
    parser.add_argument("--cluster", action="store_true", help="read current state from the cluster instead")
    parser.add_argument("--namespace", default="default", help="namespace to read with --cluster (default: default)")
    parser.add_argument("--server", default=None, help="with --cluster: API server URL (default: kubeconfig or in-cluster)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")


# --- the world as it is, plus the manifests as they would be ----------------------------------


def _with_state(obj: Any, current: dict[str, Any] | None) -> Any:
    """The manifest's object carrying the stored object's status and identity (what would be)."""
    if current is None:
        return obj
    from modelfleet.operator.local import parse

    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    meta = current.get("metadata") or {}
    generation = int(meta.get("generation") or 1)
    if (current.get("spec") or {}) != body.get("spec"):
        generation += 1  # what the API server would do with this spec
    body["metadata"].update({"generation": generation, **({"uid": meta["uid"]} if meta.get("uid") else {})})
    if current.get("status"):
        body["status"] = {k: v for k, v in current["status"].items() if k != "kopf"}
    return parse(type(obj), body)


def _technique_diff(new: list[Any], old: list[dict[str, Any]] | None, old_names: list[str]) -> list[str]:
    """+added, -removed, ~name: params old -> new."""
    new_map = {t.name: t.params for t in new}
    if old is None:  # only names are known (the promoted run was garbage-collected)
        old_map = {n: None for n in old_names}
    else:
        old_map = {t["name"]: t.get("params") or {} for t in old}
    out = []
    for name in sorted(new_map.keys() - old_map.keys()):
        out.append(f"+{name}{_params(new_map[name])}")
    for name in sorted(old_map.keys() - new_map.keys()):
        out.append(f"-{name}")
    for name in sorted(new_map.keys() & old_map.keys()):
        if old_map[name] is not None and old_map[name] != new_map[name]:
            out.append(f"~{name}{_params(old_map[name])} -> {_params(new_map[name])}")
    return out


def _params(params: dict[str, Any] | None) -> str:
    if not params:
        return ""
    return "(" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: value}


def _spec_diff(new: Any, old: dict[str, Any] | None) -> list[str]:
    """Changed fields of architecture, recipe, data and event vs the promoted run's spec."""
    if old is None:
        return []
    cur = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    out = []
    for section in ("architecture", "recipe", "data", "event"):
        a, b = _flat(old.get(section), section), _flat(cur.get(section), section)
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                out.append(f"{key} {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _train_flops(spec: Any, fwd: int | None) -> tuple[int | None, str]:
    """(training FLOPs of one run or None, how it was estimated)."""
    if fwd is None:
        return None, "no cost model (technique catalogue not installed)"
    r = spec.recipe
    if r.steps:
        examples = r.steps * r.batch_size
        return 3 * fwd * examples, f"3 x {fwd:,} FLOPs/example x {r.steps} steps x {r.batch_size}"
    if spec.data.format == "synthetic" and spec.data.synthetic:
        rows = int(spec.data.synthetic.rows * (1 - spec.data.eval_fraction))
        return 3 * fwd * rows * r.epochs, f"3 x {fwd:,} FLOPs/example x {rows} rows x {r.epochs} epochs"
    return None, f"3 x {fwd:,} FLOPs per training example x {r.epochs} epoch(s) x rows (row count not known without reading the data)"


def build_report(
    templates: list[ModelTemplate],
    instances: list[ModelInstance],
    state: Any | None,
    now: dt.datetime,
    *,
    output_uri: str = "<output>",
    image: str = "<image>",
    base_dir: str | None = None,
    data_checks: Any = None,
) -> dict[str, Any]:
    """The dry run as data. `state`: a Store to read current objects from, or None.

    `base_dir`: the manifests' folder (relative data URIs are read from it); `data_checks`
    (`datachecks.DataChecks`): the data pre-flight, whose problems make an instance `Invalid`.
    """
    from modelfleet.operator import status as st
    from modelfleet.operator.local import parse
    from modelfleet.operator.planner import plan_template

    def current(kind: str, name: str) -> dict[str, Any] | None:
        return state.get(kind, name) if state is not None else None

    stored_runs: dict[str, list[TrainingRun]] = {}
    if state is not None:
        for body in state.list("TrainingRun"):
            run = parse(TrainingRun, body)
            stored_runs.setdefault(run.spec.instance, []).append(run)
    report: dict[str, Any] = {"templates": [], "orphans": []}
    names = {t.metadata.name for t in templates}
    for inst in instances:
        if inst.spec.template_ref.name not in names:
            report["orphans"].append(
                {"instance": inst.metadata.name, "reason": "TemplateNotFound", "message": f"spec.templateRef.name: ModelTemplate {inst.spec.template_ref.name!r} not in the manifests"}
            )
    total_runs, total_flops, unknown_flops, gpus = 0, 0, 0, 0
    for t in templates:
        tmpl = _with_state(t, current("ModelTemplate", t.metadata.name))
        members = [
            _with_state(i, current("ModelInstance", i.metadata.name))
            for i in instances
            if i.spec.template_ref.name == t.metadata.name
        ]
        runs = [r for i in members for r in stored_runs.get(i.metadata.name, [])]
        by_name = {r.metadata.name: r for r in runs}
        problems = data_checks.problems(tmpl, members, runs) if data_checks is not None else None
        plan = plan_template(
            tmpl, members, runs, now, output_uri=output_uri, image=image, base_dir=base_dir, data_problems=problems
        )
        old_rev = tmpl.status.revision if tmpl.status else None
        # An invalid template stops the planner before its instances: they wait for its fix.
        ready = st.find(plan.template_status.get("conditions"), "Ready") or {}
        problem = ready if not plan.instances and ready.get("status") == "False" else None
        rows = []
        for inst in members:
            info = plan.instances.get(inst.metadata.name) or {
                "state": "Invalid",
                "reason": "TemplateInvalid",
                "message": f"waits for ModelTemplate {t.metadata.name} to be fixed ({ready.get('reason')})",
            }
            promoted = info.get("promotedRevision")
            from modelfleet.api.resolve import resolve_training_spec
            from modelfleet.operator.naming import run_name

            old_run = by_name.get(run_name(inst.metadata.name, promoted)) if promoted else None
            old_spec = old_run.spec.training.model_dump(mode="json", by_alias=True, exclude_none=True) if old_run else None
            row: dict[str, Any] = {
                "instance": inst.metadata.name,
                "state": info["state"],
                "reason": info["reason"],
                "message": info["message"],
                "revision": info.get("revision"),
                "promotedRevision": promoted,
                "flopsPerExample": info.get("flopsPerExample"),
                "maxFlopsPerExample": info.get("maxFlopsPerExample"),
            }
            found = (problems or {}).get(inst.metadata.name)
            if found and info["state"] == "Invalid":
                row["dataProblems"] = [{"reason": p.reason, "field": p.field, "message": p.message} for p in found]
            if info["state"] in RETRAIN_STATES and info.get("revision"):
                spec = resolve_training_spec(tmpl, inst, output_uri=output_uri, base_dir=base_dir)
                if promoted:
                    row["techniqueDiff"] = _technique_diff(
                        spec.techniques,
                        old_spec.get("techniques") if old_spec else None,
                        info.get("promotedTechniques") or [],
                    )
                    row["specDiff"] = _spec_diff(spec, old_spec)
                    row["why"] = "; ".join(
                        filter(None, [", ".join(row["techniqueDiff"]), ", ".join(row["specDiff"][:6])])
                    ) or f"revision {promoted} -> {info['revision']}"
                else:
                    row["why"] = "no promoted model yet"
                in_flight = info["state"] == "Training" and info.get("run") and info.get("run") in by_name
                if not in_flight:
                    flops, how = _train_flops(spec, info.get("flopsPerExample"))
                    row["trainFlops"], row["trainFlopsEstimate"] = flops, how
                    total_runs += 1
                    res = inst.spec.resources
                    gpus += res.nnodes * res.gpus_per_node
                    if flops is None:
                        unknown_flops += 1
                    else:
                        total_flops += flops
                else:
                    row["why"] = f"already training in run {info.get('run')}"
            rows.append(row)
        report["templates"].append(
            {
                "template": t.metadata.name,
                "revision": plan.template_status.get("revision"),
                "previousRevision": old_rev,
                "rolloutPhase": plan.template_status.get("rolloutPhase"),
                "problem": {"reason": problem.get("reason"), "message": problem.get("message")} if problem else None,
                "instances": rows,
                "rollout": tmpl.spec.rollout.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        )
    report["cost"] = {
        "runs": total_runs,
        "trainFlops": total_flops,
        "runsWithUnknownFlops": unknown_flops,
        "gpus": gpus,
        "note": "training FLOPs = 3 x forward FLOPs/example (the technique catalogue's cost model) x examples processed",
    }
    return report


def _human(n: int) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} "


def render(report: dict[str, Any]) -> str:
    from modelfleet.operator.local import _table

    out: list[str] = []
    for t in report["templates"]:
        prev = t["previousRevision"]
        change = f"{prev} -> {t['revision']}" if prev and prev != t["revision"] else f"{t['revision']} (unchanged)" if prev else f"{t['revision']} (new)"
        r = t["rollout"]
        canary = r.get("canary", {})
        if t.get("problem"):
            change = f"invalid: {t['problem']['reason']}: {t['problem']['message']}"
        out.append(f"template {t['template']}: revision {change}")
        out.append(
            f"  rollout: canary {canary.get('count', str(canary.get('percent')) + '%')}, then waves of at most "
            f"{r.get('maxConcurrentRuns')}; gate tolerance {r.get('gate', {}).get('tolerance')}"
        )
        rows = []
        for i in t["instances"]:
            action = {
                "Waiting": "retrain",
                "Training": "training" if "already" in i.get("why", "") else "retrain",
                "UpToDate": "up to date",
                "Blocked": "blocked",
                "Invalid": "invalid",
                "Suspended": "suspended",
            }.get(i["state"], i["state"].lower())
            why = i.get("why") or ("" if i["state"] == "UpToDate" else f"{i['reason']}: {i['message']}")
            rows.append([i["instance"], action, i.get("revision") or "-", _human(i["flopsPerExample"]).strip() if i.get("flopsPerExample") else "-", why])
        out.extend("  " + line for line in _table(["INSTANCE", "ACTION", "REVISION", "FLOPS/EX", "WHY"], rows))
        out.append("")
    for o in report["orphans"]:
        out.append(f"instance {o['instance']}: {o['reason']}: {o['message']}")
    c = report["cost"]
    line = f"estimated cost: {c['runs']} training run(s)"
    if c["runs"]:
        line += f", {_human(c['trainFlops'])}FLOPs"
        if c["runsWithUnknownFlops"]:
            line += f" (+{c['runsWithUnknownFlops']} run(s) whose example count is unknown)"
        line += f", {c['gpus']} GPU(s) requested in all"
        line += f"\n  ({c['note']}; per run: see -o json trainFlopsEstimate)"
    out.append(line)
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from modelfleet.errors import CliError
    from modelfleet.operator.datachecks import DataChecks
    from modelfleet.operator.local import DEFAULT_STATE, ManifestError, load_manifests, manifest_problems, state_folder_of
    from modelfleet.operator.store import FileStore

    try:
        manifests = load_manifests(args.dir)
    except ManifestError as exc:
        raise CliError(str(exc), 2) from exc
    problems = manifest_problems(manifests)  # shown in the plan too; they make the exit status 2
    state: Any = None
    if args.cluster:
        from modelfleet.operator import kube

        state = kube.KubeStore(kube.make_api_client(args.server), args.namespace)  # reads only: get and list
    else:
        root = Path(args.state or DEFAULT_STATE)
        folder = root / "state"
        if folder.is_dir():
            state = FileStore(folder)
            made_for = state_folder_of(root)
            if made_for and made_for != str(manifests.folder):
                print(
                    f"modelfleet plan: the state {root} was made for {made_for}, not {manifests.folder}; "
                    "planning against it (objects match by name)",
                    file=sys.stderr,
                )
        elif args.state:
            print(f"modelfleet plan: no state under {folder}; planning from scratch", file=sys.stderr)
    base_dir = str(manifests.folder)
    report = build_report(
        manifests.templates,
        manifests.instances,
        state,
        dt.datetime.now(dt.UTC),
        base_dir=base_dir,
        data_checks=DataChecks(base_dir=base_dir),
    )
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    for t in report["templates"]:
        for row in t["instances"]:
            for p in row.get("dataProblems") or ():
                problems.append(f"{manifests.where('ModelInstance', row['instance'])}: {p['reason']}: {p['message']}")
    for line in problems:
        print(f"modelfleet plan: {line}", file=sys.stderr)
    return 2 if problems else 0
