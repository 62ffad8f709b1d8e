"""Sentry events reach a DSN host (a local HTTP server here) with no PHI in them."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk
from flask import Flask

from core.sentry import init_sentry
from tests.support import PHI_STRINGS, fixture_bytes, wait_for


class SentryIngest:
    """Accepts envelopes the way sentry.io does and keeps their items."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                outer.raw = getattr(outer, "raw", b"") + raw
                for line in raw.split(b"\n")[1:]:
                    if line.startswith(b"{"):
                        outer.items.append(json.loads(line))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_port}/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [i for i in self.items if "event_id" in i and ("exception" in i or "logentry" in i
                                                                or "message" in i)]


@pytest.fixture
def ingest():
    server = SentryIngest()
    yield server
    sentry_sdk.init(dsn=None)
    server.server.shutdown()


def test_off_without_dsn():
    assert init_sentry("web", env={}) is False


def test_flask_error_with_phi_in_body_locals_and_message_arrives_scrubbed(ingest):
    assert init_sentry("web", env={"SENTRY_DSN": ingest.dsn})
    app = Flask(__name__)

    @app.post("/boom")
    def boom():
        patient = "Jordan Reyes, born 1984-03-09, jordan.reyes@example.com, +13125550147"
        raise ValueError(f"cannot map {patient}")

    body = fixture_bytes("02_booking_created.json")
    resp = app.test_client().post("/boom", data=body, headers={"Content-Type": "application/json",
                                                              "Cookie": "session=Jordan"})
    assert resp.status_code == 500
    sentry_sdk.flush(5)
    events = wait_for(ingest.events, 10, message="the error event at the DSN host")
    event = events[0]
    assert event["exception"]["values"][0]["type"] == "ValueError"
    text = json.dumps(events) + ingest.raw.decode("utf-8", "replace")
    leaked = [s for s in PHI_STRINGS if s in text]
    assert leaked == []


def test_error_log_with_phi_is_scrubbed(ingest):
    import logging

    init_sentry("worker", env={"SENTRY_DSN": ingest.dsn})
    logging.getLogger("worker.delivery").error("mapping failed for %s", "jordan.reyes@example.com")
    sentry_sdk.flush(5)
    events = wait_for(ingest.events, 10, message="the log event")
    assert "jordan.reyes" not in json.dumps(events)
    assert "mapping failed for" in json.dumps(events)
