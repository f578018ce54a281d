"""`modelfleet status`, `modelfleet logs` and `modelfleet report`: the fleet as it stands.

    modelfleet status [--state DIR | --cluster [-n NS] [--kubeconfig F] [--context C]] [-o text|json|yaml]
    modelfleet logs NAME [--state DIR | --cluster ...] [--tail N]
    modelfleet report [--state DIR | --cluster ...] [--out DIR]

All three only read: the `modelfleet local` state folder (default `.modelfleet/`), or with
`--cluster` the cluster (list and get calls, plus pod logs for `logs`). `status` is the fleet at a
glance: per instance its template, promoted revision, NE (± half its bootstrap interval when the
run reported one; the paired NE change of the last gate decision in -o json/yaml), where the promoted model is, its state and when that last changed. `logs` prints a
run's training logs (NAME is a TrainingRun, or a ModelInstance: its active run, else its newest).
`report` writes `report.png` (NE per instance across the revisions its runs trained, and the
technique adoption matrix) and `report.html` (the same, with the tables).

Exit status: 0; 1 when NAME names nothing (`logs`); 2 for bad arguments or an unreadable state /
an unreachable cluster (one line on stderr).
"""

from __future__ import annotations

import argparse
import glob
import html
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelfleet.errors import CliError

DEFAULT_STATE = ".modelfleet"


class SourceError(CliError):
    """The state or the cluster cannot be read; the message says what and why (exit 2)."""


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", default=None, metavar="DIR", help=f"modelfleet local state folder (default {DEFAULT_STATE}/)")
    parser.add_argument("--cluster", action="store_true", help="read the cluster instead of a local state folder")
    parser.add_argument("-n", "--namespace", default=None, help="with --cluster: namespace (default: the kubeconfig context's, else default)")
    parser.add_argument("--kubeconfig", default=None, help="with --cluster: kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    parser.add_argument("--context", default=None, help="with --cluster: kubeconfig context")


@dataclass
class Fleet:
    """Everything the three commands read, as plain bodies."""

    templates: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    where: str  # "state <path>" or "namespace <ns>"
    state_dir: Path | None = None  # local only: logs live under it
    api_client: Any = None  # cluster only: pod logs are read with it
    namespace: str | None = None


def cluster_client(kubeconfig: str | None, context: str | None) -> tuple[Any, str]:
    """(ApiClient, the context's namespace) from a kubeconfig (its TLS settings and credentials),
    else the in-cluster service account."""
    from kubernetes import client, config

    try:
        if kubeconfig or context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                active = next((c for c in contexts if c["name"] == context), None)
                if active is None:
                    raise SourceError(f"--context {context}: no such context in the kubeconfig")
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
            return api, (active or {}).get("context", {}).get("namespace") or "default"
        config.load_incluster_config()
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return client.ApiClient(), fh.read().strip() or "default"
    except SourceError:
        raise
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise SourceError(f"no usable kubeconfig ({where}): {exc}") from None


def load_fleet(args: argparse.Namespace) -> Fleet:
    if args.cluster:
        return _cluster_fleet(args)
    if args.namespace or args.kubeconfig or args.context:
        raise SourceError("-n/--namespace, --kubeconfig and --context need --cluster")
    from modelfleet.operator.store import FileStore

    root = Path(args.state or DEFAULT_STATE)
    folder = root / "state"
    if not folder.is_dir():
        raise SourceError(f"no modelfleet local state under {root}/ (run `modelfleet local DIR` first, or pass --state or --cluster)")
    store = FileStore(folder)
    return Fleet(
        store.list("ModelTemplate"), store.list("ModelInstance"), store.list("TrainingRun"),
        f"state {root.resolve()}", state_dir=root.resolve(),
    )


def _cluster_fleet(args: argparse.Namespace) -> Fleet:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from modelfleet.operator.kube import KubeStore

    api, default_ns = cluster_client(args.kubeconfig, args.context)
    namespace = args.namespace or default_ns
    store = KubeStore(api, namespace)
    try:
        lists = [store.list(kind) for kind in ("ModelTemplate", "ModelInstance", "TrainingRun")]
    except ApiException as exc:
        raise SourceError(f"the API server answered {exc.status} {exc.reason} listing namespace {namespace}") from None
    except (HTTPError, OSError) as exc:
        raise SourceError(f"cannot reach the API server: {exc}") from None
    return Fleet(*lists, f"namespace {namespace}", api_client=api, namespace=namespace)


# --- status ------------------------------------------------------------------------------------


def _ready(body: dict[str, Any]) -> dict[str, Any]:
    from modelfleet.operator.status import find

    return find((body.get("status") or {}).get("conditions"), "Ready") or {}


def _interval(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """NE's bootstrap interval (at the gate's confidence), when the run reported one."""
    low, high = metrics.get("neLow"), metrics.get("neHigh")
    return (float(low), float(high)) if low is not None and high is not None else None


def status_rows(fleet: Fleet) -> list[dict[str, Any]]:
    rows = []
    for inst in sorted(fleet.instances, key=lambda b: b["metadata"]["name"]):
        s = inst.get("status") or {}
        ready = _ready(inst)
        metrics = s.get("metrics") or {}
        comparison = s.get("comparison") or {}
        rows.append(
            {
                "instance": inst["metadata"]["name"],
                "template": (inst.get("spec") or {}).get("templateRef", {}).get("name"),
                "revision": s.get("promotedRevision"),
                "targetRevision": s.get("targetRevision"),
                "ne": metrics.get("ne"),
                "neInterval": _interval(metrics),
                "relativeNeChange": comparison.get("relativeNeChange"),
                "relativeNeInterval": (
                    (comparison["relativeNeLow"], comparison["relativeNeHigh"])
                    if comparison.get("paired") and comparison.get("relativeNeHigh") is not None
                    else None
                ),
                "modelUri": s.get("modelUri"),
                "ready": ready.get("status", "Unknown"),
                "reason": ready.get("reason"),
                "message": ready.get("message"),
                "lastChange": ready.get("lastTransitionTime"),
                "activeRun": s.get("activeRun"),
            }
        )
    return rows


def _fmt_ne(row: dict[str, Any]) -> str:
    if row["ne"] is None:
        return "-"
    text = f"{row['ne']:.4f}"
    if row["neInterval"]:
        low, high = row["neInterval"]
        text += f"±{(high - low) / 2:.4f}"
    return text


def render_status(fleet: Fleet, rows: list[dict[str, Any]]) -> str:
    from modelfleet.operator.local import _table

    table = [
        [r["instance"], r["template"] or "-", r["revision"] or "-", _fmt_ne(r), r["ready"], r["reason"] or "-", r["lastChange"] or "-", r["modelUri"] or "-"]
        for r in rows
    ]
    lines = [f"{len(rows)} instance(s), {len(fleet.templates)} template(s) in {fleet.where}"]
    lines += _table(["INSTANCE", "TEMPLATE", "REVISION", "NE", "READY", "REASON", "CHANGED", "MODEL"], table)
    for t in sorted(fleet.templates, key=lambda b: b["metadata"]["name"]):
        s = t.get("status") or {}
        ready = _ready(t)
        lines.append(
            f"template {t['metadata']['name']}: revision {s.get('revision') or '-'}, "
            f"{s.get('upToDate', 0)}/{s.get('instances', 0)} up to date, rollout {s.get('rolloutPhase') or '-'}"
            + (f" ({ready.get('reason')}: {ready.get('message')})" if ready.get("status") == "False" and ready.get("message") else "")
        )
    return "\n".join(lines)


# --- logs --------------------------------------------------------------------------------------


def find_run(fleet: Fleet, name: str) -> dict[str, Any] | None:
    """The run `name`, or the active (else newest) run of instance `name`."""
    for run in fleet.runs:
        if run["metadata"]["name"] == name:
            return run
    inst = next((i for i in fleet.instances if i["metadata"]["name"] == name), None)
    if inst is None:
        return None
    active = (inst.get("status") or {}).get("activeRun")
    mine = [r for r in fleet.runs if r["spec"].get("instance") == name]
    if active:
        for run in mine:
            if run["metadata"]["name"] == active:
                return run

    def started(r: dict[str, Any]) -> str:
        s = r.get("status") or {}
        return s.get("startTime") or r["metadata"].get("creationTimestamp") or ""

    return max(mine, key=started, default=None)


def _tail(text: str, n: int | None) -> str:
    if not n:
        return text
    return "\n".join(text.splitlines()[-n:])


def local_log_files(state_dir: Path, handle: str | None) -> list[Path]:
    """The TorchX replica logs of a local_cwd job handle (`local_cwd://<session>/<app id>`)."""
    if not handle or "://" not in handle:
        return []
    app_id = handle.rsplit("/", 1)[-1]
    files = glob.glob(str(state_dir / "logs" / "*" / app_id / "**" / "*.log"), recursive=True)
    return sorted(Path(f) for f in files)


def job_logs(fleet: Fleet, run: dict[str, Any], tail: int | None) -> Iterable[tuple[str, str]]:
    """(source, text) per log of the run's current job."""
    handle = (run.get("status") or {}).get("appHandle")
    if fleet.state_dir is not None:
        for path in local_log_files(fleet.state_dir, handle):
            yield str(path.relative_to(fleet.state_dir)), _tail(path.read_text(errors="replace"), tail)
        return
    from kubernetes import client

    from modelfleet.operator.naming import LABEL_RUN, label_value

    core = client.CoreV1Api(fleet.api_client)
    selector = f"{LABEL_RUN}={label_value(run['metadata']['name'])}"
    pods = core.list_namespaced_pod(fleet.namespace, label_selector=selector).items
    if not pods and handle and ":" in handle.rsplit("/", 1)[-1]:
        job_ns = handle.rsplit("/", 1)[-1].split(":", 1)[0]  # jobs may live in the operator's namespace
        pods = core.list_namespaced_pod(job_ns, label_selector=selector).items
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        for container in pod.spec.containers:
            text = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container.name, tail_lines=tail)
            yield f"pod {pod.metadata.namespace}/{pod.metadata.name} container {container.name}", text


# --- report ------------------------------------------------------------------------------------


def history(fleet: Fleet) -> dict[str, list[dict[str, Any]]]:
    """Per instance: its succeeded runs in finishing order (revision, NE, promoted or not)."""
    promoted = {i["metadata"]["name"]: (i.get("status") or {}).get("promotedRevision") for i in fleet.instances}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in sorted(promoted)}
    for run in fleet.runs:
        s = run.get("status") or {}
        inst = run["spec"].get("instance")
        ne = (s.get("metrics") or {}).get("ne")
        if inst in out and s.get("phase") == "Succeeded" and ne is not None:
            out[inst].append(
                {"run": run["metadata"]["name"], "revision": run["spec"].get("revision"), "ne": ne,
                 "finished": s.get("finishTime") or "", "promoted": run["spec"].get("revision") == promoted[inst]}
            )
    for runs in out.values():
        runs.sort(key=lambda r: r["finished"])
    return out


def adoption(fleet: Fleet) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """(techniques, instances, cell) — cell[(technique, instance)] is `adopted` (in the promoted
    model), `pending` (in the template, not yet in the promoted model) or absent."""
    wanted: dict[str, set[str]] = {
        t["metadata"]["name"]: {x["name"] for x in (t.get("spec") or {}).get("techniques", [])} for t in fleet.templates
    }
    cells: dict[tuple[str, str], str] = {}
    techniques: set[str] = set()
    names = []
    for inst in sorted(fleet.instances, key=lambda b: b["metadata"]["name"]):
        name = inst["metadata"]["name"]
        names.append(name)
        have = set((inst.get("status") or {}).get("techniques") or [])
        want = wanted.get((inst.get("spec") or {}).get("templateRef", {}).get("name"), set())
        for tech in have | want:
            techniques.add(tech)
            cells[(tech, name)] = "adopted" if tech in have else "pending"
    return sorted(techniques), names, cells


def write_report(fleet: Fleet, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    hist = history(fleet)
    techniques, names, cells = adoption(fleet)
    fig, (ax_ne, ax_ad) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.35 * len(names) + 2)))
    for name, runs in hist.items():
        if not runs:
            continue
        xs = list(range(1, len(runs) + 1))
        ax_ne.plot(xs, [r["ne"] for r in runs], marker="o", label=name)
        for x, r in zip(xs, runs, strict=True):
            if r["promoted"]:
                ax_ne.scatter([x], [r["ne"]], s=120, facecolors="none", edgecolors="black", zorder=3)
    ax_ne.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax_ne.set_xlabel("trained revision (oldest first; circled: promoted)")
    ax_ne.set_ylabel("NE on held-out data (lower is better)")
    ax_ne.set_title("NE per instance across revisions")
    if any(hist.values()):
        ax_ne.legend(fontsize="small")
    code = {"adopted": 2, "pending": 1}
    grid = [[code.get(cells.get((t, n), ""), 0) for n in names] for t in techniques]
    if techniques and names:
        ax_ad.imshow(grid, cmap=matplotlib.colors.ListedColormap(["#eeeeee", "#f4c542", "#3a9e4f"]), vmin=0, vmax=2, aspect="auto")
        ax_ad.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        ax_ad.set_yticks(range(len(techniques)), techniques, fontsize="small")
    ax_ad.set_title("technique adoption (green: in the promoted model; yellow: pending)")
    fig.tight_layout()
    png = out / "report.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td class='{cells.get((t, n), '')}'>{cells.get((t, n), '')}</td>" for t in techniques) + "</tr>"
        for n in names
    )
    status = "".join(
        f"<tr><td>{html.escape(r['instance'])}</td><td>{html.escape(str(r['revision'] or '-'))}</td><td>{_fmt_ne(r)}</td>"
        f"<td>{html.escape(str(r['reason'] or '-'))}</td><td>{html.escape(str(r['modelUri'] or '-'))}</td></tr>"
        for r in status_rows(fleet)
    )
    page = out / "report.html"
    page.write_text(
        "<!doctype html><meta charset='utf-8'><title>modelfleet report</title>"
        "<style>td,th{padding:2px 8px;border-bottom:1px solid #ddd}.adopted{background:#3a9e4f;color:#fff}.pending{background:#f4c542}</style>"
        f"<h1>modelfleet: {html.escape(fleet.where)}</h1><img src='report.png' alt='NE per instance and technique adoption'>"
        "<h2>Instances</h2><table><tr><th>instance</th><th>revision</th><th>NE</th><th>reason</th><th>model</th></tr>"
        f"{status}</table><h2>Technique adoption</h2><table><tr><th></th>"
        + "".join(f"<th>{html.escape(t)}</th>" for t in techniques)
        + f"</tr>{rows}</table>"
    )
    return [png, page]


# --- the commands ------------------------------------------------------------------------------


def configure_status(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")


def configure_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="INSTANCE|RUN")
    add_source_arguments(parser)
    parser.add_argument("--tail", type=int, default=None, metavar="N", help="only the last N lines of each log")


def configure_report(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    parser.add_argument("--out", default="modelfleet-report", metavar="DIR", help="where report.png and report.html go")


def run_status(args: argparse.Namespace) -> int:
    fleet = load_fleet(args)
    rows = status_rows(fleet)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump(rows, sort_keys=False), end="")
    else:
        print(render_status(fleet, rows))
    return 0


def run_logs(args: argparse.Namespace) -> int:
    fleet = load_fleet(args)
    run = find_run(fleet, args.name)
    if run is None:
        raise CliError(f"{args.name}: no TrainingRun or ModelInstance of that name in {fleet.where}", 1)
    shown = 0
    for source, text in job_logs(fleet, run, args.tail):
        print(f"==> {source} <==")
        print(text.rstrip("\n"))
        shown += 1
    if not shown:
        phase = (run.get("status") or {}).get("phase") or "Pending"
        raise CliError(f"run {run['metadata']['name']} ({phase}) has no logs yet", 1)
    return 0


def run_report(args: argparse.Namespace) -> int:
    fleet = load_fleet(args)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("needs matplotlib: pip install 'modelfleet[report]'", 2) from None
    for path in write_report(fleet, Path(args.out)):
        print(path)
    return 0
