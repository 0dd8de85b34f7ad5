"""`python tcsync_wsgi.py demo`: the service against stand-ins on this machine, no account and no settings.

Tandem Source and Nightscout are the stand-ins the tests use (standins.py) on 127.0.0.1, Tandem with a made-up pump
history around now; a simulated fridge thermometer posts signed Data Connector deliveries every few seconds, warms
past 2..8 °C and recovers, so that within a minute the page shows syncs, a chart, an alert and its end. Every setting
is the demo's own (os.environ is replaced for this process, so nothing configured for a real service is used, and
nothing leaves the machine); the store is a temporary folder, deleted at exit. tcsync_wsgi.py builds and serves the
app (the parts never import the entry); this module sets the stage around it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zoneinfo
from datetime import UTC, datetime, timedelta

import jwt

from tcsync.standins import FakeNightscout, FakeTandem, point_tconnectsync_at

SPEED_VARIABLE = "TCSYNC_DEMO_SPEED"  # how many times faster than real time (the test runs it fast)
READING_SECS = 5.0  # between two fridge deliveries, at speed 1
# One loop of the fridge, a reading each READING_SECS: in range, warming past 8 °C (the door left open) for a while,
# back in range. With ALERT_AFTER_MINS=0 the alert opens at the first reading above 8 and ends at the first back.
FRIDGE_LOOP = (4.5, 4.6, 4.4, 6.8, 9.1, 9.8, 9.6, 9.2, 6.1, 4.9, 4.6, 4.5, 4.4, 4.5, 4.6, 4.5, 4.4, 4.5)
FRIDGE_DEVICE = "demo-fridge-1"
FRIDGE_NAME = "Demo insulin fridge"
PUMP_SERIAL = "90000001"
BASAL_EVENT_CODE = 279  # LidBasalDelivery, as in ../shared/fixtures/tandem_source_basal.json
HISTORY_HOURS = 3  # of basal deliveries, one each 5 minutes, ending now
# The only variables of the environment the demo keeps: a real service's settings there (ALERT_URLS, DATABASE_URL, a
# proxy) would send something off this machine or use a real store.
KEPT_VARIABLES = ("PATH", "HOME", "LANG", "TMPDIR", "SYSTEMROOT")


def speed() -> float:
    """TCSYNC_DEMO_SPEED as a number at least 1 (anything else: 1)."""
    try:
        return max(1.0, float(os.environ.get(SPEED_VARIABLE, "1")))
    except ValueError:
        return 1.0


def pump_history(now: float, tz_name: str) -> dict:
    """A pump and its basal deliveries for the last HISTORY_HOURS, shaped like what Tandem Source's BFF answers
    (the fixture): pumpDateTime is the pump's wall clock in tz_name, with no zone."""
    zone = zoneinfo.ZoneInfo(tz_name)
    newest = datetime.fromtimestamp(now - now % 300, zone).replace(tzinfo=None)
    times = [newest - timedelta(minutes=5 * i) for i in range(HISTORY_HOURS * 12)][::-1]
    rates = (1000, 1000, 850, 850, 1200, 1200)  # milliunits an hour: what Control-IQ might command
    events = [_basal_event(at, 417000 + 25 * i, rates[i // 6 % len(rates)]) for i, at in enumerate(times)]
    pump = {"assignmentId": "00000000-0000-0000-0000-000000000000", "serialNumber": PUMP_SERIAL, "modelNumber": "1",
            "modelName": "t:slim X2", "softwareVersion": "7.8", "maxDateOfEvents": times[-1].isoformat(),
            "settings": None}
    return {"pumper": {"pumps": [pump]}, "pump_logs": {"events": events}}


def _basal_event(at: datetime, sequence: int, rate: int) -> dict:
    wall = at.isoformat(timespec="seconds")
    return {"deviceAssignmentId": "00000000-0000-0000-0000-000000000000", "eventCode": BASAL_EVENT_CODE,
            "sequenceGroup": 0, "sequenceNumber": sequence, "pumpDateTime": wall,
            "eventProperties": {"commandedRateSource": 3, "reservedA2": 0, "spareA3": 0, "commandedRate": rate,
                                "profileBasalRate": 1000, "algorithmRate": rate, "tempRate": 65535},
            "estimatedDateTime": wall + "Z"}


class DemoNightscout(FakeNightscout):
    """The stand-in Nightscout, saying on the terminal each announcement it receives (what a family would see)."""

    def _upsert_treatment(self, doc):
        if doc.get("eventType") == "Announcement":
            print(f"demo: the stand-in Nightscout received an announcement: {doc.get('notes', '')}", flush=True)
        return super()._upsert_treatment(doc)


class Fridge(threading.Thread):
    """A simulated Disruptive Technologies thermometer posting signed deliveries to the service, round FRIDGE_LOOP."""

    def __init__(self, url: str, secret: str, every_secs: float):
        super().__init__(name="demo-fridge", daemon=True)
        self.url, self.secret, self.every_secs = url, secret, every_secs
        self.stopping = threading.Event()

    def run(self) -> None:
        step = 0
        while not self.stopping.wait(0 if step == 0 else self.every_secs):
            value = FRIDGE_LOOP[step % len(FRIDGE_LOOP)]
            if self.post(value, step):
                step += 1  # a refused or unreachable post (the service still starting) is tried again

    def post(self, celsius: float, step: int) -> bool:
        """One delivery, as the Data Connector sends it: the event as JSON, its SHA-256 in an HS256 JWT."""
        body = delivery(celsius, f"demo-{step}-{secrets.token_hex(4)}", time.time())
        now = int(time.time())
        token = jwt.encode({"checksum_sha256": hashlib.sha256(body).hexdigest(), "iat": now, "exp": now + 3600},
                           self.secret, algorithm="HS256")
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Dt-Signature": token})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False


def delivery(celsius: float, event_id: str, at: float) -> bytes:
    """A Data Connector delivery of one temperature event (docs/data-connector.md), timed at."""
    stamp = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {"eventId": event_id, "targetName": f"projects/demo/devices/{FRIDGE_DEVICE}", "eventType": "temperature",
             "data": {"temperature": {"value": celsius, "updateTime": stamp}}, "timestamp": stamp}
    return json.dumps({"event": event, "labels": {"name": FRIDGE_NAME}}).encode()


class Stage:
    """The stand-ins, the demo's settings in os.environ and its temporary store: set up on entering, gone on leaving."""

    def __init__(self):
        self.folder = tempfile.mkdtemp(prefix="tcsync-demo-")
        self.tz_name = os.environ.get("TIMEZONE_NAME", "").strip() or "UTC"
        self.port = os.environ.get("PORT", "").strip() or "5000"
        self.secret = secrets.token_urlsafe(12)
        self.dt_secret = secrets.token_urlsafe(24)
        self.tandem = FakeTandem(pump_history(time.time(), self.tz_name), password=secrets.token_urlsafe(12))
        self.nightscout = DemoNightscout(api_secret=secrets.token_urlsafe(16))
        self.speed = speed()  # read now: entering replaces the environment
        self.fridge: Fridge | None = None

    def __enter__(self) -> Stage:
        os.environ.clear()  # a real service's settings (ALERT_URLS, DATABASE_URL...) must not reach the demo
        os.environ.update(self.environment())
        point_tconnectsync_at(self.tandem.urls())
        return self

    def environment(self) -> dict[str, str]:
        """Every setting the demo's service reads, its own; of the environment only KEPT_VARIABLES."""
        kept = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
        return {**kept, "CACHE_CREDENTIALS": "false", "NO_PROXY": "127.0.0.1,localhost",
                "TCONNECT_EMAIL": self.tandem.email, "TCONNECT_PASSWORD": self.tandem.password,
                "TCONNECT_REGION": "US", "TIMEZONE_NAME": self.tz_name,
                "NS_URL": self.nightscout.url, "NS_SECRET": self.nightscout.api_secret,
                "TCONNECTSYNC_HEROKU_SECRET": self.secret, "DT_SIGNATURE_SECRET": self.dt_secret,
                "TCONNECTSYNC_HEROKU_DB": os.path.join(self.folder, "tcsync.sqlite3"),
                "TCONNECTSYNC_HEROKU_INTERVAL_MINS": f"{1 / self.speed:g}", "DT_TEMPERATURE_RANGE": "2..8",
                "ALERT_AFTER_MINS": "0", "ALERT_REPEAT_MINS": "0",  # every warm spell told, at once
                "LISTEN_HOST": "127.0.0.1", "PORT": self.port}

    def banner(self) -> str:
        address = f"http://127.0.0.1:{self.port}/"
        return (f"tcsync_wsgi demo: {address}?secret={self.secret}\n"
                "  Nothing here is real and nothing leaves this machine: Tandem Source and Nightscout are stand-ins on"
                " 127.0.0.1,\n  the pump history is made up, and a simulated fridge thermometer posts a reading every"
                f" {READING_SECS / self.speed:g} s,\n  warming past 8 °C and back (an alert, announced to the stand-in"
                " Nightscout, then its end).\n"
                f"  The page: {address} (add ?secret={self.secret} for the runs and the alert history).\n"
                f"  Its data lives in {self.folder}, deleted when it stops (Ctrl-C).")

    def start_fridge(self) -> None:
        self.fridge = Fridge(f"http://127.0.0.1:{self.port}/", self.dt_secret, READING_SECS / self.speed)
        self.fridge.start()

    def __exit__(self, *exc) -> None:
        if self.fridge:
            self.fridge.stopping.set()
            self.fridge.join(15)
        self.tandem.close()
        self.nightscout.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        print(f"demo: stopped; {self.folder} deleted", file=sys.stderr, flush=True)
