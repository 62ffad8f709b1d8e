"""REDIS_URL, parsed once: a plain Redis URL or a Sentinel set.

Sentinel form (our own, one line for every host):
    sentinel://[[user]:password@]h1:26379,h2:26379,h3:26379/<master name>[/<db>]
    sentinels://...   the same over TLS (to the sentinels and to the master)
Query options: `sentinel_password=` when the sentinels have their own `requirepass`.
The password before `@` is the master's (and its replicas').
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from core.config_reader import ConfigError

SENTINEL_SCHEMES = ("sentinel", "sentinels")
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Every error names REDIS_URL and what is wrong, never the password."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in SENTINEL_SCHEMES:
        raise ConfigError("REDIS_URL: not a sentinel:// or sentinels:// URL")
    parts = urlsplit(f"x://{rest}")
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, has_pw, pw = auth.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if has_pw else None
    hosts = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host:
            raise ConfigError("REDIS_URL: each sentinel needs a host (h1:26379,h2:26379,...)")
        try:
            number = int(port) if port else DEFAULT_SENTINEL_PORT
        except ValueError as exc:
            raise ConfigError(f"REDIS_URL: sentinel port {port!r} is not a number") from exc
        if not 0 < number < 65536:
            raise ConfigError(f"REDIS_URL: sentinel port {number} is out of range")
        hosts.append((host.strip("[]"), number))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigError("REDIS_URL: the path must be /<master name>[/<db>], "
                          "e.g. sentinel://h1:26379,h2:26379/mymaster/0")
    db = 0
    if len(path) == 2:
        if not path[1].isdigit():
            raise ConfigError(f"REDIS_URL: database {path[1]!r} is not a number")
        db = int(path[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ConfigError(f"REDIS_URL: unknown option(s) {', '.join(sorted(unknown))}")
    sentinel_password = query.get("sentinel_password", [None])[0] or None
    return SentinelTarget(sentinels=tuple(hosts), master_name=unquote(path[0]), db=db,
                          username=username, password=password,
                          sentinel_password=sentinel_password,
                          tls=scheme.lower() == "sentinels")


def kombu_broker(url: str) -> tuple[str, dict, bool]:
    """The broker URL, transport options and whether to use TLS, for Celery (kombu's Sentinel
    transport wants one `sentinel://` URL per sentinel, joined by `;`, and `master_name`)."""
    if not is_sentinel(url):
        return url, {}, False
    target = parse_sentinel_url(url)
    auth = ""
    if target.password is not None or target.username:
        from urllib.parse import quote

        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    urls = ";".join(f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels)
    options: dict = {"master_name": target.master_name}
    sentinel_kwargs: dict = {}
    if target.sentinel_password:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.tls:
        sentinel_kwargs["ssl"] = True
    if sentinel_kwargs:
        options["sentinel_kwargs"] = sentinel_kwargs
    return urls, options, target.tls


def redacted(url: str) -> str:
    """The URL without its password, for messages (any scheme, several hosts too)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    auth, _, tail = rest.partition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in auth else f"{scheme}://***@{tail}"
