"""var/run.json: where `calehr up` keeps its config and Redis, so every `calehr` run in that
folder talks to the same bridge.

`calehr up` writes it (mode 0600: it names the Redis URL) and removes it on a clean stop.
Other commands read it only when the environment does not already say where things are.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

RUN_FILE = Path("var") / "run.json"


@dataclass(frozen=True)
class RunInfo:
    config: str  # absolute path of the config `calehr up` uses
    redis_url: str
    pid: int  # the `calehr up` supervisor
    web_url: str = ""
    console_url: str = ""


def write_run_info(info: RunInfo, path: Path = RUN_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(info), out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_run_info(path: Path = RUN_FILE) -> RunInfo | None:
    try:
        data = json.loads(path.read_text("utf-8"))
        return RunInfo(config=str(data["config"]), redis_url=str(data["redis_url"]),
                       pid=int(data["pid"]), web_url=str(data.get("web_url", "")),
                       console_url=str(data.get("console_url", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_run_info(path: Path = RUN_FILE) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _same_file(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def apply_run_info(env: MutableMapping[str, str], path: Path = RUN_FILE) -> RunInfo | None:
    """Fill CALEHR_CONFIG and REDIS_URL from var/run.json where the environment leaves them unset.

    REDIS_URL is taken only for the config `calehr up` runs with: another config may mean
    another bridge.
    """
    info = read_run_info(path)
    if info is None:
        return None
    if not env.get("CALEHR_CONFIG"):
        env["CALEHR_CONFIG"] = info.config
    if not env.get("REDIS_URL") and _same_file(env["CALEHR_CONFIG"], info.config):
        env["REDIS_URL"] = info.redis_url
    return info
