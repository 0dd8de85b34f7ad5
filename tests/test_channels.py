"""ALERT_URLS: alerts pushed through real Apprise to receivers on 127.0.0.1 (an HTTP receiver for json:// and
ntfy://, an SMTP server for mailto://), once per tell and channel, across a channel's outage, a restart and two
processes on one database; the test alert from the page and the command line; secrets in no log, page or database."""

import email
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest
from aiosmtpd.controller import Controller
from conftest import NS_SECRET, SERVICE_SECRET, bearer, call, service_env
from test_alerts import QUIET, T0, Clock, sent, temperature

from tcsync.settings import read_settings

TOKEN = "tok3n-Secret-9f2c4d"  # a path segment of a json:// URL: what a webhook token looks like
PASSWORD = "mail-Passw0rd-77aa"
TEST = "Test from tcsync_wsgi: alerts reach you here"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """An HTTP receiver for json:// and ntfy:// (plain http on 127.0.0.1): records each POST by path; a path holding
    "refuse" answers 400; stop() and start() take it down and bring it back on the same port."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.port, self.server = free_port(), None
        self.start()

    def start(self):
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((self.path, json.loads(body)))
                self.send_response(400 if "refuse" in self.path else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[dict]:
        return [body for got, body in self.received if got.startswith(path)]


@pytest.fixture
def receiver():
    served = Receiver()
    yield served
    served.stop()


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    mailbox.messages = []
    mailbox.port = free_port()  # aiosmtpd's Controller checks its server by connecting: it needs the port itself
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    yield mailbox
    controller.stop()


def fridge_warms_and_cools(app, clock):
    """Out of range at minute 0 (no delay), back at minute 5; each check pushes what it told."""
    temperature(app, "fridge1", 0, 11.0)
    app.alerts.check()
    temperature(app, "fridge1", 5, 5.0)
    clock.now = T0 + 5 * 60
    app.alerts.check()


ALERTING = {"DT_TEMPERATURE_RANGE": "2..8", "ALERT_AFTER_MINS": "0", **QUIET}


def test_each_tell_reaches_each_channel_once_even_with_nightscout_announcing_off(make_app, nightscout, receiver,
                                                                                 smtp):
    clock = Clock(T0)
    urls = (f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}, ntfy://127.0.0.1:{receiver.port}/fridge-topic "
            f"mailto://127.0.0.1:{smtp.port}?to=family@example.com&from=tcsync@example.com&mode=insecure")
    app, log = make_app(clock=clock, ALERT_URLS=urls, NS_ALERTS="off", **ALERTING)
    fridge_warms_and_cools(app, clock)
    app.alerts.pushes.send_pending()  # nothing more waits
    start, end = "Insulin fridge 11.0 °C: above 8 °C since 03:00", "Insulin fridge back in range: 5.0 °C at 03:05, " \
        "out of range for 5 min"
    assert [(b["message"], b["type"]) for b in receiver.at("/hook/")] == [(start, "warning"), (end, "info")]
    assert [b["message"] for b in receiver.at("/")[1::2]] == [start, end]  # ntfy posts its topic to /
    assert [m.get_payload(decode=True).decode().strip() for m in smtp.messages] == [start, end]
    assert sent(nightscout) == []  # NS_ALERTS=off: Nightscout is told nothing
    assert len(log.events("alert.pushed")) == 6
    page = call(app, headers=bearer())[2].decode()
    assert f"JSON (127.0.0.1:{receiver.port}): sent; ntfy (127.0.0.1:{receiver.port}): sent; E-Mail (127.0.0.1:" \
           f"{smtp.port}): sent" in page
    assert "Alert channels" in page and TOKEN not in page and "fridge-topic" not in page


def test_a_channel_down_then_back_gets_each_push_once_across_a_restart(make_app, receiver):
    clock = Clock(T0)
    urls = f"json://127.0.0.1:{receiver.port}/hook/{TOKEN}"
    app, log = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)
    receiver.stop()
    temperature(app, "fridge1", 0, 11.0)
    app.alerts.check()
    [waiting] = log.events("alert.push_waiting")
    assert f"channel=\"JSON (127.0.0.1:{receiver.port})\"" in waiting and TOKEN not in waiting
    assert "JSON (127.0.0.1:" in call(app, headers=bearer())[2].decode().split("waiting: ")[0][-40:]
    app.alerts.stop()
    restarted, _ = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)  # the same database, a new process
    receiver.start()
    assert restarted.alerts.pushes.send_pending() == 0  # it waits its half minute
    clock.now += 31
    assert restarted.alerts.pushes.send_pending() == 1
    clock.now += 31
    restarted.alerts.check()
    assert [b["message"] for b in receiver.at("/hook/")] == ["Insulin fridge 11.0 °C: above 8 °C since 03:00"]


def test_a_channel_that_refuses_is_not_tried_again_and_the_others_go_on(make_app, receiver):
    clock = Clock(T0)
    urls = f"json://127.0.0.1:{receiver.port}/refuse/{TOKEN} json://127.0.0.1:{receiver.port}/hook"
    app, log = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)
    temperature(app, "fridge1", 0, 11.0)
    app.alerts.check()
    for _ in range(3):
        clock.now += 31
        app.alerts.check()
    assert (len(receiver.at("/refuse/")), len(receiver.at("/hook"))) == (1, 1)
    [refused] = log.events("alert.push_refused")
    assert "error=400" in refused and TOKEN not in refused
    told = app.alerts.book.recent(0, {c.id: c.label for c in app.alerts.channels})[0][1]
    assert told.startswith("Nightscout: announced; JSON (127.0.0.1:")
    assert ", URL 1: refused: Failed to send JSON POST notification: Bad Request" in told
    assert told.endswith(", URL 2: sent")


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_services_on_one_postgresql_database_push_each_tell_once(make_app, receiver):
    clock = Clock(T0)
    urls = f"json://127.0.0.1:{receiver.port}/hook"
    first, _ = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)
    second, _ = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)
    for minute, value in ((0, 11.0), (5, 11.5), (10, 5.0)):
        temperature(first if minute % 2 else second, "fridge1", minute, value)
        clock.now = T0 + minute * 60
        threads = [threading.Thread(target=app.alerts.check) for app in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [b["type"] for b in receiver.at("/hook")] == ["warning", "info"]


def test_the_test_button_sends_one_test_to_nightscout_and_each_channel_once_a_minute(make_app, nightscout, receiver):
    clock = Clock(T0)
    app, log = make_app(clock=clock, NS_ALERTS="off", ALERT_URLS=f"ntfy://127.0.0.1:{receiver.port}/topic-{TOKEN}")
    form = f"secret={SERVICE_SECRET}&then=page".encode()
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, page = call(app, "POST", "/test_alert", headers=form_headers, body=form)
    assert status == 200
    assert f"Nightscout: sent; ntfy (127.0.0.1:{receiver.port}): sent" in page.decode()
    assert [doc["notes"] for doc in sent(nightscout)] == [TEST] and [b["message"] for b in receiver.at("/")] == [TEST]
    status, headers, page = call(app, "POST", "/test_alert", headers=form_headers, body=form)
    assert (status, headers["Retry-After"]) == (429, "60") and "a test alert was sent this minute" in page.decode()
    nightscout.api_secret = "not-what-we-send-1234"
    clock.now += 60
    status, _, body = call(app, "POST", "/test_alert", headers=bearer())
    assert (status, body.decode()) == (200, "Nightscout: refused: Nightscout refused NS_SECRET (401): check "
                                            f"NS_SECRET\nntfy (127.0.0.1:{receiver.port}): sent\n")
    assert app.alerts.book.open_alerts() == [] and app.alerts.book.recent(0) == []  # a test is no alert
    assert call(app, "POST", "/test_alert", query="then=elsewhere", headers=bearer())[0] == 400
    assert call(app, "GET", "/test_alert", headers=bearer())[0] == 405
    assert call(app, "POST", "/test_alert")[0] == 401
    assert all(TOKEN not in line for line in log)


def test_the_command_line_test_alert_says_a_line_per_channel_and_when_it_is_too_soon(tandem, nightscout, receiver,
                                                                                      tmp_path):
    env = {**os.environ, **service_env(tandem, nightscout, tmp_path / "db.sqlite3"),
           "ALERT_URLS": f"json://127.0.0.1:{receiver.port}/hook/{TOKEN} json://127.0.0.1:{receiver.port}/refuse"}
    run = [sys.executable, "tcsync_wsgi.py", "test-alert"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in first.stdout.splitlines() if not line.startswith("at=")]
    assert lines[:2] == ["Nightscout: sent", f"JSON (127.0.0.1:{receiver.port}), URL 1: sent"]
    assert lines[2].startswith(f"JSON (127.0.0.1:{receiver.port}), URL 2: refused: ") and "400" in lines[2]
    assert first.returncode == 1 and TOKEN not in first.stdout + first.stderr
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 3 and "not sent: a test alert was sent this minute: try again in" in second.stderr
    assert len(receiver.at("/hook/")) == 1


def test_a_url_apprise_cannot_read_is_named_by_its_place_never_its_value():
    settings = read_settings({"ALERT_URLS": f"ntfys://fridge-{TOKEN}, nosuchservice://{TOKEN}@x"})
    assert settings.problems == ("ALERT_URLS: the 2nd URL is not one Apprise knows (see docs/alerts.md for ntfy, "
                                 "Pushover and the others)",)


def test_a_channel_is_named_by_its_kind_and_host_never_its_tokens():
    from tcsync.channels import channels_of  # here: so that each test here fails alone where there are no channels

    labels = [c.label for c in channels_of((
        f"ntfys://fridge-{TOKEN}", "ntfy://127.0.0.1:8080/topic", f"pover://{'u' * 30}@{'t' * 30}",
        f"tgram://123456789:{TOKEN}/12315544/", f"mailtos://me:{PASSWORD}@example.com?to=family@example.com",
        "json://127.0.0.1:8080/a", "json://127.0.0.1:8080/b"))]
    assert labels == ["ntfy (ntfy.sh)", "ntfy (127.0.0.1:8080)", "Pushover", "Telegram", "E-Mail (example.com:587)",
                      "JSON (127.0.0.1:8080), URL 6", "JSON (127.0.0.1:8080), URL 7"]


def test_the_urls_secrets_are_in_no_log_line_page_or_database(make_app, receiver, tmp_path):
    clock = Clock(T0)
    urls = f"json://me:{PASSWORD}@127.0.0.1:{receiver.port}/refuse/{TOKEN}"
    app, log = make_app(clock=clock, ALERT_URLS=urls, **ALERTING)
    app.log(event="probe", text=f"Apprise said: {urls} and {TOKEN}, {PASSWORD}")  # whatever reaches the log
    fridge_warms_and_cools(app, clock)
    page = call(app, headers=bearer())[2].decode()
    app.store.close()
    database = sqlite3.connect(tmp_path / "tcsync.sqlite3")
    stored = json.dumps([database.execute(f"SELECT * FROM {table}").fetchall()
                         for table in ("alerts", "announcements", "pushes")])
    for secret in (TOKEN, PASSWORD, urls):
        assert secret not in "".join(log) and secret not in page and secret not in stored
    assert "[redacted]" in "".join(log.events("probe"))


def test_apprise_is_imported_only_when_alert_urls_names_a_channel(tmp_path):
    script = ("import sys, tcsync_wsgi\nfrom tcsync.settings import read_settings\n"
              "app = tcsync_wsgi.create_app(read_settings())\nprint('apprise' in sys.modules)")
    base = {**os.environ, "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db.sqlite3"), "NS_SECRET": NS_SECRET}
    answers = [subprocess.run([sys.executable, "-c", script], env={**base, **extra}, capture_output=True, text=True,
                              timeout=60).stdout.strip() for extra in ({}, {"ALERT_URLS": "json://127.0.0.1:9/x"})]
    assert answers == ["False", "True"]
