"""In-process cost of GET / (the status page): microseconds per call of the WSGI callable.

A store of 1000 finished runs (the last 288 within 24 h, one every 5 minutes, every tenth failed) and one
temperature sensor reporting every 15 minutes for a day plus its battery and signal; then N calls of
GET / through conftest.call() without wsgiref's validator, without and with the secret. Run it from a
checkout's root (it imports that checkout's tcsync_wsgi):  python bench/page_cost.py [N]
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

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


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


if __name__ == "__main__":
    main()
