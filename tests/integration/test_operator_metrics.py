"""The operator's /metrics endpoint while the real operator rolls a template out: the promoted
models' NE and calibration per instance, promotions, a gate failure by reason, run durations,
and series that go with their instance or template."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from operator_harness import FakeLauncher, condition, create, delete, eventually, instance, patch
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from test_operator_rollout import GRAD_CLIP, template

NS, T = "default", "fleet-metrics"
PER_TEMPLATE = {"namespace": NS, "template": T}


@pytest.fixture()
def endpoint():
    """The operator's exposition over HTTP (what `metrics.serve` starts), on a free port."""
    server, thread = start_http_server(0, addr="127.0.0.1")
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    thread.join()


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.read().decode()

    text = await asyncio.to_thread(get)
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def ours(scraped: dict) -> set[str]:
    """Names of the scraped series that belong to the test's template."""
    return {name for name, labels in scraped if ("template", T) in labels}


async def test_scraped_series_follow_a_rollout_a_gate_failure_and_deletions(cluster, operator_factory, endpoint):
    quality = {"ne": 0.8, "auc": 0.75, "calibration": 1.02}
    launcher = FakeLauncher(auto="succeed", metrics=lambda run: dict(quality))
    await operator_factory(launcher)
    await create(cluster, "modeltemplates", template(T, gate={"tolerance": 0.01}))
    for n in ("a", "b"):
        await create(cluster, "modelinstances", instance(n, template=T))

    # Both promoted: their models' quality, two promotions, two succeeded runs.
    await eventually(lambda: sample("modelfleet_promotions_total", **PER_TEMPLATE) == 2)
    await eventually(lambda: sample("modelfleet_instance_ne", **PER_TEMPLATE, instance="b") is not None)
    got = await scrape(endpoint)
    for n in ("a", "b"):
        assert got[key("modelfleet_instance_ne", **PER_TEMPLATE, instance=n)] == pytest.approx(0.8)
        assert got[key("modelfleet_instance_calibration", **PER_TEMPLATE, instance=n)] == pytest.approx(1.02)
    assert got[key("modelfleet_run_duration_seconds_count", **PER_TEMPLATE, outcome="Succeeded")] == 2
    assert got.get(key("modelfleet_gate_failures_total", **PER_TEMPLATE, reason="worse_than_promoted")) is None
    assert any(name == "modelfleet_build_info" for name, _ in got)

    # A technique edit whose canary is worse: one gate failure by reason; the old model stays.
    quality["ne"] = 0.9
    await patch(cluster, "modeltemplates", T, {"spec": {"techniques": [GRAD_CLIP]}})
    await eventually(lambda: sample("modelfleet_gate_failures_total", **PER_TEMPLATE, reason="worse_than_promoted") == 1)
    canary = await eventually(
        lambda: next((n for n in ("a", "b") if (condition(cluster.obj("modelinstances", n), "Ready") or {}).get("reason") == "GateFailed"), None)
    )
    got = await scrape(endpoint)
    assert got[key("modelfleet_gate_failures_total", **PER_TEMPLATE, reason="worse_than_promoted")] == 1
    assert got[key("modelfleet_instance_ne", **PER_TEMPLATE, instance=canary)] == pytest.approx(0.8)
    assert got[key("modelfleet_promotions_total", **PER_TEMPLATE)] == 2
    assert got[key("modelfleet_run_duration_seconds_count", **PER_TEMPLATE, outcome="Succeeded")] == 3

    # An instance that goes takes its series along; a template that goes takes all of its own.
    await delete(cluster, "modelinstances", "b")
    await eventually(lambda: sample("modelfleet_instance_ne", **PER_TEMPLATE, instance="b") is None)
    got = await scrape(endpoint)
    assert key("modelfleet_instance_calibration", **PER_TEMPLATE, instance="b") not in got
    assert key("modelfleet_instance_ne", **PER_TEMPLATE, instance="a") in got
    await delete(cluster, "modeltemplates", T)
    await eventually(lambda: sample("modelfleet_promotions_total", **PER_TEMPLATE) is None)
    assert ours(await scrape(endpoint)) == set()
