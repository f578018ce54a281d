"""Operator configuration: environment variables (set by the Helm chart from values) and flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

Scheduler = Literal["local_cwd", "kubernetes", "kueue"]
SCHEDULERS: tuple[str, ...] = ("local_cwd", "kubernetes", "kueue")
DEFAULT_TRAINER_IMAGE = "ghcr.io/modelfleet/trainer:0.1.0"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorConfig:
    scheduler: Scheduler = "local_cwd"
    queue: str | None = None  # Volcano queue (kubernetes) or Kueue LocalQueue (kueue)
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    output_uri: str = "/tmp/modelfleet/runs"  # base fsspec URI; a run writes under <base>/<ns>/<run>
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    # Where the cluster launchers create jobs (all runs' jobs, whatever their namespace): the
    # operator's own namespace, where its RBAC for jobs and the shared output claim are.
    jobs_namespace: str | None = None
    metrics_port: int = 8080
    log_dir: str | None = None  # local_cwd: where TorchX writes job logs
    # A shared PVC for path output URIs: mounted into the operator by the chart and into every
    # trainer pod by the cluster launchers, so metrics.json written by a job is readable here.
    output_pvc: str | None = None
    output_mount: str | None = None
    poll_seconds: float = 10.0  # how often in-flight runs are polled
    # kopf's peering record lifetime: a replica that died without withdrawing its record (SIGKILL,
    # a lost node) is taken over by a standby after at most this long. kopf's default is 60 s.
    peering_lifetime: int | None = None
    progress_seconds: float = 30.0  # at most one status.progress write per run per this long
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if env is None else env)
        scheduler = env.get("MODELFLEET_SCHEDULER", "local_cwd")
        if scheduler not in SCHEDULERS:
            raise ConfigError(
                f"MODELFLEET_SCHEDULER={scheduler!r} is not a scheduler; allowed: {', '.join(SCHEDULERS)}"
            )
        queue = env.get("MODELFLEET_QUEUE") or None
        if scheduler == "kueue" and not queue:
            raise ConfigError("MODELFLEET_QUEUE must name a Kueue LocalQueue when MODELFLEET_SCHEDULER=kueue")
        try:
            port = int(env.get("MODELFLEET_METRICS_PORT", "8080"))
            poll = float(env.get("MODELFLEET_POLL_SECONDS", "10"))
            lifetime = int(env["MODELFLEET_PEERING_LIFETIME_SECONDS"]) if env.get("MODELFLEET_PEERING_LIFETIME_SECONDS") else None
            progress = float(env.get("MODELFLEET_PROGRESS_SECONDS", "30"))
        except ValueError as exc:
            raise ConfigError(
                f"MODELFLEET_METRICS_PORT/MODELFLEET_POLL_SECONDS/MODELFLEET_PEERING_LIFETIME_SECONDS/"
                f"MODELFLEET_PROGRESS_SECONDS: {exc}"
            ) from None
        if lifetime is not None and lifetime < 1:
            raise ConfigError(f"MODELFLEET_PEERING_LIFETIME_SECONDS={lifetime}: must be at least 1 second")
        if bool(env.get("MODELFLEET_OUTPUT_PVC")) != bool(env.get("MODELFLEET_OUTPUT_MOUNT")):
            raise ConfigError("MODELFLEET_OUTPUT_PVC and MODELFLEET_OUTPUT_MOUNT must be set together")
        namespaces = tuple(n for n in env.get("MODELFLEET_NAMESPACES", "").split(",") if n.strip())
        return cls(
            scheduler=scheduler,  # type: ignore[arg-type]
            queue=queue,
            trainer_image=env.get("MODELFLEET_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE),
            output_uri=env.get("MODELFLEET_OUTPUT_URI", cls.output_uri),
            namespaces=namespaces,
            jobs_namespace=env.get("MODELFLEET_JOBS_NAMESPACE") or None,
            metrics_port=port,
            log_dir=env.get("MODELFLEET_LOG_DIR") or None,
            output_pvc=env.get("MODELFLEET_OUTPUT_PVC") or None,
            output_mount=env.get("MODELFLEET_OUTPUT_MOUNT") or None,
            poll_seconds=poll,
            peering_lifetime=lifetime,
            progress_seconds=progress,
        )
