"""The planner over a file-backed world with a fake launcher: rollout order, gate, pause, block,
supersede, suspend, GC, and no writes when nothing changed."""

from __future__ import annotations

import datetime as dt

import pytest
from op_world import FakeLauncher, World, instance, parse, template

from modelfleet.api.resources import TrainingRun
from modelfleet.operator.actions import CancelRun, CreateRun, DeleteRun, Event, PatchStatus, Promote
from modelfleet.operator.apply import apply_plan
from modelfleet.operator.planner import LABEL_WAVE, plan_template
from modelfleet.operator.store import FileStore

NEW_TECHS = [{"name": "grad-clip", "params": {"maxNorm": 1.0}}, {"name": "dropout", "params": {"p": 0.1}}]


def cond(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def running(w: World) -> list[str]:
    return sorted(j["run"] for j in w.launcher.jobs.values() if j["state"] in ("RUNNING", "PENDING"))


def finish_all(w: World, ok: bool = True, **kw) -> list[str]:
    names = running(w)
    for n in names:
        w.launcher.finish(n, ok, **kw)
    return names


def converge(w: World, limit: int = 50) -> None:
    """Step and finish every job successfully until the world stops changing."""
    for _ in range(limit):
        writes = w.store.writes
        w.step()
        if not finish_all(w) and w.store.writes == writes:
            return
    raise AssertionError("did not converge")


def fleet(tmp_path, n: int = 5, **rollout) -> World:
    w = World(tmp_path)
    w.put(template(rollout={"maxConcurrentRuns": 2, **rollout}))
    for i in range(n):
        w.put(instance(f"m{i}"))
    return w


def retemplate(w: World, techniques=NEW_TECHS, **rollout) -> None:
    t = w.template()
    body = template(techniques=techniques, rollout={**t.spec.rollout.model_dump(by_alias=True), **rollout})
    w.put(body)


# --- rollout order -------------------------------------------------------------------------------


def test_canary_first_then_waves_bounded_by_max_concurrent_runs(tmp_path):
    w = fleet(tmp_path, n=5)
    max_in_flight = 0
    order: list[list[str]] = []
    for _ in range(30):
        w.step()
        now = running(w)
        max_in_flight = max(max_in_flight, len(now))
        if now:
            order.append(now)
        finish_all(w)
    assert max_in_flight == 2
    # the canary trains alone; nobody else starts before it is promoted
    assert order[0] == ["m0-" + order[0][0].split("-", 1)[1]]
    waves = {r.metadata.name: int(r.metadata.labels[LABEL_WAVE]) for r in w.runs()}
    assert sorted(waves.values()) == [1, 2, 2, 3, 3]
    assert waves[next(n for n in waves if n.startswith("m0-"))] == 1
    t = w.template()
    assert t.status.rollout_phase == "Complete" and t.status.up_to_date == 5 and t.status.instances == 5
    assert cond(w.store.get("ModelTemplate", "ctr"), "Ready")["status"] == "True"
    assert {a.name: a.instances for a in t.status.techniques} == {"grad-clip": 5}
    for i in w.instances():
        assert i.status.promoted_revision == i.status.target_revision
        assert i.status.model_uri.endswith(f"/default/{i.status.promoted_revision and i.metadata.name}-{i.status.target_revision}")
        assert i.status.metrics.ne == pytest.approx(0.8)


def test_canary_percent_rounds_up(tmp_path):
    w = fleet(tmp_path, n=5, canary={"percent": 30}, maxConcurrentRuns=4)
    w.step()
    assert len(running(w)) == 2  # 30 % of 5 = 1.5 -> 2 canaries


def test_replan_of_an_unchanged_world_writes_nothing(tmp_path):
    w = fleet(tmp_path, n=4)
    for _ in range(12):
        plan = w.plan()
        apply_plan(plan, w.store, launcher=w.launcher, now=w.now)
        again = w.plan()
        assert again.actions == [], again.actions
        w.reconcile()
        finish_all(w)
    assert w.template().status.rollout_phase == "Complete"


def test_technique_edit_retrains_everyone_label_edit_nobody(tmp_path):
    w = fleet(tmp_path, n=3)
    converge(w)
    first = {i.metadata.name: i.status.promoted_revision for i in w.instances()}
    t = w.template()
    t.metadata.labels = {"team": "ads"}
    t.spec.rollout.max_concurrent_runs = 3
    w.put(t)
    assert w.plan().of(CreateRun) == []
    retemplate(w)
    converge(w)
    second = {i.metadata.name: i.status.promoted_revision for i in w.instances()}
    assert all(first[n] != second[n] for n in first)
    assert {a.name: a.instances for a in w.template().status.techniques} == {"dropout": 3, "grad-clip": 3}


def test_a_revision_costs_five_writes_per_instance_and_events_per_wave_not_per_instance(tmp_path):
    n = 12
    w = fleet(tmp_path, n=n, maxConcurrentRuns=4)
    converge(w)
    writes: list[tuple[str, str, str]] = []  # (verb, kind, name)
    store = w.store
    for verb in ("create", "patch_status", "delete", "record_event"):
        real = getattr(store, verb)

        def spy(kind, arg, *rest, _verb=verb, _real=real, **kw):
            name = arg["metadata"]["name"] if isinstance(arg, dict) else arg
            writes.append((_verb, kind, name))
            return _real(kind, arg, *rest, **kw)

        setattr(store, verb, spy)
    retemplate(w)
    converge(w)
    assert all(i.status.promoted_revision == i.status.target_revision for i in w.instances())
    per_instance = {f"m{i}": 0 for i in range(n)}
    for verb, kind, name in writes:
        if kind != "ModelTemplate" and verb != "record_event":
            per_instance[name.rsplit("-", 1)[0] if kind == "TrainingRun" else name] += 1
    # run create + run status (submitted) + run status (finished) + instance status (training,
    # promoted): a waiting instance that still serves its old model is not written while it waits.
    assert set(per_instance.values()) == {5}, per_instance
    events = [(kind, name) for verb, kind, name in writes if verb == "record_event"]
    assert all(kind == "ModelTemplate" for kind, _ in events), events
    plans = 1 + -(-(n - 1) // 4) + 1  # canary, waves of 4, the last promotion
    assert len(events) <= 3 * plans, events  # O(1) per plan, not O(n)
    reasons = [e["reason"] for e in store.events()]
    assert "RunsCreated" in reasons and "Promoted" in reasons


# --- the gate ------------------------------------------------------------------------------------


def test_canary_worse_than_promoted_fails_the_gate_and_pauses_the_rollout(tmp_path):
    w = fleet(tmp_path, n=3, gate={"tolerance": 0.01})
    converge(w)
    old = {i.metadata.name: i.status.promoted_revision for i in w.instances()}
    retemplate(w)
    w.ne["*"] = 0.9  # 0.9 > 0.8 * 1.01
    for _ in range(6):
        w.step()
        finish_all(w)
    inst = w.instance("m0")
    c = cond(inst, "Ready")
    assert c["status"] == "False" and c["reason"] == "GateFailed"
    assert "0.9000" in c["message"] and "0.8000" in c["message"]
    assert inst["status"]["promotedRevision"] == old["m0"]  # old model kept
    assert cond(inst, "Stalled")["status"] == "True"
    t = w.store.get("ModelTemplate", "ctr")
    assert t["status"]["rolloutPhase"] == "Paused" and cond(t, "Stalled")["reason"] == "CanaryFailed"
    assert len(w.runs()) == 3 + 1  # nobody else started after the canary failed
    events = [e for e in w.store.events() if e["name"] == "m0" and e["reason"] == "GateFailed"]
    assert len(events) == 1 and events[0]["type"] == "Warning"


def test_gate_tolerance_lets_a_slightly_worse_model_through(tmp_path):
    w = fleet(tmp_path, n=1, gate={"tolerance": 0.01})
    converge(w)
    retemplate(w)
    w.ne["*"] = 0.805  # within 1 %
    converge(w)
    assert w.instances()[0].status.metrics.ne == pytest.approx(0.805)


def test_first_model_must_meet_max_ne(tmp_path):
    w = fleet(tmp_path, n=1, gate={"maxNe": 0.7})
    for _ in range(4):
        w.step()
        finish_all(w)
    inst = w.instance("m0")
    assert cond(inst, "Ready")["reason"] == "GateFailed" and "maxNe" in cond(inst, "Ready")["message"]
    assert "promotedRevision" not in inst["status"]


# --- pause, budget, suspend ----------------------------------------------------------------------


def test_failure_budget_pauses_the_rollout(tmp_path):
    w = fleet(tmp_path, n=6, canary={"count": 0}, maxConcurrentRuns=2, failureBudget=2, maxRetries=0)
    w.step()
    assert len(running(w)) == 2
    finish_all(w, ok=False, reason="OOMKilled", message="out of memory")
    for _ in range(3):
        w.step()
    t = w.store.get("ModelTemplate", "ctr")
    assert t["status"]["rolloutPhase"] == "Paused"
    stalled = cond(t, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "FailureBudgetExhausted"
    assert "m0-" in stalled["message"] and "m1-" in stalled["message"]
    assert len(w.runs()) == 2 and running(w) == []
    m0 = w.instance("m0")
    assert cond(m0, "Ready")["reason"] == "OOMKilled"  # the job's reason bubbles up
    assert "out of memory" in cond(m0, "Ready")["message"]
    assert cond(w.instance("m3"), "Ready")["reason"] == "FailureBudgetExhausted"


def test_paused_rollout_starts_nothing_but_lets_runs_finish(tmp_path):
    w = fleet(tmp_path, n=3, canary={"count": 0})
    w.step()
    assert len(running(w)) == 2
    t = w.template()
    t.spec.rollout.paused = True
    w.put(t)
    finish_all(w)
    for _ in range(3):
        w.step()
    assert len(w.runs()) == 2
    assert w.instances()[0].status.promoted_revision is not None  # promotion still happens
    t = w.store.get("ModelTemplate", "ctr")
    assert t["status"]["rolloutPhase"] == "Paused" and cond(t, "Ready")["reason"] == "RolloutPaused"
    assert cond(t, "Stalled")["status"] == "False"


def test_instance_over_its_serving_budget_is_blocked_before_any_job(tmp_path):
    w = World(tmp_path)
    w.put(template(rollout={"canary": {"count": 0}}))
    w.put(instance("small"))
    w.put(instance("tiny-budget", servingBudget={"maxFlopsPerExample": 10}))
    plan = w.step()
    assert [a.instance for a in plan.of(CreateRun)] == ["small"]
    inst = w.instance("tiny-budget")
    ready = cond(inst, "Ready")
    assert ready["reason"] == "BudgetExceeded" and cond(inst, "Stalled")["status"] == "True"
    flops = inst["status"]["estimatedFlopsPerExample"]
    assert flops > 10 and f"{flops:,}" in ready["message"] and "10" in ready["message"]
    assert plan.instances["tiny-budget"]["state"] == "Blocked"
    assert w.store.get("ModelTemplate", "ctr")["status"]["blocked"] == 1


def test_suspended_instance_is_not_trained(tmp_path):
    w = World(tmp_path)
    w.put(template(rollout={"canary": {"count": 0}}))
    w.put(instance("a", suspend=True))
    w.put(instance("b"))
    converge(w)
    assert [r.spec.instance for r in w.runs()] == ["b"]
    assert cond(w.instance("a"), "Ready")["reason"] == "Suspended"


# --- supersede -----------------------------------------------------------------------------------


def test_supersede_cancel_cancels_the_old_run_and_starts_the_new(tmp_path):
    w = fleet(tmp_path, n=1)
    w.step()
    [old] = running(w)
    retemplate(w)
    plan = w.step()
    [cancel] = plan.of(CancelRun)
    assert cancel.name == old and cancel.phase == "Superseded"
    assert w.launcher.cancelled == [old]
    assert w.run(old)["status"]["phase"] == "Superseded"
    [new] = plan.of(CreateRun)
    assert new.name != old
    finish_all(w)
    converge(w)
    assert w.instances()[0].status.promoted_revision == new.spec.revision


def test_supersede_finish_lets_the_old_run_finish_but_never_promotes_it(tmp_path):
    w = fleet(tmp_path, n=1, onSupersede="Finish")
    w.step()
    [old] = running(w)
    retemplate(w)
    plan = w.step()
    assert plan.of(CancelRun) == [] and plan.of(CreateRun) == []  # the new run waits for the old
    assert cond(w.instance("m0"), "Reconciling")["reason"] == "WaitingForSupersededRun"
    finish_all(w)
    w.reconcile()
    plan = w.step()
    assert plan.of(Promote) == []
    [new] = plan.of(CreateRun)
    assert w.instance("m0")["status"].get("promotedRevision") is None
    converge(w)
    assert w.instances()[0].status.promoted_revision == new.spec.revision


def test_revision_wanted_again_reuses_a_succeeded_run_without_training(tmp_path):
    w = fleet(tmp_path, n=1)
    converge(w)
    first = w.instances()[0].status.promoted_revision
    original = w.template().spec.techniques
    retemplate(w)
    converge(w)
    submitted = len(w.launcher.submitted)
    retemplate(w, techniques=[t.model_dump(by_alias=True) for t in original])
    converge(w)
    assert w.instances()[0].status.promoted_revision == first
    assert len(w.launcher.submitted) == submitted


# --- garbage collection ---------------------------------------------------------------------------


def test_gc_keeps_history_limit_and_never_the_promoted_run(tmp_path):
    w = fleet(tmp_path, n=1, runHistoryLimit=1)
    revisions = []
    for k in range(4):
        retemplate(w, techniques=[{"name": "grad-clip", "params": {"maxNorm": 1.0 + k}}])
        converge(w)
        w.now += dt.timedelta(minutes=1)
        revisions.append(w.instances()[0].status.promoted_revision)
    names = sorted(r.metadata.name for r in w.runs())
    promoted = f"m0-{revisions[-1]}"
    assert promoted in names
    assert len(names) == 2  # the promoted run + one more finished run of history
    assert any(e["reason"] == "Promoted" for e in w.store.events())


def test_gc_ttl_deletes_old_finished_runs_but_keeps_the_newest(tmp_path):
    w = fleet(tmp_path, n=1, runHistoryLimit=10, ttlSecondsAfterFinished=3600, onSupersede="Cancel")
    w.step()
    first = running(w)[0]
    retemplate(w)  # the first run is superseded (finished, not promoted)
    w.step()
    assert w.run(first)["status"]["phase"] == "Superseded"
    w.now += dt.timedelta(minutes=1)
    finish_all(w)
    converge(w)
    plan = w.plan()
    assert plan.of(DeleteRun) == [] and plan.requeue_after is not None and plan.requeue_after <= 3600
    w.now += dt.timedelta(hours=2)
    plan = w.plan()
    assert [(d.name, d.reason) for d in plan.of(DeleteRun)] == [(first, "TTLExpired")]


# --- reasons, scale -------------------------------------------------------------------------------


def test_pending_reason_bubbles_up_to_the_instance(tmp_path):
    w = fleet(tmp_path, n=1)
    w.step()
    [run] = running(w)
    job = next(j for j in w.launcher.jobs.values() if j["run"] == run)
    job.update(state="PENDING", reason="Unschedulable", message="0/3 nodes have a free GPU")
    w.reconcile()
    w.step()
    ready = cond(w.instance("m0"), "Ready")
    assert ready["reason"] == "Unschedulable" and "free GPU" in ready["message"]


def test_plan_is_linear_and_bounded_for_a_thousand_instances(tmp_path):
    t = template(rollout={"maxConcurrentRuns": 50, "canary": {"count": 5}})
    instances = [instance(f"m{i:04d}") for i in range(1000)]
    calls = []

    def estimate(spec):
        calls.append(spec.instance)
        return 1000

    plan = plan_template(t, instances, [], dt.datetime.now(dt.UTC), output_uri="/o", image="i", estimate=estimate)
    assert len(calls) == 1000  # one estimate per instance, no pairwise work
    assert len(plan.of(CreateRun)) == 5  # canaries only
    assert len(plan.of(PatchStatus)) == 1001
    assert len(plan.actions) <= 3 * 1000 + 10
    # a world with those canaries applied re-plans to nothing
    store = FileStore(tmp_path)
    for i in instances[:50]:
        store.put("ModelInstance", i.model_dump(mode="json", by_alias=True, exclude_none=True))
    sub = [parse(type(i), store.get("ModelInstance", i.metadata.name)) for i in instances[:50]]
    small = plan_template(t, sub, [], dt.datetime.now(dt.UTC), output_uri="/o", image="i", estimate=estimate)
    apply_plan(small, store)
    runs = [parse(TrainingRun, b) for b in store.list("TrainingRun")]
    sub = [parse(type(i), store.get("ModelInstance", i.metadata.name)) for i in instances[:50]]
    t2 = t.model_copy(update={"status": parse(type(t), {**t.model_dump(by_alias=True, mode="json"), "status": small.template_status}).status})
    assert plan_template(t2, sub, runs, dt.datetime.now(dt.UTC), output_uri="/o", image="i", estimate=estimate).actions == []


def test_invalid_template_is_stalled_and_starts_nothing(tmp_path):
    w = World(tmp_path)
    w.put(template(techniques=[{"name": "nope"}]))
    w.put(instance("a"))
    plan = w.step()
    assert plan.of(CreateRun) == []
    t = w.store.get("ModelTemplate", "ctr")
    assert cond(t, "Stalled")["reason"] == "InvalidTechnique"
    assert [e.reason for e in plan.of(Event)] == ["InvalidTechnique"]
    assert w.plan().actions == []


def test_invalid_instance_is_stalled_with_the_field(tmp_path):
    w = World(tmp_path)
    w.put(template(rollout={"canary": {"count": 0}}))
    w.put(instance("a", overrides={"recipe.steps": 3}))
    w.put(instance("b"))
    plan = w.step()
    assert [a.instance for a in plan.of(CreateRun)] == ["b"]
    ready = cond(w.instance("a"), "Ready")
    assert ready["reason"] == "InvalidOverride" and "spec.overrides['recipe.steps']" in ready["message"]
    assert w.plan().actions == []


class Crash(Exception):
    pass


class CrashAfterOneWrite:
    """A store that dies after one write: an operator killed right after each write it makes."""

    def __init__(self, store):
        self.store, self.left = store, 1

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name in ("create", "patch_status", "delete", "record_event"):
            def write(*a, **kw):
                if self.left <= 0:
                    raise Crash()
                self.left -= 1
                return attr(*a, **kw)
            return write
        return attr


def test_killed_after_every_write_still_converges(tmp_path):
    w = fleet(tmp_path, n=3)
    converge(w)
    retemplate(w)
    lives = 0
    while not all(i.status.promoted_revision == i.status.target_revision for i in w.instances()) or w.plan().actions:
        lives += 1
        assert lives < 200, "does not converge across crashes"
        try:
            apply_plan(w.plan(), CrashAfterOneWrite(w.store), launcher=w.launcher, now=w.now)
        except Crash:
            pass
        w.reconcile()
        finish_all(w)
    assert lives > 5
    assert len(w.launcher.submitted) == len(set(w.launcher.submitted)) == 6  # one job per run, ever


def test_a_users_ad_hoc_run_is_left_alone(tmp_path):
    from modelfleet.api.resolve import resolve_training_spec
    from modelfleet.api.resources import TrainingRunSpec

    w = fleet(tmp_path, n=1)
    t, i = w.template(), w.instances()[0]
    spec = TrainingRunSpec(instance="m0", revision="adhoc", training=resolve_training_spec(t, i, output_uri="/tmp/adhoc"))
    w.store.create("TrainingRun", {"metadata": {"name": "m0-experiment"}, "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)})
    w.reconcile()  # its job runs
    plan = w.step()
    assert plan.of(CancelRun) == [] and [c.instance for c in plan.of(CreateRun)] == ["m0"]
    converge(w)
    assert w.run("m0-experiment") is not None
    assert w.instances()[0].status.promoted_revision != "adhoc"
