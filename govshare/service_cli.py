"""``govshare serve``: the sharing service over the publisher's GOVSHARE_HOME; and
``govshare subscriber enroll``: a one-time enrolment file for a subscriber's agent."""

from __future__ import annotations

import argparse

from common.catalog import load_catalog
from common.errors import ConfigError
from common.home import home

ENROLMENT_ISSUED = "enrolment-issued"


def serve(args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.checkpointer import Checkpointer, interval
    from service.context import ServiceContext
    from service.server import run
    from service.tls import tls_material

    h = home().require_initialised()
    seconds = interval()  # a bad GOVSHARE_CHECKPOINT_SECONDS is refused before anything starts
    tls = None if args.insecure_http else tls_material(h)
    ctx = ServiceContext.open(load_catalog(), h)
    checkpointer = Checkpointer(ctx.access_log, seconds).start()
    try:
        run(create_app(ctx), args.host, args.port, tls)
    finally:
        checkpointer.stop()
    return 0


def enroll(args: argparse.Namespace) -> int:
    """The enrolment file (keys.agentproto): service URL, CA certificate, the publisher's signing
    public key and a one-time token valid --hours hours; only the token's digest is kept, and the
    issue is in the access log (never the token)."""
    from common.files import check_output_file, write_private
    from govshare.profile_cli import active_subscriber, endpoint_of
    from keys.agentproto import Enrolment
    from keys.keystore import Keystore
    from lineage.audit import AccessLog
    from service import enrolment
    from service.tls import tls_material
    from sharing.revocations import effective_catalog

    h = home().require_initialised()
    catalog = effective_catalog(load_catalog(), h)
    subscriber = active_subscriber(catalog, args.id, "enrolment")
    if not 1 <= args.hours <= enrolment.MAX_HOURS:
        raise ConfigError(f"--hours {args.hours}: an enrolment token is valid for 1 to {enrolment.MAX_HOURS} hours")
    service_url = endpoint_of(args.server).removesuffix("/delta-sharing")
    out = check_output_file(args.out, {"GOVSHARE_HOME": h.root})
    keystore = Keystore(h.keystore)
    key_id = keystore.signing_key_id()
    ca_pem = tls_material(h).ca_pem
    issued = enrolment.issue(h, subscriber.id, args.hours)
    doc = Enrolment(subscriber.id, service_url, ca_pem.decode("ascii"),
                    key_id, keystore.algorithm(key_id), keystore.public_key_pem(key_id).decode("ascii"),
                    issued.token, issued.expires_at,
                    tuple({k: v for k, v in key.items() if k != "status"} for key in keystore.publisher_keys()))
    AccessLog.of(h, keystore).append({"event": ENROLMENT_ISSUED, "channel": "agent", "subscriber": subscriber.id,
                                      "expires_at": issued.expires_at.isoformat()})
    write_private(out, doc.to_json())
    print(f"enrolment file for {subscriber.id}: {out} (service {service_url}; one use, expires "
          f"{issued.expires_at.strftime('%Y-%m-%dT%H:%M:%SZ')}); hand it to the subscriber's operators over a "
          "trusted channel: whoever holds it can enrol an agent of that subscriber")
    return 0
