"""What the data pre-flight adds to a plan: the first look (real file I/O, once per instance change)
and every later plan (cache lookups only), beside the plan itself.

    .venv/bin/python -P benchmarks/datachecks.py [N ...]

Per n: n instances on CSV files that exist (one file each, in a temporary folder), none promoted,
no runs (a fresh rollout: every instance may be queued, so every one is looked up). Rounds
alternate plan / cached checks, 5 rounds; the table shows medians and the spread (min-max).
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from modelfleet.api.resources import ModelInstance, ModelTemplate
from modelfleet.operator.datachecks import DataChecks
from modelfleet.operator.planner import plan_template

ROUNDS = 5


def world(n: int, folder: Path) -> tuple[ModelTemplate, list[ModelInstance]]:
    t = ModelTemplate.model_validate(
        {
            "metadata": {"name": "ctr", "namespace": "default", "generation": 1, "uid": "t"},
            "spec": {"techniques": [{"name": "grad-clip"}], "rollout": {"maxConcurrentRuns": 100, "canary": {"count": 5}}},
        }
    )
    instances = []
    for i in range(n):
        path = folder / f"m{i:05d}.csv"
        path.write_text("x,c,click\n1,a,0\n")
        data = {"format": "csv", "trainUri": str(path), "denseColumns": ["x"], "sparseColumns": ["c"]}
        instances.append(
            ModelInstance.model_validate(
                {
                    "metadata": {"name": f"m{i:05d}", "namespace": "default", "generation": 1, "uid": f"u{i}"},
                    "spec": {"templateRef": {"name": "ctr"}, "event": "click", "data": data},
                }
            )
        )
    return t, instances


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main(sizes: list[int]) -> None:
    print(f"{'instances':>9}  {'first check s':>13}  {'plan s (min-max)':>22}  {'cached checks s (min-max)':>26}  {'cached/plan':>11}")
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t, instances = world(n, Path(tmp))
            checks = DataChecks()
            first = timed(lambda: checks.problems(t, instances, []))
            assert checks.calls == n
            plans, cached = [], []
            for _ in range(ROUNDS):
                plans.append(timed(lambda: plan_template(t, instances, [], dt.datetime.now(dt.UTC), output_uri="/o", image="img")))
                cached.append(timed(lambda: checks.problems(t, instances, [])))
            assert checks.calls == n  # no I/O after the first look
            ratio = statistics.median(cached) / statistics.median(plans)
            print(f"{n:>9}  {first:>13.3f}  {spread(plans):>22}  {spread(cached):>26}  {ratio:>11.2f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000])
