"""How long one `plan_template` takes for n instances (the planner must stay O(n + k)).

    .venv/bin/python -P benchmarks/planner.py [N ...]

Prints a table: instances, runs, plan seconds, seconds per instance, actions. Two worlds per n:
a fresh rollout (no runs) and mid-rollout (every instance has a run in flight at the revision).
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from modelfleet.api.resolve import instance_revision, resolve_training_spec, template_revision
from modelfleet.api.resources import ModelInstance, ModelTemplate, TrainingRun, TrainingRunSpec
from modelfleet.operator.naming import run_name
from modelfleet.operator.planner import LABEL_WAVE, plan_template


def world(n: int, with_runs: bool):
    t = ModelTemplate.model_validate(
        {
            "metadata": {"name": "ctr", "namespace": "default", "generation": 1},
            "spec": {
                "techniques": [{"name": "grad-clip"}, {"name": "lowrank-cross", "params": {"rank": 8}}],
                "rollout": {"maxConcurrentRuns": 100, "canary": {"count": 5}},
            },
        }
    )
    instances = [
        ModelInstance.model_validate(
            {
                "metadata": {"name": f"m{i:05d}", "namespace": "default", "generation": 1},
                "spec": {"templateRef": {"name": "ctr"}, "event": "click", "data": {"format": "synthetic"}},
            }
        )
        for i in range(n)
    ]
    runs = []
    if with_runs:
        rev = template_revision(t.spec)
        for inst in instances:
            r = instance_revision(t, inst)
            name = run_name(inst.metadata.name, r)
            spec = TrainingRunSpec(instance=inst.metadata.name, revision=r, template_revision=rev, training=resolve_training_spec(t, inst, output_uri=f"/o/{name}"))
            runs.append(TrainingRun.model_validate({"metadata": {"name": name, "labels": {LABEL_WAVE: "2"}}, "spec": spec.model_dump(by_alias=True), "status": {"phase": "Running"}}))
    return t, instances, runs


def main(sizes: list[int]) -> None:
    print(f"{'instances':>9} {'runs':>6} {'seconds':>8} {'ms/instance':>11} {'actions':>8}")
    for n in sizes:
        for with_runs in (False, True):
            t, instances, runs = world(n, with_runs)
            start = time.perf_counter()
            plan = plan_template(t, instances, runs, dt.datetime.now(dt.UTC), output_uri="/o", image="img")
            secs = time.perf_counter() - start
            print(f"{n:>9} {len(runs):>6} {secs:>8.3f} {1000 * secs / n:>11.3f} {len(plan.actions):>8}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000])
