"""The object store's endpoint and keys from an Airflow connection (GOVSHARE_STORE_CONNECTION),
in the Amazon provider's aws form, URI or JSON; refused with a message naming the connection,
never its secret."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from common.errors import ConfigError
from common.objstore import client_settings, parse_store

URL = parse_store("s3://govshare/store")
SECRET = "s3cr3t/Key+with=signs"


@pytest.fixture(autouse=True)
def _no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOVSHARE_STORE_CONNECTION", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_BUREAU_STORE", raising=False)


def _use(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GOVSHARE_STORE_CONNECTION", "bureau_store")
    monkeypatch.setenv("AIRFLOW_CONN_BUREAU_STORE", value)


def test_without_a_connection_boto3_reads_the_environment() -> None:
    assert client_settings(URL) == {}


def test_the_json_form_gives_endpoint_keys_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, json.dumps({"conn_type": "aws", "login": "AKIDEXAMPLE", "password": SECRET,
                                  "extra": {"endpoint_url": "https://oss.gov.example:9000", "region_name": "cn-east-1"}}))
    assert client_settings(URL) == {"endpoint_url": "https://oss.gov.example:9000", "aws_access_key_id": "AKIDEXAMPLE",
                                    "aws_secret_access_key": SECRET, "region_name": "cn-east-1"}


def test_the_uri_form_and_the_providers_service_config(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = quote(json.dumps({"service_config": {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}}))
    _use(monkeypatch, f"aws://AKIDEXAMPLE:{quote(SECRET, safe='')}@/?__extra__={extra}")
    assert client_settings(URL) == {"endpoint_url": "http://127.0.0.1:9000", "aws_access_key_id": "AKIDEXAMPLE",
                                    "aws_secret_access_key": SECRET}


def test_a_connection_without_keys_leaves_them_to_the_environment_or_instance_role(monkeypatch) -> None:  # noqa: ANN001
    _use(monkeypatch, "aws://?endpoint_url=http%3A%2F%2F127.0.0.1%3A9000&region_name=us-east-1")
    assert client_settings(URL) == {"endpoint_url": "http://127.0.0.1:9000", "region_name": "us-east-1"}


@pytest.mark.parametrize(("value", "says"), [
    (json.dumps({"conn_type": "postgres", "login": "a", "password": SECRET}), "conn_type 'postgres'"),
    (json.dumps({"conn_type": "aws", "login": "AKIDEXAMPLE"}), "both the access key id"),
    (json.dumps({"conn_type": "aws", "password": SECRET}), "both the access key id"),
    (json.dumps({"conn_type": "aws", "extra": {"endpoint_url": "ftp://x"}}), "endpoint_url must be an http(s) URL"),
    (json.dumps({"conn_type": "aws", "extra": {"region_name": 7}}), "region_name must be text"),
    ("{not json", "not valid JSON"),
])
def test_an_unusable_connection_is_a_configuration_error_naming_it(monkeypatch, value: str, says: str) -> None:  # noqa: ANN001
    _use(monkeypatch, value)
    with pytest.raises(ConfigError) as raised:
        client_settings(URL)
    assert says in str(raised.value)
    assert SECRET not in str(raised.value)
    assert "bureau_store" in str(raised.value) or "BUREAU_STORE" in str(raised.value)


@pytest.mark.parametrize("conn_id", ["bad id", "x;y", "a" * 300])
def test_a_malformed_connection_id_is_refused(monkeypatch: pytest.MonkeyPatch, conn_id: str) -> None:
    monkeypatch.setenv("GOVSHARE_STORE_CONNECTION", conn_id)
    with pytest.raises(ConfigError, match="GOVSHARE_STORE_CONNECTION"):
        client_settings(URL)
