"""The TorchX component the operator launches: `python -m modelfleet.trainer.launch [torchrun
options] -m modelfleet train --spec-json ...` (torchrun's launch, exiting with the failed worker's
classified exit code instead of torchrun's 1; see launch.py).

Importable without torch (the operator imports it). Works with any TorchX scheduler, e.g.
`torchx run -s local_cwd modelfleet/trainer/component.py:train --spec_json "$(cat spec.json)"`.
"""

# No `from __future__ import annotations`: TorchX reads the parameter types at runtime.

import torchx.specs as specs
from torchx.components import dist

from modelfleet.trainer.spec import ResourcesSpec, TrainingSpec

DEFAULT_IMAGE = "ghcr.io/modelfleet/trainer:0.1.0"
LAUNCHER = "python -m modelfleet.trainer.launch"  # torchrun's arguments, the worker's exit code


def train(
    spec_json: str,
    image: str = DEFAULT_IMAGE,
    nnodes: int = 1,
    gpus_per_node: int = 0,
    cpu: int = 2,
    memory_mb: int = 4096,
    max_retries: int = 0,
    env: dict[str, str] | None = None,
) -> specs.AppDef:
    """Train one resolved modelfleet TrainingSpec with torchrun.

    Args:
        spec_json: the TrainingSpec as JSON (wire/camelCase form)
        image: trainer image (local_cwd ignores it and runs in the current directory)
        nnodes: nodes
        gpus_per_node: GPUs per node; one worker process per GPU (one worker on CPU)
        cpu: CPU cores per node
        memory_mb: memory per node in MiB
        max_retries: scheduler-level retries
        env: extra environment variables
    """
    spec = TrainingSpec.model_validate_json(spec_json)  # fail at submit time, not in the pod
    nproc = max(1, gpus_per_node)
    env = dict(env or {})
    if gpus_per_node == 0:
        # one CPU worker: let torch use the cores it was given, not every core on the host
        env.setdefault("OMP_NUM_THREADS", str(cpu))
    name = f"train-{spec.instance}"[:52]
    app = dist.torchrun(
        "train",
        "--spec-json",
        spec_json,
        m="modelfleet",
        image=image,
        name=name,
        cpu=cpu,
        gpu=gpus_per_node,
        memMB=memory_mb,
        j=f"{nnodes}x{nproc}",
        env=env,
        max_retries=max_retries,
    )
    (role,) = app.roles
    cmd = role.args[-1]
    if role.entrypoint != "bash" or not cmd.startswith("torchrun "):
        raise RuntimeError(f"torchx's dist.torchrun changed its command ({role.entrypoint} {role.args}); update LAUNCHER")
    role.args[-1] = LAUNCHER + cmd.removeprefix("torchrun")
    return app


def app_for(
    spec: TrainingSpec, image: str, resources: ResourcesSpec, env: dict[str, str] | None = None
) -> specs.AppDef:
    """The AppDef for a resolved spec and the resources its instance asks for."""
    return train(
        spec.model_dump_json(by_alias=True, exclude_none=True),
        image=image,
        nnodes=resources.nnodes,
        gpus_per_node=resources.gpus_per_node,
        cpu=resources.cpu,
        memory_mb=resources.memory_mb,
        env=env,
    )
