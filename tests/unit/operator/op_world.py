"""Builders for the operator's unit tests: templates, instances, a fake launcher, a world loop.

The fake launcher stands in for TorchX (no cluster, no GPU here); it implements the launcher
protocol the run reconciler uses and lets a test decide each job's fate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import fakes

from modelfleet.api.resources import ModelInstance, ModelTemplate, TrainingRun
from modelfleet.operator import metrics
from modelfleet.operator.apply import apply_plan
from modelfleet.operator.planner import plan_template
from modelfleet.operator.runs import reconcile_run
from modelfleet.operator.store import FileStore

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def template(name: str = "ctr", techniques: list[dict] | None = None, rollout: dict | None = None, **spec: Any) -> ModelTemplate:
    return ModelTemplate.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "generation": 1, "uid": f"uid-{name}"},
            "spec": {
                "architecture": {"embedding": {"dim": 8, "buckets": 100}, "bottomMlp": [16, 8], "overArch": [16]},
                "techniques": techniques if techniques is not None else [{"name": "grad-clip", "params": {"maxNorm": 1.0}}],
                "recipe": {"steps": 5, "batchSize": 32},
                "rollout": rollout or {},
                **spec,
            },
        }
    )


def instance(name: str, template_name: str = "ctr", **spec: Any) -> ModelInstance:
    return ModelInstance.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "generation": 1, "uid": f"uid-{name}"},
            "spec": {
                "templateRef": {"name": template_name},
                "event": "click",
                "data": {"format": "synthetic", "synthetic": {"rows": 200, "dense": 4, "sparse": 3}},
                **spec,
            },
        }
    )


class FakeLauncher(fakes.FakeLauncher):
    """The shared fake launcher (tests/fakes.py); here a submitted job starts Running."""

    initial = "RUNNING"


def parse(kind: type, body: dict) -> Any:
    return kind.model_validate({k: v for k, v in body.items() if k in ("apiVersion", "kind", "metadata", "spec", "status")})


class World:
    """A FileStore namespace plus the planner and run reconciler, stepped by the test.

    With `feed_metrics`, it feeds the Prometheus metrics where the kopf handlers do: after a plan
    is applied, and where a run's status patch is written. With `data_checks`
    (operator/datachecks.DataChecks) it runs the data pre-flight as the operator does.
    """

    def __init__(
        self,
        root,
        launcher: FakeLauncher | None = None,
        metrics: dict[str, float] | None = None,
        feed_metrics: bool = False,
        data_checks: Any = None,
    ):
        self.store = FileStore(root)
        self.launcher = launcher or FakeLauncher()
        self.ne: dict[str, float] = dict(metrics or {})  # run name -> NE it reports
        self.now = T0
        self.feed_metrics = feed_metrics
        self.data_checks = data_checks

    def put(self, obj: Any) -> None:
        body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        body.pop("status", None)
        self.store.put(obj.kind, body)

    def template(self, name: str = "ctr") -> ModelTemplate:
        return parse(ModelTemplate, self.store.get("ModelTemplate", name))

    def instances(self) -> list[ModelInstance]:
        return [parse(ModelInstance, b) for b in self.store.list("ModelInstance")]

    def instance(self, name: str) -> dict:
        return self.store.get("ModelInstance", name)

    def runs(self) -> list[TrainingRun]:
        return [parse(TrainingRun, b) for b in self.store.list("TrainingRun")]

    def run(self, name: str) -> dict | None:
        return self.store.get("TrainingRun", name)

    def plan(self, name: str = "ctr", **kw: Any):
        template, instances, runs = self.template(name), self.instances(), self.runs()
        if self.data_checks is not None:
            kw.setdefault("data_problems", self.data_checks.problems(template, instances, runs))
        return plan_template(template, instances, runs, self.now, output_uri="/tmp/out", image="img", estimate=kw.pop("estimate", None), **kw)

    def step(self, name: str = "ctr"):
        """Plan + apply, then reconcile every run once. Returns the plan."""
        instances = self.instances()
        plan = self.plan(name)
        apply_plan(plan, self.store, launcher=self.launcher, now=self.now)
        if self.feed_metrics:
            metrics.observe_plan(self.template(name).metadata.namespace, name, plan, instances)
        self.reconcile()
        return plan

    def reconcile(self) -> None:
        policy = self.template().spec.rollout
        for run in self.runs():
            upd = reconcile_run(run, self.launcher, self.now, policy=policy, read_metrics=self._metrics)
            if upd.status_patch:
                self.store.patch_status("TrainingRun", run.metadata.name, upd.status_patch)
                if self.feed_metrics:
                    metrics.observe_run(run, upd.status_patch)

    def _metrics(self, uri: str) -> dict | None:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        ne = self.ne.get(name, self.ne.get("*", 0.8))
        return {"ne": ne, "auc": 0.75, "calibration": 1.01, "examples": 40, "steps": 5}
