"""What an agent does: enrol, list its grants, pull a verified, locally decrypted view.

A pull, in order:

1. the service's version list; the manifests 1..N (exact bytes and signatures) mirrored into the
   agent's home, a mirrored manifest that the service now answers differently refused (exit 3);
2. the chain verified against the publisher key pinned at enrolment (sharing.verify: signatures,
   numbering, back-links), so nothing the service sends is trusted before it is checked;
3. the key envelopes of the versions read: the service logs the delivery (pending) and seals the
   grant's data keys to the agent's X25519 key; each is opened here and checked against the
   verified manifest's key ids;
4. the files of those versions mirrored and checked against the manifests' SHA-256;
5. the view read with only the envelopes' keys (keys.kms.decryption_with), folded, flagged where
   disputed, and written as ``govshare pull`` writes it (sharing.pull.write_view): a Parquet file
   or a database; just before it becomes visible the agent confirms the delivery to the service
   (``delivery-complete`` in the publisher's log). If the confirmation cannot be made nothing is
   delivered (the temporary file removed, the transaction rolled back).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.client import ServiceClient, enrol
from agent.home import AgentHome, Enrolled
from common.catalog import Dataset, Field, Grant
from common.errors import ConfigError, GovshareError, IntegrityError
from common.files import digest_file, write_private
from common.progress import Progress
from common.schema import CHANGE_TYPE, DISPUTED
from keys import sigalg
from keys.agentproto import Enrolment, agent_algorithms, enrolment_proof, raw_public
from keys.checkpoint import Checkpoint, CheckpointError, note_text, parse_checkpoint, verify_note
from keys.datakeys import envelope_info, open_sealed
from keys.merkle import verify_consistency
from keys.proofcheck import signed_tree_hash
from keys.protection import decryption_for_keys
from keys.pseudonyms import FINGERPRINT, KEY_REF
from sharing.datakeys import manifest_keys
from sharing.disputes import Dispute, disputed_mask
from sharing.feed import DELETE
from sharing.pull import GrantedView, check_output, granted_columns, write_view
from sharing.read import base_version, read_view
from sharing.store import MANIFEST, SIGNATURE, SharingStore
from sharing.verify import verify_chain, verify_files

PREFIX = "/agent/v1"


# -- enrolment ---------------------------------------------------------------------------------


def init_agent(home: AgentHome, enrolment: Enrolment) -> Enrolled:
    if home.enrolled():
        doc = home.describe()
        raise ConfigError(f"GOVSHARE_AGENT_HOME {home.root} is already agent {doc.get('agent_id')} of "
                          f"{doc.get('subscriber')}; enrol another agent in a fresh GOVSHARE_AGENT_HOME")
    signing_algorithm, envelope_algorithm = agent_algorithms(enrolment.publisher_algorithm)  # the publisher's profile
    signing = sigalg.generate(signing_algorithm)  # type: ignore[arg-type]
    envelope = sigalg.generate("SM2") if envelope_algorithm == "SM2" else X25519PrivateKey.generate()
    signing_pub = raw_public(signing.public)
    envelope_pub = raw_public(envelope.public if isinstance(envelope, sigalg.PrivateKey) else envelope.public_key())
    proof = signing.sign(enrolment_proof(enrolment.token, enrolment.subscriber, signing_pub, envelope_pub))
    answer = enrol(enrolment.service_url, enrolment.ca_pem, {
        "token": enrolment.token, "subscriber": enrolment.subscriber, "signing_pub": signing_pub,
        "encryption_pub": envelope_pub, "proof": base64.b64encode(proof).decode("ascii")})
    agent_id = answer.get("agent_id")
    if answer.get("subscriber") != enrolment.subscriber or not isinstance(agent_id, str):
        raise IntegrityError("the service's answer to the enrolment does not name this subscriber's agent")
    home.write(enrolment, agent_id, signing, envelope)
    return home.load()


def client_for(enrolled: Enrolled, purpose: str, case: str = "") -> ServiceClient:
    return ServiceClient(enrolled.service_url, enrolled.ca_pem, enrolled.agent_id, enrolled.signing_key, purpose, case)


def list_datasets(enrolled: Enrolled, purpose: str) -> list[dict[str, Any]]:
    with client_for(enrolled, purpose) as client:
        doc = client.get(f"{PREFIX}/datasets")
    items = doc.get("datasets")
    if doc.get("subscriber") != enrolled.subscriber or not isinstance(items, list):
        raise IntegrityError("the service's dataset list is not this subscriber's")
    return items


# -- pull --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentPullResult:
    dataset: str
    subscriber: str
    version: int
    since: int | None
    rows: int
    deletes: int
    fields: tuple[str, ...]
    out: Path | str
    delivery: int | None  # the publisher's access-log record; None when there was nothing new


def pull(home: AgentHome, enrolled: Enrolled, dataset: str, purpose: str, case: str, out: str,
         version: int | None = None, since: int | None = None) -> AgentPullResult:
    if version is not None and since is not None:
        raise ConfigError("--version and --since exclude each other")
    progress = Progress(f"agent pull {dataset}")
    try:
        with client_for(enrolled, purpose, case) as client:
            return _pull(home, enrolled, client, progress, dataset, out, version, since)
    finally:
        progress.done()


def _pull(home: AgentHome, enrolled: Enrolled, client: ServiceClient, progress: Progress, dataset: str, out: str,
          version: int | None, since: int | None) -> AgentPullResult:
    progress.stage("versions")
    listed = client.get(f"{PREFIX}/datasets/{dataset}/versions").get("versions")
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"dataset {dataset} has no published version yet")
    latest = max(int(v["version"]) for v in listed)
    database = "://" in out
    if database and version is None and since is None:
        since = home.applied(dataset, out)
        if since is not None and since > latest:
            raise IntegrityError(f"the target was applied up to {dataset} version {since}, but the service has only "
                                 f"1..{latest}: the publisher's history is shorter than what this agent received")
        if since == latest:
            return AgentPullResult(dataset, enrolled.subscriber, latest, since, 0, 0, (), out, None)
    upto = version if version is not None else latest
    if not 1 <= upto <= latest:
        raise ConfigError(f"dataset {dataset} has versions 1..{latest}; there is no version {upto}")
    if since is not None and not 0 <= since <= upto:
        raise ConfigError(f"--since {since}: dataset {dataset} has versions 1..{upto}")

    store = SharingStore(enrolled.mirror, dataset)
    digests = {int(v["version"]): str(v.get("manifest_sha256")) for v in listed}
    progress.stage("manifests")
    _mirror_manifests(client, store, dataset, upto, digests)
    manifests = verify_chain(store, enrolled.publisher, upto)
    home.pin(enrolled.publisher.learned)  # a new publisher key, announced by a pinned one
    progress.stage("access-log checkpoint")  # after the chain: checkpoints may be signed by a key learned from it
    witness(home, enrolled, client)
    first = since + 1 if since is not None else base_version(manifests, upto)

    progress.stage("key envelopes")
    body = {"version": upto} if since is None else {"version": upto, "since": since}
    answer = client.post(f"{PREFIX}/datasets/{dataset}/envelopes", body)
    delivery = int(answer.get("delivery") or 0)
    try:
        if answer.get("version") != upto or answer.get("first") != first:
            raise IntegrityError(f"the service released keys for {dataset} versions {answer.get('first')}.."
                                 f"{answer.get('version')}, not for the verified {first}..{upto}")
        ds, grant = _dataset(answer.get("dataset"), dataset)
        fields = grant.fields
        check_output(ds, grant, out)
        keys = _open_envelopes(enrolled, manifests, answer.get("envelopes"), dataset, first, upto)
        fetched = _mirror_files(client, store, manifests, first, upto, progress)
        progress.stage("reading", nbytes=fetched)
        disputes = _disputes(answer.get("disputes"))
        view = read_view(store, decryption_for_keys(keys), ds, manifests, list(grant.columns), first, upto,
                         keep_deletes=since is not None, with_refs=bool(disputes))
        disputed = (disputed_mask(disputes, view.column(KEY_REF), view.column(FINGERPRINT)) if disputes
                    else pa.repeat(pa.scalar(False), view.num_rows))
        table = granted_columns(view, grant).append_column(DISPUTED, disputed)
        deletes = int(pc.sum(pc.equal(table.column(CHANGE_TYPE), DELETE)).as_py() or 0)
        granted = GrantedView(table, upto, first, manifests[upto - 1].digest, deletes)
        progress.stage("writing", rows=table.num_rows)

        def confirm(output: dict[str, str]) -> None:
            client.post(f"{PREFIX}/deliveries/{delivery}/complete",
                        {"outcome": "confirmed", "rows": table.num_rows, "deletes": deletes, **output})

        written = write_view(granted, ds, grant, out, confirm)
    except GovshareError as failure:
        _report_failure(client, delivery, failure)
        raise
    if database:
        home.record_applied(dataset, out, written.get("target", ""), upto)
    target: Path | str = written.get("target") or Path(out).resolve()
    return AgentPullResult(dataset, enrolled.subscriber, upto, since, table.num_rows, deletes, fields, target, delivery)


def witness(home: AgentHome, enrolled: Enrolled, client: ServiceClient) -> dict[str, Any]:
    """Check the publisher's access log only grew since the checkpoint this agent last accepted.

    Asks for a fresh checkpoint and the consistency proof from the size held (RFC 9162), checks
    the checkpoint's signature under the pinned publisher keys and its origin, and the proof; a
    history rewritten (even re-signed with the publisher's own key) is IntegrityError (exit 3) and
    a record in the agent's own log, and the old checkpoint is kept. Returns the accepted record.
    """
    held = home.witnessed()
    old_size = held["size"] if held else 0
    try:
        answer = client.get(f"{PREFIX}/log/checkpoint?from={old_size}")
    except GovshareError as exc:
        if "shorter than a tree it signed" in exc.message:  # the service's 409 (service.agent_api.log_checkpoint)
            _rewritten(home, held, None, "the service says its log is shorter than the checkpoint this agent holds")
        raise
    note = answer.get("checkpoint")
    proof = answer.get("consistency")
    if not isinstance(note, str) or not isinstance(proof, list) or answer.get("from") != old_size:
        raise IntegrityError("the service's checkpoint answer is malformed or not for the size this agent holds")
    checkpoint = _checked_checkpoint(enrolled, note.encode("utf-8"), held["origin"] if held else None)
    if held is not None:
        try:
            hashes = [bytes.fromhex(h) for h in proof]
        except (TypeError, ValueError):
            hashes = None
        if (hashes is None or checkpoint.size < old_size
                or not verify_consistency(old_size, checkpoint.size, bytes.fromhex(held["root"]), checkpoint.root, hashes,
                                          signed_tree_hash(note.encode("utf-8"), checkpoint.origin,
                                                           enrolled.publisher.public_keys()))):
            _rewritten(home, held, checkpoint, "the new checkpoint's tree does not extend the one this agent holds")
    elif checkpoint.size == 0 and proof:
        raise IntegrityError("the service's checkpoint answer is malformed")
    home.witness(checkpoint.origin, checkpoint.size, checkpoint.root.hex(), note)
    record = {"event": "checkpoint", "outcome": "consistent", "origin": checkpoint.origin, "from": old_size,
              "size": checkpoint.size, "root": checkpoint.root.hex()}
    home.event(record)
    return record


def _checked_checkpoint(enrolled: Enrolled, note: bytes, origin: str | None) -> Checkpoint:
    try:
        claimed = parse_checkpoint(note_text(note)).origin
    except CheckpointError as exc:
        raise IntegrityError(f"the service's checkpoint is not a signed checkpoint: {exc}") from None
    if origin is not None and claimed != origin:
        raise IntegrityError(f"the service's checkpoint is of the log {claimed!r}, not of {origin!r} that this agent "
                             "witnesses")
    for key in enrolled.publisher.public_keys():
        try:
            return verify_note(note, claimed, key)
        except CheckpointError:
            continue
    raise IntegrityError("the service's checkpoint is not signed by a pinned publisher key")


def _rewritten(home: AgentHome, held: dict[str, Any] | None, checkpoint: Checkpoint | None, why: str) -> None:
    home.event({"event": "checkpoint", "outcome": "rewritten", "reason": why,
                "held": {k: held[k] for k in ("origin", "size", "root")} if held else None,
                "received": {"size": checkpoint.size, "root": checkpoint.root.hex()} if checkpoint else None})
    held_size = held["size"] if held else 0
    raise IntegrityError(f"the publisher's access log was rewritten: {why} ({held_size} record(s), accepted "
                         f"{held.get('time') if held else '-'}; kept in {home.witness_file}, recorded in "
                         f"{home.events_file})")


def _report_failure(client: ServiceClient, delivery: int, failure: GovshareError) -> None:
    if not delivery:
        return
    try:
        client.post(f"{PREFIX}/deliveries/{delivery}/complete", {"outcome": "failed", "reason": failure.message[:500]})
    except GovshareError:
        pass  # the publisher's log keeps the delivery as "started, not confirmed"


def _mirror_manifests(client: ServiceClient, store: SharingStore, dataset: str, upto: int,
                      digests: dict[int, str]) -> None:
    for v in range(1, upto + 1):
        folder = store.version_dir(v)
        if (folder / MANIFEST).is_file() and (folder / SIGNATURE).is_file():
            held = store.read_manifest(v).digest
            if digests.get(v) not in (None, held):
                raise IntegrityError(f"{dataset} version {v}: the service now lists another manifest than the one "
                                     "this agent received before (sha256 "
                                     f"{held[:16]}...): the publisher's history was rewritten")
            continue
        doc = client.get(f"{PREFIX}/datasets/{dataset}/versions/{v}/manifest")
        try:
            raw = base64.b64decode(str(doc.get("manifest")), validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError(f"{dataset} version {v}: the service sent a manifest that is not base64") from None
        signature = doc.get("signature")
        if not isinstance(signature, dict):
            raise IntegrityError(f"{dataset} version {v}: the service sent no signature")
        write_private(folder / SIGNATURE, json.dumps(signature, sort_keys=True))
        write_private(folder / MANIFEST, raw)


def _mirror_files(client: ServiceClient, store: SharingStore, manifests: Any, first: int, upto: int,  # noqa: ANN401
                  progress: Progress) -> int:
    fetched = 0

    def moved(n: int) -> None:
        nonlocal fetched
        fetched += n
        progress.stage("files", nbytes=fetched)

    for v in range(first, upto + 1):
        manifest = manifests[v - 1]
        folder = store.version_dir(v)
        for entry in manifest.files():
            path = folder / entry["path"]
            if path.is_file() and path.stat().st_size == entry["bytes"] and digest_file(path, manifest.digest_algorithm) == entry.get(manifest.digest_field):
                continue
            client.download(f"{PREFIX}/datasets/{store.dataset_id}/versions/{v}/files/{entry['path']}", path,
                            int(entry["bytes"]), moved)
        verify_files(store, manifest)
    return fetched


def _open_envelopes(enrolled: Enrolled, manifests: Any, envelopes: Any, dataset: str, first: int,  # noqa: ANN401
                    upto: int) -> dict[str, bytes]:
    if not isinstance(envelopes, list):
        raise IntegrityError("the service's answer holds no key envelopes")
    keys: dict[str, bytes] = {}
    for item in envelopes:
        if not isinstance(item, dict):
            raise IntegrityError("a key envelope is not an object")
        v, group, key_id = item.get("version"), item.get("group"), item.get("key_id")
        if not isinstance(v, int) or not first <= v <= upto or not isinstance(group, str):
            raise IntegrityError(f"a key envelope names version {v!r}, outside the versions read")
        if manifest_keys(manifests[v - 1]).get(group) != key_id:
            raise IntegrityError(f"{dataset} version {v}: the envelope of {group} names a key the signed manifest "
                                 "does not list")
        try:
            blob = base64.b64decode(str(item.get("sealed")), validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError("a key envelope is not base64") from None
        keys[key_id] = open_sealed(blob, enrolled.envelope_key, envelope_info(dataset, v, group, key_id,
                                                                              enrolled.subscriber))
    return keys


def _dataset(doc: Any, dataset: str) -> tuple[Dataset, Grant]:  # noqa: ANN401
    """The dataset as the service describes it to this subscriber: key and granted fields (and
    which of them it receives masked)."""
    if not isinstance(doc, dict) or doc.get("id") != dataset or not isinstance(doc.get("fields"), list):
        raise IntegrityError(f"the service's answer does not describe dataset {dataset}")
    try:
        fields = tuple(Field(name=str(f["name"]), type=f["type"], sharing=f["sharing"], sensitivity=f["sensitivity"],
                             column=str(f["name"]), required=bool(f.get("required")),
                             decimal=tuple(f["decimal"]) if f.get("decimal") else None)
                       for f in doc["fields"])
    except (KeyError, TypeError):
        raise IntegrityError(f"the service's description of dataset {dataset} is malformed") from None
    names = [f.name for f in fields]
    granted = doc.get("granted")
    key = doc.get("key")
    masked = doc.get("masked", [])
    if (key not in names or not isinstance(granted, list) or not granted or not set(granted) <= set(names)
            or not isinstance(masked, list) or not set(masked) <= set(granted)):
        raise IntegrityError(f"the service's description of dataset {dataset} is malformed")
    ds = Dataset(id=dataset, title="", provider="", connection_id="", source_table="", key=str(key),
                 watermark_column="", deleted_column="", schedule=None, fields=fields, checks=(), footer_key="",
                 conditional_key="")
    return ds, Grant(ds.id, tuple(str(g) for g in granted), masked=tuple(str(m) for m in masked))


def _disputes(items: Any) -> list[Dispute]:  # noqa: ANN401
    found = []
    for item in items or []:
        if not isinstance(item, dict) or not isinstance(item.get("key_ref"), str) or not isinstance(
                item.get("fingerprint"), str):
            raise IntegrityError("the service's list of open disputes is malformed")
        found.append(Dispute(id="", key_ref=item["key_ref"], fingerprint=item["fingerprint"], masked_key="",
                             subscriber="", reason="", raised_at="", version=0, status="open"))
    return found
