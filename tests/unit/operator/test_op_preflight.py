"""The data pre-flight before any run is queued: bad data stops an instance like a bad manifest
(Ready=False, Stalled, the field named, one Warning Event, no run), and the I/O is done once per
instance change, never once per plan."""

from __future__ import annotations

from op_world import World, instance, template

from modelfleet.operator.actions import CreateRun, Event, PatchStatus
from modelfleet.operator.datachecks import DataChecks
from modelfleet.trainer.preflight import check_data


def cond(body: dict, type_: str) -> dict:
    return next(c for c in body["status"]["conditions"] if c["type"] == type_)


def csv_instance(name: str, uri: str, **spec) -> object:
    return instance(name, data={"format": "csv", "trainUri": uri, "denseColumns": ["x"], "sparseColumns": ["c"]}, **spec)


class CountingCheck:
    """The real `check_data`, counting its calls (the I/O the cache must spare)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, data, label_columns, **kw):
        self.calls.append(data.train_uri)
        return check_data(data, label_columns, **kw)


def test_missing_data_stalls_the_instance_naming_the_field_and_starts_no_run(tmp_path):
    (tmp_path / "good.csv").write_text("x,c,click\n1,a,0\n2,b,1\n")
    w = World(tmp_path / "state", data_checks=DataChecks())
    w.put(template(rollout={"canary": {"count": 0}}))
    w.put(csv_instance("good", str(tmp_path / "good.csv")))
    w.put(csv_instance("lost", str(tmp_path / "missing.csv")))
    plan = w.step()
    assert [a.instance for a in plan.of(CreateRun)] == ["good"]
    inst = w.instance("lost")
    ready, stalled = cond(inst, "Ready"), cond(inst, "Stalled")
    assert (ready["status"], ready["reason"]) == ("False", "DataNotFound")
    assert stalled["status"] == "True" and ready["message"].startswith("spec.data.trainUri: ")
    assert "missing.csv" in ready["message"]
    warnings = [a for a in plan.of(Event) if a.name == "lost"]
    assert [(e.type, e.reason) for e in warnings] == [("Warning", "DataNotFound")]
    assert plan.instances["lost"]["state"] == "Invalid" and plan.instances["lost"]["revision"]
    tstatus = w.store.get("ModelTemplate", "ctr")["status"]
    assert tstatus["blocked"] == 1 and "lost: DataNotFound" in cond(w.store.get("ModelTemplate", "ctr"), "Ready")["message"]
    # Planning again changes nothing: no status write, no second Event, still no run.
    again = w.plan()
    assert not [a for a in again.actions if getattr(a, "name", getattr(a, "instance", None)) == "lost"]
    assert [r.spec.instance for r in w.runs()] == ["good"]


def test_the_check_runs_once_per_instance_change_not_once_per_plan(tmp_path):
    counting = CountingCheck()
    w = World(tmp_path / "state", data_checks=DataChecks(check=counting))
    w.put(template(rollout={"canary": {"count": 0}, "maxConcurrentRuns": 1}))
    for name in ("a", "b", "c"):
        w.put(csv_instance(name, str(tmp_path / f"{name}.csv")))  # none exists: all stay queued-invalid
    for _ in range(5):
        w.step()
    assert sorted(counting.calls) == sorted(str(tmp_path / f"{n}.csv") for n in "abc")
    # An edit of one instance checks that one again; the file is there now, so it trains.
    (tmp_path / "b2.csv").write_text("x,c,click\n1,a,0\n")
    w.put(csv_instance("b", str(tmp_path / "b2.csv")))
    w.step()
    assert counting.calls[3:] == [str(tmp_path / "b2.csv")]
    assert [r.spec.instance for r in w.runs()] == ["b"]
    for _ in range(3):
        w.step()
    assert len(counting.calls) == 4


def test_promoted_instances_and_runs_already_made_are_not_checked_again(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("x,c,click\n1,a,0\n")
    counting = CountingCheck()
    w = World(tmp_path / "state", data_checks=DataChecks(check=counting))
    w.put(template(rollout={"canary": {"count": 0}}))
    w.put(csv_instance("a", str(good)))
    w.step()
    for job in list(w.launcher.jobs.values()):
        w.launcher.finish(job["run"])
    for _ in range(3):
        w.step()
    assert w.instances()[0].status.promoted_revision == w.instances()[0].status.target_revision
    assert counting.calls == [str(good)]
    # The file goes away after the model was promoted: nothing needs it, nothing is stalled.
    good.unlink()
    fresh = DataChecks(check=counting)  # as after an operator restart: an empty cache
    w.data_checks = fresh
    plan = w.step()
    assert counting.calls == [str(good)] and not plan.of(PatchStatus)
    assert cond(w.instance("a"), "Ready")["reason"] == "Promoted"


def test_a_template_task_edit_changes_the_label_columns_so_the_data_is_checked_again(tmp_path):
    counting = CountingCheck()
    checks = DataChecks(check=counting)
    t = template()
    i = csv_instance("a", str(tmp_path / "a.csv"))
    checks.problems(t, [i], [])
    checks.problems(t, [i], [])
    assert len(counting.calls) == 1
    relabelled = template(architecture={"embedding": {"dim": 8, "buckets": 100}, "bottomMlp": [16, 8], "overArch": [16],
                                        "tasks": [{"name": "buy", "labelColumn": "purchase"}]})
    checks.problems(relabelled, [i], [])
    assert len(counting.calls) == 2


def test_storage_trouble_is_not_bad_input_and_is_not_cached(tmp_path):
    calls = []

    def flaky(data, label_columns, **kw):
        calls.append(1)
        raise RuntimeError("the object store timed out")

    checks = DataChecks(check=flaky)
    t, i = template(), csv_instance("a", "s3://bucket/a.csv")
    assert checks.problems(t, [i], []) == {}  # no problem reported: the run may go, the trainer checks
    assert checks.problems(t, [i], []) == {}
    assert len(calls) == 2


def test_relative_uris_are_read_from_the_base_dir(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("x,c,click\n1,a,0\n")
    t = template()
    here = csv_instance("a", "data/a.csv")
    assert DataChecks(base_dir=str(tmp_path)).problems(t, [here], []) == {}
    [problem] = DataChecks(base_dir=str(tmp_path / "elsewhere")).problems(t, [here], [])["a"]
    assert problem.field == "spec.data.trainUri" and "data/a.csv" in problem.message
