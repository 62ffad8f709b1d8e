"""One line for a person instead of a traceback, when a command cannot reach what it needs."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from core.config import ConfigError
from core.redis_client import RedisNotConfigured
from core.redis_url import is_sentinel, redacted
from core.runinfo import RUN_FILE, read_run_info


def safe_url(url: str) -> str:
    """The URL without its password."""
    if is_sentinel(url):
        return redacted(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"calehr" in cmdline or b"calehr.cli" in cmdline


def _unreachable(cause: str, env: Mapping[str, str]) -> str:
    url = safe_url(env.get("REDIS_URL", ""))
    info = read_run_info()
    if info is not None and info.redis_url == env.get("REDIS_URL") and not _pid_alive(info.pid):
        return (f"calehr: Redis at {url} does not answer: the `calehr up` recorded in {RUN_FILE} "
                f"(pid {info.pid}) is not running; start it again (scripts/run)")
    return f"calehr: Redis at {url} (REDIS_URL) does not answer: {cause}"


def one_line(exc: BaseException, env: Mapping[str, str]) -> str | None:
    """The message for an error a person can fix, or None for a real bug (keep the traceback)."""
    import redis

    if isinstance(exc, ConfigError):
        return f"config error: {exc}"
    if isinstance(exc, RedisNotConfigured):
        return ("calehr: REDIS_URL is not set and no `calehr up` runs in this folder "
                f"(no {RUN_FILE}): set REDIS_URL, or run the command where `calehr up` runs")
    if isinstance(exc, redis.RedisError):
        return _unreachable(str(exc).split("\n")[0] or type(exc).__name__, env)
    try:
        from kombu.exceptions import OperationalError
    except ImportError:  # pragma: no cover - kombu comes with celery
        return None
    if isinstance(exc, OperationalError):
        return _unreachable(str(exc).split("\n")[0], env)
    return None
