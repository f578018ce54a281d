"""The Kubernetes permissions the operator needs, as plain data: the source of truth for the chart.

`charts/modelfleet/templates/rbac.yaml` renders exactly these rules, and
`tests/chart/test_rbac.py` checks that the permissions the rendered chart grants (per scope: the
cluster, each watched namespace, the jobs namespace) equal `expected_grants(...)` for every
scheduler and watch mode. When the operator's code starts calling a new API, add the verb here
(with the reason) and in the chart's template; the test fails until both agree.

Sources, checked against the installed code:
- our own calls: `operator/kube.py` (get/list/create/delete, status patch, Events),
  `operator/actions.py` (TrainingRuns owned by their ModelInstance with blockOwnerDeletion);
- kopf 1.45 (`kopf/_core/reactor/observation.py`, `engines/peering.py`, `clients/events.py`):
  it lists/watches CRDs always, lists/watches namespaces only when it watches specific
  namespaces (never cluster-wide), patches (Cluster)KopfPeerings and creates core Events;
  it watches and patches our resources (annotations, finalizers) and their status;
- the launchers (`operator/launcher.py`, `operator/kueue_scheduler.py`) and TorchX's Volcano
  scheduler (`torchx/schedulers/kubernetes_scheduler.py`).

No wildcard verbs or resources, and no Secrets: the operator never reads credentials; the trainer
pods get theirs from their own ServiceAccount.
"""

from __future__ import annotations

from typing import Any

Rule = dict[str, list[str]]

GROUP = "modelfleet.dev"
KINDS = ("modeltemplates", "modelinstances", "trainingruns")

# Our own resources, in every namespace the operator watches (or cluster-wide).
CORE_RULES: list[Rule] = [
    # kopf lists and watches them (indexes, handlers) and patches metadata (its annotations,
    # the TrainingRun finalizer); the stores `get` one object by name.
    {"apiGroups": [GROUP], "resources": list(KINDS), "verbs": ["get", "list", "watch", "patch"]},
    # The planner creates runs; the history limit / TTL deletes finished ones.
    {"apiGroups": [GROUP], "resources": ["trainingruns"], "verbs": ["create", "delete"]},
    # Status is written only through the status subresource (merge patch, never PUT).
    {"apiGroups": [GROUP], "resources": [f"{k}/status" for k in KINDS], "verbs": ["get", "patch"]},
    # A TrainingRun's ownerReference to its ModelInstance sets blockOwnerDeletion, which the
    # OwnerReferencesPermissionEnforcement admission plugin allows only with update on the
    # owner's finalizers subresource.
    {"apiGroups": [GROUP], "resources": ["modelinstances/finalizers"], "verbs": ["update"]},
]

# Events about our objects (ours and kopf's), where the objects are.
EVENT_RULES: list[Rule] = [
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]

# Cluster-scoped reads kopf needs whatever it watches: CRD discovery (it notices our CRDs appear).
DISCOVERY_RULES: list[Rule] = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
]

# Only when watching specific namespaces: kopf lists/watches namespaces to learn which exist.
NAMESPACE_RULES: list[Rule] = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
]

# kopf peering: ClusterKopfPeering when cluster-wide, KopfPeering in each watched namespace.
CLUSTER_PEERING_RULES: list[Rule] = [
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]
NAMESPACED_PEERING_RULES: list[Rule] = [
    {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"], "verbs": ["get", "list", "watch", "patch"]},
]

# Everything kopf itself needs (peering in both modes, Events, CRD discovery, namespaces), as one
# list for readers; `expected_grants` picks from the finer lists above per watch mode and peering.
PEERING_RULES: list[Rule] = (
    CLUSTER_PEERING_RULES + NAMESPACED_PEERING_RULES + EVENT_RULES + DISCOVERY_RULES + NAMESPACE_RULES
)

# The job kinds of each scheduler, in the namespace where jobs are created (the operator's own:
# `launcher._default_namespace`).
SCHEDULER_RULES: dict[str, list[Rule]] = {
    "kubernetes": [
        # VolcanoLauncher: submit (create), find (list by labels), state (get), cancel (delete,
        # not TorchX's abort, which would PUT the job's status: the Volcano controller's field).
        # No patch: labels are set before the create. watch: reads are cheap to allow and let
        # the launcher move from polling to a watch without a chart change.
        {"apiGroups": ["batch.volcano.sh"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        # state(): the job's pods name the reason (Unschedulable, ImagePullBackOff, ...).
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        # TorchX's log_iter reads a job's pod logs; part of the launcher contract so a failed run's
        # message can quote its log tail (no launcher path reads logs yet).
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ],
    "kueue": [
        # KueueScheduler: create the suspended Indexed Job, read/list it, delete on cancel (no
        # patch: Kueue, not the operator, flips `suspend`).
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get", "list", "watch", "delete"]},
        # The headless Service for rendezvous (owned by the Job, so the GC deletes it).
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
        # state(): the job's pods (by job-name label) name the reason; log_iter as for Volcano.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        # The Workload's conditions say why a job waits (Inadmissible, quota).
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads"], "verbs": ["get", "list", "watch"]},
    ],
    "local_cwd": [],  # trains in the operator's own process tree: no cluster permissions
}

# Schedulers the Helm chart deploys: local_cwd trains inside the operator's pod, whose image has
# no torch, so it is for a laptop (`modelfleet local`) only.
CHART_SCHEDULERS: tuple[str, ...] = ("kubernetes", "kueue")


Grant = tuple[str, str, str, str]  # (scope, apiGroup, resource, verb); scope "cluster" or a namespace


def expand(rules: list[Rule], scope: str) -> set[Grant]:
    """Rules as a set of single permissions, so two renderings compare regardless of grouping."""
    return {
        (scope, group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def expected_grants(
    *, scheduler: str, namespaces: list[str] | tuple[str, ...], peering: bool, jobs_namespace: str
) -> set[Grant]:
    """Every permission the operator needs, by scope: what the chart must grant, no more."""
    if scheduler not in SCHEDULER_RULES:
        raise ValueError(f"scheduler {scheduler!r} is not one of {', '.join(SCHEDULER_RULES)}")
    out = expand(DISCOVERY_RULES, "cluster")
    if namespaces:
        out |= expand(NAMESPACE_RULES, "cluster")
        for ns in namespaces:
            out |= expand(CORE_RULES + EVENT_RULES + (NAMESPACED_PEERING_RULES if peering else []), ns)
    else:
        out |= expand(CORE_RULES + EVENT_RULES + (CLUSTER_PEERING_RULES if peering else []), "cluster")
    out |= expand(SCHEDULER_RULES[scheduler], jobs_namespace)
    return out


def as_data() -> dict[str, Any]:
    """Everything above as one JSON-able mapping (docs, debugging)."""
    return {
        "core": CORE_RULES,
        "events": EVENT_RULES,
        "discovery": DISCOVERY_RULES,
        "namespaces": NAMESPACE_RULES,
        "clusterPeering": CLUSTER_PEERING_RULES,
        "namespacedPeering": NAMESPACED_PEERING_RULES,
        "schedulers": SCHEDULER_RULES,
    }
