"""The TrainingRun lifecycle over a fake launcher: submit/adopt, poll, retry with backoff, finish."""

from __future__ import annotations

import datetime as dt

from op_world import T0, FakeLauncher, instance, template

from modelfleet.api.resolve import resolve_training_spec
from modelfleet.api.resources import RolloutSpec, TrainingRun, TrainingRunSpec
from modelfleet.operator.runs import cancel_run, job_phase, read_metrics_json, reconcile_run
from modelfleet.operator.status import merge_patch

POLICY = RolloutSpec(maxRetries=2, backoffSeconds=30)


def new_run(name: str = "a-rev") -> TrainingRun:
    t, i = template(), instance("a")
    spec = TrainingRunSpec(instance="a", revision="rev", training=resolve_training_spec(t, i, output_uri=f"/tmp/x/{name}"))
    return TrainingRun.model_validate({"metadata": {"name": name, "labels": {"modelfleet.dev/template": "ctr"}}, "spec": spec.model_dump(by_alias=True)})


def step(run: TrainingRun, launcher, now, **kw):
    upd = reconcile_run(run, launcher, now, policy=POLICY, read_metrics=kw.pop("read_metrics", lambda uri: {"ne": 0.7, "auc": 0.8, "extra": 1}), **kw)
    if upd.status_patch:
        body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["status"] = merge_patch(body.get("status"), upd.status_patch)
        run = TrainingRun.model_validate(body)
    return run, upd


def test_submit_records_handle_attempt_and_start_time_at_once():
    launcher = FakeLauncher()
    run, upd = step(new_run(), launcher, T0)
    assert launcher.submitted == [("a-rev", 1)]
    s = run.status
    assert s.app_handle.startswith("fake://a-rev-1") and s.attempts == 1 and s.phase == "Running"
    assert s.start_time == "2026-01-01T12:00:00Z" and s.scheduler == "fake"
    assert upd.events == []  # a routine submit is in the status alone (no Event write)
    job = next(iter(launcher.jobs.values()))
    assert job["labels"]["modelfleet.dev/run"] == "a-rev" and job["labels"]["modelfleet.dev/attempt"] == "1"
    assert job["labels"]["modelfleet.dev/template"] == "ctr"
    # polling an unchanged job writes nothing
    again, upd = step(run, launcher, T0)
    assert upd.status_patch is None and upd.requeue_after and again == run


def test_restart_adopts_the_job_instead_of_submitting_again():
    launcher = FakeLauncher()
    handle = launcher.submit("a-rev", 1, None, {})  # submitted, then the operator died before writing status
    run, upd = step(new_run(), launcher, T0)
    assert run.status.app_handle == handle
    assert len(launcher.submitted) == 1
    assert [e.reason for e in upd.events] == ["Adopted"]


def test_failed_attempts_retry_with_exponential_backoff_then_fail_with_the_reason():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    now = T0
    delays = []
    for attempt in (1, 2, 3):
        launcher.finish("a-rev", ok=False, reason="ImagePullBackOff", message="image x:1 not found")
        run, upd = step(run, launcher, now)
        if attempt == 3:
            break
        assert run.status.phase == "Pending" and run.status.app_handle is None
        delays.append(upd.requeue_after)
        # not before nextAttemptAt
        early, upd2 = step(run, launcher, now + dt.timedelta(seconds=1))
        assert upd2.status_patch is None and len(launcher.submitted) == attempt
        now = now + dt.timedelta(seconds=upd.requeue_after)
        run, _ = step(run, launcher, now)
        assert run.status.attempts == attempt + 1 and launcher.submitted[-1] == ("a-rev", attempt + 1)
    assert delays == [30.0, 60.0]
    assert run.status.phase == "Failed" and run.status.reason == "ImagePullBackOff"
    assert "image x:1 not found" in run.status.message and run.status.finish_time
    assert step(run, launcher, now)[1].status_patch is None  # a finished run is left alone


def test_success_reads_metrics_into_status():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    launcher.finish("a-rev")
    seen = []
    run, upd = step(run, launcher, T0, read_metrics=lambda uri: seen.append(uri) or {"ne": 0.7, "auc": 0.8, "flopsPerExample": 99, "steps": 5})
    assert seen == ["/tmp/x/a-rev"]
    assert run.status.phase == "Succeeded" and run.status.metrics.ne == 0.7 and run.status.metrics.flops_per_example == 99
    assert upd.requeue_after is None


def test_success_without_metrics_is_a_failure():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    launcher.finish("a-rev")
    run, _ = step(run, launcher, T0, read_metrics=lambda uri: None)
    assert run.status.phase == "Failed" and run.status.reason == "MetricsMissing"


def test_cancel_run_cancels_the_job():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    upd = cancel_run(run, launcher, T0, phase="Superseded", reason="Superseded", message="newer revision")
    assert launcher.cancelled == ["a-rev"] and upd.status_patch["phase"] == "Superseded"


def test_job_phase_understands_torchx_states_and_strings():
    from torchx.specs import AppState

    assert job_phase(AppState.RUNNING)[0] == "Running"
    assert job_phase("SUCCEEDED")[0] == "Succeeded"
    assert job_phase(None)[1] == "JobLost"


def test_read_metrics_json(tmp_path):
    (tmp_path / "metrics.json").write_text('{"ne": 0.5}')
    assert read_metrics_json(str(tmp_path)) == {"ne": 0.5}
    assert read_metrics_json(str(tmp_path / "missing")) is None


def test_a_permanent_failure_is_failed_at_once_without_retry_or_backoff():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    # the launcher read the trainer's exit code 3 (DataNotFound) from the pod or the process
    launcher.finish("a-rev", ok=False, reason="DataNotFound", message="pod p exited with code 3")
    run, upd = step(run, launcher, T0, read_failure=lambda uri, since: None)
    assert run.status.phase == "Failed" and run.status.reason == "DataNotFound" and run.status.attempts == 1
    assert run.status.next_attempt_at is None and upd.requeue_after is None
    assert "not retried" in run.status.message and "code 3" in run.status.message
    assert launcher.submitted == [("a-rev", 1)]
    assert [(e.type, e.reason) for e in upd.events] == [("Warning", "DataNotFound")]
    later, upd = step(run, launcher, T0 + dt.timedelta(hours=1))
    assert upd.status_patch is None and launcher.submitted == [("a-rev", 1)]


def test_failure_json_makes_a_plain_failure_permanent_with_the_trainers_message():
    # torchrun reports any worker failure as exit code 1; failure.json says what it was.
    failure = {"code": 5, "reason": "InvalidLabels", "field": "spec.event",
               "message": "spec.event: label column 'click' not found in data/train.csv; the file has: a, b"}
    seen = []
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    launcher.finish("a-rev", ok=False, reason="Error", message="local job failed")
    run, _ = step(run, launcher, T0, read_failure=lambda uri, since: seen.append((uri, since)) or failure)
    assert run.status.phase == "Failed" and run.status.reason == "InvalidLabels" and run.status.attempts == 1
    assert "label column 'click' not found" in run.status.message and "exit code 5" in run.status.message
    assert seen == [("/tmp/x/a-rev", T0)]  # only a file written since the run started counts


def test_transient_failures_keep_their_retries_whatever_failure_json_says():
    launcher = FakeLauncher()
    run, _ = step(new_run(), launcher, T0)
    launcher.finish("a-rev", ok=False, reason="Error", message="connection reset")
    run, upd = step(run, launcher, T0, read_failure=lambda uri, since: {"code": 1, "reason": "JobFailed", "message": "boom"})
    assert run.status.phase == "Pending" and upd.requeue_after == 30.0
    assert [e.reason for e in upd.events] == ["RetryScheduled"]


def test_read_failure_json_ignores_a_file_left_by_an_earlier_run(tmp_path):
    import json
    import os

    from modelfleet.operator.runs import read_failure_json

    (tmp_path / "failure.json").write_text(json.dumps({"code": 3, "reason": "DataNotFound", "field": "f", "message": "m"}))
    written = dt.datetime.now(dt.UTC)
    assert read_failure_json(str(tmp_path), written - dt.timedelta(seconds=5))["code"] == 3
    assert read_failure_json(str(tmp_path), None)["code"] == 3
    # the run was (re)made an hour after the file was written: it is another run's
    old = (written - dt.timedelta(hours=1)).timestamp()
    os.utime(tmp_path / "failure.json", (old, old))
    assert read_failure_json(str(tmp_path), written) is None
    assert read_failure_json(str(tmp_path / "missing"), written) is None
    (tmp_path / "failure.json").write_text("{not json")
    assert read_failure_json(str(tmp_path), None) is None
