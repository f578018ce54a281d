"""The chart grants the operator exactly what `operator/rbac.py` says it needs: per scope (the
cluster, each watched namespace, the jobs namespace), for every scheduler and watch mode; no
wildcards, no Secrets, and every binding points at a role and at the Deployment's ServiceAccount."""

from __future__ import annotations

from typing import Any

import pytest
from chart_tools import NAMESPACE, objects, one

from modelfleet.operator import rbac
from modelfleet.operator.config import SCHEDULERS

RBAC_KINDS = {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}


def effective_grants(objs: list[dict[str, Any]], service_account: tuple[str, str]) -> set[rbac.Grant]:
    """What the ServiceAccount may do, resolved through the bindings the way the API server does:
    a ClusterRoleBinding grants cluster-wide; a RoleBinding grants in its own namespace only."""
    roles = {("ClusterRole", None, o["metadata"]["name"]): o for o in objs if o["kind"] == "ClusterRole"}
    roles |= {("Role", o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs if o["kind"] == "Role"}
    out: set[rbac.Grant] = set()
    for b in objs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = {(s["namespace"], s["name"]) for s in b["subjects"] if s["kind"] == "ServiceAccount"}
        if service_account not in subjects:
            continue
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        key = (ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])
        assert key in roles, f"{b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}"
        out |= rbac.expand(roles[key].get("rules") or [], ns or "cluster")
    return out


def _service_account(objs: list[dict[str, Any]]) -> tuple[str, str]:
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    return (NAMESPACE, pod["serviceAccountName"])


MODES = {
    "cluster-wide": {"watchNamespaces": []},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
}


@pytest.mark.parametrize("peering", [False, True], ids=["standalone", "peering"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scheduler", rbac.CHART_SCHEDULERS)
def test_rendered_rbac_is_exactly_what_the_operator_needs(scheduler: str, mode: str, peering: bool):
    values = {
        "operator": {"scheduler": scheduler, "queue": "q", **MODES[mode]},
        "peering": {"enabled": peering, "name": "modelfleet"},
    }
    objs = objects(values)
    granted = effective_grants(objs, _service_account(objs))
    expected = rbac.expected_grants(
        scheduler=scheduler, namespaces=MODES[mode]["watchNamespaces"], peering=peering, jobs_namespace=NAMESPACE
    )
    assert granted - expected == set(), "the chart grants more than operator/rbac.py needs"
    assert expected - granted == set(), "the chart misses permissions operator/rbac.py needs"


def test_the_rules_differ_by_mode_where_kopf_needs_it():
    # cluster-wide kopf never lists namespaces; watching namespaces it must (observation.py)
    wide = rbac.expected_grants(scheduler="kueue", namespaces=[], peering=True, jobs_namespace="x")
    narrow = rbac.expected_grants(scheduler="kueue", namespaces=["a"], peering=True, jobs_namespace="x")
    assert ("cluster", "", "namespaces", "list") in narrow - wide
    assert ("cluster", "kopf.dev", "clusterkopfpeerings", "patch") in wide - narrow
    assert ("a", "kopf.dev", "kopfpeerings", "patch") in narrow
    assert ("cluster", "modelfleet.dev", "trainingruns", "create") in wide
    assert not any(g[0] == "cluster" and g[1] == "modelfleet.dev" for g in narrow)


def test_every_operator_scheduler_has_rules():
    assert set(rbac.SCHEDULER_RULES) == set(SCHEDULERS)
    assert set(rbac.CHART_SCHEDULERS) <= set(SCHEDULERS)


@pytest.mark.parametrize("scheduler", rbac.CHART_SCHEDULERS)
def test_no_wildcards_and_no_secrets(scheduler: str):
    objs = objects({"operator": {"scheduler": scheduler, "queue": "q"}, "peering": {"enabled": True, "name": "p"}, "replicaCount": 2})
    rules = [r for o in objs if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]]
    assert rules
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"], r
        assert not {"secrets", "escalate", "bind", "impersonate"} & set(r["resources"] + r["verbs"]), r
        assert "resourceNames" not in r or r["resourceNames"]


def test_jobs_role_lives_where_jobs_are_created():
    objs = objects({"operator": {"scheduler": "kubernetes", "queue": "q", "watchNamespaces": ["team-a"]}})
    jobs = [o for o in objs if o["kind"] == "Role" and any("batch.volcano.sh" in r["apiGroups"] for r in o["rules"])]
    assert [j["metadata"]["namespace"] for j in jobs] == [NAMESPACE]


def test_user_roles_aggregate_and_leave_status_to_the_operator():
    objs = objects()
    by_name = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ClusterRole"}
    view, edit = by_name["mf-modelfleet-view"], by_name["mf-modelfleet-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit["metadata"]["labels"]
    edit_grants = rbac.expand(edit["rules"], "any")
    assert not any(g[2].endswith("/status") for g in edit_grants)
    assert {g[3] for g in rbac.expand(view["rules"], "any")} == {"get", "list", "watch"}
    # nothing binds them to the operator
    assert not any(b["roleRef"]["name"] in by_name and b["roleRef"]["name"].endswith(("-view", "-edit"))
                   for b in objs if b["kind"].endswith("Binding"))
    kinds = [o["metadata"]["name"] for o in objects({"rbac": {"create": True, "aggregateToUserRoles": False}})]
    assert "mf-modelfleet-view" not in kinds


def test_every_rule_in_the_module_is_granted_in_some_configuration():
    """No rule in operator/rbac.py is dead: each is granted by the chart for some values."""
    granted: set[tuple[str, str, str]] = set()
    for scheduler in rbac.CHART_SCHEDULERS:
        for mode in MODES.values():
            for peering in (False, True):
                objs = objects({"operator": {"scheduler": scheduler, "queue": "q", **mode}, "peering": {"enabled": peering, "name": "p"}})
                granted |= {g[1:] for g in effective_grants(objs, _service_account(objs))}
    lists = rbac.CORE_RULES + rbac.PEERING_RULES + [r for rules in rbac.SCHEDULER_RULES.values() for r in rules]
    assert {g[1:] for g in rbac.expand(lists, "any")} == granted
