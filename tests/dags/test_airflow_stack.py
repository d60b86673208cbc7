"""A real scheduler: scripts/airflow-stack (``make airflow``) runs scheduler, dag-processor, triggerer
and api-server, and a triggered ``sync_population`` runs through them to success and publishes.

Not ``airflow dags test``: the run is scheduled by the scheduler, its tasks run in LocalExecutor
workers and report to the api-server's execution API with tokens signed by the shared secret.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "airflow-stack"
GOVSHARE = ROOT / ".venv" / "bin" / "govshare"
START_TIMEOUT = 180
RUN_TIMEOUT = 300
STOP_TIMEOUT = 60
SHARED_SECRETS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY")
pytestmark = pytest.mark.dags

Method = Literal["GET", "POST", "PATCH"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _group_members(groups: set[int]) -> list[int]:
    """Live processes in these process groups (each component leads its own)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) in groups and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@dataclass(frozen=True)
class Api:
    base: str
    token: str

    def call(self, method: Method, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


class Stack:
    """scripts/airflow-stack in its own session, stopped (and if need be killed) exactly once."""

    script = STACK
    ready = "Airflow is running"  # what the script prints once every component is up
    start_timeout = START_TIMEOUT

    def __init__(self, home: Path, env: dict[str, str], output: Path) -> None:
        self.home, self.port, self.output, self.env = home, int(env["GOVSHARE_AIRFLOW_PORT"]), output, env
        with output.open("w") as out:
            self.process = subprocess.Popen([str(self.script)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.groups: set[int] = {self.process.pid}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output.read_text()[-3000:]
            try:
                urllib.request.urlopen(self.base + "/api/v2/monitor/health", timeout=5).close()
                if self.ready in self.output.read_text():
                    self.groups |= self._component_groups()
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        pytest.fail(f"{self.script.name} not ready within {self.start_timeout}s: {self.report()}")

    def _component_groups(self) -> set[int]:
        lines = (self.home / "airflow" / "airflow-stack.pids").read_text().split("\n")
        return {int(line.split()[1]) for line in lines if line.strip()}

    def login(self) -> Api:
        passwords = self.home / "airflow" / "simple_auth_manager_passwords.json.generated"
        body = json.dumps({"username": "admin", "password": json.loads(passwords.read_text())["admin"]}).encode()
        request = urllib.request.Request(self.base + "/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return Api(self.base, json.loads(response.read())["access_token"])

    def report(self) -> str:
        """The stack's own output and the end of each component's log, for a failed assertion."""
        logs = self.home / "airflow" / "logs"
        tails = [f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                 for log in sorted(logs.glob("*.log"))]
        return "\n".join([self.output.read_text()[-2000:], *tails])

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a service manager would; SIGKILL for whatever outlives the timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        for pid in [*([self.process.pid] if self.process.poll() is None else []), *_group_members(self.groups)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.process.wait(timeout=10)


@pytest.fixture
def stack(tmp_path: Path, demo_sources) -> Iterator[Stack]:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    # No virtualenv on PATH: the stack must find its own airflow and hand it to its children.
    env.update(GOVSHARE_HOME=str(home), GOVSHARE_AIRFLOW_PORT=str(_free_port()), PATH="/usr/bin:/bin",
               AIRFLOW_CONN_POPULATION_DB=demo_sources.connection_uris()["population_db"])
    init = subprocess.run([str(GOVSHARE), "init"], env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    running = Stack(home, env, tmp_path / "airflow-stack.out")
    try:
        running.wait_until_ready()
        yield running
    finally:
        running.stop()


def _wait_for(what: str, probe: Callable[[], Any], deadline: float) -> Any:
    """Poll until ``probe`` returns something truthy (a 404 counts as not yet)."""
    while time.monotonic() < deadline:
        try:
            value = probe()
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            value = None
        if value:
            return value
        time.sleep(1)
    pytest.fail(f"{what}: not done within {RUN_TIMEOUT}s of the first request")


def _finished(run: dict[str, Any]) -> bool:
    return run["state"] in ("success", "failed")


def test_triggered_sync_runs_to_success_under_the_scheduler_and_publishes(stack: Stack):
    deadline = time.monotonic() + RUN_TIMEOUT
    api = stack.login()
    runs_path = "/api/v2/dags/sync_population/dagRuns"
    _wait_for("the dag-processor to parse sync_population", lambda: api.call("GET", "/api/v2/dags/sync_population"),
              deadline)
    assert api.call("PATCH", "/api/v2/dags/sync_population", {"is_paused": False})["is_paused"] is False
    run_id = api.call("POST", runs_path, {"logical_date": None})["dag_run_id"]

    def triggered_run() -> dict[str, Any] | None:
        run = api.call("GET", f"{runs_path}/{urllib.request.quote(run_id)}")
        return run if _finished(run) else None

    def all_runs() -> list[dict[str, Any]] | None:
        # Unpausing also schedules the latest interval (catchup off): every run must finish.
        runs = api.call("GET", runs_path)["dag_runs"]
        return runs if all(_finished(r) for r in runs) else None

    triggered = _wait_for("the triggered run to finish", triggered_run, deadline)
    runs = _wait_for("every run to finish", all_runs, deadline)

    assert triggered["state"] == "success", stack.report()
    assert triggered["triggered_by"] == "rest_api"
    assert [r["state"] for r in runs] == ["success"] * len(runs)
    versions = subprocess.run([str(GOVSHARE), "versions", "population", "--json"], capture_output=True, text=True,
                              env={**os.environ, "GOVSHARE_HOME": str(stack.home)}, timeout=120)
    assert versions.returncode == 0, versions.stderr
    published = json.loads(versions.stdout)
    assert [v["version"] for v in published] == [1] and published[0]["upserts"] > 0

    assert stack.stop() == 0, stack.report()
    assert _group_members(stack.groups) == []
    logs = stack.home / "airflow" / "logs"
    task_logs = list(logs.glob("dag_id=sync_population/**/*.log"))
    assert {p.parent.name for p in task_logs} >= {"task_id=plan", "task_id=protect", "task_id=publish"}
    for log in [*task_logs, *logs.glob("*.log")]:
        assert "Invalid auth token" not in log.read_text(errors="replace"), log
    secrets = stack.home / "airflow" / "shared-secrets.env"
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert {line.split("=")[0].removeprefix("export ") for line in secrets.read_text().splitlines()} == set(SHARED_SECRETS)


def test_shared_secrets_are_generated_once_private_and_seen_by_every_airflow_command(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(GOVSHARE_HOME=str(tmp_path / "home"), PATH="/usr/bin:/bin")
    airflow = str(ROOT / "scripts" / "airflow")

    def jwt_secret() -> str:
        got = subprocess.run([airflow, "config", "get-value", "api_auth", "jwt_secret"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert got.returncode == 0, got.stderr[-2000:]
        return got.stdout.strip()

    first = jwt_secret()
    secrets = tmp_path / "home" / "airflow" / "shared-secrets.env"
    written = secrets.read_text()
    assert jwt_secret() == first and secrets.read_text() == written
    assert f"export AIRFLOW__API_AUTH__JWT_SECRET={first}\n" in written and len(first) >= 64
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in secrets.parent.iterdir() if p.name.startswith(".shared-secrets")] == []
