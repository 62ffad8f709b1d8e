"""How the bridge runs gunicorn: one command line for `calehr web`, `calehr up`, the tests and
the bench, so that what is measured is what runs.

Threaded workers (gthread), not sync: a webhook's 202 waits for Redis to fsync its write
(AOF `always`). A sync worker idles through that wait and Redis sees at most one write per
worker at a time, so every write pays for an fsync of its own. With THREADS requests per
worker, the worker parses and encrypts the next body meanwhile and Redis commits the writes
that arrive together with one fsync (group commit). The answer still comes only after the
write is on disk. gthread also keeps connections alive between requests.
"""

from __future__ import annotations

import sys

WORKER_CLASS = "gthread"
THREADS = 4  # per worker process; the web's work per request is short and mostly waits on Redis


def gunicorn_cmd(bind: str, workers: int, threads: int = THREADS) -> list[str]:
    """`python -m gunicorn calehr.wsgi:app` with the bridge's worker model."""
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    return [sys.executable, "-m", "gunicorn", "calehr.wsgi:app", "--bind", bind,
            "--workers", str(workers), "--worker-class", WORKER_CLASS, "--threads", str(threads)]
