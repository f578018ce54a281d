"""The operator's pod meets Pod Security Standards "restricted" (plus a read-only root filesystem).

`restricted_violations` implements the profile's checks as the Kubernetes docs list them
(https://kubernetes.io/docs/concepts/security/pod-security-standards/, baseline + restricted,
latest policy version), over a PodSpec; the chart must pass it for default and non-default values,
and each mutation of the rendered pod that breaks one rule must be caught.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from chart_tools import NON_DEFAULT_VALUES, objects, one

# restricted: the only volume types allowed
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule of the restricted profile this PodSpec breaks, as `field: problem`."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = [("containers", c) for c in pod.get("containers", [])]
    containers += [("initContainers", c) for c in pod.get("initContainers", [])]
    containers += [("ephemeralContainers", c) for c in pod.get("ephemeralContainers", [])]

    # --- baseline ---
    for f in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(f):
            out.append(f"spec.{f}: must be unset or false")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess: must not be true")
    for sysctl in psc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {sysctl['name']} is not a safe sysctl")
    for scope, sc in [("spec.securityContext", psc)] + [
        (f"spec.{kind}[{c['name']}].securityContext", c.get("securityContext") or {}) for kind, c in containers
    ]:
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"{scope}.seLinuxOptions: type/user/role not allowed")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{scope}.appArmorProfile: must be RuntimeDefault or Localhost")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{scope}.seccompProfile: Unconfined is not allowed")
    for v in pod.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"spec.volumes[{v['name']}].hostPath: not allowed")

    # --- restricted ---
    for v in pod.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"spec.volumes[{v['name']}]: {sorted(kinds - RESTRICTED_VOLUMES)} not in the restricted volume types")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for kind, c in containers:
        where = f"spec.{kind}[{c['name']}]"
        sc = c.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}.securityContext.windowsOptions.hostProcess: must not be true")
        if sc.get("privileged"):
            out.append(f"{where}.securityContext.privileged: must be false")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}.securityContext.procMount: must be Default")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                out.append(f"{where}.ports[{p.get('name')}].hostPort: not allowed")
        caps = sc.get("capabilities") or {}
        if set(caps.get("add") or []) - BASELINE_CAPABILITIES or set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE is allowed")
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}.securityContext.capabilities.drop: must include ALL")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"{where}.securityContext.runAsNonRoot: must be true (pod or container)")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{where}.securityContext.runAsUser: must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{where}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost")
        # not part of the profile, but the brief's bar for the operator
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{where}.securityContext.readOnlyRootFilesystem: must be true")
    if psc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser: must not be 0")
    return out


def _pod(values: dict[str, Any]) -> dict[str, Any]:
    return one(objects(values), "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["default", "non-default"])
def test_rendered_operator_pod_is_restricted(values: dict[str, Any]):
    assert restricted_violations(_pod(values)) == []


def _set(path: str, value: Any):
    def mutate(pod: dict[str, Any]) -> None:
        node: Any = pod
        *parents, last = path.split(".")
        for p in parents:
            node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return mutate


_DELETE = object()
MUTATIONS = {
    "hostNetwork": (_set("hostNetwork", True), "spec.hostNetwork"),
    "hostPath": (lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    "privileged": (_set("containers.0.securityContext.privileged", True), "privileged"),
    "escalation": (_set("containers.0.securityContext.allowPrivilegeEscalation", True), "allowPrivilegeEscalation"),
    "no-drop-all": (_set("containers.0.securityContext.capabilities.drop", ["NET_RAW"]), "capabilities.drop"),
    "add-cap": (_set("containers.0.securityContext.capabilities.add", ["SYS_ADMIN"]), "capabilities.add"),
    "root": (_set("containers.0.securityContext.runAsUser", 0), "runAsUser"),
    "may-run-as-root": (lambda pod: [_set("securityContext.runAsNonRoot", _DELETE)(pod), _set("containers.0.securityContext.runAsNonRoot", _DELETE)(pod)], "runAsNonRoot"),
    "unconfined": (_set("containers.0.securityContext.seccompProfile.type", "Unconfined"), "seccompProfile"),
    "no-seccomp": (lambda pod: [_set("securityContext.seccompProfile", _DELETE)(pod), _set("containers.0.securityContext.seccompProfile", _DELETE)(pod)], "seccompProfile.type"),
    "writable-root": (_set("containers.0.securityContext.readOnlyRootFilesystem", False), "readOnlyRootFilesystem"),
    "host-port": (lambda pod: pod["containers"][0]["ports"][0].update(hostPort=8080), "hostPort"),
    "proc-mount": (_set("containers.0.securityContext.procMount", "Unmasked"), "procMount"),
    "sysctl": (_set("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]), "sysctls"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_each_broken_rule_is_caught(name: str):
    mutate, field = MUTATIONS[name]
    pod = copy.deepcopy(_pod({}))
    mutate(pod)
    problems = restricted_violations(pod)
    assert any(field in p for p in problems), problems
