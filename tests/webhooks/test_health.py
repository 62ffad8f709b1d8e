from __future__ import annotations

from pathlib import Path

from core.config import Settings
from tests.support import config_text, free_port
from webhooks import create_app


def test_healthz_and_readyz_with_redis(tmp_path: Path, redis_url: str):
    settings = Settings.from_toml(config_text(tmp_path / "o"), {"REDIS_URL": redis_url})
    client = create_app(settings, enqueue=lambda _id: None).test_client()
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.get_json()["redis"] == "ok"


def test_readyz_is_503_when_redis_is_unreachable(tmp_path: Path):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = Settings.from_toml(config_text(tmp_path / "o"), {"REDIS_URL": url})
    client = create_app(settings, enqueue=lambda _id: None).test_client()
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["redis"] == "unreachable"
