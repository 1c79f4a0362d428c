"""TLS helpers: a private CA and a server certificate signed by it, for a platform
served over https on a host without a real certificate (tests, a LAN, a laptop).

Clients trust the CA file: httpx (tidal's CLI, fal-client) reads it from
`SSL_CERT_FILE`; `ca_bundle()` adds it to the system's CAs so the rest still verify.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class LocalCertificate:
    ca_file: Path  # the CA's certificate: what clients trust
    cert_file: Path  # the server's certificate (leaf, then the CA): uvicorn's ssl_certfile
    key_file: Path  # the server's private key (0600): uvicorn's ssl_keyfile


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_local_certificate(
    directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 30
) -> LocalCertificate:
    """Write `ca.pem`, `cert.pem` and `key.pem` into `directory` for `hosts`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tidal local CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    out = LocalCertificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    out.ca_file.write_bytes(ca.public_bytes(pem))
    out.cert_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    fd = os.open(out.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return out


def ca_bundle(ca_file: Path, out: Path, system: Path | None = None) -> Path:
    """Write `out`: the system's CA bundle (`SSL_CERT_FILE`, else certifi's) plus `ca_file`,
    for `SSL_CERT_FILE` in clients that must trust both the platform and the internet."""
    if system is None:
        configured = os.environ.get("SSL_CERT_FILE")
        if configured and Path(configured).is_file():
            system = Path(configured)
        else:
            import certifi

            system = Path(certifi.where())
    out.write_bytes(system.read_bytes().rstrip(b"\n") + b"\n" + ca_file.read_bytes())
    return out
