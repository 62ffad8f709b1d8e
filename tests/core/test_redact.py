from core.redact import MASK, redact_text, scrub


def test_redact_text_masks_contact_data_and_dates():
    text = "failed for jordan.reyes@example.com +1 312 555 0147 born 1984-03-09"
    out = redact_text(text)
    assert "jordan" not in out and "555" not in out and "1984" not in out
    assert out.count(MASK) == 3


def test_scrub_masks_phi_keys_recursively():
    data = {"event_id": "ev_1", "payload": {"attendees": [{"name": "X"}], "uid": "abc",
                                            "responses": {"dateOfBirth": "1984-03-09"}}}
    out = scrub(data)
    assert out["event_id"] == "ev_1" and out["payload"]["uid"] == "abc"
    assert out["payload"]["attendees"] == MASK and out["payload"]["responses"] == MASK


def test_ids_durations_and_addresses_are_left_alone():
    text = ("Task calehr.process_event[556fac63-86c4-4f0a-9b1a-667999f5db0c] succeeded in "
            "0.0123456s; redis://127.0.0.1:39279/0 ev_0c20f47f54fa427995d6")
    assert redact_text(text) == text
    masked = redact_text("call 312.555.0147 or (312) 555-0147")
    assert "555" not in masked and masked.count(MASK) == 2


def test_log_context_from_a_body_is_bounded():
    """Issue 17 fuzz finding: a 5000-character iCalUID or trigger went whole into every log line."""
    import json
    import logging

    from core.logging import MAX_CONTEXT_CHARS, JsonFormatter

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "webhook accepted", None, None)
    record.trigger = "A" * 5000
    record.appointment_key = "\x0b" + "B" * 5000
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert len(data["trigger"]) == MAX_CONTEXT_CHARS and len(data["appointment_key"]) == 120
    assert "\n" not in line and "\x0b" not in line  # JSON escapes control characters
