from __future__ import annotations

import redis


def dead_letters(r: redis.Redis) -> list[dict[str, str]]:
    out = []
    for dl_id in r.zrange("calehr:dl:all", 0, -1):
        data = r.hgetall(b"calehr:dl:" + dl_id)
        out.append({k.decode(): v.decode(errors="replace") for k, v in data.items() if k != b"wire"})
    return out
