from __future__ import annotations

from pathlib import Path

from calehr.web import create_app
from core.config import Settings
from tests.support import config_text, free_port


def test_healthz_and_readyz_with_redis(tmp_path: Path, redis_url: str):
    settings = Settings.from_toml(config_text(tmp_path / "o"), {"REDIS_URL": redis_url})
    client = create_app(settings, enqueue=lambda _id: None).test_client()
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["redis"] == "ok"


def _down(tmp_path: Path, spool: str):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    text = config_text(tmp_path / "o") + f"\n[spool]\n{spool}\n"
    return create_app(Settings.from_toml(text, {"REDIS_URL": url}),
                      enqueue=lambda _id: None).test_client()


def test_readyz_is_503_when_redis_is_unreachable_and_there_is_no_spool(tmp_path: Path):
    client = _down(tmp_path, "enabled = false")
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["redis"] == "unreachable"


def test_readyz_is_degraded_while_the_spool_has_room_and_503_when_full(tmp_path: Path):
    from tests.support import fixture_bytes, sign

    client = _down(tmp_path, "max_bytes = 8000")
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["status"] == "degraded"
    body = fixture_bytes("02_booking_created.json")
    answers = [client.post("/webhooks/calcom", data=body,
                           headers={"X-Cal-Signature-256": sign(body)}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 503, 503]
    assert answers[0].get_json()["spooled"] is True
    assert answers[1].get_json()["error"] == "spool_full"
    full = client.get("/readyz")
    assert full.status_code == 503 and full.get_json()["spool"]["full"] is True
