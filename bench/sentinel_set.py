"""A Redis master, two replicas and three Sentinels as local processes (Debian's redis-server
and redis-sentinel), with short timeouts so a failover takes a few seconds. Used by the failover
test and `python -m bench.failover`; compose's `ha` profile has the same roles.

Two replicas: with `replicas_to_confirm = 1` the surviving replica confirms writes as soon as
Sentinel has pointed it at the promoted one; with one replica nothing can be acknowledged until
the old master is back as a replica (seconds to minutes on a loaded host)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import redis

from core.embedded_redis import find_redis_server, free_port, server_env

MASTER_NAME = "calehr"


class SentinelSet:
    def __init__(self, data_dir: Path, *, min_replicas_to_write: int = 0, replicas: int = 2,
                 down_after_ms: int = 2000, failover_timeout_ms: int = 3000) -> None:
        self.dir = Path(data_dir)
        # [0] starts as master, the others as its replicas
        self.ports = [free_port() for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.min_replicas = min_replicas_to_write
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> None:
        self.start_node(self.ports[0])
        for port in self.ports[1:]:
            self.start_node(port, replica_of=self.ports[0])
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel-{i}.conf"  # Sentinel rewrites its file: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir.resolve()}\n"
                f"logfile {(self.dir / f'sentinel-{i}.log').resolve()}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.ports[0]} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            self.sentinels.append(subprocess.Popen(
                ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, env=server_env()))
        self.wait_replicated(self.ports[0], 20.0, len(self.ports) - 1)
        for port in self.sentinel_ports:
            _wait(lambda p=port: self._sentinel_knows_replica(p), 20.0, "sentinels to see the replica")

    def start_node(self, port: int, replica_of: int | None = None) -> None:
        self.nodes[port] = start_node(self.dir / f"node-{port}", port, replica_of,
                                      self.min_replicas)

    def master_port(self) -> int | None:
        """The master's port as the sentinels report it (any one that answers)."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5)
                addr = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
                if addr:
                    return int(addr[1])
        return None

    def role(self, port: int) -> str:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5)
            return client.execute_command("ROLE")[0].decode()
        return "down"

    def linked_replica(self, port: int) -> bool:
        """The node on `port` is a replica whose link to its master is up."""
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=0.5)
            info = client.info("replication")
            return info.get("role") == "slave" and info.get("master_link_status") == "up"
        return False

    def kill_master(self) -> int:
        """kill -9 the current master; returns its port."""
        port = self.master_port() or self.ports[0]
        self.nodes[port].kill()
        self.nodes[port].wait(10)
        return port

    def wait_promoted(self, old: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a new master that says it is one; returns its port."""
        def promoted() -> int | None:
            port = self.master_port()
            return port if port and port != old and self.role(port) == "master" else None

        return _wait(promoted, timeout, "a replica to be promoted")

    def wait_replicated(self, master: int, timeout: float = 30.0, replicas: int = 1) -> None:
        client = redis.Redis(port=master, socket_timeout=2)

        def linked() -> bool:  # a write the replicas confirm (WAIT), not only "online"
            with contextlib.suppress(redis.RedisError):
                pipe = client.pipeline(transaction=False)
                pipe.incr("sentinel-set:probe")
                pipe.execute_command("WAIT", replicas, 200)
                return pipe.execute()[1] >= replicas
            return False

        _wait(linked, timeout, f"a replica of {master} to be online")

    def _sentinel_knows_replica(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(port=port, socket_timeout=1)
            known = client.execute_command("SENTINEL", "replicas", MASTER_NAME)
            return len(known or []) >= len(self.ports) - 1
        return False

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.nodes.values()]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def start_node(data: Path, port: int, replica_of: int | None = None,
               min_replicas: int = 0) -> subprocess.Popen[bytes]:
    """One redis-server as the embedded one runs (AOF always, noeviction), answering PING."""
    data.mkdir(parents=True, exist_ok=True)
    cmd = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
           str(data.resolve()), "--appendonly", "yes", "--appendfsync", "always",
           "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no",
           "--min-replicas-to-write", str(min_replicas), "--min-replicas-max-lag", "10",
           "--repl-diskless-sync-delay", "0",  # a replica syncs at once, not after 5 s
           "--logfile", str((data / "redis.log").resolve())]
    if replica_of:
        cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=server_env())
    client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2)
    _wait(lambda: _answers(client), 10.0, f"redis on {port}")
    return proc


def _answers(client: redis.Redis) -> bool:
    with contextlib.suppress(redis.RedisError):
        return bool(client.ping())
    return False


def _wait(condition, timeout: float, what: str):  # noqa: ANN001, ANN202 - a small local poll
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
