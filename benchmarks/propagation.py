"""Propagation benchmark: one template edit fanned out to n instances by the real operator.

For each n, against kmock's Kubernetes emulator (in this process) and the real kopf operator (a
subprocess, so its memory is its own, with jobs from the test harness's fake launcher that succeed
at once): create a template and n instances, wait until the first rollout has promoted every
instance, then edit the template's techniques (a new revision) and measure

- planner time: total seconds in `plan_template` during the edit's rollout (and the number of plans),
- API writes per instance: every create/patch/delete the operator sent during it, divided by n,
- wall time from the edit to all n new TrainingRuns created, and to all n instances promoted,
- the operator process's peak RSS (VmHWM).

    .venv/bin/python -P benchmarks/propagation.py                 # n = 100, 1000
    .venv/bin/python -P benchmarks/propagation.py --n 100 1000 5000
    KUBEBUILDER_ASSETS=../shared/envtest/bin .venv/bin/python -P benchmarks/propagation.py --server envtest

`--server envtest` runs the same rollout against a real control plane (tests/envtest.py: etcd,
kube-apiserver, kube-controller-manager) with the operator subprocess authenticated as the Helm
chart's ServiceAccount (its least-privilege RBAC), and counts the operator's API requests from the
API server's audit log -- every request by that user, reads and watches included, by verb and
resource -- not from the client.

The rollout policy lets every instance train at once after a one-instance canary
(maxConcurrentRuns = n), so the time measures the operator, not the policy.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "integration"), str(REPO / "tests"), str(REPO / "tests" / "realk8s")]

TEMPLATE = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the operator subprocess ------------------------------------------------------------------


def serve_operator(url: str, metrics_port: int, kubeconfig: str | None = None, namespace: str | None = None) -> None:
    import logging
    import threading

    import kopf

    # From `fakes`, not the harness: importing the harness turns kopf's per-event INFO log on.
    from fakes import FakeLauncher
    from modelfleet.operator import handlers, metrics
    from modelfleet.operator.config import OperatorConfig

    logging.basicConfig(level=logging.WARNING)
    parent = os.getppid()

    def exit_with_parent() -> None:  # a killed benchmark must not leave its operator running
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    metrics.serve(metrics_port)
    launcher = FakeLauncher(auto="succeed")
    ctx = handlers.OperatorContext(
        config=OperatorConfig(output_uri="/tmp/modelfleet-bench", metrics_port=metrics_port, poll_seconds=1.0),
        server=None if kubeconfig else url,
        kubeconfig=kubeconfig,
        launcher=launcher,
        read_metrics=launcher.read_metrics,
        debounce_seconds=0.5,
        resync_seconds=5.0,
    )
    registry = handlers.register(kopf.OperatorRegistry())
    if kubeconfig:  # the real server: the operator's own login, as `modelfleet operator` has it
        handlers.register_login(registry)
        kopf.run(registry=registry, standalone=True, namespaces=[namespace], memo=kopf.Memo(ctx=ctx))
        return

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, default_namespace="default")

    kopf.run(registry=registry, standalone=True, clusterwide=True, memo=kopf.Memo(ctx=ctx))


# --- the benchmark ----------------------------------------------------------------------------


def template_body(n: int, techniques: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelTemplate",
        "metadata": {"name": TEMPLATE},
        "spec": {
            "techniques": techniques,
            "rollout": {"maxConcurrentRuns": n, "canary": {"count": 1}, "gate": {"tolerance": 0.01}},
        },
    }


def instance_body(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelInstance",
        "metadata": {"name": f"m-{i:05d}"},
        "spec": {
            "templateRef": {"name": TEMPLATE},
            "event": "click",
            "data": {"format": "synthetic", "synthetic": {"rows": 200, "seed": i}},
        },
    }


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(modelfleet_planner_seconds_(?:sum|count)) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


PROGRESS: list[Any] = []  # a callable printing where the rollout stands, for --progress


async def wait_for(check: Any, timeout: float, what: str) -> float:
    start = last = time.perf_counter()
    while not check():
        now = time.perf_counter()
        if now - start > timeout:
            raise TimeoutError(f"{what}: not reached in {timeout:.0f} s")
        if PROGRESS and now - last > 5:
            last = now
            print(f"  [{what}] {PROGRESS[0]()}", file=sys.stderr, flush=True)
        await asyncio.sleep(0.05)
    return time.perf_counter()


async def run_one(n: int, timeout: float, progress: bool = False) -> dict[str, Any]:
    from operator_harness import running_cluster

    async with running_cluster() as (cluster, url):
        base = "/apis/modelfleet.dev/v1alpha1/namespaces/default"
        resp = await cluster.post(f"{base}/modeltemplates", json=template_body(n, []))
        assert resp.status == 201, await resp.text()
        for i in range(n):
            resp = await cluster.post(f"{base}/modelinstances", json=instance_body(i))
            assert resp.status == 201, await resp.text()

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-P", __file__, "--serve-operator", url, "--metrics-port", str(port)],
            cwd=REPO,
        )
        try:

            def template_status() -> dict[str, Any]:
                return (cluster.obj("modeltemplates", TEMPLATE) or {}).get("status") or {}

            if progress:
                PROGRESS[:] = [
                    lambda: {k: template_status().get(k) for k in ("revision", "rolloutPhase", "instances", "upToDate", "training", "failed")}
                    | {"writes": len(cluster.writes)}
                    | {"last": collections.Counter(f"{w[0]} {w[1]}{'/' + w[3] if w[3] else ''}" for w in cluster.writes[-40:]).most_common(4)}
                ]

            def promoted(revision: str | None) -> bool:
                st = template_status()
                return bool(revision) and st.get("revision") == revision and st.get("upToDate") == n

            # The first rollout: every instance trains once.
            await wait_for(lambda: template_status().get("revision"), timeout, "first revision")
            first = template_status()["revision"]
            await wait_for(lambda: promoted(first), timeout, "first rollout promoted")
            await asyncio.sleep(1.0)  # let the last run daemons and status writes settle
            before = scrape(port)
            mark = len(cluster.writes)

            # The edit: one technique more, a new revision for every instance.
            t0 = time.perf_counter()
            resp = await cluster.patch(
                f"{base}/modeltemplates/{TEMPLATE}",
                json={"spec": {"techniques": [{"name": "grad-clip", "params": {"maxNorm": 1.0}}]}},
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert resp.status == 200, await resp.text()
            scanned, runs_created = mark, 0

            def created() -> int:  # counts only the writes since the last call (polled every 50 ms)
                nonlocal scanned, runs_created
                new = cluster.writes[scanned:]
                scanned += len(new)
                runs_created += sum(1 for w in new if w[0] == "create" and w[1] == "trainingruns")
                return runs_created

            t_created = await wait_for(lambda: created() >= n, timeout, "all runs created")
            await wait_for(lambda: template_status().get("revision") not in (None, first), timeout, "new revision")
            second = template_status()["revision"]
            t_promoted = await wait_for(lambda: promoted(second), timeout, "second rollout promoted")
            await asyncio.sleep(1.0)
            after = scrape(port)
            writes = cluster.writes[mark + 1 :]  # everything after the user's own patch
            by_kind = collections.Counter(f"{w[0]} {w[1]}{'/' + w[3] if w[3] else ''}" for w in writes)
            return {
                "n": n,
                "plans": after.get("modelfleet_planner_seconds_count", 0) - before.get("modelfleet_planner_seconds_count", 0),
                "planner_s": after.get("modelfleet_planner_seconds_sum", 0) - before.get("modelfleet_planner_seconds_sum", 0),
                "writes_per_instance": len(writes) / n,
                "writes_by_kind": dict(sorted(by_kind.items())),
                "runs_created_s": t_created - t0,
                "promoted_s": t_promoted - t0,
                "peak_rss_mb": peak_rss_mb(proc.pid),
            }
        finally:
            stop(proc)


# --- the real API server (--server envtest) ---------------------------------------------------


def _request_kind(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return f"{event.get('verb')} {resource}"


def run_one_real(n: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """The same edit and rollout on a real control plane; requests counted from its audit log."""
    import envtest
    from kubernetes import client
    from operator_process import install_operator_rbac

    assets = envtest.assets_dir()
    if assets is None:
        raise SystemExit(f"--server envtest needs {envtest.ASSETS_ENV} (a folder with etcd, kube-apiserver, kube-controller-manager)")
    plane = envtest.ControlPlane(assets, workdir / f"envtest-{n}")
    plane.start()
    try:
        envtest.install_crds(plane, sorted((REPO / "crds").glob("*.yaml")))
        api = plane.api_client()
        ns = "bench"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        access = install_operator_rbac(plane, ns, workdir)
        custom = client.CustomObjectsApi(api)
        group, version = "modelfleet.dev", "v1alpha1"
        custom.create_namespaced_custom_object(group, version, ns, "modeltemplates", template_body(n, []))
        for i in range(n):
            custom.create_namespaced_custom_object(group, version, ns, "modelinstances", instance_body(i))

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-P", __file__, "--serve-operator", plane.url, "--metrics-port", str(port),
             "--kubeconfig", str(access.kubeconfig), "--namespace", ns],
            cwd=REPO,
        )
        try:

            def template_status() -> dict[str, Any]:
                return custom.get_namespaced_custom_object(group, version, ns, "modeltemplates", TEMPLATE).get("status") or {}

            def promoted(revision: str | None) -> bool:
                st = template_status()
                return bool(revision) and st.get("revision") == revision and st.get("upToDate") == n

            envtest.wait_for(lambda: template_status().get("revision"), timeout, interval=0.5, what="first revision")
            first = template_status()["revision"]
            envtest.wait_for(lambda: promoted(first), timeout, interval=0.5, what="first rollout promoted")
            time.sleep(2.0)  # the last run daemons and status writes settle
            before = scrape(port)
            mark = plane.audit_offset()
            t0 = time.perf_counter()
            custom.patch_namespaced_custom_object(
                group, version, ns, "modeltemplates", TEMPLATE,
                {"spec": {"techniques": [{"name": "grad-clip", "params": {"maxNorm": 1.0}}]}},
            )
            offset, created = mark, 0

            def all_created() -> bool:  # reads only the audit log's new lines
                nonlocal offset, created
                with open(plane.audit_log, "rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                end = chunk.rfind(b"\n") + 1
                offset += end
                for line in chunk[:end].splitlines():
                    e = json.loads(line)
                    if e["user"]["username"] == access.username and e.get("verb") == "create" and (e.get("objectRef") or {}).get("resource") == "trainingruns":
                        created += e.get("responseStatus", {}).get("code") == 201
                return created >= n

            envtest.wait_for(all_created, timeout, interval=0.2, what="all runs created")
            t_created = time.perf_counter()
            envtest.wait_for(lambda: template_status().get("revision") not in (None, first), timeout, interval=0.5, what="new revision")
            second = template_status()["revision"]
            envtest.wait_for(lambda: promoted(second), timeout, interval=0.5, what="second rollout promoted")
            t_promoted = time.perf_counter()
            time.sleep(2.0)
            after = scrape(port)
            rss = peak_rss_mb(proc.pid)
        finally:
            stop(proc)
        ours = [e for e in plane.audit_events(mark) if e["user"]["username"] == access.username]
        by_kind = collections.Counter(_request_kind(e) for e in ours)
        writes = [e for e in ours if e.get("verb") in ("create", "update", "patch", "delete")]
        agents = collections.Counter(e.get("userAgent", "").split("/")[0] for e in ours)
        return {
            "n": n,
            "plans": after.get("modelfleet_planner_seconds_count", 0) - before.get("modelfleet_planner_seconds_count", 0),
            "planner_s": after.get("modelfleet_planner_seconds_sum", 0) - before.get("modelfleet_planner_seconds_sum", 0),
            "requests_per_instance": len(ours) / n,
            "writes_per_instance": len(writes) / n,
            "writes_by_kind": dict(sorted(by_kind.items())),
            "user_agents": dict(agents),
            "runs_created_s": t_created - t0,
            "promoted_s": t_promoted - t0,
            "peak_rss_mb": rss,
        }
    finally:
        plane.stop()


def print_results(results: list[dict[str, Any]]) -> None:
    """The table; with audit-log counts (the real server) a column of all requests, reads included."""
    real = "requests_per_instance" in results[0]
    cols = ["n", "plans", "planner time (s)"] + (["API requests / instance"] if real else [])
    cols += ["API writes / instance", "edit -> all runs created (s)", "edit -> all promoted (s)", "operator peak RSS (MiB)"]
    print("| " + " | ".join(cols) + " |")
    print("|---:" * len(cols) + "|")
    for r in results:
        requests = f" {r['requests_per_instance']:.2f} |" if real else ""
        print(
            f"| {r['n']} | {r['plans']:.0f} | {r['planner_s']:.2f} |{requests} {r['writes_per_instance']:.2f} |"
            f" {r['runs_created_s']:.1f} | {r['promoted_s']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    print()
    what = "requests by verb and resource (audit log, the operator's ServiceAccount)" if real else "writes by kind"
    for r in results:
        print(f"n={r['n']} {what}: " + ", ".join(f"{k}={v}" for k, v in r["writes_by_kind"].items()))
        if real:
            print(f"n={r['n']} by client: " + ", ".join(f"{k}={v}" for k, v in sorted(r["user_agents"].items())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true", help="also print the raw results as JSON")
    parser.add_argument("--progress", action="store_true", help="print where each rollout stands every 5 s")
    parser.add_argument(
        "--server", choices=("kmock", "envtest"), default="kmock",
        help="kmock's emulator in this process (default), or a real control plane from $KUBEBUILDER_ASSETS",
    )
    parser.add_argument("--serve-operator", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_operator:
        serve_operator(args.serve_operator, args.metrics_port, args.kubeconfig, args.namespace)
        return 0
    if args.server == "envtest":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="modelfleet-bench-") as tmp:
            results = [run_one_real(n, args.timeout, Path(tmp)) for n in args.n]
    else:
        results = [asyncio.run(run_one(n, args.timeout, args.progress)) for n in args.n]
    print_results(results)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
