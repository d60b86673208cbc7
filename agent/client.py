"""The agent's HTTPS client of the sharing service (httpx), trusting only the CA pinned at
enrolment, every request signed with the agent's key (keys.requestsig).

Failures map onto the exit codes: the service unreachable or overloaded (connection refused,
timeouts, 503) is a TemporaryFailure (75); a certificate that does not verify against the pinned
CA is an IntegrityError (3: not the enrolled publisher's service); 401 and 403 are AccessDenied
(4); any other refusal is a ConfigError (2) carrying the service's message.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from common.errors import AccessDenied, ConfigError, GovshareError, IntegrityError, TemporaryFailure
from common.files import private_tmp
from keys import sigalg
from keys.requestsig import sign_request

TIMEOUT = httpx.Timeout(30.0, read=300.0)
CHUNK = 1 << 20


def tls_context(ca_pem: bytes | str) -> ssl.SSLContext:
    text = ca_pem.decode("ascii") if isinstance(ca_pem, bytes) else ca_pem
    try:
        return ssl.create_default_context(cadata=text)
    except ssl.SSLError:
        raise ConfigError("the pinned CA certificate is unreadable") from None


STORE_CA_ENV = "GOVSHARE_AGENT_STORE_CA"


def store_verify() -> ssl.SSLContext | bool:
    """How an object store's certificate is checked when the service hands out pre-signed URLs:
    against GOVSHARE_AGENT_STORE_CA (a PEM file) when set, else the system's CAs."""
    raw = os.environ.get(STORE_CA_ENV, "").strip()
    if not raw:
        return True
    try:
        pem = Path(raw).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{STORE_CA_ENV}={raw!r}: cannot read it ({exc.strerror or exc.__class__.__name__})") from None
    try:
        return tls_context(pem)
    except (ConfigError, ValueError):
        raise ConfigError(f"{STORE_CA_ENV}={raw!r} is not a PEM certificate") from None


def _transport_error(exc: httpx.HTTPError, url: str) -> GovshareError:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return IntegrityError(f"the service at {url} presents a TLS certificate that does not verify against the CA "
                              "pinned at enrolment: it is not the enrolled publisher's service")
    if isinstance(exc, httpx.TimeoutException):
        return TemporaryFailure(f"the sharing service at {url} did not answer in time; retry later")
    return TemporaryFailure(f"the sharing service at {url} is unreachable ({type(exc).__name__}); retry later")


def refusal(status: int, body: bytes, url: str) -> GovshareError:
    try:
        message = json.loads(body).get("message") or ""
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = ""
    message = str(message)[:500] or f"HTTP {status}"
    said = f"the service refused ({status}): {message}"
    if status in (401, 403):
        return AccessDenied(said)
    if status in (502, 503, 504):
        return TemporaryFailure(f"the sharing service at {url} is unavailable ({status}): {message}; retry later")
    if status >= 500:
        return TemporaryFailure(f"the sharing service at {url} failed ({status}): {message}")
    return ConfigError(said)


def enrol(service_url: str, ca_pem: str, body: dict[str, Any]) -> dict[str, Any]:
    """The unsigned enrolment request (the token authenticates it)."""
    try:
        with httpx.Client(base_url=service_url, verify=tls_context(ca_pem), timeout=TIMEOUT) as client:
            response = client.post("/agent/v1/enrol", content=json.dumps(body).encode(),
                                   headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise _transport_error(exc, service_url) from None
    if response.status_code != 200:
        raise refusal(response.status_code, response.content, service_url)
    return response.json()


class ServiceClient:
    """Signed requests of one agent, each under the same purpose and case reference."""

    def __init__(self, service_url: str, ca_pem: bytes, agent_id: str, signing_key: sigalg.PrivateKey, purpose: str,
                 case: str = "") -> None:
        self.url = service_url
        self._agent_id = agent_id
        self._key = signing_key
        self._purpose = purpose
        self._case = case
        self._client = httpx.Client(base_url=service_url, verify=tls_context(ca_pem), timeout=TIMEOUT)

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def _headers(self, method: str, target: str, body: bytes) -> dict[str, str]:
        headers = sign_request(self._key, self._agent_id, method, target, body, self._purpose, self._case)
        if body:
            headers["content-type"] = "application/json"
        return headers

    def get(self, target: str) -> dict[str, Any]:
        return self._json("GET", target, b"")

    def post(self, target: str, doc: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", target, json.dumps(doc, sort_keys=True).encode())

    def _json(self, method: str, target: str, body: bytes) -> dict[str, Any]:
        try:
            response = self._client.request(method, target, content=body, headers=self._headers(method, target, body))
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url) from None
        if response.status_code != 200:
            raise refusal(response.status_code, response.content, self.url)
        try:
            doc = response.json()
        except ValueError:
            raise IntegrityError(f"the service at {self.url} answered {target} with something that is not JSON") from None
        if not isinstance(doc, dict):
            raise IntegrityError(f"the service at {self.url} answered {target} with something that is not an object")
        return doc

    def download(self, target: str, dest: Path, limit: int, progress: Any = None) -> int:  # noqa: ANN401
        """Stream a file to ``dest`` (atomically, 0600); at most ``limit`` bytes are accepted."""
        tmp = private_tmp(dest)
        written = 0
        try:
            with self._stream(target) as response, open(tmp, "wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise IntegrityError(f"the service sent more bytes for {target} than the manifest lists")
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    @contextmanager
    def _stream(self, target: str) -> Iterator[httpx.Response]:
        try:
            with self._client.stream("GET", target, headers=self._headers("GET", target, b"")) as response:
                if response.status_code == 307 and response.headers.get("location"):
                    with self._from_store(response.headers["location"], target) as stored:
                        yield stored
                    return
                if response.status_code != 200:
                    response.read()
                    raise refusal(response.status_code, response.content, self.url)
                yield response
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url) from None

    @contextmanager
    def _from_store(self, location: str, target: str) -> Iterator[httpx.Response]:
        """A file the service handed out as a pre-signed object-store URL: fetched without the
        agent's signature or any credential (the URL is the credential), trusting the system's CAs
        or GOVSHARE_AGENT_STORE_CA for the store's certificate. What it yields is checked against
        the signed manifest like a file the service sent."""
        url = httpx.URL(location)
        if url.scheme not in ("https", "http") or not url.host:
            raise IntegrityError(f"the service at {self.url} redirected {target} to something that is not an "
                                 "http(s) URL")
        where = f"the object store at {url.scheme}://{url.host}"
        try:
            with httpx.Client(verify=store_verify(), timeout=TIMEOUT, follow_redirects=False) as client, \
                    client.stream("GET", url) as response:
                if response.status_code != 200:
                    response.read()
                    # an expired or refused URL: the next pull asks the service for a fresh one
                    raise TemporaryFailure(f"{where} refused the pre-signed URL of {target} "
                                           f"({response.status_code}); retry the pull")
                yield response
        except httpx.HTTPError as exc:
            raise TemporaryFailure(f"{where} is unreachable for {target} ({exc.__class__.__name__}); "
                                   "retry later") from None
