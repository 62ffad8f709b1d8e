"""`python -m bench.profile`: py-spy on the web and worker trees during an end-to-end burst.

Writes py-spy's raw (collapsed) stacks per role to --out and prints the functions with the
most samples (inclusive and self). Needs `pip install py-spy` (the `bench` extra) and ptrace
rights (root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench.load import booking
from bench.scenarios import run_phase
from bench.stack import BenchStack

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m["file"]
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        file = file.split(marker, 1)[-1]
    return f"{m['func']} ({file})"


PROJECT = ("core/", "webhooks/", "worker/", "adapters/", "deadletter/")


def summarise(raw: Path, top: int) -> str:
    """Self time of any function; inclusive time of the project's own functions."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        total += n
        for name in set(frames):
            if name.rsplit("(", 1)[-1].startswith(PROJECT):
                inclusive[name] += n
        if frames:
            own[frames[-1]] += n
    lines = [f"{raw.stem}: {total} busy samples"]
    for title, counts in (("inclusive", inclusive), ("self", own)):
        lines.append(f"  top {top} {title}:")
        lines += [f"    {100 * c / max(total, 1):5.1f}%  {name}" for name, c in counts.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--burst", type=int, default=2000)
    p.add_argument("--rate", type=float, default=None, help="offered bookings/s (default: burst)")
    p.add_argument("--out", type=Path, default=Path("test-artifacts/profile"))
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("py-spy is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with BenchStack("profile") as st:
        st.ehr_sim()
        base = st.web(2)
        worker = st.workers(args.workers)
        st.beat()
        run_phase(st, base, [booking(i, "w") for i in range(50)], None, 60)
        roles = {"web": st.procs["web"].pid, "worker": worker.pid}
        spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses",
                                   "--format", "raw", "--rate", "200", "--duration", "600",
                                   "--output", str(args.out / f"{role}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for role, pid in roles.items()]
        try:
            time.sleep(2)  # attach
            res = run_phase(st, base, [booking(i, "T") for i in range(args.burst)], args.rate, 300)
        finally:
            for s in spies:
                s.send_signal(signal.SIGINT)
                s.wait(30)
    print(res)
    for role in roles:
        print(summarise(args.out / f"{role}.txt", args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
