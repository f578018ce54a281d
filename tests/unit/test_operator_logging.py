"""`modelfleet operator --log-format plain|json`: kopf's own log configuration and JSON format."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import threading

import kopf
import pytest

from modelfleet.operator import main as operator_main

BODY = {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "metadata": {"name": "ctr", "namespace": "team-a", "uid": "u-1"}}


@pytest.fixture()
def restore_logging():
    """configure_logging replaces the root logger's handler and level; give other tests theirs back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = logging.getLogger("asyncio")
    quiet_state = quiet.handlers[:], quiet.propagate
    yield
    root.handlers[:], root.level = handlers, level
    quiet.handlers[:], quiet.propagate = quiet_state


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator_main.configure(parser)
    return parser.parse_args(list(argv))


def _log_both() -> None:
    logging.getLogger("modelfleet.operator.handlers").warning("planning %s failed", "team-a/ctr")
    kopf.ObjectLogger(body=kopf.Body(BODY), settings=kopf.OperatorSettings()).info("plan applied")


def test_json_lines_carry_message_time_severity_and_the_object(capsys, restore_logging):
    args = _args("--log-format", "json")
    operator_main.configure_logging(args.log_format, args.verbose)
    _log_both()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["message"], r["severity"]) for r in lines] == [("planning team-a/ctr failed", "warn"), ("plan applied", "info")]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", r["timestamp"]) for r in lines)
    assert "object" not in lines[0]
    assert lines[1]["object"] == {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelTemplate", "name": "ctr", "uid": "u-1", "namespace": "team-a"}


def test_plain_is_the_default_one_text_line_per_record(capsys, restore_logging):
    args = _args()
    assert args.log_format == "plain"
    operator_main.configure_logging(args.log_format, args.verbose)
    _log_both()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\] modelfleet\.operator\.\s*\[WARNING \] planning team-a/ctr failed", lines[0])
    assert lines[1].endswith("[INFO    ] [team-a/ctr] plan applied")


def test_verbose_logs_debug(capsys, restore_logging):
    operator_main.configure_logging("json", verbose=True)
    logging.getLogger("modelfleet.operator.runs").debug("polled")
    assert json.loads(capsys.readouterr().err)["severity"] == "debug"


def test_an_unknown_format_is_refused_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        _args("--log-format", "logfmt")
    assert exit_.value.code == 2
    assert "--log-format: invalid choice: 'logfmt' (choose from 'plain', 'json')" in capsys.readouterr().err


@pytest.mark.slow
def test_the_operator_command_logs_json_from_its_first_line():
    """The real `modelfleet operator --log-format json`, with no cluster to reach: its first log
    record (kopf retrying the startup handler) is already one JSON object."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "MODELFLEET_"))}
    env.update(KUBECONFIG=os.devnull + "/none", MODELFLEET_METRICS_PORT="0")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "modelfleet", "operator", "--standalone", "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
    )
    hung = threading.Timer(60, proc.kill)  # a bound on a broken operator, not a timed assert
    hung.start()
    try:
        line = proc.stderr.readline()
    finally:
        hung.cancel()
        proc.terminate()
        proc.wait(timeout=30)
    first = json.loads(line)
    assert first["severity"] == "error" and "operator_startup" in first["message"]
    assert "kube-config" in first["message"] and first["exc_info"].startswith("Traceback")
