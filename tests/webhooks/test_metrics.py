"""/metrics under gunicorn with a real worker: numbers move as a scenario runs, no PHI in them."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import PHI_STRINGS, config_text, fixture_bytes, post_signed, wait_for


def scrape(base: str) -> tuple[dict, str]:
    text = requests.get(f"{base}/metrics", timeout=5).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values, text


@pytest.mark.slow
def test_metrics_follow_a_webhook_to_the_ehr(stack, outbox):
    stack.write_config(config_text(outbox))
    base = stack.web()
    before, _ = scrape(base)
    assert before.get(("calehr_end_to_end_seconds_count", ()), 0) == 0
    stack.worker()
    body = fixture_bytes("02_booking_created.json")
    assert post_signed(base, body).status_code == 202
    assert post_signed(base, body).json()["duplicate"] is True
    assert requests.post(f"{base}/webhooks/calcom", data=body, timeout=5,
                         headers={"X-Cal-Signature-256": "0" * 64}).status_code == 401

    def delivered():
        values, _ = scrape(base)
        return values.get(("calehr_end_to_end_seconds_count", ()), 0) >= 1 and values

    values = wait_for(delivered, 30, 0.2, "the delivery to show in /metrics")
    wh = "calehr_webhooks_received_total"
    assert values[(wh, (("outcome", "accepted"), ("trigger", "BOOKING_CREATED")))] == 1
    assert values[(wh, (("outcome", "duplicate"), ("trigger", "BOOKING_CREATED")))] == 1
    assert values[(wh, (("outcome", "401"), ("trigger", "unknown")))] == 1
    assert values[("calehr_delivery_attempts_total", (("outcome", "ok"), ("target", "files")))] == 1
    assert values[("calehr_circuit_open", (("target", "files"),))] == 0
    _, text = scrape(base)
    assert [s for s in PHI_STRINGS if s in text] == []
