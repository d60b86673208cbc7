"""``govshare serve`` as an operator runs it: HTTPS with the certificate ``govshare init`` made,
verifiable against that CA only; plain HTTP only on loopback when asked; SIGTERM stops it."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys

import httpx
import pytest

from tests.service.conftest import PROJECT, start_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("serve")
    shutil.copytree(PROJECT / "catalogs", root / "catalogs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "GOVSHARE_")) or k == "GOVSHARE_ROOT_KEY"}
    env.update({"GOVSHARE_HOME": str(root / "home"), "GOVSHARE_CATALOG": str(root / "catalogs"),
                "PYTHONPATH": str(PROJECT)})
    done = subprocess.run([sys.executable, "-m", "govshare.cli", "init"], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "certificate" in done.stdout, done.stdout
    return env


def test_https_verifies_against_the_home_ca_only_and_sigterm_stops_cleanly(initialised) -> None:
    served = start_service(initialised)
    try:
        assert served.url.startswith("https://127.0.0.1:")
        reply = httpx.get(f"{served.url}/openapi.json", verify=ssl.create_default_context(cafile=str(served.ca)))
        assert reply.status_code == 200
        assert "/delta-sharing/shares" in reply.json()["paths"]
        with pytest.raises(httpx.ConnectError):  # the system's trust store does not know the home's CA
            httpx.get(f"{served.url}/openapi.json", verify=ssl.create_default_context())
        unauthenticated = httpx.get(f"{served.url}/delta-sharing/shares",
                                    verify=ssl.create_default_context(cafile=str(served.ca)))
        assert unauthenticated.status_code == 401
        assert set(unauthenticated.json()) == {"errorCode", "message"}
    finally:
        assert served.stop() == 0
    err = served.process.stderr.read()
    assert "Traceback" not in err, err


def test_plain_http_only_on_loopback_and_only_when_asked(initialised) -> None:
    refused = subprocess.run([sys.executable, "-m", "govshare.cli", "serve", "--host", "0.0.0.0", "--port", "0",
                              "--insecure-http"], cwd=PROJECT, env=initialised, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "loopback" in refused.stderr and "Traceback" not in refused.stderr
    served = start_service(initialised, "--insecure-http")
    try:
        assert served.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{served.url}/openapi.json").status_code == 200
    finally:
        assert served.stop() == 0


def test_a_port_in_use_is_a_clear_usage_error(initialised) -> None:
    served = start_service(initialised)
    try:
        port = served.url.rsplit(":", 1)[1]
        clash = subprocess.run([sys.executable, "-m", "govshare.cli", "serve", "--port", port], cwd=PROJECT,
                               env=initialised, capture_output=True, text=True, timeout=60)
        assert clash.returncode == 2, clash.stderr
        assert f":{port}" in clash.stderr and "Traceback" not in clash.stderr
    finally:
        assert served.stop() == 0
