"""The planner: a pure function from one template's world to the actions that move it forward.

Public API (stable; the kopf `template_rollout` daemon, `modelfleet local` and `plan` call it):

    plan_template(template, instances, runs, now, *, output_uri, image, estimate=None,
                  base_dir=None, data_problems=None) -> Plan

- `template`: the ModelTemplate; `instances`: the ModelInstances that reference it; `runs`: their
  TrainingRuns (any others are ignored); `now`: timezone-aware UTC.
- `output_uri`: base fsspec URI; run R of namespace NS writes under `<output_uri>/<NS>/<R>`.
- `image`: the trainer image when the template names none.
- Runs without the `modelfleet.dev/wave` label (a user's ad-hoc TrainingRun) are left alone.
- `estimate(spec: TrainingSpec) -> Cost | int`: forward FLOPs/example of a resolved spec; default
  the technique catalogue's `estimate_cost` (None when the catalogue is not installed: no budgets).
- `base_dir`: the folder relative data URIs are read from (`modelfleet local`/`plan`: the
  manifests' folder); revisions hash them as written.
- `data_problems`: instance name -> the data pre-flight's problems (`operator/datachecks.py`, run by
  the caller: the planner does no I/O). An instance that would start a run and has problems is
  `Invalid` with the first problem's reason and message (`DataNotFound: spec.data.trainUri: ...`),
  like a manifest the catalogue rejects, and no run is created for it.
- The `Plan` holds the actions (CreateRun, CancelRun, DeleteRun, Promote, PatchStatus, Event, in
  the order they are to be applied), `requeue_after`, and the per-instance conclusions
  (`plan.instances`) and the template status (`plan.template_status`) for the CLIs.

Decisions, per template revision R (see docs/architecture.md for the why):
- instance i is *wanted* when its desired revision (template revision + its own data/overrides) is
  not promoted and no run for it exists yet; blocked (serving budget), invalid and suspended
  instances are never started.
- canaries first: `rollout.canary.count` (or `percent` of the eligible instances, rounded up);
  canaries are the runs of R labelled wave 1 (sticky across plans and restarts), filled up in
  name order. Other instances wait until every canary is promoted (passed the gate). A canary that
  fails (the run or the gate) pauses the rollout (`CanaryFailed`).
- then waves, in name order, bounded by `maxConcurrentRuns` runs in flight (all revisions).
- pause: `rollout.paused`, or failed + gate-failed runs of R >= max(1, failureBudget).
- a run in flight for a revision the instance no longer wants is superseded: Cancel -> CancelRun
  (Superseded); Finish -> it finishes (the instance's next run waits) and is never promoted.
- a succeeded run at the desired revision is promoted if the gate holds (NE not worse than the
  promoted model's by more than `gate.tolerance`, relative; a first model must meet `gate.maxNe`
  when set); otherwise the old model stays and the instance says `GateFailed` with both NEs.
- finished runs beyond `runHistoryLimit` per instance, or older than `ttlSecondsAfterFinished`
  (except the newest), are deleted; never the promoted run, the desired revision's run or one in
  flight.
- statuses are patched only when they differ from the object's (ignoring lastTransitionTime), so
  re-planning an unchanged world emits no actions at all; an instance that still serves its old
  model is not written while it only waits for its wave.
- Events: routine decisions are one Event per plan on the template (`RunsCreated` per wave,
  `Promoted`); Warnings and the rarer decisions (Rerun, Suspended, ...) go on the instance.

O(n + k) for n instances and k runs: one pass to group runs by instance, one pass over instances.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelfleet.api.resolve import instance_revision, template_revision
from modelfleet.api.resources import (
    FINISHED_PHASES,
    ModelInstance,
    ModelTemplate,
    TrainingRun,
    TrainingRunSpec,
)
from modelfleet.operator import status as st
from modelfleet.operator.actions import CancelRun, CreateRun, DeleteRun, Event, PatchStatus, Plan, Promote
from modelfleet.operator.naming import (
    LABEL_INSTANCE,
    LABEL_REVISION,
    LABEL_RUN,
    LABEL_TEMPLATE,
    label_value,
    run_name,
)
from modelfleet.operator.validation import Problem, check_instance, validate_template
from modelfleet.trainer.spec import TrainingSpec

LABEL_WAVE = "modelfleet.dev/wave"  # 1 = canary, 2+ = the waves after it
RESTART_SECONDS = 2.0  # how soon to look again after deleting a stale run that must be re-made

Estimate = Callable[[TrainingSpec], Any]


def _flops(value: Any) -> int | None:
    if value is None:
        return None
    return int(getattr(value, "flops_per_example", value))


def _phase(run: TrainingRun) -> str:
    return (run.status.phase if run.status else None) or "Pending"


def _in_flight(run: TrainingRun) -> bool:
    return _phase(run) not in FINISHED_PHASES


def _wave(run: TrainingRun) -> int:
    try:
        return int(run.metadata.labels.get(LABEL_WAVE, "0"))
    except ValueError:
        return 0


def _finished_at(run: TrainingRun) -> str:
    s = run.status
    extra = run.metadata.model_extra or {}
    return (s.finish_time if s else None) or (s.start_time if s else None) or extra.get("creationTimestamp") or ""


def _ne(metrics: Any) -> float | None:
    if metrics is None:
        return None
    return getattr(metrics, "ne", None) if not isinstance(metrics, dict) else metrics.get("ne")


@dataclass
class _View:
    """What the planner knows about one instance during one plan."""

    inst: ModelInstance
    name: str
    problems: list[Problem] = field(default_factory=list)
    desired: str | None = None
    run_name: str | None = None
    spec: TrainingSpec | None = None
    flops: int | None = None
    blocked: str | None = None  # message when over budget
    runs: list[TrainingRun] = field(default_factory=list)
    current: TrainingRun | None = None  # the run at the desired revision
    active: TrainingRun | None = None  # a run in flight (after supersede decisions)
    promoted: str | None = None
    state: str = "Unknown"
    reason: str = ""
    message: str = ""
    gate_failed: str | None = None
    gate_reason: str | None = None  # one of the GATE_* values when gate_failed
    promote: TrainingRun | None = None
    created: CreateRun | None = None
    restart: bool = False
    decided: bool = False  # an action-level Event was emitted for it this plan


# Why the gate kept a model from promotion: bounded values for metrics (`gateReason` in
# `plan.instances`, `modelfleet_gate_failures_total{reason}`).
GATE_NO_NE, GATE_ABOVE_MAX_NE, GATE_WORSE_THAN_PROMOTED = "no_ne", "above_max_ne", "worse_than_promoted"


def gate(
    template: ModelTemplate, promoted_metrics: Any, promoted_revision: str | None, new_ne: float | None
) -> tuple[str, str] | None:
    """None when a model with `new_ne` may replace the promoted one; else (reason, why not)."""
    g = template.spec.rollout.gate
    if new_ne is None:
        return GATE_NO_NE, "the run reported no NE"
    old = _ne(promoted_metrics) if promoted_revision else None
    if old is None:
        if g.max_ne is not None and new_ne > g.max_ne:
            return GATE_ABOVE_MAX_NE, f"NE {new_ne:.4f} is above rollout.gate.maxNe {g.max_ne:.4f} for a first model"
        return None
    limit = old * (1 + g.tolerance)
    if new_ne > limit:
        return GATE_WORSE_THAN_PROMOTED, (
            f"NE {new_ne:.4f} is worse than the promoted model's NE {old:.4f} (revision {promoted_revision}) "
            f"by more than the tolerance {g.tolerance:g}; keeping the promoted model"
        )
    return None


def canary_count(template: ModelTemplate, eligible: int) -> int:
    c = template.spec.rollout.canary
    if c.count is not None:
        n = c.count
    elif c.percent is not None:
        n = math.ceil(eligible * c.percent / 100)
    else:
        n = 0
    return min(n, eligible)


def plan_template(
    template: ModelTemplate,
    instances: list[ModelInstance],
    runs: list[TrainingRun],
    now: dt.datetime,
    *,
    output_uri: str,
    image: str,
    estimate: Estimate | None = None,
    base_dir: str | None = None,
    data_problems: Mapping[str, Sequence[Any]] | None = None,
) -> Plan:
    plan = Plan()
    tname = template.metadata.name
    ns = template.metadata.namespace or "default"
    rollout = template.spec.rollout
    revision = template_revision(template.spec)
    tgen = template.metadata.generation
    tstatus_old = template.status.model_dump(mode="json", by_alias=True, exclude_none=True) if template.status else {}

    problems = validate_template(template)
    if problems:
        p = problems[0]
        new = {
            "observedGeneration": tgen,
            "conditions": st.stalled(p.reason, p.message, tgen, now, tstatus_old.get("conditions")),
        }
        plan.template_status = st.merge_patch(tstatus_old, new)
        if st.status_changed(tstatus_old, new):
            plan.actions.append(PatchStatus("ModelTemplate", tname, new))
            plan.actions.append(Event("ModelTemplate", tname, "Warning", p.reason, p.message))
        return plan

    # --- one pass over runs, one over instances --------------------------------------------------
    by_instance: dict[str, list[TrainingRun]] = {}
    for run in runs:
        # Runs the planner did not make (a user's ad-hoc run has no wave label) are the user's:
        # never superseded, promoted or garbage-collected here.
        if LABEL_WAVE in run.metadata.labels:
            by_instance.setdefault(run.spec.instance, []).append(run)

    views: list[_View] = []
    for inst in sorted(instances, key=lambda i: i.metadata.name):
        v = _View(inst=inst, name=inst.metadata.name, runs=by_instance.get(inst.metadata.name, []))
        v.promoted = inst.status.promoted_revision if inst.status else None
        desired = instance_revision(template, inst, template_rev=revision)
        uri = f"{output_uri.rstrip('/')}/{ns}/{run_name(v.name, desired)}"
        v.problems, v.spec, cost = check_instance(
            inst, template, output_uri=uri, estimate=estimate, template_valid=True, base_dir=base_dir
        )
        if not v.problems:
            v.desired = desired
            v.run_name = run_name(v.name, v.desired)
            v.flops = _flops(cost)
            budget = inst.spec.serving_budget.max_flops_per_example
            if budget is not None and v.flops is not None and v.flops > budget:
                v.blocked = (
                    f"estimated {v.flops:,} FLOPs/example at revision {v.desired} exceeds "
                    f"spec.servingBudget.maxFlopsPerExample {budget:,}"
                )
            for run in v.runs:
                if run.spec.revision == v.desired:
                    v.current = run
            # Bad data stops only a run about to be queued: a promoted model or a run already made
            # does not depend on the files being there now.
            needs_run = v.promoted != v.desired and (v.current is None or _phase(v.current) in ("Superseded", "Cancelled"))
            found = (data_problems or {}).get(v.name) if needs_run else None
            if found:
                v.problems = [Problem(p.reason, p.field, p.message) for p in found]
        views.append(v)

    # --- supersede, promote, gate ------------------------------------------------------------
    in_flight = 0
    failures: list[str] = []  # "run (reason)" of this template revision's runs that failed or failed the gate
    for v in views:
        if v.problems:
            v.active = next((r for r in v.runs if _in_flight(r)), None)
            in_flight += v.active is not None
            continue
        for run in v.runs:
            if not _in_flight(run) or run is v.current:
                continue
            if rollout.on_supersede == "Cancel":
                msg = f"{run.metadata.name}: revision {run.spec.revision} superseded by {v.desired}"
                plan.actions.append(CancelRun(run.metadata.name, "Superseded", "Superseded", msg))
                v.decided = True
            else:
                v.active = v.active or run
        cur = v.current
        if cur is not None and _in_flight(cur):
            v.active = cur
        in_flight += v.active is not None
        if cur is None or v.promoted == v.desired:
            continue
        phase = _phase(cur)
        counts = cur.spec.template_revision == revision
        if phase == "Succeeded":
            metrics = cur.status.metrics if cur.status else None
            failed = gate(template, v.inst.status.metrics if v.inst.status else None, v.promoted, _ne(metrics))
            if failed is None:
                v.promote = cur
            else:
                v.gate_reason, why = failed
                v.gate_failed = f"run {cur.metadata.name}: {why}"
                if counts:
                    failures.append(f"{cur.metadata.name} (GateFailed)")
        elif phase == "Failed" and counts:
            failures.append(f"{cur.metadata.name} ({(cur.status.reason if cur.status else None) or 'RunFailed'})")
        elif phase in ("Superseded", "Cancelled"):
            v.restart = True  # the revision is wanted again: remake its run (same name) next plan

    # --- the rollout: canaries, waves, pause -----------------------------------------------------
    eligible = [v for v in views if not v.problems and not v.blocked and not v.inst.spec.suspend]
    n_canary = canary_count(template, len(eligible))
    canaries = [
        v
        for v in eligible
        if v.current is not None and v.current.spec.template_revision == revision and _wave(v.current) == 1
    ]
    later_runs = sum(
        1 for v in views for r in v.runs if r.spec.template_revision == revision and _wave(r) >= 2
    )
    wanted = [
        v
        for v in eligible
        if v.promoted != v.desired and (v.current is None or v.restart) and v.active is None
    ]

    pause_reason = pause_message = None
    if rollout.paused:
        pause_reason, pause_message = "RolloutPaused", "rollout.paused is true: no new runs start"
    elif failures and len(failures) >= max(1, rollout.failure_budget):
        pause_reason = "FailureBudgetExhausted"
        pause_message = (
            f"{len(failures)} runs of revision {revision} failed or failed the gate "
            f"(rollout.failureBudget {rollout.failure_budget}): {', '.join(sorted(failures))}"
        )
    canary_stage = n_canary > 0 and later_runs == 0
    if canary_stage and pause_reason is None:
        bad = [
            f"{v.current.metadata.name} ({'GateFailed' if v.gate_failed else (v.current.status.reason if v.current.status else None) or 'RunFailed'})"  # type: ignore[union-attr]
            for v in canaries
            if v.gate_failed or _phase(v.current) == "Failed"  # type: ignore[union-attr]
        ]
        if bad:
            pause_reason = "CanaryFailed"
            pause_message = f"canary run(s) {', '.join(bad)} failed or failed the gate; the rollout of {revision} is paused"

    slots = max(0, rollout.max_concurrent_runs - in_flight)
    start: list[tuple[_View, int]] = []
    if pause_reason is None:
        if canary_stage:
            need = n_canary - len(canaries)
            for v in wanted:
                if need <= 0 or slots <= 0:
                    break
                if v.restart:
                    continue
                start.append((v, 1))
                need -= 1
                slots -= 1
            chosen = {id(v) for v, _ in start}
            fillable = any(not v.restart and id(v) not in chosen for v in wanted)
            full = need <= 0 or not fillable
            passed = all(v.promote is not None or v.promoted == v.desired for v in canaries)
            canary_stage = not (full and not start and passed)
        if not canary_stage:
            chosen = {id(v) for v, _ in start}
            n = later_runs
            for v in wanted:
                if slots <= 0:
                    break
                if id(v) in chosen or v.restart:
                    continue
                start.append((v, 2 + n // rollout.max_concurrent_runs))
                n += 1
                slots -= 1

    # --- actions for the runs ----------------------------------------------------------------
    max_wave = max((_wave(r) for v in views for r in v.runs if r.spec.template_revision == revision), default=0)
    created: dict[int, list[str]] = {}
    for v, wave in start:
        assert v.spec is not None and v.run_name is not None and v.desired is not None
        labels = {
            LABEL_TEMPLATE: label_value(tname),
            LABEL_INSTANCE: label_value(v.name),
            LABEL_REVISION: label_value(v.desired),
            LABEL_RUN: label_value(v.run_name),
            LABEL_WAVE: str(wave),
        }
        spec = TrainingRunSpec(
            instance=v.name,
            revision=v.desired,
            template_revision=revision,
            training=v.spec,
            resources=v.inst.spec.resources,
            image=template.spec.image or image,
        )
        v.created = CreateRun(v.name, v.run_name, spec, wave, labels, owner_uid=v.inst.metadata.uid)
        plan.actions.append(v.created)
        created.setdefault(wave, []).append(v.run_name)
        v.decided = True
        max_wave = max(max_wave, wave)
    # Routine decisions are one Event on the template per plan, not one per instance: Events are
    # API writes too, and a rollout must cost O(1) writes per instance beyond its state.
    for wave, names in sorted(created.items()):
        kind = "canary" if wave == 1 else f"wave {wave}"
        plan.actions.append(
            Event("ModelTemplate", tname, "Normal", "RunsCreated", f"{kind}: created {len(names)} run(s) for revision {revision}: {_names(names)}")
        )
    requeue: list[float] = []
    promoted: list[str] = []
    for v in views:
        if v.restart and v.current is not None:
            plan.actions.append(DeleteRun(v.current.metadata.name, "Rerun"))
            plan.actions.append(
                Event("ModelInstance", v.name, "Normal", "Rerun", f"revision {v.desired} is wanted again: remaking run {v.current.metadata.name}")
            )
            v.decided = True
            requeue.append(RESTART_SECONDS)
        if v.promote is not None:
            run = v.promote
            m = run.status.metrics  # type: ignore[union-attr]
            assert m is not None
            plan.actions.append(Promote(v.name, run.metadata.name, run.spec.revision, m, run.spec.training.output_uri))
            old = _ne(v.inst.status.metrics if v.inst.status else None)
            vs = f", was {old:.4f}" if old is not None and v.promoted else ""
            promoted.append(f"{v.name} (NE {m.ne:.4f}{vs})")
            v.decided = True
    if promoted:
        plan.actions.append(
            Event("ModelTemplate", tname, "Normal", "Promoted", f"promoted {len(promoted)} instance(s) at revision {revision}: {_names(promoted)}")
        )

    # --- garbage collection ------------------------------------------------------------------
    ttl = rollout.ttl_seconds_after_finished
    for v in views:
        if v.problems:
            continue
        keep = {v.run_name, run_name(v.name, v.promoted) if v.promoted else None}
        finished = sorted((r for r in v.runs if not _in_flight(r)), key=_finished_at, reverse=True)
        kept = 0
        for i, run in enumerate(finished):
            name = run.metadata.name
            if name in keep or (v.restart and run is v.current):
                continue
            expired = False
            if ttl is not None and i > 0:
                done = st.parse_time(_finished_at(run))
                if done is not None:
                    left = (done + dt.timedelta(seconds=ttl) - now).total_seconds()
                    expired = left <= 0
                    if not expired:
                        requeue.append(left)
            if kept < rollout.run_history_limit and not expired:
                kept += 1
                continue
            why = "TTLExpired" if expired else "HistoryLimit"
            plan.actions.append(DeleteRun(name, why))

    # --- instance statuses ---------------------------------------------------------------------
    started = {id(v) for v, _ in start}
    counts = {"upToDate": 0, "training": 0, "failed": 0, "blocked": 0}
    adoption: dict[str, int] = {t.name: 0 for t in template.spec.techniques}
    for v in views:
        _conclude(v, template, revision, pause_reason, pause_message, canary_stage, id(v) in started)
        if v.state == "UpToDate":
            counts["upToDate"] += 1
        elif v.state == "Training":
            counts["training"] += 1
        elif v.state in ("Failed", "GateFailed"):
            counts["failed"] += 1
        elif v.state in ("Blocked", "Invalid"):
            counts["blocked"] += 1
        new = _instance_status(v, revision, now)
        techniques = new.get("techniques", v.inst.status.techniques if v.inst.status else [])
        if v.promoted or v.promote:
            for t in techniques or ():
                adoption[t] = adoption.get(t, 0) + 1
        old = v.inst.status.model_dump(mode="json", by_alias=True, exclude_none=True) if v.inst.status else {}
        old_ready = st.find(old.get("conditions"), "Ready") or {}
        # A served instance that merely waits its turn keeps its Ready status (its model is still
        # good); its next write is the one that starts its run. The template counts the queue.
        served_and_queued = (
            v.state == "Waiting"
            and v.reason == "Queued"
            and old_ready.get("status") == "True"
            and old.get("observedGeneration") == v.inst.metadata.generation
        )
        if not served_and_queued and st.status_changed(old, new):
            plan.actions.append(PatchStatus("ModelInstance", v.name, new))
            routine = v.reason in ("Queued", "Training", "Promoted")
            if not v.decided and not routine and (old_ready.get("reason"), old_ready.get("message")) != (v.reason, v.message):
                bad = v.state in ("Failed", "GateFailed", "Blocked", "Invalid")
                plan.actions.append(Event("ModelInstance", v.name, "Warning" if bad else "Normal", v.reason, v.message))
        plan.instances[v.name] = {
            "state": v.state,
            "reason": v.reason,
            "message": v.message,
            "revision": v.desired,
            "promotedRevision": v.desired if v.promote else v.promoted,
            "run": v.created.name if v.created else (v.active.metadata.name if v.active else (v.current.metadata.name if v.current else None)),
            "flopsPerExample": v.flops,
            "maxFlopsPerExample": v.inst.spec.serving_budget.max_flops_per_example,
            "techniques": sorted(t.name for t in v.spec.techniques) if v.spec else [],
            "promotedTechniques": list(v.inst.status.techniques) if v.inst.status else [],
            "wave": v.created.wave if v.created else None,
            "gateReason": v.gate_reason if v.state == "GateFailed" else None,
        }

    # --- template status -----------------------------------------------------------------------
    total = len(views)
    waiting = sum(1 for v in views if v.state == "Waiting")
    if total == 0:
        phase = "Idle"
    elif pause_reason and (waiting or counts["training"]):
        phase = "Paused"
    elif canary_stage and (waiting or counts["training"]):
        phase = "Canary"
    elif waiting or counts["training"]:
        phase = "Rolling"
    else:
        phase = "Complete"
    summary = (
        f"{counts['upToDate']}/{total} instances at revision {revision}; {counts['training']} training, "
        f"{waiting} waiting, {counts['failed']} failed, {counts['blocked']} blocked"
    )
    if counts["blocked"]:
        summary += f" ({_names([f'{v.name}: {v.reason}' for v in views if v.state in ('Blocked', 'Invalid')])})"
    if phase == "Idle":
        conds = (("True", "NoInstances", "no ModelInstance references this template"), ("False", "NoInstances", ""), ("False", "NoInstances", ""))
    elif phase == "Paused" and pause_reason == "RolloutPaused":
        conds = (("False", pause_reason, f"{pause_message}; {summary}"), ("False", pause_reason, pause_message), ("False", pause_reason, ""))
    elif phase == "Paused":
        text = f"{pause_message}; {summary}"
        conds = (("False", pause_reason, text), ("False", pause_reason, text), ("True", pause_reason, text))
    elif phase in ("Canary", "Rolling"):
        reason = "CanaryRunning" if phase == "Canary" else "RollingOut"
        conds = (("False", reason, summary), ("True", reason, summary), ("False", reason, ""))
    elif counts["failed"]:
        bad = _names([f"{v.name} ({v.reason})" for v in views if v.state in ("Failed", "GateFailed")])
        text = f"{summary}; failed: {bad}"
        conds = (("False", "InstancesFailed", text), ("False", "InstancesFailed", ""), ("True", "InstancesFailed", text))
    else:
        conds = (("True", "RolloutComplete", summary), ("False", "RolloutComplete", ""), ("False", "RolloutComplete", ""))
    changed_at = tstatus_old.get("revisionChangedAt") if tstatus_old.get("revision") == revision else None
    new_t = {
        "observedGeneration": tgen,
        "revision": revision,
        "instances": total,
        **counts,
        "wave": max_wave,
        "rolloutPhase": phase,
        "techniques": [{"name": k, "instances": adoption[k]} for k in sorted(adoption)],
        "revisionChangedAt": changed_at or st.timestamp(now),
        "conditions": st.conditions(*conds, tgen, now, tstatus_old.get("conditions")),
    }
    plan.template_status = st.merge_patch(tstatus_old, new_t)
    if st.status_changed(tstatus_old, new_t):
        plan.actions.append(PatchStatus("ModelTemplate", tname, new_t))
        if tstatus_old.get("revision") != revision:
            plan.actions.append(
                Event("ModelTemplate", tname, "Normal", "RevisionChanged", f"revision {tstatus_old.get('revision')} -> {revision}")
            )
        old_ready = st.find(tstatus_old.get("conditions"), "Ready") or {}
        if old_ready.get("reason") != conds[0][1] or tstatus_old.get("rolloutPhase") != phase:
            plan.actions.append(
                Event("ModelTemplate", tname, "Warning" if conds[2][0] == "True" else "Normal", conds[0][1], conds[0][2])
            )
    plan.requeue_after = min(requeue) if requeue else None
    return plan


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def _conclude(
    v: _View,
    template: ModelTemplate,
    revision: str,
    pause_reason: str | None,
    pause_message: str | None,
    canary_stage: bool,
    started: bool,
) -> None:
    """The instance's state, reason and message (its Ready condition) after this plan."""
    if v.problems:
        p = v.problems[0]
        v.state, v.reason, v.message = "Invalid", p.reason, p.message
    elif v.blocked:
        v.state, v.reason, v.message = "Blocked", "BudgetExceeded", v.blocked
    elif v.promote is not None or v.promoted == v.desired:
        ne = _ne(v.promote.status.metrics if v.promote else (v.inst.status.metrics if v.inst.status else None))  # type: ignore[union-attr]
        ne_text = f" (NE {ne:.4f})" if ne is not None else ""
        v.state, v.reason, v.message = "UpToDate", "Promoted", f"model at revision {v.desired} promoted{ne_text}"
    elif v.gate_failed:
        v.state, v.reason, v.message = "GateFailed", "GateFailed", v.gate_failed
    elif v.current is not None and _phase(v.current) == "Failed" and not v.restart:
        s = v.current.status
        v.state = "Failed"
        v.reason = (s.reason if s else None) or "RunFailed"
        v.message = f"run {v.current.metadata.name} failed: {(s.message if s else None) or v.reason}"
    elif started or (v.active is not None and v.active is v.current):
        name = v.run_name
        s = v.current.status if v.current is not None and not started else None
        # A pending job's specific reason (Unschedulable, Inadmissible, ImagePullBackOff) bubbles up.
        v.state = "Training"
        v.reason = (s.reason if s and s.reason and s.phase == "Pending" else None) or "Training"
        v.message = f"training revision {v.desired} in run {name}"
        if v.reason != "Training" and s and s.message:
            v.message += f": {s.message}"
    elif v.active is not None:
        v.state, v.reason = "Waiting", "WaitingForSupersededRun"
        v.message = f"run {v.active.metadata.name} (revision {v.active.spec.revision}) finishes first (rollout.onSupersede: Finish)"
    elif v.inst.spec.suspend:
        v.state, v.reason, v.message = "Suspended", "Suspended", f"spec.suspend is true: revision {v.desired} is not trained"
    elif v.restart:
        v.state, v.reason, v.message = "Waiting", "Rerun", f"revision {v.desired} is wanted again; its run is remade"
    elif pause_reason:
        v.state, v.reason, v.message = "Waiting", pause_reason, f"waiting for revision {v.desired}: {pause_message}"
    else:
        # One reason for "canary first" and "no free slot": the template's status says which, and
        # an instance waiting through both costs one status write, not two.
        v.state, v.reason = "Waiting", "Queued"
        v.message = (
            f"revision {v.desired} waits its turn: canaries first, then waves of at most "
            f"{template.spec.rollout.max_concurrent_runs} runs (rollout.maxConcurrentRuns)"
        )


def _instance_status(v: _View, revision: str, now: dt.datetime) -> dict[str, Any]:
    gen = v.inst.metadata.generation
    old = v.inst.status
    previous = [c.model_dump(mode="json", by_alias=True) for c in old.conditions] if old else []
    if v.state == "Invalid":
        # The same shape the kopf instance handler writes for a problem, so the two never fight.
        return {"observedGeneration": gen, "conditions": st.stalled(v.reason, v.message, gen, now, previous)}
    if v.state == "UpToDate":
        conds = st.conditions(("True", v.reason, v.message), ("False", v.reason, ""), ("False", v.reason, ""), gen, now, previous)
    elif v.state in ("Blocked", "Failed", "GateFailed"):
        conds = st.stalled(v.reason, v.message, gen, now, previous)
    elif v.state in ("Training", "Waiting") and v.reason not in ("RolloutPaused", "FailureBudgetExhausted", "CanaryFailed"):
        conds = st.conditions(("False", v.reason, v.message), ("True", v.reason, v.message), ("False", v.reason, ""), gen, now, previous)
    else:  # suspended, or waiting on a paused rollout: nothing moves until a user acts
        conds = st.conditions(("False", v.reason, v.message), ("False", v.reason, ""), ("False", v.reason, ""), gen, now, previous)
    out: dict[str, Any] = {
        "observedGeneration": gen,
        "templateRevision": revision,
        "targetRevision": v.desired,
        "activeRun": v.run_name if v.created else (v.active.metadata.name if v.active else None),
        "estimatedFlopsPerExample": v.flops,
        "conditions": conds,
    }
    if v.promote is not None:
        run = v.promote
        out["promotedRevision"] = run.spec.revision
        out["metrics"] = run.status.metrics.model_dump(mode="json", by_alias=True, exclude_none=True)  # type: ignore[union-attr]
        out["modelUri"] = run.spec.training.output_uri
        out["techniques"] = sorted(t.name for t in run.spec.training.techniques)
    if v.current is not None and not _in_flight(v.current) and not v.restart:
        out["lastRunPhase"] = _phase(v.current)
    return out
