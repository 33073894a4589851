"""The lab certificate authority and the server certificates it signs.

At first start a role that serves TLS calls :func:`ensure_server_cert`, which
makes (once) a lab CA and then a certificate for the named service, all under
the TLS directory (``var/tls/`` in the lab)::

    var/tls/ca.pem              the lab CA certificate (clients trust this)
    var/tls/ca.key              its private key (mode 0600)
    var/tls/NAME.pem            the NAME server certificate, then the CA certificate
    var/tls/NAME.key            its private key (mode 0600)

Keys are ECDSA P-256. A server certificate is for ``localhost``,
``127.0.0.1`` and ``::1`` unless other names are given, valid for a year,
and is made again when it is missing, expires within a week, was signed by
another CA, or lacks a name asked for. Two processes starting at once are
serialised by a lock file. Another role (the SIP server's TLS transport, for
instance) calls the same function with its own NAME.

:func:`server_options` and :func:`client_policy` turn the files into the
Twisted objects for ``SSL4ServerEndpoint``/``listenSSL`` and for an HTTPS
``Agent`` (or treq) that trusts only the lab CA.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_NAMES",
    "LabCert",
    "TlsLabError",
    "client_policy",
    "ensure_ca",
    "ensure_server_cert",
    "server_options",
]

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_LIFETIME = datetime.timedelta(days=3650)
CERT_LIFETIME = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)


class TlsLabError(Exception):
    """The TLS directory or a file in it cannot be used; one line of text."""


@dataclass(frozen=True)
class LabCert:
    """Paths of a server certificate (chain) and key, and of the lab CA."""

    ca: Path
    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise TlsLabError(f"cannot use TLS directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsLabError(f"{path} is not a usable PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsLabError(f"{path} is not an EC private key")
    return key


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsLabError(f"{path} is not a PEM certificate ({exc})") from None


def ensure_ca(
    tls_dir: str | os.PathLike[str], now: datetime.datetime | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The lab CA certificate and key, made the first time."""
    directory = Path(tls_dir)
    with _locked(directory):
        return _ensure_ca(directory, now or _now())


def _ensure_ca(
    directory: Path, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = _load_certs(cert_path)[0]
        key = _load_key(key_path)
        if cert.not_valid_after_utc - RENEW_BEFORE > now and cert.public_key() == key.public_key():
            return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imsp2pd lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "imsp2pd lab CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _cert_ok(
    path: Path,
    key_path: Path,
    ca: x509.Certificate,
    names: Sequence[str],
    now: datetime.datetime,
) -> bool:
    if not (path.exists() and key_path.exists()):
        return False
    try:
        chain = _load_certs(path)
        key = _load_key(key_path)
    except TlsLabError:
        return False
    cert = chain[0]
    if cert.public_key() != key.public_key() or cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return all(n in list(san) for n in _san(names))


def ensure_server_cert(
    tls_dir: str | os.PathLike[str],
    name: str,
    names: Sequence[str] = DEFAULT_NAMES,
    now: datetime.datetime | None = None,
) -> LabCert:
    """The certificate for service ``name``, signed by the lab CA; made when needed."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name == "ca":
        raise TlsLabError(f"bad certificate name {name!r}")
    directory = Path(tls_dir)
    when = now or _now()
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    with _locked(directory):
        ca, ca_key = _ensure_ca(directory, when)
        if not _cert_ok(cert_path, key_path, ca, names, when):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(
                    x509.Name(
                        [
                            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imsp2pd lab"),
                            x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else name),
                        ]
                    )
                )
                .issuer_name(ca.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(when - datetime.timedelta(minutes=5))
                .not_valid_after(when + CERT_LIFETIME)
                .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage(
                        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                    ),
                    critical=False,
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False,
                )
                .sign(ca_key, hashes.SHA256())
            )
            _write(key_path, _key_pem(key), 0o600)
            _write(
                cert_path,
                cert.public_bytes(serialization.Encoding.PEM)
                + ca.public_bytes(serialization.Encoding.PEM),
                0o644,
            )
    return LabCert(ca=directory / "ca.pem", cert=cert_path, key=key_path)


# -- Twisted glue (imported lazily so the functions above stay reactor-free) --------


def server_options(lab: LabCert) -> Any:
    """``CertificateOptions`` for a TLS server with the lab certificate and chain."""
    from twisted.internet import ssl

    chain = _load_certs(lab.cert)
    key = _load_key(lab.key)
    if chain[0].public_key() != key.public_key():
        raise TlsLabError(f"{lab.key} is not the key of {lab.cert}")
    # pyOpenSSL takes cryptography objects directly (its own X509/PKey are deprecated);
    # Twisted's annotations still name the pyOpenSSL types.
    make: Any = ssl.CertificateOptions
    return make(
        privateKey=key,
        certificate=chain[0],
        extraCertChain=chain[1:],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )


def client_policy(ca_path: str | os.PathLike[str]) -> Any:
    """A ``BrowserLikePolicyForHTTPS`` that trusts only the CA in ``ca_path``."""
    from twisted.internet import ssl
    from twisted.web.client import BrowserLikePolicyForHTTPS

    try:
        ca = ssl.Certificate.loadPEM(Path(ca_path).read_bytes())
    except OSError as exc:
        raise TlsLabError(f"cannot read CA certificate {ca_path}: {exc.strerror}") from None
    return BrowserLikePolicyForHTTPS(trustRoot=ca)
