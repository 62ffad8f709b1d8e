"""Peak memory and CPU time of process trees, read from /proc (no psutil)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree(root: int) -> list[int]:
    """`root` and all its descendants (gunicorn workers, Celery pool children)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(root: int) -> float:
    """User + system CPU of `root` and its live descendants (reaped children included)."""
    ticks = 0
    for pid in tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine: user, nice, system, irq and softirq (loopback
    traffic is mostly softirq, which per-process figures partly include)."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(x) for x in Path("/proc/stat").read_text().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


class PeakMemory:
    """Samples named process trees every `interval` s until stopped.

    Per role it keeps the peak of the summed VmRSS (what the tree held at once) and the sum of
    each process's VmHWM (its own peak; an upper bound for the tree).
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.roots: dict[str, int] = {}
        self.peak_rss_kb: dict[str, int] = {}
        self.hwm_kb: dict[str, dict[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def watch(self, role: str, pid: int) -> None:
        self.roots[role] = pid

    def sample(self) -> None:
        for role, root in list(self.roots.items()):
            pids = tree(root)
            rss = sum(_status_kb(p, "VmRSS") for p in pids)
            self.peak_rss_kb[role] = max(self.peak_rss_kb.get(role, 0), rss)
            marks = self.hwm_kb.setdefault(role, {})
            for p in pids:
                marks[p] = max(marks.get(p, 0), _status_kb(p, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def figures(self) -> dict[str, dict[str, float]]:
        return {role: {"peak_rss_mb": round(self.peak_rss_kb.get(role, 0) / 1024, 1),
                       "sum_vmhwm_mb": round(sum(self.hwm_kb.get(role, {}).values()) / 1024, 1),
                       "processes": len(self.hwm_kb.get(role, {}))}
                for role in self.roots}
