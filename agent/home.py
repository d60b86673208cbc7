"""GOVSHARE_AGENT_HOME: what a subscriber's agent keeps on its own machine. Never the bureau's keys.

Layout (folder 0700, files 0600)::

    agent.json            who it is: subscriber, agent id, service URL, the pinned publisher keys
                          (every key up to enrolment, and those announced since by transitions)
    ca.pem                the CA certificate pinned at enrolment (the service's TLS trust)
    keys/signing.pem      the agent's signing key: Ed25519, or SM2 for a gm publisher (signs every request)
    keys/envelope.pem     the agent's envelope key: X25519, or SM2 (opens the key envelopes sealed to it)
    mirror/<dataset>/versions/<N>/   manifests, signatures and files as published (encrypted)
    targets.json          per database target (by the SHA-256 of its URL): the last version applied
    witness.json          the last checkpoint of the publisher's access log this agent accepted
    events.jsonl          the agent's own log: every checkpoint check, consistent or not

``agent.json`` is written last, so a home whose enrolment failed half-way is not an agent.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.errors import ConfigError, IntegrityError
from common.files import private_dir, write_private
from keys import sigalg
from keys.agentproto import Enrolment, PinnedPublisher, agent_algorithms

AGENT_FORMAT = "govshare-agent/1"
TARGETS_FORMAT = "govshare-agent-targets/1"
WITNESS_FORMAT = "govshare-agent-witness/1"


@dataclass(frozen=True)
class Enrolled:
    """An enrolled agent, loaded from its home."""

    root: Path
    subscriber: str
    agent_id: str
    service_url: str
    ca_pem: bytes
    publisher: PinnedPublisher
    signing_key: sigalg.PrivateKey
    envelope_key: X25519PrivateKey | sigalg.PrivateKey

    def __repr__(self) -> str:  # never key material
        return f"Enrolled({self.agent_id} of {self.subscriber} at {self.service_url})"

    @property
    def mirror(self) -> Path:
        return self.root / "mirror"


class AgentHome:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def marker(self) -> Path:
        return self.root / "agent.json"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def targets_file(self) -> Path:
        return self.root / "targets.json"

    def enrolled(self) -> bool:
        return self.marker.is_file()

    def describe(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.marker.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"GOVSHARE_AGENT_HOME {self.root} holds no enrolled agent: run "
                              "'govshare agent init --enrollment FILE' with the bureau's enrolment file") from None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.marker} is unreadable: the agent's home was altered") from None
        if not isinstance(doc, dict) or doc.get("format") != AGENT_FORMAT:
            raise IntegrityError(f"{self.marker} is not an agent file ({AGENT_FORMAT})")
        return doc

    def write(self, enrolment: Enrolment, agent_id: str, signing: sigalg.PrivateKey,
              envelope: X25519PrivateKey | sigalg.PrivateKey) -> None:
        private_dir(self.keys)
        write_private(self.keys / "signing.pem", signing.pem())
        write_private(self.keys / "envelope.pem", envelope.pem() if isinstance(envelope, sigalg.PrivateKey) else
                      envelope.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
        write_private(self.root / "ca.pem", enrolment.ca_pem)
        write_private(self.marker, json.dumps({
            "format": AGENT_FORMAT, "subscriber": enrolment.subscriber, "agent_id": agent_id,
            "service_url": enrolment.service_url,
            "publisher_keys": enrolment.pinned,
            "enrolled_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")

    def pin(self, learned: list[dict[str, str]]) -> None:
        """Keep publisher keys learned from verified transitions (announced by a pinned key)."""
        if not learned:
            return
        doc = self.describe()
        known = {k.get("key_id") for k in doc.get("publisher_keys", [])}
        doc["publisher_keys"] = [*doc.get("publisher_keys", []), *(k for k in learned if k["key_id"] not in known)]
        write_private(self.marker, json.dumps(doc, indent=2) + "\n")

    def load(self) -> Enrolled:
        doc = self.describe()
        pinned = doc.get("publisher_keys")
        try:
            signing = sigalg.load_private_pem((self.keys / "signing.pem").read_bytes(), "the agent's signing key")
            envelope = _envelope_key((self.keys / "envelope.pem").read_bytes())
            ca_pem = (self.root / "ca.pem").read_bytes()
            if not isinstance(pinned, list) or not all(isinstance(k, dict) for k in pinned):
                raise IntegrityError(f"{self.marker}: publisher_keys is not a list of keys; the agent's home was altered")
            publisher = PinnedPublisher(pinned)
        except FileNotFoundError as exc:
            raise ConfigError(f"GOVSHARE_AGENT_HOME {self.root}: {Path(exc.filename).name} is missing; restore the "
                              "agent's home from backup or enrol a new agent") from None
        except ValueError:
            raise IntegrityError(f"GOVSHARE_AGENT_HOME {self.root}: a key file is unreadable; the agent's home was "
                                 "altered") from None
        wanted = agent_algorithms(signing.algorithm)[1]
        if wanted != ("SM2" if isinstance(envelope, sigalg.PrivateKey) else "X25519"):
            raise IntegrityError(f"GOVSHARE_AGENT_HOME {self.root}: the key files are not the agent's key types")
        return Enrolled(self.root, str(doc["subscriber"]), str(doc["agent_id"]), str(doc["service_url"]), ca_pem,
                        publisher, signing, envelope)

    # -- database targets: the last version applied ------------------------------------------

    @staticmethod
    def target_id(dataset: str, url: str) -> str:
        return hashlib.sha256(f"{dataset}\n{url}".encode()).hexdigest()

    def applied(self, dataset: str, url: str) -> int | None:
        entry = self._targets().get(self.target_id(dataset, url))
        return int(entry["version"]) if isinstance(entry, dict) and isinstance(entry.get("version"), int) else None

    def record_applied(self, dataset: str, url: str, shown: str, version: int) -> None:
        targets = self._targets()
        targets[self.target_id(dataset, url)] = {"dataset": dataset, "target": shown, "version": version,
                                                 "applied_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_private(self.targets_file, json.dumps({"format": TARGETS_FORMAT, "targets": targets}, indent=2) + "\n")

    # -- the witness: the last checkpoint accepted, and the agent's own log -----------------------

    @property
    def witness_file(self) -> Path:
        return self.root / "witness.json"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    def witnessed(self) -> dict[str, Any] | None:
        """The last checkpoint accepted: origin, size, root (hex), note, time; None before the first."""
        try:
            doc = json.loads(self.witness_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.witness_file} is unreadable: the agent's home was altered") from None
        if (not isinstance(doc, dict) or doc.get("format") != WITNESS_FORMAT or not isinstance(doc.get("size"), int)
                or not isinstance(doc.get("root"), str) or not isinstance(doc.get("origin"), str)):
            raise IntegrityError(f"{self.witness_file} is not the agent's witness record ({WITNESS_FORMAT})")
        return doc

    def witness(self, origin: str, size: int, root: str, note: str) -> None:
        write_private(self.witness_file, json.dumps({
            "format": WITNESS_FORMAT, "origin": origin, "size": size, "root": root, "note": note,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")

    def event(self, record: dict[str, Any]) -> None:
        """Append to the agent's own log (0600, fsynced)."""
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **record},
                          ensure_ascii=False, sort_keys=True) + "\n"
        fd = os.open(self.events_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def _targets(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.targets_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise IntegrityError(f"{self.targets_file} is unreadable: restore it, or pull with --version N to "
                                 "rebuild the target") from None
        if not isinstance(doc, dict) or doc.get("format") != TARGETS_FORMAT or not isinstance(doc.get("targets"), dict):
            raise IntegrityError(f"{self.targets_file} is not the agent's target list")
        return doc["targets"]


def _envelope_key(pem: bytes) -> X25519PrivateKey | sigalg.PrivateKey:
    """The agent's envelope key: X25519 (PKCS#8) or SM2 (keys.sigalg's block)."""
    if b"SM2" in pem.partition(b"\n")[0]:
        key = sigalg.load_private_pem(pem, "the agent's envelope key")
        if key.algorithm == "SM2":
            return key
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, X25519PrivateKey):
        raise ValueError("not an X25519 key")
    return private
