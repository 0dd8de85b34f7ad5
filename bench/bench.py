"""The benchmark of issue 5, run by bench/run: floor, seed stack and this service on 127.0.0.1.

Throughput (GET /, signed POST / with unique eventIds and with 75 % duplicates) is measured in
alternating rounds: each round runs floor, seed and service in turn (order rotated per round), so
ratios compare neighbours in time. Then: start time and idle RSS (several fresh starts of each), and
the service against loopback fakes of Tandem and Nightscout: RSS after one sync, GET / latency idle
versus while a sync waits on a slow Nightscout. Prints one table; writes bench/results.json.
"""

import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the service, and the tests' fakes
import fakes  # noqa: E402  (the loopback Tandem and Nightscout of the tests)
import jwt  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECS = int(os.environ.get("BENCH_SECS", "5"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
CONNECTIONS = 8  # throughput runs: one wrk thread, 8 connections
LATENCY_CONNECTIONS = 1  # latency runs: one client asking back to back, as a person or a monitor would
SHARED = Path(os.environ.get("TCSYNC_SHARED_DIR", ROOT.parent / "shared"))
SERVICE_SECRET, DT_SECRET = "bench-service-secret-5f1c9a", "bench-dt-signature-secret-0b7e"
NS_SECRET, TANDEM_PASSWORD = "bench-ns-secret-3d2a", "bench-tandem-password-77"
KINDS = ("floor", "seed", "service")
TARGETS = {  # name: what the issue asks
    "get_vs_floor": "GET / >= 0.85 x floor",
    "get_vs_seed": "GET / > 1.0 x seed",
    "post_unique_vs_seed": "unique POST / >= 1.25 x seed",
    "first_200_s": "first 200 <= 0.3 s",
    "idle_rss_mb": "idle RSS before a sync <= 45 MB",
    "p99_sync_vs_idle": "GET / p99 during sync <= 3 x idle p99",
}


# -- processes --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra) -> dict:
    """This environment without proxies or sync credentials, plus extra."""
    env = {k: v for k, v in os.environ.items() if not re.match(
        r"(?i)(https?|all)_proxy$|TCONNECT|NS_|DT_|API_SECRET|PUMP_SERIAL|CACHE_CREDENTIALS", k)}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1", **extra)
    return env


def start(kind: str, work: Path, db: Path | None = None, argv: list | None = None, env: dict | None = None):
    """Start floor, seed or service on a free port; returns (Popen, port). Output goes to work/KIND.log."""
    port = free_port()
    if kind == "floor":
        argv, cwd = [sys.executable, "floor_app.py"], BENCH
    elif kind in ("seed", "seed_durable"):  # the seed as it ships, and made to keep each delivery (SEED_DB)
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        argv, cwd = [gunicorn, "--bind", f"127.0.0.1:{port}", f"{kind}_app:app"], BENCH
        env = {"SEED_DB": str(work / f"{kind}.db"), **(env or {})}
    else:  # the Procfile: web: python tcsync_wsgi.py
        argv, cwd = argv or [sys.executable, "tcsync_wsgi.py"], ROOT
    env = base_env(LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port), DT_SIGNATURE_SECRET=DT_SECRET,
                   TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET, TCONNECTSYNC_HEROKU_DB=str(db or work / "x.db"),
                   **(env or {}))
    with open(work / f"{kind}.log", "ab") as log:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), port


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def get(port: int, path: str = "/", headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_200(port: int, proc, t0: float, timeout: float = 30) -> float:
    """Seconds from t0 to the first 200 on GET /."""
    while time.perf_counter() - t0 < timeout:
        try:
            if get(port, timeout=2)[0] == 200:
                return time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode} before answering") from None
            time.sleep(0.002)
    raise RuntimeError(f"no 200 on port {port} within {timeout} s")


def tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MB (10^6 bytes)."""
    kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            kb += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            pass
    return kb * 1024 / 1e6


# -- load --------------------------------------------------------------------------------------

def wrk(port: int, secs: float, connections: int = CONNECTIONS, bodies: Path | None = None) -> dict:
    """One wrk run (GET /, or POST / cycling through a file of deliveries); rps, latency, errors."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{secs}s", "--latency", "--timeout", "10s"]
    if bodies:
        argv += ["-s", str(BENCH / "post.lua")]
    argv.append(f"http://127.0.0.1:{port}/")
    if bodies:
        argv += ["--", str(bodies)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=secs + 60).stdout

    def ms(pct):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": ms(50), "p99_ms": ms(99),
            "non_2xx": int((re.search(r"Non-2xx or 3xx responses: (\d+)", out) or [0, 0])[1]),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def write_deliveries(path: Path, count: int, duplicates: bool, tag: str) -> None:
    """count signed deliveries, "<token>\\t<body>" per line; with duplicates, each eventId 4 times in a row."""
    now = int(time.time())
    with path.open("w") as f:
        for i in range(count // 4 if duplicates else count):
            event_id = f"{tag}-{i}-{uuid.uuid4().hex[:12]}"
            ts = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now))
            body = json.dumps({
                "event": {"eventId": event_id, "targetName": f"projects/bench/devices/dev{i % 50}",
                          "eventType": "temperature", "data": {"temperature": {"value": 4.5, "updateTime": ts}},
                          "timestamp": ts},
                "labels": {"name": "insulin fridge"},
                "metadata": {"deviceId": f"dev{i % 50}", "projectId": "bench", "deviceType": "temperature",
                             "productNumber": "102081"}}, separators=(",", ":")).encode()
            token = jwt.encode({"checksum": hashlib.sha1(body).hexdigest(),
                                "checksum_sha256": hashlib.sha256(body).hexdigest(),
                                "iat": now, "exp": now + 3600, "jti": uuid.uuid4().hex[:20]},
                               DT_SECRET, algorithm="HS256")
            f.write(f"{token}\t{body.decode()}\n" * (4 if duplicates else 1))


def event_counts(db: Path) -> tuple[int, int]:
    """(events kept, duplicates counted) in the service's store."""
    with sqlite3.connect(db) as conn:
        rows, dups = conn.execute("SELECT COUNT(*), COALESCE(SUM(duplicates), 0) FROM events").fetchone()
    conn.close()
    return rows, dups


PREFILL = """import sys, time
sys.path.insert(0, sys.argv[1])
try:
    from tcsync.store import Store
    from tcsync.sync import Run
except ImportError:  # a tree from before the package (one tcsync_wsgi.py)
    from tcsync_wsgi import Run, Store
store, runs = Store(sys.argv[2]), int(sys.argv[3])
t = time.time() - runs * 300
for i in range(runs):
    run = Run(store.start_run("timer", t + i * 300), "timer", t + i * 300, t + i * 300 + 4,
              "ok" if i % 10 else "failed", i % 3, 417000 + i,
              None if i % 10 else "could not reach Nightscout (example.com): ConnectionError",
              ["INFO tconnectsync: Processed 2 events.\\n"])
    store.finish_run(run)
store.close()
"""


def prefill(db: Path, tree: Path = ROOT, runs: int = 1000) -> None:
    """A store holding `runs` finished runs, as the status page reads it, made by the code of `tree` (this
    checkout, or an earlier one that bench/ab.py compares it with: a later version upgrades its store)."""
    subprocess.run([sys.executable, "-c", PREFILL, str(tree), str(db), str(runs)], cwd=tree, check=True,
                   timeout=120)


# -- the phases -------------------------------------------------------------------------------

def throughput(work: Path, template: Path) -> dict:
    """Alternating rounds of GET /, unique POST / and 75 % duplicate POST / on all three."""
    db = work / "service.db"
    shutil.copy(template, db)
    servers = {kind: start(kind, work, db) for kind in KINDS}
    results = {metric: {kind: [] for kind in KINDS} for metric in ("get", "post_unique", "post_dup")}
    results["service_checks"] = []
    try:
        for proc, port in servers.values():
            wait_200(port, proc, time.perf_counter())
        warm = work / "warm.txt"
        write_deliveries(warm, 2000, False, "warm")
        rate = 0.0
        for _, port in servers.values():  # warm up: first delivery imports PyJWT, and so on
            wrk(port, 1)
            rate = max(rate, wrk(port, 1, bodies=warm)["rps"])
        count = int(rate * SECS * 2) + 2000  # enough lines that the service never wraps around
        for r in range(ROUNDS):
            order = KINDS[r % 3:] + KINDS[:r % 3]
            unique, dup = work / f"unique{r}.txt", work / f"dup{r}.txt"
            write_deliveries(unique, count, False, f"u{r}")
            write_deliveries(dup, count, True, f"d{r}")
            check = {"round": r, "events_in_store_at_get": event_counts(db)[0]}
            for metric, bodies in (("get", None), ("post_unique", unique), ("post_dup", dup)):
                for kind in order:
                    before = event_counts(db)
                    result = wrk(servers[kind][1], SECS, bodies=bodies)
                    results[metric][kind].append(result)
                    if kind == "service" and bodies:
                        rows, dups = (a - b for a, b in zip(event_counts(db), before, strict=True))
                        check[metric] = {"new": rows, "duplicates": dups, "wrapped": result["requests"] > count,
                                         "dup_share": round(dups / max(1, rows + dups), 3)}
                    print(f"round {r + 1}/{ROUNDS} {metric:11} {kind:7} {result['rps']:8.0f} req/s"
                          f"  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non_2xx']}", flush=True)
            results["service_checks"].append(check)
            unique.unlink()
            dup.unlink()
    finally:
        for proc, _ in servers.values():
            stop(proc)
    return results


def starts(work: Path, template: Path) -> dict:
    """Fresh starts: seconds to the first 200 on GET /, then idle RSS of the process tree."""
    results = {kind: {"first_200_s": [], "idle_rss_mb": []} for kind in KINDS}
    for i in range(STARTS):
        for kind in KINDS:
            db = work / f"start{i}.db"
            shutil.copy(template, db)
            t0 = time.perf_counter()
            proc, port = start(kind, work, db)
            try:
                results[kind]["first_200_s"].append(wait_200(port, proc, t0))
                time.sleep(1.0)
                results[kind]["idle_rss_mb"].append(tree_rss_mb(proc.pid))
            finally:
                stop(proc)
    return results


def sync_phase(work: Path, template: Path) -> dict:
    """The service pointed at fakes: RSS after one sync; GET / latency idle and during a slow sync."""
    fixture = json.loads((SHARED / "fixtures" / "tandem_source_basal.json").read_text())
    tandem = fakes.FakeTandem(fixture, password=TANDEM_PASSWORD)
    nightscout = fakes.FakeNightscout(api_secret=NS_SECRET)
    db = work / "sync.db"
    shutil.copy(template, db)
    code = ("import sys; sys.path.insert(0, 'tests'); import fakes;"  # run from the repository's root
            " sys.exit(fakes.run_service(sys.argv[1], sys.argv[2:]))")
    proc, port = start("service", work, db, [sys.executable, "-c", code, json.dumps(tandem.urls())], {
        "TCONNECT_EMAIL": tandem.email, "TCONNECT_PASSWORD": TANDEM_PASSWORD, "NS_URL": nightscout.url,
        "NS_SECRET": NS_SECRET, "TIMEZONE_NAME": "America/New_York", "CACHE_CREDENTIALS": "false"})
    auth = {"Authorization": f"Bearer {SERVICE_SECRET}"}
    results = {"idle": [], "during_sync": [], "sync_covered_window": [], "sync_outcomes": []}
    try:
        wait_200(port, proc, time.perf_counter())
        results["rss_before_sync_mb"] = tree_rss_mb(proc.pid)  # includes fakes' own imports (tconnectsync.api)
        status, body = get(port, "/update", auth)
        assert status == 200, body[-500:]
        time.sleep(1.0)
        results["rss_after_sync_mb"] = tree_rss_mb(proc.pid)
        # Each measured sync uploads the fixture's treatments again (the fake Nightscout forgets them):
        # a warm one first, to count its Nightscout calls.
        nightscout.treatments.clear()
        seen, t0 = len(nightscout.requests_seen), time.perf_counter()
        assert get(port, "/update", auth)[0] == 200
        calls = len(nightscout.requests_seen) - seen
        results["sync_secs_fast"], results["nightscout_calls_per_sync"] = time.perf_counter() - t0, calls
        delay = (SECS + 2) / max(1, calls)  # each Nightscout answer this late: the sync outlasts the wrk run
        results["nightscout_delay_secs"] = delay
        for r in range(ROUNDS):
            results["idle"].append(wrk(port, SECS, LATENCY_CONNECTIONS))
            nightscout.treatments.clear()
            nightscout.delay_secs = delay
            status, body = get(port, "/run", auth)
            run_id = json.loads(body)["run_id"]
            results["during_sync"].append(wrk(port, SECS, LATENCY_CONNECTIONS))
            runs = json.loads(get(port, "/runs?limit=1", auth)[1])["runs"]
            results["sync_covered_window"].append(runs[0]["id"] == run_id and runs[0]["outcome"] == "running")
            nightscout.delay_secs = 0
            while (run := json.loads(get(port, "/runs?limit=1", auth)[1])["runs"][0])["outcome"] == "running":
                time.sleep(0.1)
            results["sync_outcomes"].append([run["outcome"], run["uploaded"]])
            print(f"round {r + 1}/{ROUNDS} latency: idle p50/p99 {results['idle'][-1]['p50_ms']:.2f}/"
                  f"{results['idle'][-1]['p99_ms']:.2f} ms, during sync {results['during_sync'][-1]['p50_ms']:.2f}/"
                  f"{results['during_sync'][-1]['p99_ms']:.2f} ms", flush=True)
    finally:
        stop(proc)
        tandem.close()
        nightscout.close()
    return results


# -- the report ------------------------------------------------------------------------------

def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return {"service_commit": git.stdout.strip() or None, "nproc": os.cpu_count(),
            "cpu": cpu.group(1) if cpu else platform.processor(),
            "python": platform.python_version(), "kernel": platform.release(), "wrk": wrk_version.strip()}


def med(values) -> float:
    return round(statistics.median(values), 4)


def summarize(tp: dict, st: dict, sy: dict) -> dict:
    """Medians per kind, and ratios as the median of per-round ratios (neighbours in time)."""
    s = {}
    for metric in ("get", "post_unique", "post_dup"):
        runs = tp[metric]
        s[metric] = {kind: med(r["rps"] for r in runs[kind]) for kind in KINDS}
        for other in ("floor", "seed"):
            pairs = zip(runs["service"], runs[other], strict=True)
            s[metric][f"service_vs_{other}"] = med(a["rps"] / b["rps"] for a, b in pairs)
    for key in ("first_200_s", "idle_rss_mb"):
        s[key] = {kind: med(st[kind][key]) for kind in KINDS}
    s["rss_after_sync_mb"] = round(sy["rss_after_sync_mb"], 1)
    for when in ("idle", "during_sync"):
        s[f"get_latency_{when}"] = {p: med(r[p] for r in sy[when]) for p in ("p50_ms", "p99_ms")}
    s["p99_sync_vs_idle"] = med(a["p99_ms"] / b["p99_ms"] for a, b in zip(sy["during_sync"], sy["idle"], strict=True))
    values = {"get_vs_floor": (s["get"]["service_vs_floor"], 0.85, "ge"),
              "get_vs_seed": (s["get"]["service_vs_seed"], 1.0, "gt"),
              "post_unique_vs_seed": (s["post_unique"]["service_vs_seed"], 1.25, "ge"),
              "first_200_s": (s["first_200_s"]["service"], 0.3, "le"),
              "idle_rss_mb": (s["idle_rss_mb"]["service"], 45.0, "le"),
              "p99_sync_vs_idle": (s["p99_sync_vs_idle"], 3.0, "le")}
    s["targets"] = {name: {"target": TARGETS[name], "value": value,
                           "met": {"ge": value >= limit, "gt": value > limit, "le": value <= limit}[op]}
                    for name, (value, limit, op) in values.items()}
    return s


def table(s: dict) -> str:
    rows = [("metric (median)", "floor", "seed", "service", "svc/floor", "svc/seed")]
    for metric, label in (("get", "GET / req/s"), ("post_unique", "POST / unique req/s"),
                          ("post_dup", "POST / 75% dup req/s")):
        m = s[metric]
        rows.append((label, f"{m['floor']:.0f}", f"{m['seed']:.0f}", f"{m['service']:.0f}",
                     f"{m['service_vs_floor']:.2f}", f"{m['service_vs_seed']:.2f}"))
    for key, label, fmt in (("first_200_s", "first 200 after start (s)", "{:.3f}"),
                            ("idle_rss_mb", "idle RSS, tree (MB)", "{:.1f}")):
        rows.append((label, *(fmt.format(s[key][k]) for k in KINDS), "", ""))
    rows.append(("RSS after one sync (MB)", "", "", f"{s['rss_after_sync_mb']:.1f}", "", ""))
    idle, busy = s["get_latency_idle"], s["get_latency_during_sync"]
    rows.append(("GET / p50 ms idle / sync", "", "", f"{idle['p50_ms']:.2f} / {busy['p50_ms']:.2f}", "", ""))
    rows.append(("GET / p99 ms idle / sync", "", "", f"{idle['p99_ms']:.2f} / {busy['p99_ms']:.2f}", "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["| " + " | ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |" for row in rows]
    lines.insert(1, "|" + "|".join(("-" * (w + 1) + ":") if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    lines += ["", "| target | value | result |", "|---|---:|---|"]
    lines += [f"| {t['target']} | {t['value']:.3g} | {'met' if t['met'] else 'MISSED'} |"
              for t in s["targets"].values()]
    return "\n".join(lines)


def main() -> int:
    info = machine()
    print(f"service at {info['service_commit']}; machine: {info['nproc']} cores, {info['cpu']}, "
          f"Python {info['python']}, {info['wrk']}", flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="tcsync-bench-") as tmp:
        work = Path(tmp)
        template = work / "template.db"
        prefill(template)
        tp = throughput(work, template)
        st = starts(work, template)
        sy = sync_phase(work, template)
    summary = summarize(tp, st, sy)
    results = {"machine": info, "settings": {"rounds": ROUNDS, "secs_per_run": SECS, "starts": STARTS,
                                             "connections": CONNECTIONS, "latency_connections": LATENCY_CONNECTIONS},
               "took_secs": round(time.time() - started), "summary": summary,
               "raw": {"throughput": tp, "starts": st, "sync": sy}}
    (BENCH / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print()
    print(f"Machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}; {ROUNDS} rounds x {SECS} s, "
          f"{STARTS} starts; took {results['took_secs']} s")
    print(table(summary))
    bad = [c for c in tp["service_checks"] for m in ("post_unique", "post_dup") if c[m]["wrapped"]]
    bad += [r for m in ("get", "post_unique", "post_dup") for k in KINDS for r in tp[m][k]
            if r["non_2xx"] or r["socket_errors"]]
    if bad or not all(sy["sync_covered_window"]):
        print("warning: some runs did not measure what they should (see raw in results.json)")
    print(f"\nwritten: {BENCH / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
