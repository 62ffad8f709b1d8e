"""REDIS_URL's Sentinel form: parsed once, bad forms named at start, and a client made from it
follows the master through a real failover (redis-server + three redis-sentinel)."""

from __future__ import annotations

import time

import pytest

from bench.sentinel_set import SentinelSet
from calehr.clierrors import safe_url
from core.config import ConfigError, Settings
from core.redis_client import make_redis
from core.redis_url import kombu_broker, parse_sentinel_url
from tests.support import config_text, wait_for


def test_sentinel_url_names_every_sentinel_the_master_the_db_and_the_passwords():
    target = parse_sentinel_url(
        "sentinel://:s%40cret@h1:26379,h2,10.0.0.3:26380/mymaster/2?sentinel_password=sp")
    assert target.sentinels == (("h1", 26379), ("h2", 26379), ("10.0.0.3", 26380))
    assert (target.master_name, target.db, target.password) == ("mymaster", 2, "s@cret")
    assert target.sentinel_password == "sp" and not target.tls
    assert parse_sentinel_url("sentinels://h1/m").tls


def test_celery_gets_one_kombu_sentinel_url_per_host_and_the_master_name():
    url, options, tls = kombu_broker("sentinel://:pw@h1:26379,h2:26380/mymaster/1")
    assert url == "sentinel://:pw@h1:26379/1;sentinel://:pw@h2:26380/1"
    assert options == {"master_name": "mymaster"} and tls is False
    assert kombu_broker("redis://h:6379/0") == ("redis://h:6379/0", {}, False)


@pytest.mark.parametrize(("url", "named"), [
    ("sentinel://h1:26379", "/<master name>"),
    ("sentinel://h1:x/m", "port 'x'"),
    ("sentinel://h1:26379/m/zero", "database 'zero'"),
    ("sentinel://h1,:26379/m", "needs a host"),
    ("sentinel://h1/m?ssl=1", "unknown option"),
])
def test_a_bad_sentinel_url_is_a_config_error_at_start(tmp_path, url, named):
    with pytest.raises(ConfigError, match="REDIS_URL") as caught:
        Settings.from_toml(config_text(tmp_path / "outbox"), {"REDIS_URL": url})
    assert named in str(caught.value)


def test_messages_never_show_the_password():
    assert "pw" not in safe_url("sentinel://:pw@h1:26379,h2:26379/m/0")
    assert safe_url("sentinel://:pw@h1:26379,h2:26379/m/0").endswith("@h1:26379,h2:26379/m/0")


def test_make_redis_follows_the_master_through_a_failover(tmp_path):
    sentinels = SentinelSet(tmp_path)
    sentinels.start()
    try:
        settings = Settings.from_toml(config_text(tmp_path / "outbox"), {"REDIS_URL": sentinels.url})
        client = make_redis(settings)
        client.set("before", "1")
        client.execute_command("WAIT", 1, 1000)
        old = sentinels.kill_master()
        killed = time.monotonic()
        new = sentinels.wait_promoted(old)

        def writes() -> bool:
            try:
                return bool(client.set("after", "2"))
            except Exception:  # noqa: BLE001 - the old connection breaks once, then it asks again
                return False

        wait_for(writes, 20, 0.1, "a write through the same client after the failover")
        assert client.get("before") == b"1"
        assert client.connection_pool.get_master_address()[1] == new != old
        assert time.monotonic() - killed < 15
    finally:
        sentinels.stop()
