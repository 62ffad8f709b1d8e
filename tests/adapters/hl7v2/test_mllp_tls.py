"""MLLP over TLS with client certificates (mutual TLS), against a real TLS socket."""

from __future__ import annotations

import socket
import ssl
import threading

from adapters.hl7v2 import FrameSplitter, MLLPClient, build_ack, frame
from core.config import TargetSettings
from tests.adapters.fhir.test_tls import pki  # noqa: F401 - the same throwaway CA and certs
from tests.adapters.hl7v2.test_mllp_client import CONTROL, siu


class TlsEhr:
    """Answers each framed message with AA, over TLS that demands a client certificate."""

    def __init__(self, files: dict[str, str]) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files["ca"])
        self.ctx.load_cert_chain(files["server_cert"], files["server_key"])
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.peers: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                raw, _ = self.server.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self.peers.append(conn.getpeercert()["subject"][0][0][1])
                    splitter = FrameSplitter(1 << 20)
                    while not (events := splitter.feed(conn.recv(65536))):
                        pass
                    body = events[0][1]
                    assert isinstance(body, bytes)
                    conn.sendall(frame(build_ack(body.decode(), "AA").encode()))
            except (ssl.SSLError, OSError):
                continue

    def close(self) -> None:
        self.server.close()


def target(port: int, files: dict[str, str], **kw) -> TargetSettings:
    return TargetSettings(name="ehr", kind="mllp", port=port, tls=True, tls_ca_file=files["ca"],
                          connect_timeout=2.0, read_timeout=3.0, **kw)


def test_mutual_tls_delivers(tmp_path, pki):  # noqa: F811
    ehr = TlsEhr(pki)
    try:
        client = MLLPClient(target(ehr.port, pki, tls_cert_file=pki["client_cert"],
                                   tls_key_file=pki["client_key"]))
        result = client.send(siu(tmp_path), CONTROL)
        assert result.ok and result.ack_code == "AA"
        assert ehr.peers == ["client.test"]
    finally:
        ehr.close()


def test_without_a_client_certificate_the_ehr_refuses_and_it_is_transient(tmp_path, pki):  # noqa: F811
    ehr = TlsEhr(pki)
    try:
        result = MLLPClient(target(ehr.port, pki)).send(siu(tmp_path), CONTROL)
        assert not result.ok and result.transient
    finally:
        ehr.close()


def test_untrusted_server_certificate_is_refused(tmp_path, pki):  # noqa: F811
    ehr = TlsEhr(pki)
    try:
        wrong_ca = {**pki, "ca": pki["client_cert"]}  # not the CA that signed the server
        result = MLLPClient(target(ehr.port, wrong_ca, tls_cert_file=pki["client_cert"],
                                   tls_key_file=pki["client_key"])).send(siu(tmp_path), CONTROL)
        assert not result.ok and result.transient and "connect_failed" in result.detail
    finally:
        ehr.close()
