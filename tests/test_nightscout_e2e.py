"""End to end into a real Nightscout (cgm-remote-monitor 15.0.6 and 15.0.7, tests/ns_server.py): real tconnectsync
syncing the fake Tandem's pump history, and the alerts' announcements; what each version keeps is read back from it.
A proxy in front of Nightscout loses answers on purpose: the request reaches Nightscout, the answer never comes back.
"""

import http.client
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import FIXTURE_NOW, bearer, request, runs_of, served, service_env, wait_for
from test_alerts import T0, Clock, temperature
from test_e2e import start_service

from tcsync.alerts import ENTERED_BY

TANDEM_ENTERED_BY = "Pump (tconnectsync)"


class LosingProxy:
    """Forwards every request to Nightscout; for the first `lose` POSTs it reads Nightscout's answer and then drops
    the connection instead of passing it on (an answer lost on the way: Nightscout stored it, the sender never knew)."""

    def __init__(self, target: str, lose: int = 1):
        self.target, self.lose, self.posts, self.lost = urllib.parse.urlsplit(target), lose, 0, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                if self.command == "POST":
                    with proxy.lock:
                        proxy.posts += 1
                        losing = proxy.lost < proxy.lose
                        proxy.lost += losing
                    if losing:
                        self.close_connection = True
                        return  # no answer: the client sees the connection close
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = forward

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def losing(clean_nightscout):
    proxy = LosingProxy(clean_nightscout.url)
    yield proxy
    proxy.close()


def pump_treatments(ns) -> list[tuple]:
    """The pump's treatments Nightscout keeps: (eventType, created_at, pump_event_id, rate), oldest first."""
    return sorted((t["eventType"], t["created_at"], t.get("pump_event_id"), t.get("rate"))
                  for t in ns.treatments() if t.get("enteredBy") == TANDEM_ENTERED_BY)


EXPECTED_PUMP = [("Temp Basal", "2026-05-07T04:01:11.000Z", "417004", 1),
                 ("Temp Basal", "2026-05-07T04:06:12.000Z", "417029", 1)]


def test_each_pump_event_lands_once_across_syncs_and_after_a_lost_answer(make_app, clean_nightscout, losing):
    app, _ = make_app(clock=lambda: FIXTURE_NOW, NS_URL=losing.url)
    with served(app) as address:
        assert request(address, "POST", "/update", bearer())[0] == 502  # the first upload's answer was lost
        for _ in range(3):
            assert request(address, "POST", "/update", bearer())[0] == 200
        outcomes = [(run["outcome"], run["uploaded"]) for run in runs_of(address)]
    assert outcomes[-1][0] == "failed" and [o for o, _ in outcomes[:-1]] == ["ok"] * 3
    assert losing.lost == 1 and pump_treatments(clean_nightscout) == EXPECTED_PUMP


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_processes_on_one_postgresql_database_upload_each_pump_event_once(make_app, tandem, clean_nightscout,
                                                                              database_url, tmp_path):
    tandem.pump_log_secs = 60.0  # the two syncs overlap: one runs, the other is told a sync is running
    app, _ = make_app(clock=lambda: FIXTURE_NOW, NS_URL=clean_nightscout.url)
    env = service_env(tandem, clean_nightscout, tmp_path / "unused.sqlite3", DATABASE_URL=database_url)
    with served(app) as address:
        assert request(address, "POST", "/run", bearer())[0] == 202
        wait_for(lambda: tandem.pump_logs_in_flight == 1)
        cli = start_service(tandem, env, "sync")  # a cron sync on another machine, say
        _, err = cli.communicate(timeout=60)
        assert (cli.returncode, err) == (1, "tcsync_wsgi: not started: a sync is already running\n")
        tandem.release()  # the held pump history goes, now and from now on
        wait_for(lambda: runs_of(address)[0]["outcome"] == "ok")
        cli = start_service(tandem, env, "sync")  # then it syncs: Nightscout has them, it sends none again
        out, err = cli.communicate(timeout=60)
        assert cli.returncode == 0 and out.endswith("sync ok: uploaded 0\n"), err
    assert pump_treatments(clean_nightscout) == EXPECTED_PUMP


def announcements(ns) -> list[tuple]:
    """Our announcements as Nightscout keeps them: (created_at, notes), oldest first; each checked whole."""
    kept = [t for t in ns.treatments() if t.get("eventType") == "Announcement"]
    assert all((t["enteredBy"], t["isAnnouncement"]) == (ENTERED_BY, True) for t in kept)
    return sorted((t["created_at"], t["notes"]) for t in kept)


def test_every_alert_start_and_end_is_one_announcement_kept_even_two_ending_at_one_reading(make_app,
                                                                                          clean_nightscout, losing):
    """A fridge out of range, then silent for an hour; its next reading, back in range, ends both alerts at one
    moment. Up to 15.0.6 Nightscout replaces a treatment by created_at and eventType: both ends stay only because
    each has a millisecond of its own. The first announcement's answer is lost: the re-send replaces only itself."""
    clock = Clock(T0 - 60)  # the service runs from before the readings: silence counts from the newest one
    app, log = make_app(clock=clock, NS_URL=losing.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0",
                        SENSOR_SILENT_MINS="60")
    clock.now = T0 + 60
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0 and losing.lost == 1  # stored, but not known to be
    clock.now = T0 + 61 * 60
    app.alerts.check()  # the silence starts (and the lost one is not due again yet)
    clock.now = T0 + 70 * 60
    temperature(app, "fridge1", 70, 5.0)  # back in range, and heard again: both end here
    clock.now += 31
    app.alerts.check()
    assert app.alerts.send_pending() == 0 and len(log.events("alert.announced")) == 4
    assert announcements(clean_nightscout) == [
        ("2027-01-15T08:00:00.000Z", "Insulin fridge 11.0 °C: above 8 °C since 03:00"),
        ("2027-01-15T09:00:00.000Z", "Insulin fridge has sent nothing since 03:00"),
        ("2027-01-15T09:10:00.000Z", "Insulin fridge back in range: 5.0 °C at 04:10, out of range for 1 h 10 min"),
        ("2027-01-15T09:10:00.001Z", "Insulin fridge reports again at 04:10, after 1 h 10 min without a word")]
    assert losing.posts == 5  # four announcements, one of them twice
