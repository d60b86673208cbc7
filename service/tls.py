"""The service's TLS material: a bureau's own certificate, or a local CA and server certificate.

A bureau configures its own certificate with ``GOVSHARE_TLS_CERT`` and ``GOVSHARE_TLS_KEY``
(PEM files; the chain in the certificate file) and ``GOVSHARE_TLS_CA`` (the CA certificate that
enrolment and profile files carry, so that clients trust exactly it). Without them,
``govshare init`` makes a local CA and a server certificate under GOVSHARE_HOME/service/tls
(private keys 0600; SAN localhost, 127.0.0.1, ::1 and the machine's host name), for the demo and
for a service that agents reach on loopback or by that host name. Nothing here is self-signed
for the server itself: clients pin the CA, and the server certificate is renewed under it
(``ensure_local_tls`` makes a new one when it is within 30 days of expiry).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError
from common.files import private_dir
from common.home import Home

CERT_ENV, KEY_ENV, CA_ENV = "GOVSHARE_TLS_CERT", "GOVSHARE_TLS_KEY", "GOVSHARE_TLS_CA"
CA_DAYS, SERVER_DAYS, RENEW_BEFORE = 3650, 397, timedelta(days=30)


@dataclass(frozen=True)
class TlsMaterial:
    cert_path: Path  # the server certificate (and chain), PEM
    key_path: Path  # its private key, PEM
    ca_pem: bytes  # the CA certificate clients pin
    source: str  # "configured" or "local CA"


def tls_dir(home: Home) -> Path:
    return home.root / "service" / "tls"


def tls_material(home: Home) -> TlsMaterial:
    """The certificate the service presents and the CA its clients pin; ConfigError naming what is
    missing or unreadable."""
    configured = {name: os.environ.get(name, "").strip() for name in (CERT_ENV, KEY_ENV, CA_ENV)}
    if any(configured.values()):
        missing = [name for name, value in configured.items() if not value]
        if missing:
            raise ConfigError(f"a configured TLS certificate needs {', '.join((CERT_ENV, KEY_ENV, CA_ENV))}; "
                              f"{', '.join(missing)} is not set")
        cert, key, ca = (Path(configured[n]) for n in (CERT_ENV, KEY_ENV, CA_ENV))
        for name, path in ((CERT_ENV, cert), (KEY_ENV, key), (CA_ENV, ca)):
            if not path.is_file():
                raise ConfigError(f"{name}={path}: no such file")
        ca_pem = ca.read_bytes()
        _load_cert(ca_pem, CA_ENV)
        _load_cert(cert.read_bytes(), CERT_ENV)
        return TlsMaterial(cert, key, ca_pem, "configured")
    folder = tls_dir(home)
    cert, key, ca = folder / "server.pem", folder / "server.key", folder / "ca.pem"
    if not (cert.is_file() and key.is_file() and ca.is_file()):
        raise ConfigError(f"no TLS certificate for the service: run 'govshare init' (it makes a local CA under "
                          f"{folder}) or set {CERT_ENV}, {KEY_ENV} and {CA_ENV}")
    return TlsMaterial(cert, key, ca.read_bytes(), "local CA")


def ensure_local_tls(home: Home, now: datetime | None = None) -> list[str]:
    """Make the local CA and the server certificate when missing (or the server certificate near
    its end); what was made. Nothing when the bureau configured its own certificate."""
    if any(os.environ.get(n, "").strip() for n in (CERT_ENV, KEY_ENV, CA_ENV)):
        return []
    now = now or datetime.now(UTC)
    folder = tls_dir(home)
    private_dir(folder.parent)
    private_dir(folder)
    made: list[str] = []
    ca_cert_path, ca_key_path = folder / "ca.pem", folder / "ca.key"
    if not (ca_cert_path.is_file() and ca_key_path.is_file()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "govshare"),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"govshare local CA ({socket.gethostname()})")])
        ca_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CA_DAYS))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
                   .sign(ca_key, hashes.SHA256()))
        _write_private(ca_key_path, _key_pem(ca_key))
        _write_private(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM))
        (folder / "server.pem").unlink(missing_ok=True)  # a server certificate of another CA is worthless now
        made.append("local CA")
    ca_cert = _load_cert(ca_cert_path.read_bytes(), str(ca_cert_path))
    server_path = folder / "server.pem"
    if server_path.is_file() and (folder / "server.key").is_file():
        current = _load_cert(server_path.read_bytes(), str(server_path))
        if current.not_valid_after_utc - RENEW_BEFORE > now:
            return made
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    if host and host != "localhost":
        names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "govshare"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(folder / "server.key", _key_pem(key))
    _write_private(server_path, cert.public_bytes(serialization.Encoding.PEM))
    made.append("server certificate")
    return made


def _load_cert(pem: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise ConfigError(f"{where}: not a PEM certificate") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
