"""Structured JSON-lines logging with PHI redaction on every record."""

from __future__ import annotations

import json
import logging
import sys
import time

from core.redact import redact_text

CONTEXT_FIELDS = ("event_id", "appointment_key", "control_id", "target", "delivery_id",
                  "dead_letter_id", "trigger", "outcome", "attempt", "ack_code", "user",
                  "spool_id")
MAX_CONTEXT_CHARS = 120


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:  # ids from a body (trigger, iCalUID) can be any length
                data[key] = value[:MAX_CONTEXT_CHARS] if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            data["error"] = record.exc_info[0].__name__
            data["error_text"] = redact_text(str(record.exc_info[1]))[:500]
        return json.dumps(data, default=str)


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
