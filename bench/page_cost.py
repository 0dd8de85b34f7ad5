"""In-process cost of GET / (the status page): microseconds per call of the WSGI callable.

A store of 1000 finished runs (the last 288 within 24 h, one every 5 minutes, every tenth failed) and one
temperature sensor reporting every 15 minutes for a day plus its battery and signal; then N calls of
GET / through conftest.call() without wsgiref's validator, without and with the secret. Run it from a
checkout's root (it imports that checkout's tcsync_wsgi):  python bench/page_cost.py [N]

    python bench/page_cost.py --scale [SENSORS] [HOURS]

instead fills a store with SENSORS sensors (default 100) reporting once a minute for HOURS (48: about 290 000 events,
more than the KEEP_EVENTS the service keeps) and 1000 runs, and measures in the process: one build of the page's view
(what the background builder does), then the public GET /, /sensors and /alerts with the secret, each the median
time of 20 calls and the most the first call and a later one added to the process's resident memory (its peak,
VmHWM, reset before each).
"""

import json
import os
import sys
import tempfile
import time

sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "tests")]  # the checkout, and its tests' helpers
from conftest import SERVICE_SECRET, call  # noqa: E402

import tcsync_wsgi  # noqa: E402
from tcsync.log import Log  # noqa: E402
from tcsync.readings import iso  # noqa: E402
from tcsync.settings import load_settings  # noqa: E402
from tcsync.store import open_store  # noqa: E402
from tcsync.sync import Run  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--scale" else 2000


def prefill(store, now: float) -> None:
    t = now - 1000 * 300
    for i in range(1000):
        run = Run(store.start_run("timer", t + i * 300), "timer", t + i * 300, t + i * 300 + 4,
                              "ok" if i % 10 else "failed", i % 3, 417000 + i,
                              None if i % 10 else "could not reach Nightscout (example.com): ConnectionError",
                              ["INFO tconnectsync: Processed 2 events.\n"])
        store.finish_run(run)
    events = [("temperature", {"temperature": {"value": 4 + (i % 10) / 5}}, now - 86400 + i * 900) for i in range(96)]
    events += [("batteryStatus", {"batteryStatus": {"percentage": 90}}, now - 600),
               ("networkStatus", {"networkStatus": {"signalStrength": 70}}, now - 600)]
    for i, (event_type, data, when) in enumerate(events):
        event = {"eventId": f"e{i}", "eventType": event_type, "targetName": "projects/p/devices/fridge1",
                 "data": data, "timestamp": iso(when)}
        store.add_event(event, when, json.dumps({"event": event, "labels": {"name": "Fridge"}}).encode())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings({
            "TCONNECT_EMAIL": "a@example.com", "TCONNECT_PASSWORD": "pw-123456", "NS_URL": "https://ns.example/",
            "NS_SECRET": "ns-secret-123", "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET,
            "DT_SIGNATURE_SECRET": "dt-secret-123", "TCONNECTSYNC_HEROKU_DB": os.path.join(tmp, "db.sqlite3"),
            "TIMEZONE_NAME": "Europe/Berlin", "DT_TEMPERATURE_RANGE": "2..8"})
        store = open_store(settings)
        prefill(store, time.time())
        app = tcsync_wsgi.create_app(settings, store=store, log=Log(lambda line: None))
        with_secret = {"Authorization": f"Bearer {SERVICE_SECRET}"}
        for label, headers in (("GET /", None), ("GET / with the secret", with_secret)):
            status, _, body = call(app, headers=headers, lint=False)
            assert status == 200, body
            t0 = time.perf_counter()
            for _ in range(N):
                call(app, headers=headers, lint=False)
            print(f"{label}: {(time.perf_counter() - t0) / N * 1e6:.1f} µs per call ({len(body)} bytes)")
        store.close()


def rss_kb(field: str) -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field + ":")))


def peak_added_mb(work) -> float:
    """What work() adds to the resident memory at its peak: VmHWM is reset to the current size first."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = rss_kb("VmRSS")
    work()
    return (rss_kb("VmHWM") - before) / 1024


def scale(sensors: int, hours: float) -> None:
    import statistics
    from pathlib import Path

    sys.path.insert(0, os.path.join(os.getcwd(), "bench"))
    import page_latency

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "db.sqlite3"
        t0 = time.perf_counter()
        page_latency.fill(db, Path(os.getcwd()), sensors, hours)
        print(f"{sensors} sensors x {hours:g} h filled in {time.perf_counter() - t0:.0f} s "
              f"({db.stat().st_size / 1e6:.0f} MB)", flush=True)
        settings = load_settings({
            "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET, "DT_SIGNATURE_SECRET": "dt-secret-123",
            "TCONNECTSYNC_HEROKU_DB": str(db), "TIMEZONE_NAME": "Europe/Berlin", "DT_TEMPERATURE_RANGE": "2..8"})
        store = open_store(settings)
        app = tcsync_wsgi.create_app(settings, store=store, log=Log(lambda line: None))
        [(count,)] = store.read("SELECT COUNT(*) FROM events")
        print(f"{count} events in the store", flush=True)
        view = app.view
        first_build = peak_added_mb(lambda: view._build(view.changes()))
        builds = []
        for _ in range(5):
            t0 = time.perf_counter()
            view._build(view.changes())
            builds.append(time.perf_counter() - t0)
        print(f"one build of the page's view (background): {statistics.median(builds) * 1000:.1f} ms, the first "
              f"added {first_build:.1f} MB at its peak, a later one "
              f"{peak_added_mb(lambda: view._build(view.changes())):.1f} MB", flush=True)
        secret = {"Authorization": f"Bearer {SERVICE_SECRET}"}
        for label, path, headers in (("public GET /", "/", None), ("GET / with the secret", "/", secret),
                                     ("/sensors", "/sensors", secret), ("/alerts with the secret", "/alerts", secret)):
            first = peak_added_mb(lambda path=path, headers=headers: call(app, path=path, headers=headers, lint=False))
            status, _, body = call(app, path=path, headers=headers, lint=False)
            assert status in (200, 503), body[:300]
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                call(app, path=path, headers=headers, lint=False)
                times.append(time.perf_counter() - t0)
            added = peak_added_mb(lambda path=path, headers=headers: call(app, path=path, headers=headers, lint=False))
            print(f"{label}: {statistics.median(times) * 1000:.2f} ms (max {max(times) * 1000:.2f}), the first call "
                  f"added {first:.1f} MB at its peak, a later one {added:.1f} MB; {len(body)} bytes", flush=True)
        app.stop()
        store.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scale"]:
        scale(int(sys.argv[2]) if len(sys.argv) > 2 else 100, float(sys.argv[3]) if len(sys.argv) > 3 else 48)
    else:
        main()
