"""Profile the service under the bench's load: bench/.venv/bin/python bench/profile_service.py get|post [SECS].

Starts the service as bench.py does (a store of 1000 runs), loads it with wrk (8 connections; POST
sends unique signed deliveries) and samples it twice with py-spy (installed into bench/.venv on first
use): once only the thread holding the GIL (where the CPU goes), once every waitress worker thread,
idle or not (where the wall time goes, waits included). Prints the top functions by share of samples.
"""

import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench

PY_SPY = Path(sys.executable).parent / "py-spy"


def top(raw: Path, only_workers: bool, n: int = 14) -> str:
    leaf, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        if only_workers and "waitress-" not in frames[0]:
            continue
        total += int(count)
        leaf[frames[-1]] += int(count)
        for name in {f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")" for f in frames[1:]}:
            inclusive[name] += int(count)
    rows = [f"  {c / total:6.1%}  {f}" for f, c in leaf.most_common(n)]
    kept = [(f, c) for f, c in inclusive.most_common(n + 12) if "threading.py" not in f and "<module>" not in f]
    rows += ["  inclusive:", *(f"  {c / total:6.1%}  {f}" for f, c in kept[:n])]
    return f"{total} samples\n" + "\n".join(rows)


def main() -> int:
    kind, secs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
    if not PY_SPY.exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy==0.4.3"], check=True)
    with tempfile.TemporaryDirectory(prefix="tcsync-profile-") as tmp:
        work = Path(tmp)
        bench.prefill(work / "db")
        proc, port = bench.start("service", work, work / "db")
        try:
            bench.wait_200(port, proc, time.perf_counter())
            bodies = None
            if kind == "post":
                bodies = work / "bodies.txt"
                bench.write_deliveries(bodies, 3000 * 2 * (secs + 3), False, "p")  # two runs; no wrap below 3000/s
            modes = (("CPU: the thread holding the GIL", "--gil"), ("wall: waitress worker threads", "--idle"))
            for mode, flag in modes:
                argv = ["wrk", "-t1", f"-c{bench.CONNECTIONS}", f"-d{secs + 2}s", f"http://127.0.0.1:{port}/"]
                if bodies:
                    argv[1:1] = ["-s", str(bench.BENCH / "post.lua")]
                    argv += ["--", str(bodies)]
                load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                time.sleep(1)
                raw = work / "raw.txt"
                subprocess.run([str(PY_SPY), "record", "-p", str(proc.pid), "-d", str(secs), "-f", "raw",
                                "-o", str(raw), "-t", flag], check=True, capture_output=True)
                rps = [line for line in load.communicate()[0].splitlines() if "Requests/sec" in line]
                print(f"== {kind.upper()} / {mode} ({rps[0].strip() if rps else '?'})")
                print(top(raw, only_workers=flag == "--idle"))
        finally:
            bench.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
