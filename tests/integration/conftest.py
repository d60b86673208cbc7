"""Database servers for the integration tests: scratch databases on PostgreSQL and MariaDB.

``make test`` (and ``.ci/run``) start both servers with ``scripts/test-servers.sh`` and export
their URLs. Without them (a developer who runs pytest alone) the tests that need a server are
skipped, saying how to start them; everything else still runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa

from connectors.connections import parse_connection, to_url

SERVER_ENV = {"postgresql": "GOVSHARE_TEST_POSTGRES_URL", "mariadb": "GOVSHARE_TEST_MARIADB_URL"}

ScratchDatabase = Callable[[str], str]


def server_uri(server: str) -> str:
    """The Airflow URI of a running test server's base database, or skip the test."""
    name = SERVER_ENV[server]
    uri = os.environ.get(name, "").strip()
    if not uri:
        pytest.skip(f'{name} is not set: start the servers with eval "$(scripts/test-servers.sh start)" (make test does)')
    return uri


def _admin_engine(uri: str) -> sa.Engine:
    url = to_url("test_server", parse_connection("test_server", uri))
    return sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")


@pytest.fixture
def scratch_database() -> Iterator[ScratchDatabase]:
    """Factory: server name -> Airflow URI of a new empty database there, dropped after the test."""
    made: list[tuple[sa.Engine, str]] = []

    def make(server: str) -> str:
        uri = server_uri(server)
        engine = _admin_engine(uri)
        name = f"gs_{uuid.uuid4().hex[:12]}"
        with engine.connect() as conn:
            if server == "mariadb":
                conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin")
            else:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        made.append((engine, name))
        base, _, query = uri.partition("?")
        return base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

    yield make
    for engine, name in made:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        engine.dispose()


# -- the real CLI in a subprocess, over a home with subscribers in every access state ------------

import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

PROJECT = Path(__file__).resolve().parents[2]
ID_NUMBER = re.compile(r"\d{17}[\dXx]")

# status / approval variants: one subscriber each, granted population (with its conditional
# fields) and legal_entity (unconditional fields)
ACCESS_STATES = {
    "sub-active": ("active", "active", "2026-01-01", None),
    "sub-suspended": ("suspended", "active", "2026-01-01", None),
    "sub-revoked": ("revoked", "active", "2026-01-01", None),
    "sub-approval-future": ("active", "active", "2999-01-01", None),
    "sub-approval-expired": ("active", "active", "2020-01-01", "2020-12-31"),
    "sub-approval-suspended": ("active", "suspended", "2026-01-01", None),
    "sub-approval-revoked": ("active", "revoked", "2026-01-01", None),
}


def _subscriber_yaml(sub_id: str, status: str, approval_status: str, approved_on: str, expires_on: str | None) -> str:
    expires = f"\n          expires_on: {expires_on}" if expires_on else ""
    return f"""
  - id: {sub_id}
    name: test subscriber {sub_id}
    keys: local
    status: {status}
    grants:
      - dataset: population
        fields: [unconditional, conditional]
        approval:
          id: TEST-{sub_id}
          purpose: 测试
          approved_by: 测试局
          approved_on: {approved_on}
          status: {approval_status}{expires}
      - dataset: legal_entity
        fields: [unconditional]
"""


MASKED = "sub-masked"  # receives population's id_number and name masked, and no conditional field plain
_MASKED_YAML = f"""
  - id: {MASKED}
    name: test subscriber with a masked grant
    keys: local
    grants:
      - dataset: population
        fields: [sex_code, household_division_code]
        masked: [id_number, name]
        approval:
          id: TEST-{MASKED}
          purpose: 测试脱敏核验
          approved_by: 测试局
          approved_on: 2026-01-01
"""


@dataclass(frozen=True)
class CliWorld:
    root: Path
    home: Path
    catalog: Path
    env: dict[str, str]
    id_numbers: tuple[str, ...]  # published population keys (to look for in stderr, and to dispute)
    usccs: tuple[str, ...]

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "govshare.cli", *args], cwd=self.root, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=300)

    def access_log(self) -> list[dict]:
        import json

        log = self.home / "audit" / "access-log.jsonl"
        return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []

    def assert_clean(self, result: subprocess.CompletedProcess[str]) -> None:
        """No traceback and no plaintext ID number on stderr."""
        assert "Traceback" not in result.stderr, result.stderr
        assert not any(i in result.stderr for i in self.id_numbers), "a plaintext ID number in stderr"
        assert not ID_NUMBER.search(result.stderr), result.stderr


def build_cli_world(root: Path, demo_sources, extra_env: dict[str, str] | None = None) -> CliWorld:  # noqa: ANN001
    """``demo_sources``: govshare.demo.DemoSources; ``extra_env`` (e.g. GOVSHARE_CRYPTO_PROFILE) for every command."""
    import pyarrow.parquet as pq

    catalog = root / "catalogs"
    shutil.copytree(PROJECT / "catalogs", catalog)
    with open(catalog / "subscribers.yaml", "a", encoding="utf-8") as fh:
        fh.write("".join(_subscriber_yaml(s, *state) for s, state in ACCESS_STATES.items()) + _MASKED_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "GOVSHARE_")) or k == "GOVSHARE_ROOT_KEY"}
    env.update({"GOVSHARE_HOME": str(root / "home"), "GOVSHARE_CATALOG": str(catalog), "GOVSHARE_GX": "inline",
                "PYTHONPATH": str(PROJECT)})
    env.update(extra_env or {})
    for conn_id, uri in demo_sources.connection_uris().items():
        copy = root / "sources" / Path(uri.removeprefix("sqlite:///")).name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(uri.removeprefix("sqlite:///")), copy)
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = f"sqlite:///{copy}"
    world = CliWorld(PROJECT, root / "home", catalog, env, (), ())
    for args in (["init"], ["sync", "population"], ["sync", "legal_entity"],
                 ["pull", "population", "--subscriber", "approval-household", "--purpose", "准备", "--out", str(root / "p.parquet")],
                 ["pull", "legal_entity", "--subscriber", "approval-general", "--purpose", "准备", "--out", str(root / "l.parquet")]):
        done = world.run(*args)
        assert done.returncode == 0, (args, done.stderr)
    ids = tuple(pq.read_table(root / "p.parquet").column("id_number").to_pylist())
    usccs = tuple(pq.read_table(root / "l.parquet").column("uscc").to_pylist())
    (root / "p.parquet").unlink()
    (root / "l.parquet").unlink()
    return CliWorld(PROJECT, root / "home", catalog, env, ids, usccs)


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory: pytest.TempPathFactory, demo_sources) -> CliWorld:  # noqa: ANN001
    """A home with population and legal_entity published, subscribers in every access state,
    driven through the real CLI in subprocesses."""
    return build_cli_world(tmp_path_factory.mktemp("cli-world"), demo_sources)
