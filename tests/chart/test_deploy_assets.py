"""What cannot run here (no Docker, no cluster) is checked for being correct by construction:
the Dockerfiles, kind-config.yaml, hack/kind-up.sh and its manifests, and docs/quickstart.md's
commands -- against the chart's schema, the repository's files and the operator's contract."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from chart_tools import KUBE_MINOR, NAMESPACE, ROOT, chart

SCRIPT = ROOT / "hack" / "kind-up.sh"
QUICKSTART = ROOT / "docs" / "quickstart.md"
IMAGES = {"operator": ROOT / "images" / "operator.Dockerfile", "trainer": ROOT / "images" / "trainer.Dockerfile"}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _ignored(dockerfile: Path, path: str) -> bool:
    """BuildKit's <Dockerfile>.dockerignore semantics: last matching pattern wins, ! re-includes."""
    ignored = False
    for pat in Path(f"{dockerfile}.dockerignore").read_text().splitlines():
        pat = pat.strip()
        if not pat or pat.startswith("#"):
            continue
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes):
            ignored = not neg
    return ignored


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_pinned_and_non_root(image: str):
    ins = _instructions(IMAGES[image])
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    base = args["PYTHON_IMAGE"]
    python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert ">=3.11,<3.12" == python  # the base's Python is the one the project supports
    froms = [a for w, a in ins if w == "FROM"]
    assert froms and all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms)
    users = [a for w, a in ins if w == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "the last USER must be numeric non-root"
    assert users[-1].split(":")[0] == "65532"  # the chart's runAsUser
    # everything copied from the context exists and is not excluded by the .dockerignore
    for w, a in ins:
        if w == "COPY" and "--from=" not in a:
            srcs = [s for s in shlex.split(a) if not s.startswith("--")][:-1]
            for src in srcs:
                assert (ROOT / src).exists(), f"{image}: COPY {src} does not exist"
                assert not _ignored(IMAGES[image], src.rstrip("/")), f"{image}: COPY {src} is .dockerignored"


def test_operator_image_has_no_torch_and_the_trainer_has_it():
    op = " ".join(a for w, a in _instructions(IMAGES["operator"]) if w == "RUN")
    tr = " ".join(a for w, a in _instructions(IMAGES["trainer"]) if w == "RUN")
    assert "--constraint /tmp/constraints.txt ." in op and "[train]" not in op
    assert '! /opt/modelfleet/bin/python -c "import torch"' in op  # the build fails if torch sneaks in
    assert '".[train]"' in tr and "import torch" in tr
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.split("==")[0] == "torch" for d in extras["dependencies"])
    assert any(d.startswith("torch==") for d in extras["optional-dependencies"]["train"])


def test_constraints_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(d.split("==") for d in project["dependencies"] + project["optional-dependencies"]["train"])
    cons = dict(
        line.split("==") for line in (ROOT / "images" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    cons = {norm(k): v for k, v in cons.items()}
    for name, version in pins.items():
        if norm(name) == "torch":
            assert "torch" not in cons  # CPU or CUDA is the image's choice, not the constraints'
            continue
        assert cons.get(norm(name)) == version, f"images/constraints.txt pins {name} differently from pyproject.toml"


def test_trainer_image_serves_the_quickstart_data():
    ins = _instructions(IMAGES["trainer"])
    workdir = [a for w, a in ins if w == "WORKDIR"][-1]
    copies = [shlex.split(a) for w, a in ins if w == "COPY" and "examples/quickstart/data/" in a]
    assert copies and copies[0][-1].rstrip("/") == f"{workdir}/data"
    for p in sorted((ROOT / "examples" / "quickstart").glob("instance-*.yaml")):
        uri = yaml.safe_load(p.read_text())["spec"]["data"]["trainUri"]
        assert uri.startswith("data/") and (ROOT / "examples" / "quickstart" / uri).exists(), uri


def test_kind_config():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker"]
    worker = cfg["nodes"][1]
    assert worker["labels"]["modelfleet.dev/pool"] == "cpu"
    minor = {int(re.search(r"v1\.(\d+)\.", n["image"]).group(1)) for n in cfg["nodes"]}
    kube_min = int(re.search(r">=1\.(\d+)", chart().metadata["kubeVersion"]).group(1))
    assert len(minor) == 1 and kube_min <= minor.pop() <= int(KUBE_MINOR.split(".")[1])


def _helm_command(text: str) -> list[str]:
    m = re.search(r"(helm upgrade --install .*?)(?:\n\s*\n|\n```)", text, re.S)
    assert m, "no helm upgrade --install"
    return shlex.split(m.group(1).replace("\\\n", " "))


def _values_from(argv: list[str]) -> dict:
    values: dict = {}
    for flag, item in zip(argv, argv[1:]):
        if flag in ("--set", "--set-json"):
            # Helm's own --set / --set-json parsers (strvals), through the SDK
            _merge(values, helm.parse_set_string(item) if flag == "--set" else helm.parse_set_json(item))
    return values


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def run_kind_up(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run hack/kind-up.sh for real with docker, kind, kubectl and helm replaced by stubs that
    record their arguments (exactly as bash expanded them) and succeed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for tool in ("docker", "kind", "kubectl", "helm"):
        stub = bin_dir / tool
        stub.write_text('#!/usr/bin/env bash\nprintf \'%s\\x1f\' "$(basename "$0")" "$@" >> "$STUB_LOG"\nprintf \'\\x1e\' >> "$STUB_LOG"\n')
        stub.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp_path), **env},
    )
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(log)
    return [c.split("\x1f")[:-1] for c in log.read_text().split("\x1e") if c]


@pytest.mark.parametrize("scheduler", ["kueue", "volcano"])
def test_kind_up_runs_the_quickstart_in_order_with_valid_values(scheduler: str, tmp_path: Path):
    calls = run_kind_up(tmp_path, SCHEDULER=scheduler)
    flat = [" ".join(c) for c in calls]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    op_image, tr_image = f"modelfleet/operator:{version}-dev", f"modelfleet/trainer:{version}-dev-cpu"

    def index(prefix: str) -> int:
        hits = [i for i, c in enumerate(flat) if c.startswith(prefix)]
        assert hits, f"hack/kind-up.sh never ran `{prefix}`"
        return hits[0]

    order = [
        index("kind create cluster --name modelfleet --config kind-config.yaml"),
        index(f"docker build -f images/operator.Dockerfile -t {op_image} ."),
        index(f"kind load docker-image --name modelfleet {op_image} {tr_image}"),
        index("kubectl apply --server-side -f https://"),
        index("kubectl apply -f hack/kind/namespace.yaml -f hack/kind/storage.yaml"),
        index("helm upgrade --install modelfleet charts/modelfleet --namespace modelfleet-system"),
        index("kubectl apply -f examples/quickstart/"),
        index("kubectl wait --for=condition=Ready modelinstance --all"),
    ]
    assert order == sorted(order), flat
    assert f"docker build -f images/trainer.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t {tr_image} ." in flat
    installer = flat[order[3]]
    assert ("kueue" in installer) == (scheduler == "kueue") and ("volcano" in installer) == (scheduler == "volcano")
    assert any(c.startswith("kubectl apply -f hack/kind/kueue-queues.yaml") for c in flat) == (scheduler == "kueue")

    helm_call = calls[order[5]]
    values = _values_from(helm_call)
    chart().validate_schema(values)
    assert values["image"] == {"repository": "modelfleet/operator", "tag": f"{version}-dev", "pullPolicy": "Never"}
    assert values["operator"]["trainerImage"] == tr_image
    assert values["operator"]["scheduler"] == {"kueue": "kueue", "volcano": "kubernetes"}[scheduler]
    assert values["nodeSelector"] == {"modelfleet.dev/pool": "cpu"}  # the kind worker's label
    assert "--wait" in helm_call
    # the storage it mounts is the PVC the script creates, in the release namespace
    pvc = yaml.safe_load((ROOT / "hack" / "kind" / "storage.yaml").read_text())
    assert (pvc["metadata"]["name"], pvc["metadata"]["namespace"]) == (values["storage"]["existingClaim"], NAMESPACE)
    assert values["operator"]["outputUri"].startswith(values["storage"]["mountPath"] + "/")
    if scheduler == "kueue":
        queues = list(yaml.safe_load_all((ROOT / "hack" / "kind" / "kueue-queues.yaml").read_text()))
        lq = next(q for q in queues if q["kind"] == "LocalQueue")
        assert (lq["metadata"]["name"], lq["metadata"]["namespace"]) == (values["operator"]["queue"], NAMESPACE)
        cq = next(q for q in queues if q["kind"] == "ClusterQueue")
        assert lq["spec"]["clusterQueue"] == cq["metadata"]["name"]
        flavors = {q["metadata"]["name"] for q in queues if q["kind"] == "ResourceFlavor"}
        assert {f["name"] for g in cq["spec"]["resourceGroups"] for f in g["flavors"]} <= flavors
    else:
        assert values["operator"]["queue"] == "default"  # the queue Volcano's installer creates


def test_kind_up_rejects_an_unknown_scheduler(tmp_path: Path):
    with pytest.raises(AssertionError, match="SCHEDULER=slurm; use kueue or volcano"):
        run_kind_up(tmp_path, SCHEDULER="slurm")


def test_kind_manifests_are_valid_kubernetes():
    for name in ("namespace.yaml", "storage.yaml"):
        for doc in yaml.safe_load_all((ROOT / "hack" / "kind" / name).read_text()):
            kubernetes_validate.validate(doc, KUBE_MINOR, strict=True)
    ns = yaml.safe_load((ROOT / "hack" / "kind" / "namespace.yaml").read_text())
    assert ns["metadata"]["name"] == NAMESPACE
    # TorchX's pods carry no securityContext: restricted would reject them, baseline admits them
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"


def test_quickstart_doc_commands_match_the_repo():
    text = QUICKSTART.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    commands = "\n".join(blocks)
    for path in re.findall(r"(?:-f|--config|--patch-file)\s+((?:hack|examples|charts|images|deploy)/[\w./-]+|kind-config\.yaml)", commands):
        assert (ROOT / path).exists(), f"docs/quickstart.md refers to missing {path}"
    # the doc's helm install uses values the chart accepts, and the images the doc built
    argv = _helm_command(commands)
    values = _values_from(argv)
    chart().validate_schema(values)
    built = set(re.findall(r"-t (\S+) \.", commands))
    assert f"{values['image']['repository']}:{values['image']['tag']}" in built
    assert values["operator"]["trainerImage"] in built
    loaded = re.search(r"kind load docker-image --name modelfleet (.*)", commands).group(1).split()
    assert set(loaded) == built
    # the kind cluster name the doc uses is the config's
    assert yaml.safe_load((ROOT / "kind-config.yaml").read_text())["name"] == "modelfleet"
    for step in ("kind create cluster", "helm upgrade --install", "kubectl apply -f examples/quickstart/", "kubectl get modelfleet"):
        assert step in commands


def test_quickstart_technique_patch_is_valid():
    """The doc's `kubectl patch` adds a technique the catalogue accepts."""
    from modelfleet.trainer.spec import TechniqueRef
    from modelfleet.trainer.techniques.catalogue import validate_techniques

    m = re.search(r"kubectl patch mt adult-ctr --type json -p '(.*?)'", QUICKSTART.read_text())
    ops = yaml.safe_load(m.group(1))
    validate_techniques([TechniqueRef.model_validate(ops[0]["value"])])
