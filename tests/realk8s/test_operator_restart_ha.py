"""Restart safety and HA of `modelfleet operator` on the real API server (issue 10, deliverable 5).

Both run a real rollout of tiny synthetic models: real Kueue Jobs, admitted and run for real by
the kubelet stand-in, the real trainer. All state is in the cluster, so:
- SIGKILLed at 20 seeded random moments spread over the rollout, the operator still completes it
  with exactly one Job per instance x revision (counted by label, and by the audit log's creates);
- two replicas with peering: only the one with the higher priority writes (the audit log's
  User-Agent carries each process's id); SIGKILLed, the other takes over and finishes.
"""

from __future__ import annotations

import collections
import random
import time

from envtest import wait_for
from kubelet_agent import KubeletAgent
from operator_process import Fleet, OperatorProcess, condition, install_operator_rbac, tiny_instance, tiny_template

KILLS = 20
SEED = 10


def _complete(fleet: Fleet, name: str, n: int) -> bool:
    t = fleet.get("modeltemplates", name)
    ready = condition(t)
    return ready.get("reason") == "RolloutComplete" and ready.get("status") == "True" and (t.get("status") or {}).get("upToDate") == n


def _operator_writes(plane, access, since: int = 0) -> list[dict]:
    """The operator's own writes (its API client's, not kopf's) as the audit log records them."""
    return [
        e
        for e in plane.audit_events(since)
        if e.get("verb") in ("create", "patch", "update", "delete")
        and e["user"]["username"] == access.username
        and e.get("userAgent", "").startswith("modelfleet-operator/")
    ]


def _pid(event: dict) -> int:
    return int(event["userAgent"].rsplit("pid ", 1)[1].rstrip(")"))


def test_sigkill_at_20_random_moments_loses_nothing_and_makes_one_job_per_instance_revision(
    control_plane, crds, kube, k8s_namespace, tmp_path
):
    n = 6
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path)
    since = control_plane.audit_offset()
    fleet.create(tiny_template("ctr"))
    for i in range(n):
        fleet.create(tiny_instance(f"feed-{i}", "ctr"))
    operator = OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "operator.log")
    rng = random.Random(SEED)
    during_rollout = 0
    with KubeletAgent(kube, access.system_namespace, tmp_path / "pods") as agent:
        try:
            for _ in range(KILLS):
                operator.start()
                operator.wait_ready()
                time.sleep(rng.uniform(0.0, 3.0))  # anywhere in a life: indexing, a plan, a submit, a poll
                operator.kill()
                during_rollout += not _complete(fleet, "ctr", n)
            operator.start()
            wait_for(lambda: _complete(fleet, "ctr", n), 600, interval=1, what=f"rollout complete\n{operator.tail()}\n{agent.errors[-3:]}")
        finally:
            operator.stop()
    assert during_rollout == KILLS, "every kill landed while the rollout was under way"

    runs = fleet.list("trainingruns")
    assert len(runs) == n and {r["status"]["phase"] for r in runs} == {"Succeeded"}
    for inst in fleet.list("modelinstances"):
        assert condition(inst)["reason"] == "Promoted" and inst["status"]["promotedRevision"] == inst["status"]["targetRevision"]
    jobs = fleet.jobs(access.system_namespace)
    per = collections.Counter((j.metadata.labels["modelfleet.dev/instance"], j.metadata.labels["modelfleet.dev/revision"]) for j in jobs)
    assert len(per) == n and set(per.values()) == {1}, per
    writes = _operator_writes(control_plane, access, since)
    created = collections.Counter(
        e["objectRef"]["resource"] for e in writes if e["verb"] == "create" and e.get("responseStatus", {}).get("code") == 201
    )
    assert created["jobs"] == n and created["trainingruns"] == n, created
    assert len({_pid(e) for e in writes}) > 1  # many lives wrote


def test_two_replicas_with_peering_one_acts_and_the_other_takes_over_when_it_is_killed(
    control_plane, crds, kube, k8s_namespace, tmp_path
):
    n = 3
    fleet = Fleet(kube, k8s_namespace)
    access = install_operator_rbac(control_plane, fleet.ns, tmp_path, peering=True)
    quick = {"MODELFLEET_PEERING_LIFETIME_SECONDS": "10"}  # take over 10 s after a SIGKILL, not kopf's 60
    since = control_plane.audit_offset()
    fleet.create(tiny_template("ctr"))
    for i in range(n):
        fleet.create(tiny_instance(f"feed-{i}", "ctr"))
    active = OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "active.log", peering=True, priority=100, env=quick)
    standby = OperatorProcess(access, fleet.ns, tmp_path / "out", tmp_path / "standby.log", peering=True, priority=50, env=quick)
    with KubeletAgent(kube, access.system_namespace, tmp_path / "pods"):
        try:
            active.start()
            wait_for(lambda: fleet.list("trainingruns"), 60, what=f"the active replica's first run\n{active.tail()}")
            standby.start()
            # Both live; the canary trains and the next wave starts: all of it by the active one.
            wait_for(lambda: len(fleet.list("trainingruns")) >= 2, 300, interval=1, what=f"a wave after the canary\n{active.tail()}")
            killed_at = time.time()
            active.kill()
            wait_for(lambda: _complete(fleet, "ctr", n), 600, interval=1, what=f"the standby finished\n{standby.tail()}")
        finally:
            active.stop()
            standby.stop()
    writes = _operator_writes(control_plane, access, since)
    by_pid = collections.Counter(_pid(e) for e in writes)
    assert set(by_pid) == {active.pid, standby.pid}, by_pid
    # Never both: every write of the active replica precedes every write of the standby's.
    order = [_pid(e) for e in sorted(writes, key=lambda e: e["stageTimestamp"])]
    first_standby = order.index(standby.pid)
    assert set(order[:first_standby]) == {active.pid} and set(order[first_standby:]) == {standby.pid}
    stamp = next(e["stageTimestamp"] for e in sorted(writes, key=lambda e: e["stageTimestamp"]) if _pid(e) == standby.pid)
    import datetime as dt

    took_over = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert took_over >= killed_at - 1  # the standby wrote nothing while the active one lived
