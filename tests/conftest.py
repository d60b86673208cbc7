"""Shared fixtures: a temporary GOVSHARE_HOME with real keys, and demo sources on SQLite."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# every stored key is wrapped by a root key outside the home: one for the whole test session (made
# by the first 'govshare init'), outside every test's GOVSHARE_HOME; subprocesses inherit it
_ROOT_KEY_DIR = Path(tempfile.mkdtemp(prefix="govshare-test-root-"))
os.environ["GOVSHARE_ROOT_KEY"] = f"file:{_ROOT_KEY_DIR / 'root.key'}"

ROOT = Path(__file__).resolve().parent.parent
CONNECTION_ENV = ("AIRFLOW_CONN_POPULATION_DB", "AIRFLOW_CONN_LEGAL_ENTITY_DB", "AIRFLOW_CONN_E_LICENSE_DB")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's GOVSHARE_HOME, catalog override or connections."""
    monkeypatch.setenv("GOVSHARE_HOME", str(tmp_path / "govshare-home-unset"))
    monkeypatch.delenv("GOVSHARE_CATALOG", raising=False)
    # Great Expectations in-process: a worker per sync would import GX afresh (~3 s) in every
    # test. The worker, the product's default, has its own tests (test_validation_gx_worker,
    # test_sync_and_pull) and runs in `make demo`.
    monkeypatch.setenv("GOVSHARE_GX", "inline")
    for name in CONNECTION_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An initialised GOVSHARE_HOME in a temporary folder (real keys, generated now)."""
    from govshare.cli import main
    from common.home import home as current_home

    monkeypatch.setenv("GOVSHARE_HOME", str(tmp_path / "home"))
    assert main(["init"]) == 0
    return current_home()


@pytest.fixture(scope="session")
def demo_sources(tmp_path_factory: pytest.TempPathFactory):
    """Demo source databases, written once per session; tests copy before changing them."""
    from govshare.demo import write_demo_sources

    return write_demo_sources(tmp_path_factory.mktemp("demo"), rows=400, seed=7)


@pytest.fixture
def sources(demo_sources, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Private copies of the demo databases, with the connections pointing at them."""
    import shutil

    copies = {}
    for conn_id, uri in demo_sources.connection_uris().items():
        original = Path(uri.removeprefix("sqlite:///"))
        copy = tmp_path / "sources" / original.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(original, copy)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", f"sqlite:///{copy}")
        copies[conn_id] = copy
    return copies


# The scale-out stack's tests start a whole distributed Airflow: `make test-scaleout` runs them.
collect_ignore = [] if os.environ.get("GOVSHARE_TEST_SCALEOUT") == "1" else ["scaleout"]
