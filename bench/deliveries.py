"""The deliveries bench (issues 10 and 13), run by `bench/run deliveries`: signed POST / on SQLite and PostgreSQL.

In alternating rounds, on 127.0.0.1: the seed stack (Flask + gunicorn, stores nothing), the seed made durable
(seed_durable_app.py: one INSERT and COMMIT per delivery into SQLite WAL, each eventId once), the service on SQLite, the
service on PostgreSQL (a local server this script starts, default synchronous_commit) and two service processes on
that same database (two wrk runs at once, half the connections each). Unique signed deliveries at 8 and 16
connections. Then GET / latency while a POST storm runs against the SQLite service, and 10 000 deliveries
replayed by 32 clients at once against each backend (every answer, every eventId once, the time it took).
Prints one table; writes bench/deliveries.json. Settings: BENCH_ROUNDS (3), BENCH_SECS (4).
"""

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench
from bench import BENCH, ROOT, start, stop, wait_200, wrk, write_deliveries

sys.path.insert(0, str(ROOT / "tests"))
from pg_server import PostgresServer

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECS = int(os.environ.get("BENCH_SECS", "4"))
REPLAY = 10_000
KINDS = ("seed", "seed_durable", "sqlite", "postgres", "postgres_x2")


def count_events(store_url_or_path: str) -> int:
    if store_url_or_path.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(store_url_or_path) as db:
            return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    import sqlite3

    with sqlite3.connect(store_url_or_path) as db:
        return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def start_service(work: Path, name: str, database_url: str | None = None):
    env = {"DATABASE_URL": database_url} if database_url else {}
    proc, port = start("service", work, work / f"{name}.db", env=env)
    wait_200(port, proc, time.perf_counter())
    return proc, port


def post_rate(ports: list[int], secs: float, connections: int, bodies: list[Path]) -> dict:
    """wrk against each port at once (connections split among them); summed rate, worst p99, errors."""
    results = [None] * len(ports)

    def one(i):
        results[i] = wrk(ports[i], secs, connections // len(ports), bodies=bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ports))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": sum(r["rps"] for r in results), "p99_ms": max(r["p99_ms"] for r in results),
            "non_2xx": sum(r["non_2xx"] for r in results), "socket_errors": sum(r["socket_errors"] for r in results)}


def get_latencies_during(port: int, secs: float, every: float = 0.02) -> list[float]:
    """GET / on one connection every `every` seconds for secs; each answer's latency in ms."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies, deadline = [], time.monotonic() + secs
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(max(0.0, every - (time.perf_counter() - t0)))
    conn.close()
    return latencies


def replay(port: int, bodies: Path) -> dict:
    """Every line of bodies POSTed once, by 32 clients at once on keep-alive connections; answers and seconds."""
    lines = [line.rstrip("\n").split("\t") for line in bodies.open()]
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(share):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for token, body in share:
            conn.request("POST", "/", body=body.encode(), headers={"X-Dt-Signature": token})
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(lines[i::32],)) for i in range(32)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"secs": round(time.perf_counter() - t0, 2), "answered": sum(statuses.values()), "statuses": statuses}


def main() -> int:
    info = bench.machine()
    print(f"service at {info['service_commit']}; {info['nproc']} cores, {info['cpu']}, Python {info['python']}",
          flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tcsync-deliveries-") as tmp, PostgresServer() as pg:
        work = Path(tmp)
        url, url_x2 = pg.create_database(), pg.create_database()
        procs = {"seed": [start("seed", work)], "seed_durable": [start("seed_durable", work)],
                 "sqlite": [start_service(work, "sqlite")],
                 "postgres": [start_service(work, "pg", url)],
                 "postgres_x2": [start_service(work, "pg_a", url_x2), start_service(work, "pg_b", url_x2)]}
        for kind in ("seed", "seed_durable"):
            wait_200(procs[kind][0][1], procs[kind][0][0], time.perf_counter())
        results = {f"post{c}": {kind: [] for kind in KINDS} for c in (8, 16)}
        try:
            warm = work / "warm.txt"
            write_deliveries(warm, 3000, False, "warm")
            for kind in KINDS:
                for _, port in procs[kind]:
                    wrk(port, 1, bodies=warm)
            for r in range(ROUNDS):
                for connections in (8, 16):
                    for kind in KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]:
                        ports = [port for _, port in procs[kind]]
                        bodies = []
                        for i in range(len(ports)):
                            bodies.append(work / f"{kind}{i}.txt")
                            write_deliveries(bodies[-1], 40000, False, f"{kind}{r}{connections}{i}")
                        result = post_rate(ports, SECS, connections, bodies)
                        results[f"post{connections}"][kind].append(result)
                        print(f"round {r + 1}/{ROUNDS} POST unique c{connections:<2} {kind:11} "
                              f"{result['rps']:7.0f} req/s  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non_2xx']}",
                              flush=True)

            # GET / while deliveries pour in (SQLite service)
            port = procs["sqlite"][0][1]
            storm = work / "storm.txt"
            write_deliveries(storm, 40000, False, "storm")
            idle = get_latencies_during(port, SECS)
            during: list[float] = []
            prober = threading.Thread(target=lambda: during.extend(get_latencies_during(port, SECS - 1)))
            prober.start()
            storm_result = wrk(port, SECS, bodies=storm)
            prober.join()
            mixed = {"idle_p50_ms": round(statistics.median(idle), 2),
                     "idle_p99_ms": round(statistics.quantiles(idle, n=100)[98], 2),
                     "storm_p99_ms": round(statistics.quantiles(during, n=100)[98], 2),
                     "storm_p50_ms": round(statistics.median(during), 2), "storm_post_rps": storm_result["rps"]}
            print(f"GET / during a POST storm: {mixed}", flush=True)

            # 10 000 deliveries at 32-way
            replays = {}
            for kind, target in (("sqlite", str(work / "sqlite.db")), ("postgres", url)):
                before = count_events(target)
                bodies = work / f"replay-{kind}.txt"
                write_deliveries(bodies, REPLAY, False, f"replay-{kind}")
                replays[kind] = {**replay(procs[kind][0][1], bodies), "kept": count_events(target) - before}
                print(f"replay {kind}: {replays[kind]}", flush=True)
        finally:
            for servers in procs.values():
                for proc, _ in servers:
                    stop(proc)
    summary = {name: {kind: round(statistics.median(r["rps"] for r in runs)) for kind, runs in per_kind.items()}
               for name, per_kind in results.items()}
    def vs(base: str) -> dict:  # medians of the per-round ratios to base
        return {name: {kind: round(statistics.median(r["rps"] / b["rps"] for r, b in zip(runs, per_kind[base],
                                                                                         strict=True)), 2)
                       for kind, runs in per_kind.items()} for name, per_kind in results.items()}

    ratios, durable = vs("seed"), vs("seed_durable")
    output = {"machine": info, "rounds": ROUNDS, "secs": SECS, "took_secs": round(time.time() - started),
              "post_rps": summary, "vs_seed": ratios,
              "vs_seed_durable": durable, "get_during_storm": mixed, "replay": replays, "raw": results}
    (BENCH / "deliveries.json").write_text(json.dumps(output, indent=1) + "\n")
    print(f"\nMachine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}; {ROUNDS} rounds x {SECS} s;"
          f" took {output['took_secs']} s")
    print("| unique signed POST / | " + " | ".join(KINDS) + " |")
    print("|---|" + "---:|" * len(KINDS))
    for name in summary:
        print(f"| req/s, {name[4:]} connections | " + " | ".join(str(summary[name][k]) for k in KINDS) + " |")
        print(f"| x seed, {name[4:]} connections | " + " | ".join(f"{ratios[name][k]:.2f}" for k in KINDS) + " |")
        print(f"| x durable seed, {name[4:]} connections | " + " | ".join(f"{durable[name][k]:.2f}" for k in KINDS)
              + " |")
    print(f"GET / (one client, every 20 ms) idle p50/p99 {mixed['idle_p50_ms']}/{mixed['idle_p99_ms']} ms; during a "
          f"POST storm ({mixed['storm_post_rps']:.0f}/s) p50/p99 {mixed['storm_p50_ms']}/{mixed['storm_p99_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
