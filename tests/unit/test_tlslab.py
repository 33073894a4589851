"""The lab CA and server certificates (imsp2pd.tlslab), as files."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

import pytest
from cryptography import x509

from imsp2pd import tlslab

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


def test_first_start_makes_ca_and_cert(tmp_path) -> None:
    lab = tlslab.ensure_server_cert(tmp_path / "tls", "drm", now=NOW)
    assert lab.ca == tmp_path / "tls" / "ca.pem"
    for key in (lab.key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(lab.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(lab.ca.read_bytes())
    assert chain[1] == ca
    chain[0].verify_directly_issued_by(ca)
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_second_start_keeps_everything(tmp_path) -> None:
    first = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    before = (first.cert.read_bytes(), first.key.read_bytes(), first.ca.read_bytes())
    again = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW + datetime.timedelta(days=30))
    assert (again.cert.read_bytes(), again.key.read_bytes(), again.ca.read_bytes()) == before


def test_second_service_shares_the_ca(tmp_path) -> None:
    drm = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    ca = drm.ca.read_bytes()
    sip = tlslab.ensure_server_cert(tmp_path, "sip", names=["pcscf.ims.example.org"], now=NOW)
    assert sip.ca.read_bytes() == ca
    cert = x509.load_pem_x509_certificates(sip.cert.read_bytes())[0]
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
    assert sip.cert != drm.cert


def test_cert_renewed_before_expiry(tmp_path) -> None:
    first = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    old = first.cert.read_bytes()
    later = NOW + tlslab.CERT_LIFETIME - datetime.timedelta(days=1)
    tlslab.ensure_server_cert(tmp_path, "drm", now=later)
    assert first.cert.read_bytes() != old


def test_cert_remade_for_new_names_or_damaged_files(tmp_path) -> None:
    lab = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    old = lab.cert.read_bytes()
    tlslab.ensure_server_cert(tmp_path, "drm", names=["localhost", "drm.lab"], now=NOW)
    assert lab.cert.read_bytes() != old
    lab.key.write_bytes(b"garbage")
    tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    chain = x509.load_pem_x509_certificates(lab.cert.read_bytes())
    assert tlslab._load_key(lab.key).public_key() == chain[0].public_key()


def test_cert_remade_when_the_ca_changed(tmp_path) -> None:
    lab = tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    (tmp_path / "ca.pem").unlink()
    tlslab.ensure_server_cert(tmp_path, "drm", now=NOW)
    ca = x509.load_pem_x509_certificate(lab.ca.read_bytes())
    x509.load_pem_x509_certificates(lab.cert.read_bytes())[0].verify_directly_issued_by(ca)


@pytest.mark.parametrize("name", ["", "ca", "../x", "a b"])
def test_bad_names(tmp_path, name: str) -> None:
    with pytest.raises(tlslab.TlsLabError):
        tlslab.ensure_server_cert(tmp_path, name)


def test_unusable_directory(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(tlslab.TlsLabError, match="cannot use TLS directory"):
        tlslab.ensure_server_cert(blocker / "tls", "drm")


def test_twisted_objects(tmp_path) -> None:
    lab = tlslab.ensure_server_cert(tmp_path, "drm")
    options = tlslab.server_options(lab)
    assert options.getContext() is not None
    assert tlslab.client_policy(lab.ca) is not None
    with pytest.raises(tlslab.TlsLabError):
        tlslab.client_policy(tmp_path / "missing.pem")
