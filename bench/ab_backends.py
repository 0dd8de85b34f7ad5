"""A/B bench: this checkout of the service against another one (an earlier commit), side by side.

    git worktree add /tmp/before COMMIT   (or: git archive COMMIT | tar -x -C /tmp/before)
    bench/.venv/bin/python bench/ab_backends.py /tmp/before

Starts both on SQLite and on PostgreSQL (a local server this script starts, one database each), then in
alternating rounds (the order flips every round) measures unique signed POST / at 8 and 16 connections and
GET / at 8 with wrk: requests a second, and the CPU time the service process used per request (from /proc, less
noisy than the rate). Prints each round and the medians of the per-round ratios this / before: the machine's
noise hits neighbours in time alike. Settings: BENCH_ROUNDS (5), BENCH_SECS (4), BENCH_BACKENDS ("sqlite postgres").
"""

import os
import time
import statistics
import sys
import tempfile
from pathlib import Path

import bench
from bench import ROOT, start, stop, wait_200, wrk, write_deliveries

sys.path.insert(0, str(ROOT / "tests"))
from pg_server import PostgresServer

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECS = int(os.environ.get("BENCH_SECS", "4"))
def cpu_secs(pid: int) -> float:
    """User and system CPU seconds a process used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LOADS = (("POST c8", 8, True), ("POST c16", 16, True), ("GET c8", 8, False))
BACKENDS = os.environ.get("BENCH_BACKENDS", "sqlite postgres").split()


def main() -> int:
    before = Path(sys.argv[1]).resolve()
    info = bench.machine()
    print(f"this: {info['service_commit']}, before: {before}; {info['nproc']} cores, {info['cpu']}", flush=True)
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tcsync-ab-") as tmp, PostgresServer() as pg:
        work = Path(tmp)
        procs = {}
        for backend in BACKENDS:
            for side, root in (("before", before), ("this", ROOT)):
                env = {"DATABASE_URL": pg.create_database()} if backend == "postgres" else {}
                proc, port = start("service", work, work / f"{backend}-{side}.db",
                                   [sys.executable, str(root / "tcsync_wsgi.py")], env)
                procs[backend, side] = (proc, port)
                wait_200(port, proc, time.perf_counter())
        try:
            warm = work / "warm.txt"
            write_deliveries(warm, 3000, False, "warm")
            for _, port in procs.values():
                wrk(port, 1, bodies=warm)
            for r in range(ROUNDS):
                for backend in BACKENDS:
                    for name, connections, post in LOADS:
                        rps, cpu = {}, {}
                        for side in (("before", "this") if r % 2 == 0 else ("this", "before")):
                            bodies = None
                            if post:
                                bodies = work / f"{backend}-{side}-{r}-{connections}.txt"
                                write_deliveries(bodies, 40000, False, f"{backend}{side}{r}{connections}")
                            proc, port = procs[backend, side]
                            used = cpu_secs(proc.pid)
                            result = wrk(port, SECS, connections, bodies)
                            rps[side], cpu[side] = result["rps"], (cpu_secs(proc.pid) - used) / result["requests"]
                        key = f"{backend} {name}"
                        ratios.setdefault(key, []).append(rps["this"] / rps["before"])
                        cpu_ratios.setdefault(key, []).append(cpu["this"] / cpu["before"])
                        print(f"round {r + 1}/{ROUNDS} {key:18} before {rps['before']:7.0f}  this {rps['this']:7.0f}"
                              f"  ratio {ratios[key][-1]:.2f}; CPU per request before {cpu['before'] * 1e6:4.0f} us,"
                              f" this {cpu['this'] * 1e6:4.0f} us", flush=True)
        finally:
            for proc, _ in procs.values():
                stop(proc)
    print(f"\n{ROUNDS} rounds x {SECS} s; medians (and ranges) of per-round ratios this / before:")
    print("| load | requests/s | CPU per request |\n|---|---:|---:|")
    for key, values in ratios.items():
        print(f"| {key} | {statistics.median(values):.2f} ({min(values):.2f} to {max(values):.2f}) |"
              f" {statistics.median(cpu_ratios[key]):.2f} ({min(cpu_ratios[key]):.2f} to {max(cpu_ratios[key]):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
