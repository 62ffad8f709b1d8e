"""Issue 17 finding 5: the inbound MLLP listener cannot be starved, trickled, reached from
outside the allowlist, or (with TLS) spoken to without a certificate.

`calehr mllp` as a real process; clients are real sockets from two loopback addresses.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from adapters.hl7v2.framing import CR, END, START
from tests.adapters.fhir.test_tls import pki  # noqa: F401 - throwaway CA, server and client certs
from tests.adapters.hl7v2.inbound_samples import siu
from tests.adapters.hl7v2.listener import err, msa, read_frame, start_listener
from tests.support import FUTURE_YEAR as YEAR
from tests.support import config_text


def listener(stack, outbox, mllp: str) -> int:
    stack.write_config(config_text(outbox) + f"\n[mllp]\n{mllp}\n")
    return start_listener(stack)[1]


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def send_siu(sock: socket.socket, control_id: str) -> bytes:
    sock.sendall(START + siu("S12", control_id, appt_id=f"A-{control_id}") + END + CR)
    return read_frame(sock)


def test_one_address_cannot_take_every_slot(stack, outbox):
    port = listener(stack, outbox, "max_connections = 4\nmax_connections_per_peer = 2\n"
                                   "frame_deadline_seconds = 20")
    hogs = [connect(port, "127.0.0.2") for _ in range(4)]
    try:
        for sock in hogs:
            sock.sendall(START)  # the start of a frame that never ends
        refused = [h for h in hogs[2:] if b"too many connections from this address" in
                   read_frame(h, 10)]
        assert len(refused) == 2
        with connect(port) as ehr:  # the real EHR still gets through
            assert msa(send_siu(ehr, "REAL-1"))[1:3] == ["AA", "REAL-1"]
    finally:
        for sock in hogs:
            sock.close()


def test_a_trickled_frame_is_cut_at_its_deadline_whatever_the_idle_timer(stack, outbox):
    port = listener(stack, outbox, "frame_deadline_seconds = 1.5\nidle_timeout_seconds = 60")
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(START + b"MSH|")
        answer = b""
        for _ in range(200):  # one byte every 50 ms: each would restart an idle timer
            try:
                sock.sendall(b"X")
            except OSError:
                break
            sock.settimeout(0.05)
            try:
                answer += sock.recv(4096)
            except TimeoutError:
                continue
            if END + CR in answer or answer == b"":
                break
        elapsed = time.monotonic() - started
    assert b"frame not finished within 1.5 s" in answer
    assert 1.4 <= elapsed < 10, elapsed  # 60 s idle timer never restarted it
    with connect(port) as sock:  # and the listener serves on
        assert msa(send_siu(sock, "AFTER-1"))[1] == "AA"


def test_idle_timer_counts_from_the_last_complete_frame(stack, outbox):
    port = listener(stack, outbox, "frame_deadline_seconds = 30\nidle_timeout_seconds = 1.5")
    with connect(port) as sock:
        started = time.monotonic()
        closed = False
        for _ in range(100):  # junk outside a frame never counts as activity
            try:
                sock.sendall(b"x\r")
                sock.settimeout(0.1)
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        closed = True
                        break
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed and time.monotonic() - started < 10  # not the 30 s frame deadline


def test_addresses_outside_the_allowlist_get_no_answer(stack, outbox):
    port = listener(stack, outbox, 'allowed_peers = ["127.0.0.1/32", "::1"]')
    with connect(port, "127.0.0.2") as stranger:
        stranger.settimeout(10)
        with _ResetIsFine():
            stranger.sendall(START + siu("S12", "STRANGER") + END + CR)
        assert _read_all(stranger) == b""  # closed without a byte
    with connect(port) as friend:
        assert msa(send_siu(friend, "FRIEND-1"))[1] == "AA"
    log = stack.procs[-1].output()
    assert "not in mllp.allowed_peers" in log


def test_tls_with_required_client_certificates(stack, outbox, pki):  # noqa: F811
    port = listener(stack, outbox, f'tls_cert_file = "{pki["server_cert"]}"\n'
                                   f'tls_key_file = "{pki["server_key"]}"\n'
                                   f'tls_client_ca_file = "{pki["ca"]}"')
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with connect(port) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(START + siu("S12", "NO-CERT") + END + CR)
                got = _read_all(tls)  # TLS 1.3 reports the refusal after the handshake
        except (ssl.SSLError, OSError):
            got = b""
        assert got == b""  # no certificate: no answer
    ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    with connect(port) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert msa(send_siu(tls, "TLS-1"))[1:3] == ["AA", "TLS-1"]
    with connect(port) as plain:  # plain MLLP on a TLS port gets nothing back
        plain.sendall(START + siu("S12", "PLAIN") + END + CR)
        plain.settimeout(10)
        assert not (_read_all(plain)).startswith(START)


def test_mllp_settings_are_checked(tmp_path):
    from core.config import ConfigError, Settings

    base = config_text(tmp_path / "out")
    for bad, key in (('allowed_peers = ["10.0.0.300"]', "mllp.allowed_peers"),
                     ("max_connections_per_peer = 0", "mllp.max_connections_per_peer"),
                     ('tls_cert_file = "x.crt"', "mllp.tls_cert_file"),
                     ("frame_deadline = 3", "mllp.frame_deadline")):
        with pytest.raises(ConfigError, match=key):
            Settings.from_toml(base + f"\n[mllp]\n{bad}\n", {})
    ok = Settings.from_toml(base + '\n[mllp]\nallowed_peers = ["10.1.0.0/16"]\n', {})
    assert ok.mllp.allowed_peers == ("10.1.0.0/16",) and ok.mllp.max_connections_per_peer == 32


class _ResetIsFine:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)  # a reset is fine too


def _read_all(sock) -> bytes:
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError("the connection stayed open")


def test_compose_publishes_6661_on_a_configurable_address():
    import yaml

    from tests.support import ROOT

    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert spec["services"]["mllp"]["ports"] == ["${CALEHR_MLLP_BIND:-127.0.0.1}:6661:6661"]



def test_times_that_never_parse_are_ae_not_send_again(stack, outbox):
    """Issue 17 finding 6: AR 207 made the EHR re-send these for ever."""
    port = listener(stack, outbox, "")
    cases = [("00010101000000+0100", f"{YEAR}0114093000"), (f"{YEAR}0114090000", "99991231230000-1200")]
    with connect(port) as sock:
        for n, (start, end) in enumerate(cases):
            sock.sendall(START + siu("S12", f"TIME-{n}", appt_id=f"T-{n}", start=start, end=end)
                         + END + CR)
            ack = read_frame(sock)
            assert msa(ack)[1] == "AE", ack
            assert err(ack).split("|")[3].startswith("102^"), ack  # data type error
        assert msa(send_siu(sock, "TIME-OK"))[1] == "AA"
