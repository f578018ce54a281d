"""The jobs the cluster launchers submit, rendered offline (TorchX dry runs) and validated against
the Kubernetes OpenAPI schemas; the kueue scheduler's plugin registration and TorchX CLI."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelfleet.api.resources import TrainingRunSpec
from modelfleet.operator import naming
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.kueue_scheduler import QUEUE_LABEL, KueueScheduler, app_to_job, Opts
from modelfleet.operator.launcher import KueueLauncher, VolcanoLauncher, make_launcher
from modelfleet.trainer.spec import TrainingSpec

REPO = Path(__file__).resolve().parents[3]
K8S = "1.30"  # the oldest Kubernetes we support; batch/v1 Indexed Jobs with suspend are GA there


def run_spec(nnodes: int = 2, gpus: int = 1, image: str | None = None) -> TrainingRunSpec:
    training = TrainingSpec.model_validate({
        "instance": "ctr-feed", "revision": "abc123", "event": "click", "architecture": {},
        "data": {"format": "synthetic", "synthetic": {"rows": 200}}, "outputUri": "s3://bucket/ml/ctr-feed-abc123",
    })
    return TrainingRunSpec(instance="ctr-feed", revision="abc123", training=training, image=image,
                           resources={"nnodes": nnodes, "gpusPerNode": gpus, "cpu": 4, "memoryMb": 8192})


LABELS = {naming.LABEL_INSTANCE: "ctr-feed", naming.LABEL_TEMPLATE: "ranking"}


def kueue_render(**kw: Any):
    launcher = KueueLauncher(OperatorConfig(scheduler="kueue", queue="team-a"), api_client=object())
    return launcher.render("ctr-feed-abc123", 3, run_spec(**kw), dict(LABELS), namespace="ml").request


def test_kueue_job_is_a_valid_suspended_indexed_job() -> None:
    req = kueue_render()
    job, svc = req.job, req.service
    kubernetes_validate.validate(job, K8S, strict=True)
    kubernetes_validate.validate(svc, K8S, strict=True)
    spec = job["spec"]
    assert spec["suspend"] is True and spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == 2
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert job["metadata"]["namespace"] == "ml"
    for obj in (job, spec["template"], svc):
        labels = obj["metadata"]["labels"]
        assert labels[naming.LABEL_RUN] == "ctr-feed-abc123" and labels[naming.LABEL_ATTEMPT] == "3"
        assert labels[naming.LABEL_INSTANCE] == "ctr-feed"
    (container,) = spec["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"] == {"cpu": "4000m", "memory": "8192Mi", "nvidia.com/gpu": "1"}
    assert container["image"] == "ghcr.io/modelfleet/trainer:0.1.0"  # the operator default


def test_kueue_rendezvous_goes_through_the_headless_service() -> None:
    req = kueue_render(nnodes=3)
    name = req.job["metadata"]["name"]
    pod_spec = req.job["spec"]["template"]["spec"]
    assert len(f"{name}-2") <= 63, "indexed pod hostnames must stay DNS labels"
    assert pod_spec["subdomain"] == name == req.service["metadata"]["name"]
    assert req.service["spec"]["clusterIP"] == "None"
    assert req.service["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}
    env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
    assert env["TORCHX_RANK0_HOST"] == f"{name}-0.{name}"
    script = pod_spec["containers"][0]["command"][-1]
    assert "${TORCHX_RANK0_HOST:=localhost}:29500" in script and "--nnodes 3" in script
    # The trainer gets the resolved spec back intact through the shell quoting.
    argv = shlex.split(script)
    spec_json = argv[argv.index("--spec-json") + 1]
    assert TrainingSpec.model_validate_json(spec_json).output_uri == "s3://bucket/ml/ctr-feed-abc123"


def test_kueue_run_image_wins_over_operator_default() -> None:
    req = kueue_render(image="registry.example/trainer:dev")
    assert req.job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/trainer:dev"


def test_kueue_rejects_multi_role_apps_by_name() -> None:
    from torchx.specs import AppDef, Resource, Role

    r = Resource(cpu=1, gpu=0, memMB=512)
    app = AppDef("two", roles=[Role("a", image="x", resource=r), Role("b", image="x", resource=r)])
    with pytest.raises(ValueError, match="'two' has 2 roles"):
        app_to_job(app, Opts(queue="q"))


def test_volcano_job_carries_our_labels_and_valid_pod_templates() -> None:
    launcher = VolcanoLauncher(OperatorConfig(scheduler="kubernetes", queue="gpu"), api_client=object())
    resource = launcher.render("ctr-feed-abc123", 1, run_spec(nnodes=2), dict(LABELS), namespace="ml").request.resource
    assert resource["apiVersion"] == "batch.volcano.sh/v1alpha1" and resource["spec"]["queue"] == "gpu"
    assert resource["metadata"]["labels"][naming.LABEL_RUN] == "ctr-feed-abc123"
    assert resource["metadata"]["labels"][naming.LABEL_ATTEMPT] == "1"
    tasks = resource["spec"]["tasks"]
    assert len(tasks) == 2  # TorchX renders one task per replica
    for task in tasks:
        pod = task["template"]
        # The Volcano Job is a CRD; its pod templates are core/v1 PodTemplateSpecs.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": pod}, K8S, strict=True
        )
        assert pod["metadata"]["labels"][naming.LABEL_RUN] == "ctr-feed-abc123"
        name = f"{resource['metadata']['name']}-{task['name']}-0"
        assert len(name) <= 63, f"pod name {name} too long"


def test_cluster_launchers_need_a_queue() -> None:
    with pytest.raises(ValueError, match="MODELFLEET_QUEUE"):
        make_launcher(OperatorConfig(scheduler="kueue"))
    with pytest.raises(ValueError, match="Volcano queue"):
        make_launcher(OperatorConfig(scheduler="kubernetes"))


def test_kueue_is_a_registered_torchx_scheduler() -> None:
    from torchx.schedulers import get_scheduler_factories

    factories = get_scheduler_factories()
    assert "kueue" in factories
    assert isinstance(factories["kueue"]("s"), KueueScheduler)


def test_torchx_cli_dryrun_with_kueue() -> None:
    # `torchx run -s kueue` finds our scheduler and renders the trainer's own component.
    spec = run_spec(nnodes=2, gpus=1).training.model_dump_json(by_alias=True, exclude_none=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "torchx"), "run", "-s", "kueue", "--dryrun", "-cfg", "queue=team-a,namespace=ml",
         "trainer/component.py:train", "--spec_json", spec, "--nnodes", "2", "--gpus_per_node", "1"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout.split("=== SCHEDULER REQUEST ===", 1)[1]) if d]
    job = next(d for d in docs if d["kind"] == "Job")
    svc = next(d for d in docs if d["kind"] == "Service")
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a" and job["spec"]["suspend"] is True
    assert job["spec"]["completions"] == 2 and job["metadata"]["namespace"] == "ml"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    argv = shlex.split(container["command"][-1])
    assert TrainingSpec.model_validate_json(argv[argv.index("--spec-json") + 1]) == run_spec().training
    kubernetes_validate.validate(job, K8S, strict=True)
    kubernetes_validate.validate(svc, K8S, strict=True)


def test_rendering_jobs_needs_no_torch() -> None:
    # build_app imports the trainer's component lazily; it and TorchX must stay torch-free.
    code = '''
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked: something imported {name!r}")
sys.meta_path.insert(0, NoTorch())
sys.path.insert(0, sys.argv[1])
from test_launcher_render import kueue_render, run_spec, LABELS
from modelfleet.operator.config import OperatorConfig
from modelfleet.operator.launcher import VolcanoLauncher
kueue_render()
VolcanoLauncher(OperatorConfig(scheduler="kubernetes", queue="q"), api_client=object()).render("r", 1, run_spec(), {})
assert "torch" not in sys.modules
'''
    proc = subprocess.run([sys.executable, "-P", "-c", code, str(Path(__file__).parent)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("scheduler", ["kueue", "kubernetes"])
def test_shared_output_claim_is_mounted_into_every_trainer_pod(scheduler: str) -> None:
    config = OperatorConfig(scheduler=scheduler, queue="q", output_pvc="modelfleet-out", output_mount="/data")
    launcher = make_launcher(config, api_client=object())
    request = launcher.render("ctr-feed-abc123", 1, run_spec(nnodes=2), dict(LABELS), namespace="ml").request
    if scheduler == "kueue":
        pods = [request.job["spec"]["template"]]
    else:
        pods = [t["template"] for t in request.resource["spec"]["tasks"]]
    for pod in pods:
        pod = yaml.safe_load(yaml.safe_dump(pod))  # kubernetes client objects -> plain dicts
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if v.get("persistentVolumeClaim")}
        assert list(claims.values()) == ["modelfleet-out"]
        mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts[next(iter(claims))] == "/data"


def test_output_claim_without_mount_path_is_a_config_error() -> None:
    from modelfleet.operator.config import ConfigError

    with pytest.raises(ConfigError, match="MODELFLEET_OUTPUT_PVC and MODELFLEET_OUTPUT_MOUNT"):
        OperatorConfig.from_env({"MODELFLEET_OUTPUT_PVC": "out"})


def test_kueue_job_fails_at_once_on_the_trainers_permanent_exit_codes() -> None:
    from modelfleet.trainer.report import PERMANENT_EXIT_CODES, ExitCode

    job = kueue_render().job
    kubernetes_validate.validate(job, K8S, strict=True)
    policy = job["spec"]["podFailurePolicy"]
    fail, ignore = policy["rules"]
    assert fail == {"action": "FailJob", "onExitCodes": {"operator": "In", "values": sorted(PERMANENT_EXIT_CODES)}}
    assert fail["onExitCodes"]["values"] == [2, 3, 4, 5, 6, 7]  # bad spec, data, format, labels, divergence, checkpoint
    assert int(ExitCode.TRANSIENT) not in fail["onExitCodes"]["values"]  # transient trouble keeps its retries
    assert ignore == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    # Kubernetes accepts a podFailurePolicy only with restartPolicy Never.
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_kueue_scheduler_alone_has_no_pod_failure_policy_unless_asked() -> None:
    # The scheduler is usable for any TorchX app (`torchx run -s kueue`): another app's exit codes
    # mean something else, so only the operator's launcher asks for the policy.
    from torchx.specs import AppDef, Resource, Role

    app = AppDef("one", roles=[Role("r", image="x", resource=Resource(cpu=1, gpu=0, memMB=512))])
    assert "podFailurePolicy" not in app_to_job(app, Opts(queue="q")).job["spec"]
    job = app_to_job(app, Opts(queue="q", fail_on_exit_codes=["4", "2"])).job
    assert job["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, 4]
    kubernetes_validate.validate(job, K8S, strict=True)


def test_volcano_tasks_terminate_the_job_on_the_trainers_permanent_exit_codes() -> None:
    from modelfleet.trainer.report import PERMANENT_EXIT_CODES

    launcher = VolcanoLauncher(OperatorConfig(scheduler="kubernetes", queue="gpu"), api_client=object())
    resource = launcher.render("ctr-feed-abc123", 1, run_spec(nnodes=2), dict(LABELS), namespace="ml").request.resource
    for task in resource["spec"]["tasks"]:
        policies = task["policies"]
        # Volcano's LifecyclePolicy: exitCode (never 0) xor event; TerminateJob cannot be resumed,
        # and it keeps the failed pods, whose exit code names the reason.
        assert policies == [{"exitCode": c, "action": "TerminateJob"} for c in sorted(PERMANENT_EXIT_CODES)]
        assert all(p["exitCode"] != 0 and "event" not in p for p in policies)
        assert task["template"]["spec"]["restartPolicy"] == "Never"
