"""Fixtures for the operator's integration tests; the harness itself is `operator_harness.py`."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from operator_harness import Cluster, FakeLauncher, RunningOperator, running_cluster, start_operator  # noqa: E402


@pytest.fixture()
async def cluster() -> AsyncIterator[Cluster]:
    async with running_cluster() as (c, _):
        yield c


@pytest.fixture()
async def operator_factory(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningOperator] = []

    async def factory(launcher: Any = None, **overrides: Any) -> RunningOperator:
        op = await start_operator(str(cluster.url).rstrip("/"), launcher or FakeLauncher(), **overrides)
        started.append(op)
        return op

    yield factory
    for op in started:
        if not op.task.done():
            await op.stop()


