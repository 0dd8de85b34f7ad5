"""What the service does when Nightscout answers oddly: a redirect, a page that is not its API, a refusal, a server
that trickles one byte at a time. Stand-ins on 127.0.0.1 that answer every request as told and record what reached
them; real tconnectsync syncs against the fake Tandem; the service's own clock for the alerts."""

import socket
import socketserver
import threading
import time

import pytest
from conftest import bearer, call, request, runs_of, served, wait_for
from test_alerts import QUIET, T0, Clock, temperature

from tcsync.alertbook import AlertBook


class Answering(socketserver.ThreadingTCPServer):
    """Reads each request's head and body and answers with `answer(path) -> bytes` (a whole HTTP response), or, with
    trickle, one byte of a never-ending answer every `trickle` seconds until closed. Records what it received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer=None, trickle: float | None = None):
        self.answer, self.trickle, self.received, self.stopped = answer, trickle, [], threading.Event()
        super().__init__(("127.0.0.1", 0), _Reader)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.stopped.set()
        self.shutdown()
        self.server_close()


class _Reader(socketserver.StreamRequestHandler):
    def handle(self):
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = self.rfile.readline()
            if not line:
                return
            head += line
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        self.server.received.append(head + self.rfile.read(length))
        if self.server.trickle:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000:
                if self.server.stopped.wait(self.server.trickle):
                    return
                self.wfile.write(bytes([byte]))
            return
        self.wfile.write(self.server.answer(head.split(b" ")[1].decode()))


def http_answer(status: int, body: bytes = b"", content_type: str = "application/json", **headers) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close", *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture
def moved():
    """The host a redirect points to: it must receive nothing."""
    server = Answering(lambda path: http_answer(200, b"[]"))
    yield server
    server.close()


def fate(app) -> str:
    """What became of the first alert's start announcement, as the page words it."""
    return app.alerts.book.recent(0)[0][1]


@pytest.mark.parametrize("status", [301, 307])
def test_a_redirect_is_never_followed_and_names_the_address_to_set(make_app, moved, status):
    ns = Answering(lambda path: http_answer(status, Location=moved.url.rstrip("/") + path))
    app, log = make_app(clock=Clock(T0 + 3600), NS_URL=ns.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0",
                        **QUIET)
    said = f"NS_URL redirects to {moved.url} ({status}): set NS_URL to that address"
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0
    assert fate(app) == f"waiting for Nightscout: {said}"  # not "announced": nothing was stored
    assert any(said in line for line in log.events("alert.not_sent"))
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 502  # the sync's calls: the same
        assert runs_of(address)[0]["error"] == said
        status_code, _, body = request(address, "POST", "/check_login", bearer())
        assert status_code == 502 and f"Nightscout: {said}".encode() in body
        page = request(address, "GET", "/", bearer())[2].decode()
    assert said in page and "Last login check" in page
    assert len(ns.received) >= 3 and moved.received == []  # no byte of a secret went to the other host
    ns.close()


@pytest.mark.parametrize("answer, expected", [
    (http_answer(200, b"<html><body>Welcome</body></html>", "text/html"),
     "waiting for Nightscout: NS_URL answered 200 without the stored treatment (is it the address of a Nightscout "
     "site?): check NS_URL"),
    (http_answer(404, b"Cannot POST"), "waiting for Nightscout: Nightscout has no API at NS_URL (404): check NS_URL"),
    (http_answer(403, b"{}"), "waiting for Nightscout: Nightscout refused NS_SECRET (403): check NS_SECRET"),
    (http_answer(502, b"Bad gateway"), "waiting for Nightscout: Nightscout answered 502"),
    (http_answer(422, b'{"message": "bad treatment"}'),
     'refused by Nightscout: Nightscout refused it (422): {"message": "bad treatment"}'),
], ids=["html-200", "404", "403", "502", "422"])
def test_an_announcement_counts_as_sent_only_when_nightscout_answered_with_it_stored(make_app, answer, expected):
    ns = Answering(lambda path: answer)
    clock = Clock(T0 + 3600)
    app, _ = make_app(clock=clock, NS_URL=ns.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0 and fate(app) == expected
    clock.now += 31
    app.alerts.send_pending()
    assert len(ns.received) == (1 if expected.startswith("refused") else 2)  # only a refusal of its own drops it
    ns.close()


def test_a_trickling_nightscout_holds_an_announcement_no_longer_than_its_deadline(make_app):
    ns = Answering(trickle=0.2)  # a byte every 0.2 s: each read is quick, the answer never ends
    app, _ = make_app(clock=Clock(T0 + 3600), NS_URL=ns.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0",
                      **QUIET)
    app.syncer.ANNOUNCE_SECS = 1.5
    temperature(app, "fridge1", 0, 11.0)
    started = time.monotonic()
    assert app.alerts.send_pending() == 0
    assert time.monotonic() - started < 1.5 + 3  # before: requests' timeout restarted at every byte
    host = ns.url.split("/")[2]
    assert fate(app) == f"waiting for Nightscout: Nightscout ({host}) did not answer within 1.5 s"
    ns.close()


def test_the_minute_check_runs_on_time_while_the_sender_waits_on_a_trickling_nightscout(make_app):
    ns = Answering(trickle=0.2)
    clock = Clock(T0 + 60)
    app, _ = make_app(clock=clock, NS_URL=ns.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0",
                      SENSOR_SILENT_MINS="60")
    app.alerts.CHECK_SECS, app.alerts.PROBE_SECS = 0.1, 3600
    temperature(app, "fridge1", 0, 11.0)  # out of range: its announcement goes to the trickling server
    app.alerts.start()
    try:
        wait_for(lambda: ns.received, timeout=10)  # the sender is held (asking the version, then announcing)
        clock.now += 61 * 60  # an hour without a word from the sensor: only the minute check can see it
        wait_for(lambda: any(a.kind == "silent" for a in app.alerts.open_alerts()), timeout=5)
    finally:
        app.alerts.stop()
        ns.close()


def test_a_sync_ends_by_its_deadline_while_nightscout_trickles(make_app):
    ns = Answering(trickle=0.2)
    app, _ = make_app(NS_URL=ns.url, TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS="3")
    host = ns.url.split("/")[2]
    with served(app) as address:
        started = time.monotonic()
        assert request(address, "GET", "/update", bearer())[0] == 502
        assert time.monotonic() - started < 3 + 5  # before: still running after 20 s
        assert runs_of(address)[0]["error"] == (f"Nightscout ({host}) did not answer within the sync's time limit "
                                                "(TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS=3)")
    ns.close()


def test_announcements_of_one_moment_each_get_a_millisecond_of_their_own(make_app):
    app, _ = make_app()
    book = AlertBook(app.store)
    for identifier in ("x-end", "y-end", "x-end", "z-end"):  # x again: a re-queue changes nothing
        book.queue(identifier, T0 + 0.0004, f"notes of {identifier}")
    assert sorted(book.claim(T0)) == [(f"{name}-end", T0 + n / 1000, f"notes of {name}-end")
                                      for n, name in enumerate("xyz")]


def test_check_login_and_the_page_name_the_version_nightscout_reports(make_app, nightscout):
    app, _ = make_app()
    with served(app) as address:
        status, _, body = request(address, "POST", "/check_login", bearer())
        page = request(address, "GET", "/", bearer())[2].decode()
        public = request(address, "GET", "/")[2].decode()
    port = nightscout.url.split(":")[2].rstrip("/")
    version = app.syncer.nightscout["version"]
    assert status == 200 and version and (
        f"Nightscout {version} at 127.0.0.1:{port}: it replaces a treatment sent again by its ").encode() in body
    assert f"version {version}: it replaces a treatment sent again by its " in page
    assert f"version {version}" not in public


def test_nightscout_s_secret_reaches_no_other_host_on_a_sync_and_a_check(make_app, moved):
    """The sync's own uploads (tconnectsync's client, which puts ?api_secret= in the address) go nowhere else."""
    ns = Answering(lambda path: http_answer(308, Location=moved.url.rstrip("/") + path))
    app, _ = make_app(NS_URL=ns.url)
    with served(app) as address:
        request(address, "GET", "/update", bearer())
        request(address, "POST", "/check_login", bearer())
    assert len(ns.received) >= 2 and moved.received == []
    ns.close()


def test_a_socket_that_is_refused_is_not_a_redirect(make_app):
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()  # nothing listens there now
    app, _ = make_app(clock=Clock(T0 + 3600), NS_URL=f"http://127.0.0.1:{port}/", DT_TEMPERATURE_RANGE="2..8",
                      ALERT_AFTER_MINS="0", **QUIET)
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0
    assert fate(app) == (f"waiting for Nightscout: could not reach Nightscout (127.0.0.1:{port}): it refused the "
                         "connection: nothing answers on that port")
    assert call(app, headers=bearer())[0] == 200
