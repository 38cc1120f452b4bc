"""TLS for both front ends, from TF Serving's ``--ssl_config_file`` (a text ``SSLConfig``).

The file is TF Serving's: ``server_key``, ``server_cert``, ``custom_ca`` and
``client_verify`` (``pyserving/protos/ssl_config.proto``), the first three holding PEM *text*,
not file names. What it secures:

* gRPC, as TF Serving does: the TCP port *and* the UNIX socket (``--grpc_socket_path``) serve
  TLS only; a plaintext client cannot connect. (A client on the socket needs the
  ``grpc.ssl_target_name_override`` channel option naming a host in the certificate.)
* REST, a pyserving extension (TF Serving's HTTP server has no TLS): the REST port serves
  HTTPS with the same certificate (HTTP/1.1, TLS 1.2 or newer); plain HTTP is refused there.
* ``client_verify: true`` (mutual TLS): on both ports every client must present a
  certificate signed by an authority in ``custom_ca``; a client without one, or with one
  from another authority, fails the handshake. Without ``client_verify`` no client
  certificate is requested and ``custom_ca`` is not used (TF Serving's behaviour).

Validation (:class:`TlsSettings` checks itself when built; :func:`load_ssl_config` adds the
file's name to every message): ``server_key`` and ``server_cert`` must be set, must be PEM,
and the key must belong to the certificate; the key must not be encrypted (TF Serving's gRPC
credentials take no passphrase); ``client_verify`` needs a ``custom_ca`` holding at least one
PEM certificate. A file name where PEM text belongs gets a hint. Every failure is an
:class:`InvalidArgumentError` (a missing or unreadable file: the error of
:func:`as_serving_error`), so a bad file stops the server at startup.

Keys in memory only: the ``ssl`` module loads a certificate chain from files alone, so
:func:`rest_ssl_context` writes the key and certificate to a private temporary folder
(mode 0700, files 0600), loads them and deletes the folder before it returns; nothing stays
on disk while the server runs. ``TlsSettings``' ``repr`` leaves the key out.

Threading: everything here is pure (no shared state); safe from any thread. Certificates
are read once: replacing the file takes a restart (TF Serving's behaviour too). ``grpc`` is
imported by :func:`grpc_server_credentials` only.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

from pyserving.servable.errors import InvalidArgumentError
from pyserving.server.config_files import parse_text_config, read_config_text

__all__ = ["TlsSettings", "load_ssl_config", "parse_ssl_config", "grpc_server_credentials", "rest_ssl_context"]

_PEM_BEGIN = "-----BEGIN "


@dataclass(frozen=True)
class TlsSettings:
    """The validated contents of an ``SSLConfig`` (see the module docstring).

    ``server_key`` and ``server_cert``: PEM text (the certificate may be followed by its
    intermediates); ``custom_ca``: PEM text of the authorities that sign client
    certificates ("" for none); ``client_verify``: require such a certificate (mutual
    TLS). ``source`` names where the settings came from in error messages (the file).
    Raises :class:`InvalidArgumentError` when built from invalid values.
    """

    server_key: str = field(repr=False)
    server_cert: str = field(repr=False)
    custom_ca: str = field(default="", repr=False)
    client_verify: bool = False
    source: str = "SSLConfig"

    def __post_init__(self) -> None:
        _validate(self)


def parse_ssl_config(text: str, source: str = "<text>") -> TlsSettings:
    """The settings of a text-format ``SSLConfig``; ``source`` names it in errors."""
    from pyserving.protos import ssl_config_pb2

    config = parse_text_config(text, ssl_config_pb2.SSLConfig(), "SSL config", source)
    return TlsSettings(
        server_key=config.server_key,
        server_cert=config.server_cert,
        custom_ca=config.custom_ca,
        client_verify=config.client_verify,
        source=source,
    )


def load_ssl_config(path: str | os.PathLike[str]) -> TlsSettings:
    """Read and validate the ``--ssl_config_file`` at ``path`` (see :func:`parse_ssl_config`).

    A file that cannot be read raises :func:`as_serving_error`'s error (``NotFoundError``
    when missing); text that is not UTF-8 or not a valid ``SSLConfig`` raises
    :class:`InvalidArgumentError`. Every message names the file.
    """
    return parse_ssl_config(read_config_text(path, "SSL config"), os.fspath(path))


def grpc_server_credentials(settings: TlsSettings) -> Any:
    """``grpc.ServerCredentials`` for ``settings`` (TF Serving's: the key/cert pair, and with
    ``client_verify`` the ``custom_ca`` roots and a required client certificate)."""
    import grpc

    pair = (settings.server_key.encode("utf-8"), settings.server_cert.encode("utf-8"))
    if settings.client_verify:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=settings.custom_ca.encode("utf-8"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


def rest_ssl_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server ``SSLContext`` for the REST port: TLS 1.2+, ALPN ``http/1.1``, the
    certificate chain and key of ``settings``; with ``client_verify`` a client certificate
    signed by ``custom_ca`` is required. Raises :class:`InvalidArgumentError` naming
    ``settings.source`` when the PEMs cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    _load_chain(context, settings)
    if settings.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=settings.custom_ca)
    return context


# -- validation ----------------------------------------------------------------------------------


class _EncryptedKey(Exception):
    """Raised by the password callback: the key needs a passphrase we do not have."""


def _no_passphrase() -> str:
    raise _EncryptedKey  # instead of OpenSSL's interactive prompt on the terminal


def _load_chain(context: ssl.SSLContext, settings: TlsSettings) -> None:
    folder = tempfile.mkdtemp(prefix="pyserving-tls-")  # mode 0700
    try:
        key_path = os.path.join(folder, "server.key")
        cert_path = os.path.join(folder, "server.crt")
        for path, text in ((key_path, settings.server_key), (cert_path, settings.server_cert)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        try:
            context.load_cert_chain(cert_path, key_path, password=_no_passphrase)
        except _EncryptedKey:
            raise _invalid(settings, "server_key is encrypted; SSLConfig takes an unencrypted PEM key") from None
        except ssl.SSLError as exc:
            if "KEY_VALUES_MISMATCH" in str(exc):
                raise _invalid(settings, "server_key is not the private key of server_cert") from exc
            raise _invalid(settings, f"server_key is not a valid PEM private key ({_reason(exc)})") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words without the ``(_ssl.c:123)`` location."""
    return "OpenSSL: " + re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc.args[-1] if exc.args else exc))


def _invalid(settings: TlsSettings, rule: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"Invalid SSL config {settings.source}: {rule}")


def _validate(settings: TlsSettings) -> None:
    for name in ("server_key", "server_cert"):
        value = getattr(settings, name)
        if not value.strip():
            raise _invalid(settings, f"{name} must hold the server's PEM {_WHAT[name]}, got an empty value")
        _require_pem(settings, name, value)
    if settings.client_verify and not settings.custom_ca.strip():
        raise _invalid(
            settings,
            "client_verify is true but custom_ca is empty; custom_ca must hold the PEM certificate of the "
            "authority that signs client certificates",
        )
    if settings.custom_ca.strip():
        _require_pem(settings, "custom_ca", settings.custom_ca)
        _require_certificates(settings, "custom_ca", settings.custom_ca)
    _require_certificates(settings, "server_cert", settings.server_cert)
    if "ENCRYPTED" in settings.server_key.split("-----END", 1)[0]:
        raise _invalid(settings, "server_key is encrypted; SSLConfig takes an unencrypted PEM key")
    rest_ssl_context(settings)  # the key: parses, and belongs to the certificate


_WHAT = {"server_key": "private key", "server_cert": "certificate"}


def _require_pem(settings: TlsSettings, name: str, value: str) -> None:
    if _PEM_BEGIN in value:
        return
    text = value.strip()
    looks_like_path = len(text) < 256 and not any(c.isspace() for c in text) and (
        text.endswith((".pem", ".crt", ".cer", ".key")) or (name != "server_key" and os.sep in text)
    )
    if looks_like_path:
        got = f"{text!r} (it looks like a file name: SSLConfig holds the PEM text itself, as in TF Serving)"
    elif name == "server_key":
        got = "other text (not shown)"  # never print a key, even a broken one
    else:
        got = repr(text if len(text) <= 60 else text[:57] + "...")
    raise _invalid(settings, f"{name} must be PEM text starting with '-----BEGIN', got {got}")


def _require_certificates(settings: TlsSettings, name: str, value: str) -> None:
    """``value`` parses as one or more X.509 certificates."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=value)
    except ssl.SSLError as exc:
        raise _invalid(settings, f"{name} is not a valid PEM certificate ({_reason(exc)})") from exc
