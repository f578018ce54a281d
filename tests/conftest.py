import os
import sys
import uuid
from pathlib import Path

import pytest

# Shared test helpers (tests/schema_tools.py, tests/envtest.py) import as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import envtest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_K8S = "real_api_server"
# Set by .ci/run: a skipped real-server test fails the run instead of passing it silently.
REQUIRE_REAL_K8S = os.environ.get("MODELFLEET_REQUIRE_REAL_K8S") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", f"{REAL_K8S}: runs against a real kube-apiserver ({envtest.ASSETS_ENV})")
    config._modelfleet_real = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()):
            item.add_marker(REAL_K8S)


def pytest_runtest_logreport(report):
    if REAL_K8S not in report.keywords:
        return
    counts = report.config._modelfleet_real if hasattr(report, "config") else None
    if counts is None:
        return
    if report.when == "call" and report.passed:
        counts["passed"] += 1
    elif report.failed:
        counts["failed"] += 1
    elif report.skipped:
        counts["skipped"] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    outcome.get_result().config = item.config


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    c = config._modelfleet_real
    total = c["passed"] + c["failed"] + c["skipped"]
    if total:
        terminalreporter.write_line(
            f"real API server: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped "
            f"(tests marked {REAL_K8S})"
        )


def pytest_sessionfinish(session, exitstatus):
    c = session.config._modelfleet_real
    if REQUIRE_REAL_K8S and (c["skipped"] or not c["passed"]) and session.exitstatus == 0:
        session.exitstatus = 1
        print(
            f"\nMODELFLEET_REQUIRE_REAL_K8S=1 but {c['skipped']} real API server test(s) were skipped "
            f"and {c['passed']} passed: set {envtest.ASSETS_ENV} to a folder with etcd, kube-apiserver "
            "and kube-controller-manager",
            file=sys.stderr,
        )


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    assets = envtest.assets_dir()
    if assets is None:
        pytest.skip(
            f"needs a real API server: set {envtest.ASSETS_ENV} to a folder with etcd, kube-apiserver "
            "and kube-controller-manager (e.g. ../shared/envtest/bin, or setup-envtest's)"
        )
    plane = envtest.ControlPlane(assets, tmp_path_factory.mktemp("envtest"))
    plane.start()
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane):
    """An admin ApiClient for the real API server."""
    return control_plane.api_client()


@pytest.fixture(scope="session")
def crds(control_plane):
    """modelfleet's CRDs (crds/*.yaml) installed and Established."""
    return envtest.install_crds(control_plane, sorted((REPO / "crds").glob("*.yaml")))


@pytest.fixture()
def k8s_namespace(control_plane, kube):
    """A fresh namespace for one test, deleted after it."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name, propagation_policy="Background")
