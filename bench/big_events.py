"""Memory bench for big events (issue 20): what one request adds to a service process holding large bodies.

    python bench/big_events.py [--service DIR] [--postgres] [N] [KB]

Starts the service as its Procfile does (python tcsync_wsgi.py, from DIR: another checkout to compare with,
default this one), delivers N signed temperature events (default 2000) of KB kilobytes each (default 60: a
large label) on one device over the last 24 hours, restarts it, and then, one request at a time, reads the
process's resident memory (VmRSS before; the peak VmHWM during, reset before each request through
/proc/PID/clear_refs) around: the public GET /, GET /events?limit=1000, each export, and four
/events?limit=1000 at once. Prints one line per request. SQLite by default; --postgres uses a local server
that this script starts (tests/pg_server.py).
"""

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parent.parent
SECRET, DT_SECRET = "bench-secret-123", "bench-dt-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(service: Path, store_env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {"PATH": os.environ["PATH"], "TCONNECTSYNC_HEROKU_SECRET": SECRET, "DT_SIGNATURE_SECRET": DT_SECRET,
           "LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": str(port), **store_env}
    proc = subprocess.Popen([sys.executable, str(service / "tcsync_wsgi.py")], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:  # /healthz, not GET /: the first GET / is measured
        try:
            if get(port, "/healthz")[0] in (200, 503):
                return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)


def get(port: int, path: str, headers: dict | None = None) -> tuple[int, int]:
    """(status, bytes read), reading the answer 64 KiB at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        size = 0
        while chunk := response.read(65536):
            size += len(chunk)
        return response.status, size
    finally:
        conn.close()


def deliver(port: int, count: int, kilobytes: int) -> None:
    now = int(time.time())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(count):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400 + (i + 1) * 86000 // count))
        body = json.dumps({"event": {"eventId": f"big-{i}", "targetName": "projects/p/devices/fridge",
                                     "eventType": "temperature", "timestamp": when,
                                     "data": {"temperature": {"value": 4 + i % 30 / 10, "updateTime": when}}},
                           "labels": {"name": "Fridge", "note": "x" * (kilobytes * 1000 - 1000)},
                           "metadata": {"deviceId": "fridge"}}, separators=(",", ":")).encode()
        token = jwt.encode({"checksum": hashlib.sha1(body).hexdigest(), "iat": now, "exp": now + 3600},
                           DT_SECRET, algorithm="HS256")
        conn.request("POST", "/", body=body, headers={"X-Dt-Signature": token})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
    conn.close()


def memory(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def measure(pid: int, port: int, label: str, paths: list[str], headers: dict) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = memory(pid)["VmRSS"]
    answers: list[tuple[int, int]] = []
    threads = [threading.Thread(target=lambda p=p: answers.append(get(port, p, headers))) for p in paths]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed, after = time.perf_counter() - t0, memory(pid)
    peak, kept = after["VmHWM"] - before, after["VmRSS"] - before
    print(f"{label:32} {answers[0][0]}, {sum(a[1] for a in answers) / 1e6:6.1f} MB in {elapsed:5.2f} s;"
          f" RSS before {before:5.1f} MB, peak +{peak:5.1f} MB, after +{kept:5.1f} MB", flush=True)


def main() -> None:
    args = sys.argv[1:]
    service = ROOT
    if "--service" in args:
        service = Path(args.pop(args.index("--service") + 1)).resolve()
        args.remove("--service")
    postgres = "--postgres" in args and not args.remove("--postgres")
    count, kilobytes = (int(args[0]) if args else 2000), (int(args[1]) if len(args) > 1 else 60)
    folder = tempfile.mkdtemp(prefix="tcsync-big-")
    pg = None
    if postgres:
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_server import PostgresServer

        pg = PostgresServer()
        store_env = {"DATABASE_URL": pg.create_database()}
    else:
        store_env = {"TCONNECTSYNC_HEROKU_DB": os.path.join(folder, "big.sqlite3")}
    try:
        proc, port = start(service, store_env)
        t0 = time.perf_counter()
        try:
            deliver(port, count, kilobytes)
        finally:
            proc.terminate()
            proc.wait(30)
        print(f"{service}: {count} events of {kilobytes} KB delivered in {time.perf_counter() - t0:.1f} s;"
              f" {'PostgreSQL' if postgres else 'SQLite'}", flush=True)
        proc, port = start(service, store_env)
        auth = {"Authorization": f"Bearer {SECRET}"}
        try:
            time.sleep(0.5)
            measure(proc.pid, port, "GET / (public)", ["/"], {})
            measure(proc.pid, port, "GET /events?limit=1000", ["/events?limit=1000"], auth)
            measure(proc.pid, port, "GET /events.ndjson", ["/events.ndjson"], auth)
            measure(proc.pid, port, "GET /events.csv", ["/events.csv"], auth)
            measure(proc.pid, port, "4 x GET /events?limit=1000", ["/events?limit=1000"] * 4, auth)
            measure(proc.pid, port, "GET /sensors", ["/sensors"], auth)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        if pg is not None:
            pg.close()


if __name__ == "__main__":
    main()
