"""Two or more builds or settings of the service side by side under wrk: GET /, unique signed POST /, and signed
POST / of which 75 % repeat an eventId (as bench/run's "75% dup").

    python bench/ab.py NAME=TREE[,VAR=VALUE...] NAME=TREE[,VAR=VALUE...] ...

Each variant is the service as its Procfile starts it (python TREE/tcsync_wsgi.py) with its own copy of a store
holding 1000 runs, plus the given environment. In each round every variant runs in turn (the order rotated per
round), so ratios compare neighbours in time; the ratio of a variant is the median of its per-round ratios to the
first variant. Examples: the code before and after a change (`before=/tmp/old-tree after=.`), select() against
poll() (`select=.,WAITRESS_CONNECTION_LIMIT=300 poll=.,WAITRESS_CONNECTION_LIMIT=500`).
Settings (environment): BENCH_ROUNDS (5), BENCH_SECS (5 s per wrk run), BENCH_METRICS (get,post_unique,post_dup).
Prints a table; writes bench/ab.json.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
from bench import BENCH, DT_SECRET, ROUNDS, SECS, SERVICE_SECRET, base_env, free_port, stop, wait_200, wrk

METRICS = tuple(os.environ.get("BENCH_METRICS", "get,post_unique,post_dup").split(","))
LABELS = {"get": "GET /", "post_unique": "unique signed POST /", "post_dup": "75 % duplicate POST /"}


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = text.partition("=")
    tree, *pairs = rest.split(",")
    return name, Path(tree).resolve(), dict(pair.split("=", 1) for pair in pairs)


def start_variant(name: str, tree: Path, env: dict[str, str], db: Path, work: Path):
    port = free_port()
    full = base_env(LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port), DT_SIGNATURE_SECRET=DT_SECRET,
                    TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET, TCONNECTSYNC_HEROKU_DB=str(db), **env)
    with open(work / f"{name}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "tcsync_wsgi.py"], cwd=tree, env=full, stdout=log,
                                stderr=subprocess.STDOUT)
    wait_200(port, proc, time.perf_counter())
    return proc, port


def measure(variants: list[tuple[str, Path, dict[str, str]]], work: Path) -> dict:
    template = work / "template.db"
    # made by the first variant's own code: a later version upgrades an earlier one's store, never the reverse
    bench.prefill(template, variants[0][1])
    servers = {}
    for name, tree, env in variants:
        shutil.copy(template, work / f"{name}.db")
        servers[name] = start_variant(name, tree, env, work / f"{name}.db", work)
    names = [name for name, _, _ in variants]
    results = {metric: {name: [] for name in names} for metric in METRICS}
    try:
        warm = work / "warm.txt"
        bench.write_deliveries(warm, 2000, False, "warm")
        for _, port in servers.values():  # the first delivery imports PyJWT, and so on
            wrk(port, 1)
            wrk(port, 1, bodies=warm)
        for r in range(ROUNDS):
            order = names[r % len(names):] + names[:r % len(names)]
            for metric in METRICS:
                for name in order:
                    bodies = None
                    if metric.startswith("post"):
                        bodies = work / f"{name}{r}.txt"
                        bench.write_deliveries(bodies, 40000, metric == "post_dup", f"{metric}{name}{r}")
                    result = wrk(servers[name][1], SECS, bodies=bodies)
                    results[metric][name].append(result)
                    print(f"round {r + 1}/{ROUNDS} {metric:11} {name:10} {result['rps']:8.0f} req/s"
                          f"  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non_2xx']}"
                          f"  errors {result['socket_errors']}", flush=True)
                    if bodies:
                        bodies.unlink()
    finally:
        for proc, _ in servers.values():
            stop(proc)
    return results


def summarize(results: dict, names: list[str]) -> dict:
    base = names[0]
    return {metric: {name: {"rps": round(statistics.median(r["rps"] for r in runs[name])),
                            f"vs_{base}": round(statistics.median(
                                a["rps"] / b["rps"] for a, b in zip(runs[name], runs[base], strict=True)), 3)}
                     for name in names} for metric, runs in results.items()}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    variants = [parse_variant(arg) for arg in argv]
    names = [name for name, _, _ in variants]
    info = bench.machine()
    print(f"{info['nproc']} cores, {info['cpu']}, Python {info['python']}; {ROUNDS} rounds x {SECS} s;"
          f" variants: {', '.join(argv)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="tcsync-ab-") as tmp:
        results = measure(variants, Path(tmp))
    summary = summarize(results, names)
    output = {"machine": info, "variants": argv, "rounds": ROUNDS, "secs": SECS, "summary": summary,
              "raw": results}
    (BENCH / "ab.json").write_text(json.dumps(output, indent=1) + "\n")
    print(f"\n| median of {ROUNDS} rounds | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for metric in METRICS:
        label = LABELS[metric]
        print(f"| {label} req/s | " + " | ".join(str(summary[metric][n]["rps"]) for n in names) + " |")
        print(f"| {label} x {names[0]} | " + " | ".join(f"{summary[metric][n][f'vs_{names[0]}']:.2f}"
                                                      for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
