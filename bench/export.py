"""Export bench: 100 000 stored events through GET /events.csv and /events.ndjson of a real service process.

    python bench/export.py [N]

Fills a fresh SQLite store with N temperature/humidity events (default 100 000), starts the service as its
Procfile does (python tcsync_wsgi.py), then downloads each export once, timing it and reading the process's
resident memory (VmRSS before, VmHWM peak after) from /proc. Prints one line per export.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tcsync.readings import iso  # noqa: E402
from tcsync.store import Store  # noqa: E402

SECRET = "bench-secret-123"


def fill(db_path: str, count: int) -> None:
    store = Store(db_path)
    start = time.time() - count * 60
    for i in range(count):
        kind = "humidity" if i % 4 == 0 else "temperature"
        data = ({"humidity": {"temperature": 21.0 + i % 7, "relativeHumidity": 40 + i % 9}} if kind == "humidity"
                else {"temperature": {"value": 4.0 + (i % 50) / 10, "updateTime": "2026-11-22T10:00:00.123456789Z"}})
        event = {"eventId": f"ev-{i:06d}", "targetName": f"projects/p/devices/dev{i % 5}", "eventType": kind,
                 "data": data, "timestamp": iso(start + i * 60)}
        body = json.dumps({"event": event, "labels": {"name": f"sensor {i % 5}"}, "metadata": {}}).encode()
        store.add_event(event, start + i * 60, body)
    store.close()


def memory(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    folder = tempfile.mkdtemp()
    db = os.path.join(folder, "bench.sqlite3")
    t0 = time.perf_counter()
    fill(db, count)
    print(f"filled {count} events in {time.perf_counter() - t0:.1f} s ({os.path.getsize(db) / 1e6:.1f} MB)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": os.environ["PATH"], "TCONNECTSYNC_HEROKU_DB": db, "TCONNECTSYNC_HEROKU_SECRET": SECRET,
           "LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": str(port)}
    service = subprocess.Popen([sys.executable, str(ROOT / "tcsync_wsgi.py")], env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for path in ("/events.csv", "/events.ndjson"):
            before = memory(service.pid)["VmRSS"]
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("GET", path, headers={"Authorization": f"Bearer {SECRET}"})
            response = conn.getresponse()
            size = lines = 0
            while chunk := response.read(65536):
                size += len(chunk)
                lines += chunk.count(b"\n")
            elapsed = time.perf_counter() - t0
            peak = memory(service.pid)["VmHWM"]
            print(f"{path}: {response.status}, {lines} lines, {size / 1e6:.1f} MB in {elapsed:.2f} s; "
                  f"RSS before {before:.1f} MB, peak {peak:.1f} MB (+{peak - before:.1f} MB)")
    finally:
        service.terminate()
        service.wait(30)


if __name__ == "__main__":
    main()
