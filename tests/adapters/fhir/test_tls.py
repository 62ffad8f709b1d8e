"""Mutual TLS to the FHIR server: tls_ca_file verifies the server, tls_cert/key_file identify us."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adapters.fhir import FhirClient, FhirProfile
from tests.adapters.fhir.fhir_server import FhirServer
from tests.adapters.fhir.helpers import event_from, fhir_settings


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey | None, usage: ExtendedKeyUsageOID | None,
          ) -> x509.Certificate:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               # wide: OpenSSL reads the real clock, the moved-clock run's Python does not
               .not_valid_before(now - timedelta(days=4000)).not_valid_after(now + timedelta(days=4000))
               .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, str]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, None, None, None)
    files = {"ca": _write(tmp_path / "ca", ca, ca_key)[0]}
    for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                        ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{role}_cert"], files[f"{role}_key"] = _write(
            tmp_path / role, _cert(f"{role}.test", key, ca, ca_key, usage), key)
    return files


@pytest.fixture
def tls_server(pki: dict[str, str]) -> Iterator[FhirServer]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
    with FhirServer(ssl_context=ctx) as srv:
        yield srv


def _client(tmp_path: Path, url: str, **target: str) -> tuple[FhirClient, FhirProfile]:
    settings = fhir_settings(tmp_path, url, connect_timeout=2.0, read_timeout=5.0, **target)
    return FhirClient(settings.target("fhir")), FhirProfile.from_settings(settings, "fhir")


def test_mutual_tls_delivers(tmp_path: Path, pki: dict[str, str], tls_server: FhirServer):
    client, profile = _client(tmp_path, tls_server.base_url, tls_ca_file=pki["ca"],
                              tls_cert_file=pki["client_cert"], tls_key_file=pki["client_key"])
    with client.session:
        result = client.send_appointment(event_from("02_booking_created.json"), profile)
    assert result.ok, result.detail
    assert len(tls_server.all("Appointment")) == 1


def test_an_unknown_server_certificate_is_transient_tls_error(tmp_path: Path, pki: dict[str, str],
                                                              tls_server: FhirServer):
    client, profile = _client(tmp_path, tls_server.base_url, tls_cert_file=pki["client_cert"],
                              tls_key_file=pki["client_key"])  # no CA: system store only
    with client.session:
        result = client.send_appointment(event_from("02_booking_created.json"), profile)
    assert (result.ok, result.transient) == (False, True)
    assert result.detail == "patient_search: tls_error"


def test_without_a_client_certificate_nothing_is_stored(tmp_path: Path, pki: dict[str, str],
                                                        tls_server: FhirServer):
    client, profile = _client(tmp_path, tls_server.base_url, tls_ca_file=pki["ca"])
    with client.session:
        result = client.send_appointment(event_from("02_booking_created.json"), profile)
    assert (result.ok, result.transient) == (False, True)
    assert result.detail in ("patient_search: tls_error", "patient_search: connection_error")
    assert tls_server.all("Patient") == []
