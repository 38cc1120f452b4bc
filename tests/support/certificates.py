"""Certificates for TLS tests, made with the ``cryptography`` package (test dependency).

:func:`make_pki` builds a fresh certificate authority, a server certificate for
``localhost`` / ``127.0.0.1`` / ``::1`` and a client certificate, both signed by that CA,
plus an unrelated CA and a client certificate it signed (a client the server must refuse).
Keys are EC P-256 (fast to make); everything is PEM text. Nothing is cached: each call
makes new keys, so tests never share secrets.

:func:`ssl_config_text` writes a text-format ``SSLConfig`` (the PEMs are embedded, as
TF Serving's ``--ssl_config_file`` expects); :meth:`Pki.write` puts the PEMs in files for
clients that take paths (``requests``).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KeyAndCert", "Pki", "make_pki", "make_ca", "issue", "ssl_config_text"]


@dataclass(frozen=True)
class KeyAndCert:
    """A private key (PKCS#8 PEM, unencrypted) and its certificate (PEM)."""

    key: str
    cert: str

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """``<name>.key`` and ``<name>.crt`` in ``folder``; returns (cert path, key path)."""
        key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
        key_path.write_text(self.key, encoding="ascii")
        key_path.chmod(0o600)
        cert_path.write_text(self.cert, encoding="ascii")
        return cert_path, key_path


@dataclass(frozen=True)
class Pki:
    ca: KeyAndCert
    server: KeyAndCert
    client: KeyAndCert
    other_ca: KeyAndCert
    stranger: KeyAndCert  # a client certificate signed by other_ca

    def write(self, folder: Path) -> dict[str, Path]:
        """Every PEM as a file in ``folder``: ``ca`` (cert), ``client_cert``, ``client_key``,
        ``stranger_cert``, ``stranger_key``."""
        folder.mkdir(parents=True, exist_ok=True)
        ca_path = folder / "ca.crt"
        ca_path.write_text(self.ca.cert, encoding="ascii")
        client_cert, client_key = self.client.write(folder, "client")
        stranger_cert, stranger_key = self.stranger.write(folder, "stranger")
        return {
            "ca": ca_path,
            "client_cert": client_cert,
            "client_key": client_key,
            "stranger_cert": stranger_cert,
            "stranger_key": stranger_key,
        }


def _new_key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem(key, cert) -> KeyAndCert:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return KeyAndCert(key_pem, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))


def _validity():  # type: ignore[no-untyped-def]
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)


def make_ca(common_name: str = "pyserving test CA") -> KeyAndCert:
    """A self-signed certificate authority."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(key, cert)


def issue(ca: KeyAndCert, common_name: str, *, server: bool) -> KeyAndCert:
    """A leaf certificate signed by ``ca``: for a server (names ``localhost``, 127.0.0.1
    and ::1) or for a client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(ca.key.encode("ascii"), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.encode("ascii"))
    key = _new_key()
    not_before, not_after = _validity()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if server:
        names = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return _pem(key, cert)


def make_pki() -> Pki:
    """A fresh CA with a server and a client certificate, and a stranger from another CA."""
    ca = make_ca()
    other_ca = make_ca("some other CA")
    return Pki(
        ca=ca,
        server=issue(ca, "localhost", server=True),
        client=issue(ca, "pyserving test client", server=False),
        other_ca=other_ca,
        stranger=issue(other_ca, "stranger", server=False),
    )


def ssl_config_text(server_key: str, server_cert: str, custom_ca: str = "", client_verify: bool = False) -> str:
    """A text-format ``SSLConfig`` holding the given PEM texts."""
    from google.protobuf import text_format

    from pyserving.protos import ssl_config_pb2

    config = ssl_config_pb2.SSLConfig(
        server_key=server_key, server_cert=server_cert, custom_ca=custom_ca, client_verify=client_verify
    )
    return text_format.MessageToString(config)
