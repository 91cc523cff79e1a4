"""Test certificates, made with the `cryptography` package and written to a folder as PEM.

    certs = make_certificates(tmp_path)   # certs.ca, certs.server_cert, certs.server_key, ...

- a CA (`ca.pem`), and the server certificate it signed for 127.0.0.1 and localhost
  (an IP and a DNS subject alternative name), for any server of the suite (PostgreSQL,
  a Kafka broker);
- a client certificate it signed, for mutual TLS (its common name is the user's name,
  as PostgreSQL's `cert` authentication wants);
- a second CA that has nothing to do with the first, with its own server certificate
  for the same names: a server presenting it must be refused by a client that trusts
  the first CA only.

Keys are ECDSA P-256 (quick to make), unencrypted PKCS#8; certificates last a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Certificates:
    """The PEM files make_certificates wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA unrelated to `ca`
    other_server_cert: Path  # signed by `other_ca`, for the same names
    other_server_key: Path


@dataclass(frozen=True)
class Issuer:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issuer | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate for `subject`'s `key`, signed by `issuer` (None: self-signed)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    signer = issuer or Issuer(name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), False
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(signer.key, hashes.SHA256())


def key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(common_name: str) -> tuple[Issuer, x509.Certificate]:
    key = new_key()
    cert = certificate(
        common_name,
        key,
        None,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (key_usage(signs_certificates=True), True),
        ],
    )
    return Issuer(cert.subject, key), cert


def make_leaf(
    issuer: Issuer, common_name: str, usage: x509.ObjectIdentifier, names: tuple[str, ...] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A certificate for a server (`usage` serverAuth, with `names` as its SANs) or a client."""
    key = new_key()
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (key_usage(signs_certificates=False), True),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if names:
        extensions.append((x509.SubjectAlternativeName([san(n) for n in names]), False))
    return key, certificate(common_name, key, issuer, extensions)


def san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.touch(mode=0o600)  # never readable by others, not even for a moment
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_certificates(folder: Path, client_name: str = "sensor") -> Certificates:
    """Write the CAs, the server certificates and the client certificate to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_cert = make_ca("sensor test CA")
    other, other_cert = make_ca("an unrelated CA")
    server_key, server_cert = make_leaf(
        ca, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, SERVER_NAMES
    )
    client_key, client_cert = make_leaf(ca, client_name, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key, other_server = make_leaf(
        other, "localhost", ExtendedKeyUsageOID.SERVER_AUTH, SERVER_NAMES
    )
    return Certificates(
        ca=write_cert(folder / "ca.pem", ca_cert),
        server_cert=write_cert(folder / "server.pem", server_cert),
        server_key=write_key(folder / "server.key", server_key),
        client_cert=write_cert(folder / "client.pem", client_cert),
        client_key=write_key(folder / "client.key", client_key),
        other_ca=write_cert(folder / "other-ca.pem", other_cert),
        other_server_cert=write_cert(folder / "other-server.pem", other_server),
        other_server_key=write_key(folder / "other-server.key", other_key),
    )
