"""The data pre-flight for the planner's callers: `check_data` once per instance change, not per plan.

    DataChecks(base_dir=None).problems(template, instances, runs) -> {instance: [DataProblem]}

The planner is pure, so `modelfleet local`, `modelfleet plan` and the kopf rollout daemon run the
check and pass the result in (`plan_template(..., data_problems=...)`). Plans run often and a fleet
has thousands of instances, so the I/O is done only
- for instances a plan may queue a run for: not suspended, desired revision neither promoted nor
  with a run (a Superseded or Cancelled one is remade, so it counts as none);
- once per instance change: the result is kept per instance (uid) under its generation and
  desired revision, which hashes everything the check reads (data spec, event, overrides, the
  template's tasks that name the label columns). An edit of the instance, or a template change
  that makes a new revision -- a new run to vet -- checks again; otherwise an instance is never
  checked twice. (A file uploaded later is seen after the next such change or an operator restart.)

Trouble reaching the storage (anything but the problems `check_data` reports) is logged and not
cached: a transient error must not block an instance; the trainer still checks for itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelfleet.api.resolve import instance_revision, resolve_training_spec, template_revision
from modelfleet.api.resources import ModelInstance, ModelTemplate, TrainingRun
from modelfleet.operator.naming import run_name
from modelfleet.trainer.preflight import DataProblem, check_data, label_fields

log = logging.getLogger(__name__)

_REMADE = ("Superseded", "Cancelled")  # a run in these phases at the desired revision is made again


class DataChecks:
    """Cached data pre-flight (see the module docstring). Thread-safe; `calls` counts checks made."""

    def __init__(
        self,
        *,
        base_dir: str | None = None,
        check: Callable[..., Any] = check_data,
        workers: int = 8,
    ):
        self.base_dir = base_dir
        self._check = check
        self._workers = workers
        self._results: dict[str, tuple[Any, list[DataProblem]]] = {}  # uid -> (key, problems)
        self._lock = threading.Lock()
        self.calls = 0

    def problems(
        self, template: ModelTemplate, instances: Sequence[ModelInstance], runs: Sequence[TrainingRun]
    ) -> dict[str, list[DataProblem]]:
        """Instance name -> its data problems, for the instances a plan may start a run for."""
        existing = {r.metadata.name for r in runs if not (r.status and r.status.phase in _REMADE)}
        template_rev = template_revision(template.spec)
        out: dict[str, list[DataProblem]] = {}
        todo: list[tuple[str, Any, ModelInstance]] = []
        for inst in instances:
            if inst.spec.suspend:
                continue
            desired = instance_revision(template, inst, template_rev=template_rev)
            if desired == (inst.status.promoted_revision if inst.status else None):
                continue
            if run_name(inst.metadata.name, desired) in existing:
                continue
            uid = inst.metadata.uid or inst.metadata.name
            # The desired revision hashes all the check reads (data spec, event, overrides, the
            # template's tasks that name the label columns): a new one is a new run to vet.
            key = (inst.metadata.generation, desired)
            with self._lock:
                hit = self._results.get(uid)
            if hit is not None and hit[0] == key:
                if hit[1]:
                    out[inst.metadata.name] = hit[1]
            else:
                todo.append((uid, key, inst))
        if not todo:
            return out
        with ThreadPoolExecutor(max_workers=min(self._workers, len(todo))) as pool:
            found = list(pool.map(lambda item: self._run(template, item[2]), todo))
        for (uid, key, inst), problems in zip(todo, found, strict=True):
            if problems is None:
                continue
            with self._lock:
                self._results[uid] = (key, problems)
            if problems:
                out[inst.metadata.name] = problems
        return out

    def _run(self, template: ModelTemplate, inst: ModelInstance) -> list[DataProblem] | None:
        try:
            # The resolved spec names the label columns (the template's tasks, or the instance's
            # event). A spec that does not resolve is the planner's to report (InvalidOverride).
            spec = resolve_training_spec(template, inst, output_uri="memory://preflight")
        except ValueError:
            return []
        try:
            with self._lock:
                self.calls += 1
            result = self._check(inst.spec.data, spec.label_columns(), base_dir=self.base_dir, label_fields=label_fields(spec))
        except Exception as exc:  # storage trouble is not bad input: let the run find out
            log.warning("data pre-flight of %s could not run: %s: %s", inst.metadata.name, type(exc).__name__, exc)
            return None
        return list(result.problems)
