"""``govshare subscriber profile ID --purpose TEXT --out FILE [--days N] [--server URL]``: a Delta
Sharing profile for a subscriber's stock client (service.profiles), and the service's CA
certificate beside it (FILE.ca.pem) for the client's TLS trust.

The profile file (shareCredentialsVersion 1: endpoint, bearerToken, expirationTime) is written
0600: whoever holds it reads the subscriber's plain view. The token is never printed and only its
digest is kept. The issue is recorded in the access log (``profile-issued``: subscriber, purpose,
expiry; never the token).
"""

from __future__ import annotations

import argparse
import json
from urllib.parse import urlsplit

from common.catalog import Catalog, Subscriber, load_catalog
from common.errors import AccessDenied, ConfigError
from common.files import check_output_file, write_private
from common.home import home as current_home
from keys.keystore import Keystore
from lineage.audit import AccessLog
from service import profiles
from service.tls import tls_material
from sharing.disputes import shown_subscriber
from sharing.pull import check_purpose
from sharing.revocations import effective_catalog

DEFAULT_SERVER = "https://127.0.0.1:8443"
PROFILE_ISSUED = "profile-issued"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def endpoint_of(server: str | None) -> str:
    """The profile's endpoint: the service URL (https, or http on a loopback host) + /delta-sharing."""
    url = (server or DEFAULT_SERVER).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"--server {server}: not a service URL such as {DEFAULT_SERVER}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        raise ConfigError(f"--server {server}: plain http only on a loopback host; the service speaks https")
    return f"{url}/delta-sharing"


def active_subscriber(catalog: Catalog, subscriber_id: str, what: str) -> Subscriber:
    """The catalog's subscriber, refused (exit 4) when unknown, suspended or revoked."""
    subscriber = catalog.subscriber(subscriber_id)
    if subscriber is None:
        raise AccessDenied(f"subscriber {shown_subscriber(subscriber_id)!r} is not registered in the catalog; "
                           f"no {what} is made for it")
    if not subscriber.active:
        raise AccessDenied(f"subscriber {subscriber.id} is {subscriber.status}; no {what} is made for it")
    return subscriber


def profile(args: argparse.Namespace) -> int:
    h = current_home().require_initialised()
    catalog = effective_catalog(load_catalog(), h)
    purpose = check_purpose(args.purpose)
    subscriber = active_subscriber(catalog, args.id, "profile")
    days = args.days
    if not 1 <= days <= profiles.MAX_DAYS:
        raise ConfigError(f"--days {days}: a profile is valid for 1 to {profiles.MAX_DAYS} days")
    endpoint = endpoint_of(args.server)
    protected = {"GOVSHARE_HOME": h.root}
    out = check_output_file(args.out, protected)
    ca_out = check_output_file(f"{args.out}.ca.pem", protected, "--out (its .ca.pem)")
    ca_pem = tls_material(h).ca_pem

    issued = profiles.issue(h, subscriber.id, purpose, days)
    AccessLog.of(h, Keystore(h.keystore)).append({
        "event": PROFILE_ISSUED, "channel": "delta-sharing", "subscriber": subscriber.id, "purpose": purpose,
        "expires_at": issued.expiration_time,
    })
    doc = {"shareCredentialsVersion": 1, "endpoint": endpoint, "bearerToken": issued.token,
           "expirationTime": issued.expiration_time}
    write_private(ca_out, ca_pem)
    write_private(out, json.dumps(doc, indent=2) + "\n")
    print(f"profile for {subscriber.id}: {out} (endpoint {endpoint}, expires {issued.expiration_time}); "
          f"CA certificate {ca_out}: point the client's TLS trust at it (REQUESTS_CA_BUNDLE, SSL_CERT_FILE)")
    return 0
