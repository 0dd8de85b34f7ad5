"""GET / latency of a freshly started service holding a day of sensor readings, idle and during a POST storm.

    python bench/page_latency.py [NAME=TREE ...]          (default: now=.)

A store of 1000 finished runs and SENSORS sensors reporting once a minute for 24 hours (made once, by the first
tree's code), copied for each start. In each round every variant is started afresh on its copy, then: GET / on
one connection every 20 ms for BENCH_SECS (idle), then the same while wrk (8 connections) pours unique signed
deliveries into it. Client-side p50/p99 per phase, medians over the rounds, and the in-process time of the same
requests from the service's access log (its ms= field), which leaves out the client and the sockets.
Settings (environment): BENCH_ROUNDS (3), BENCH_SECS (5), BENCH_SENSORS (50), BENCH_HOURS (24).
"""

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench
from bench import BENCH, DT_SECRET, SERVICE_SECRET, base_env, free_port, stop, wait_200, wrk, write_deliveries
from deliveries import get_latencies_during

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECS = int(os.environ.get("BENCH_SECS", "5"))
SENSORS = int(os.environ.get("BENCH_SENSORS", "50"))
HOURS = float(os.environ.get("BENCH_HOURS", "24"))

# Runs in a subprocess with the tree's own code: readings once a minute per sensor, written by 32 threads at once
# so that the store's writer commits them in batches (a day of 50 sensors in seconds, not minutes).
FILL = """import concurrent.futures, json, sys, time
sys.path.insert(0, sys.argv[1])
from tcsync.readings import iso
from tcsync.store import Store
store, sensors, hours, now = Store(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), time.time()
def one(i):
    device, when = f"dev{i % sensors}", now - hours * 3600 + (i // sensors) * 60
    event = {"eventId": f"fill-{i}", "eventType": "temperature", "targetName": f"projects/bench/devices/{device}",
             "data": {"temperature": {"value": 4 + (i % 7) / 5, "updateTime": iso(when)}}, "timestamp": iso(when)}
    store.add_event(event, when, json.dumps({"event": event, "labels": {"name": "insulin fridge"}}).encode())
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    list(pool.map(one, range(int(sensors * hours * 60))))
store.close()
"""


def fill(db: Path, tree: Path, sensors: int = SENSORS, hours: float = HOURS) -> None:
    """A store of 1000 runs (bench.prefill) and sensors reporting once a minute for hours, by tree's code."""
    bench.prefill(db, tree)
    subprocess.run([sys.executable, "-c", FILL, str(tree), str(db), str(sensors), str(hours)], cwd=tree, check=True,
                   timeout=3600)


def start_fresh(name: str, tree: Path, db: Path, work: Path):
    port = free_port()
    env = base_env(LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port), DT_SIGNATURE_SECRET=DT_SECRET,
                   TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET, TCONNECTSYNC_HEROKU_DB=str(db),
                   DT_TEMPERATURE_RANGE="2..8")
    log = work / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "tcsync_wsgi.py"], cwd=tree, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    wait_200(port, proc, time.perf_counter())
    return proc, port, log


def in_process_ms(log: Path, skip: int) -> list[float]:
    """The ms= of each GET / in the access log after the first skip of them."""
    found = re.findall(r"event=request method=GET path=/ status=200 ms=([\d.]+)", log.read_text())
    return [float(ms) for ms in found[skip:]]


def pct(values: list[float], p: int) -> float:
    return round(statistics.quantiles(values, n=100)[p - 1], 2) if len(values) > 1 else float("nan")


def one_round(name: str, tree: Path, template: Path, work: Path, r: int) -> dict:
    db = work / f"{name}-{r}.db"
    shutil.copy(template, db)
    proc, port, log = start_fresh(name, tree, db, work)
    try:
        skip = len(in_process_ms(log, 0))
        idle = get_latencies_during(port, SECS)
        idle_inside = in_process_ms(log, skip)
        storm_bodies = work / f"storm-{name}-{r}.txt"
        write_deliveries(storm_bodies, 40000, False, f"storm{name}{r}")
        skip = len(in_process_ms(log, 0))
        during: list[float] = []
        prober = threading.Thread(target=lambda: during.extend(get_latencies_during(port, SECS - 1)))
        prober.start()
        storm = wrk(port, SECS, bodies=storm_bodies)
        prober.join()
        storm_inside = in_process_ms(log, skip)
        storm_bodies.unlink()
    finally:
        stop(proc)
    return {"idle_p50": pct(idle, 50), "idle_p99": pct(idle, 99), "storm_p50": pct(during, 50),
            "storm_p99": pct(during, 99), "storm_post_rps": storm["rps"],
            "inside_idle_p99": pct(idle_inside, 99), "inside_storm_p50": pct(storm_inside, 50),
            "inside_storm_p99": pct(storm_inside, 99), "inside_max": max(idle_inside + storm_inside)}


def main(argv: list[str]) -> int:
    variants = [(a.partition("=")[0], Path(a.partition("=")[2]).resolve()) for a in argv] or [("now", BENCH.parent)]
    info = bench.machine()
    print(f"{info['nproc']} cores, {info['cpu']}, Python {info['python']}; {ROUNDS} rounds x {SECS} s; "
          f"{SENSORS} sensors x {HOURS:g} h", flush=True)
    results: dict[str, list[dict]] = {name: [] for name, _ in variants}
    with tempfile.TemporaryDirectory(prefix="tcsync-latency-") as tmp:
        work = Path(tmp)
        template = work / "template.db"
        t0 = time.perf_counter()
        fill(template, variants[0][1])
        print(f"filled the store in {time.perf_counter() - t0:.0f} s", flush=True)
        for r in range(ROUNDS):
            for name, tree in variants[r % len(variants):] + variants[:r % len(variants)]:
                result = one_round(name, tree, template, work, r)
                results[name].append(result)
                print(f"round {r + 1}/{ROUNDS} {name:8} " + "  ".join(f"{k} {v}" for k, v in result.items()),
                      flush=True)
    print(f"\n| GET / (ms), median of {ROUNDS} rounds | " + " | ".join(name for name, _ in variants) + " |")
    print("|---|" + "---:|" * len(variants))
    for key in results[variants[0][0]][0]:
        print(f"| {key} | " + " | ".join(f"{statistics.median(r[key] for r in results[name]):g}"
                                         for name, _ in variants) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
