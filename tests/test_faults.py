"""Faults and hostile input: hung or failing upstreams, backoff, a failing database, junk HTTP, secrets."""

import contextlib
import hashlib
import html
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    DT_SECRET, NS_SECRET, PASSWORD, ROOT, SERVICE_SECRET, bearer, call, request, runs_of, served, wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_server import free_port
from test_receiver import body_for, sign

import tcsync_wsgi
from tcsync.readings import iso
from tcsync.sync import CREDENTIALS_REFUSED, SyncTimer

ALL_SECRETS = (PASSWORD, NS_SECRET, hashlib.sha1(NS_SECRET.encode()).hexdigest(), SERVICE_SECRET, DT_SECRET)


def status_page_latencies_until(address, done):
    """GET / repeatedly until done() is true; returns every latency in seconds."""
    latencies = []
    deadline = time.monotonic() + 30
    while not done() and time.monotonic() < deadline:
        t0 = time.perf_counter()
        assert request(address, "GET", "/")[0] == 200
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.05)
    return latencies


# Hung upstream -------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["Tandem Source", "Nightscout"])
def test_a_hung_upstream_fails_the_run_in_time_and_the_site_keeps_answering(make_app, tandem, nightscout, side):
    hung = tandem if side == "Tandem Source" else nightscout
    hung.mode = "stall"
    app, _ = make_app(TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS="2")
    with served(app) as address:
        t0 = time.monotonic()
        assert request(address, "POST", "/run", bearer())[0] == 202
        latencies = status_page_latencies_until(address, lambda: runs_of(address)[0]["outcome"] != "running")
        elapsed = time.monotonic() - t0
        [run] = runs_of(address)
        assert request(address, "GET", "/run", bearer())[0] == 202  # the lock was released
    host = hung.url.split("/")[2]
    assert run["outcome"] == "failed"
    assert run["error"] == (f"{side} ({host}) did not answer within the sync's time limit "
                            "(TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS=2)")
    assert elapsed < 2 + 3
    assert len(latencies) >= 5 and max(latencies) < 0.5


# Outage and recovery -------------------------------------------------------------------------

def test_nightscout_503_fails_runs_health_turns_stale_and_recovers_without_restart(make_app, nightscout):
    now = [1_900_000_000.0]
    app, _ = make_app(clock=lambda: now[0], TCONNECTSYNC_HEROKU_STALE_MINS="1")
    nightscout.mode = "503"
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 502
        [run] = runs_of(address)
        assert run["error"] == ('ApiException: Nightscout last_uploaded_entry 503 response: '
                                '{"error": "Service Unavailable"} (HTTP 503)')
        assert json.loads(request(address, "GET", "/healthz")[2])["status"] == "idle"
        now[0] += 61
        status, _, body = request(address, "GET", "/healthz")
        assert (status, json.loads(body)["status"]) == (503, "stale")
        assert b'id="state">stale</span>' in request(address, "GET", "/")[2]

        nightscout.mode = "ok"
        assert request(address, "GET", "/update", bearer())[0] == 200
        status, _, body = request(address, "GET", "/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok")
        assert b'id="state">ok</span>' in request(address, "GET", "/")[2]
    assert len(nightscout.treatments) == 2


# One run at a time ---------------------------------------------------------------------------

def test_update_and_check_login_are_409_while_a_run_is_in_progress(make_app, tandem):
    tandem.pump_log_secs = 60.0  # Tandem holds the pump logs: the run stays in progress until released
    app, _ = make_app()
    with served(app) as address:
        assert request(address, "POST", "/run", bearer())[0] == 202
        wait_for(lambda: tandem.pump_logs_in_flight == 1)
        for method in ("GET", "POST"):
            for path in ("/update", "/check_login"):
                status, _, body = request(address, method, path, bearer())
                assert (status, body) == (409, b"Not started: a sync is already running.\n"), (method, path)
        tandem.release()
        wait_for(lambda: runs_of(address)[0]["outcome"] != "running")
        assert request(address, "GET", "/check_login", bearer())[0] == 200
        assert [(r["trigger"], r["outcome"]) for r in runs_of(address)] == [("check", "ok"), ("run", "ok")]


# Backoff -------------------------------------------------------------------------------------

def test_backoff_doubles_after_each_failure_caps_at_an_hour_and_resets(make_app, nightscout):
    app, _ = make_app()
    timer = SyncTimer(app.syncer, 60, app.log)
    delays = []
    for failures in (0, 1, 2, 3, 4, 7, 30):
        app.syncer.consecutive_failures = failures
        delays.append(timer.next_delay())
    assert delays == [60, 60, 120, 240, 480, 3600, 3600]
    run, _ = app.syncer.start("run")
    run.done.wait(10)
    assert run.outcome == "ok" and timer.next_delay() == 60


def test_the_timer_schedules_the_interval_in_minutes_and_doubles_it_after_failures(make_app, nightscout):
    app, _ = make_app(timer=True, TCONNECTSYNC_HEROKU_INTERVAL_MINS="5")
    before = time.time()
    app.timer.start()
    assert before + 5 <= app.timer.next_at <= time.time() + 5  # the first sync soon after the start
    app.timer.stop()

    app, _ = make_app(timer=True, TCONNECTSYNC_HEROKU_INTERVAL_MINS="5")
    for outcome, delay in (("ok", 300), ("failed", 300), ("failed", 600)):
        nightscout.mode = "ok" if outcome == "ok" else "503"
        before = time.time()
        app.timer._tick()  # what the timer runs when it fires: a sync, then the next one scheduled
        assert app.syncer.last_run["outcome"] == outcome
        assert before + delay <= app.timer.next_at <= time.time() + delay
        app.timer._timer.cancel()  # this test ticks, not the timer


def test_refused_credentials_pause_the_timer_until_a_manual_run(make_app, tandem):
    tandem.password = "changed-on-tandem"
    app, log = make_app(timer=True, TCONNECTSYNC_HEROKU_INTERVAL_MINS="0.02")  # 1.2 s
    app.timer.start()
    with served(app) as address:
        wait_for(lambda: log.events("timer.paused"))
        time.sleep(3.5)  # three more timer intervals: none may log in
        assert tandem.login_attempts == 1
        page = request(address, "GET", "/")[2].decode()
        assert "paused until" in page and "Tandem Source refused the credentials" in page
        [run] = runs_of(address)
        assert run["error"] == CREDENTIALS_REFUSED

        tandem.password = "right-password-Zq81"  # the user fixed it on Tandem's side
        assert request(address, "GET", "/update", bearer())[0] == 200
        assert app.syncer.paused_until is None
        assert "paused until" not in request(address, "GET", "/")[2].decode()
    app.timer.stop()
    assert tandem.login_attempts == 2


def test_monitor_pings_do_not_log_in_while_refused_credentials_pause_syncs_but_sync_now_does(make_app, tandem):
    """Each login attempt counts toward Tandem's account lockout: a monitor pinging /run every 5 minutes would
    make 288 a day. After the first refusal only a person's Sync now (or /update) tries again."""
    tandem.password = "changed-on-tandem"
    app, _ = make_app()
    with served(app) as address:
        assert request(address, "GET", "/run", bearer())[0] == 202  # the first ping tries, and Tandem refuses
        wait_for(lambda: runs_of(address)[0]["outcome"] == "failed")
        assert tandem.login_attempts == 1
        until = iso(app.syncer.paused_until)
        for i in range(10):
            method = ("GET", "HEAD", "POST")[i % 3]
            status, _, body = request(address, method, "/run", bearer())
            assert status == 202, (method, body)
            if method != "HEAD":
                assert json.loads(body) == {"started": False, "reason": (
                    f"paused until {until}: {CREDENTIALS_REFUSED}. Timed syncs and /run wait until then; once the "
                    "credentials are right, press Sync now on the status page opened with the secret, call /update, "
                    "or restart the service")}
        assert tandem.login_attempts == 1 and len(runs_of(address)) == 1
        assert request(address, "GET", "/run?then=/", bearer())[0] == 303  # a GET is a ping, whatever it says
        assert len(runs_of(address)) == 1 and tandem.login_attempts == 1

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, headers, _ = request(address, "POST", "/run", form, f"secret={SERVICE_SECRET}&then=/".encode())
        assert (status, headers["Location"]) == (303, "/")  # the page's Sync now: a person asked, it tries at once
        wait_for(lambda: len(runs_of(address)) == 2 and runs_of(address)[0]["outcome"] == "failed")
    assert tandem.login_attempts == 2


# A failing database --------------------------------------------------------------------------

def corrupt_schema(db_path):
    """Another process damages the schema, as a bad disk or a stray tool would."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("PRAGMA writable_schema=ON")
    other.execute("UPDATE sqlite_master SET sql = 'CREATE TABLE broken (' WHERE name IN ('runs', 'events')")
    version = other.execute("PRAGMA schema_version").fetchone()[0]
    other.execute(f"PRAGMA schema_version={version + 1}")
    other.close()


def test_a_corrupted_database_refuses_deliveries_but_syncs_and_pages_go_on(make_app, nightscout, tmp_path):
    app, log = make_app(verify_clock=lambda: 1_800_000_000, clock=lambda: 1_800_000_000)
    body = body_for("kept-1")
    with served(app) as address:
        assert request(address, "POST", "/", {"X-Dt-Signature": sign(body, now=1_800_000_000)}, body)[0] == 200
        corrupt_schema(tmp_path / "tcsync.sqlite3")

        body = body_for("lost-1")
        status, _, answer = request(address, "POST", "/", {"X-Dt-Signature": sign(body, now=1_800_000_000)}, body)
        assert (status, json.loads(answer)["error"]) == (503, "store_unavailable")

        status, _, text = request(address, "GET", "/update", bearer())
        assert status == 200 and b"sync ok" in text
        assert len(nightscout.treatments) == 2
        [finished] = log.events("run.finished")
        assert "outcome=ok uploaded=2" in finished and "run_id" not in finished

        status, _, page = request(address, "GET", "/", bearer())
        assert status == 200
        assert b'id="state">database failing</span>' in page
        assert b"The database is failing: DatabaseError: malformed database schema" in page
        assert request(address, "GET", "/healthz")[0] == 200
        status, _, answer = request(address, "GET", "/runs", bearer())
        assert status == 503 and b"is failing; see the status page" in answer


def test_a_corrupted_database_file_stops_the_start_with_status_2(tmp_path):
    db = tmp_path / "junk.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    done = subprocess.run([sys.executable, tcsync_wsgi.__file__], env={"TCONNECTSYNC_HEROKU_DB": str(db)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == (f"tcsync_wsgi: cannot use the database {db}: file is not a database "
                           "(set TCONNECTSYNC_HEROKU_DB)\n")


# Hostile HTTP --------------------------------------------------------------------------------

def raw_exchange(address, data: bytes, timeout=5.0) -> bytes:
    """Send raw bytes, half-close, read until the server closes; returns what came back."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


AUTH = f"Authorization: Bearer {SERVICE_SECRET}\r\n".encode()
HOSTILE = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad percent-encoding in path": b"GET /%zz%ff HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-UTF-8 bytes in path": b"GET /\xff\xfe\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-UTF-8 query": b"GET /run?days=\xff HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
    "non-UTF-8 percent-encoded query": b"GET /run?days=%ff HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
    "non-UTF-8 form": (b"POST /run HTTP/1.1\r\nHost: x\r\n" + AUTH +
                       b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\ndays=\xff"),
    "huge header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n",
    "20 KB bearer token": b"GET /runs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 20_000 + b"\r\n\r\n",
    "enormous days": b"GET /run?days=99999999999999999999 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
    "negative limit": b"GET /runs?limit=-1 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
    "unknown method": b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS *": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad chunked body": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "body over waitress's limit": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
    "lying content length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\nshort",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


def test_hostile_requests_get_a_4xx_never_a_5xx_and_the_service_stays_up(make_app):
    app, log = make_app()
    with served(app) as address:
        for name, data in HOSTILE.items():
            answer = raw_exchange(address, data)
            status_line = answer.split(b"\r\n", 1)[0]
            if name in ("lying content length", "body over waitress's limit"):  # waitress waits for a body that
                # never comes, then drops the connection
                assert answer == b"" or status_line.split()[1].startswith(b"4"), (name, answer[:200])
                continue
            assert status_line.startswith(b"HTTP/1.") and status_line.split()[1].startswith(b"4"), (name, answer[:200])
        assert request(address, "GET", "/healthz")[0] == 200
    assert not log.events("unhandled")
    assert not any("Traceback" in line for line in log)
    assert app.store.runs(10) == []


@pytest.mark.filterwarnings("ignore::wsgiref.validate.WSGIWarning")  # it warns on methods like BREW
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"]),
       path=st.one_of(st.sampled_from(["/", "/healthz", "/run", "/update", "/check_login", "/runs", "/events"]),
                      st.text(st.characters(max_codepoint=255), max_size=30).map(lambda p: "/" + p)),
       query=st.text(st.characters(max_codepoint=255), max_size=60),
       headers=st.dictionaries(st.sampled_from(["Authorization", "Content-Type", "X-Dt-Signature", "Cookie",
                                                "Transfer-Encoding"]),
                               st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60), max_size=4),
       body=st.binary(max_size=200))
def test_any_request_gets_a_valid_wsgi_answer_below_500(make_app, method, path, query, headers, body):
    if not hasattr(test_any_request_gets_a_valid_wsgi_answer_below_500, "app"):
        test_any_request_gets_a_valid_wsgi_answer_below_500.app = make_app()[0]
    app = test_any_request_gets_a_valid_wsgi_answer_below_500.app
    status, response_headers, data = call(app, method, path, query, headers, body)
    assert status < 500, (status, data)
    assert int(response_headers["Content-Length"]) == (0 if method == "HEAD" else len(data)) or method == "HEAD"


# Secrets -------------------------------------------------------------------------------------

def test_no_secret_reaches_a_log_line_a_response_or_the_database(make_app, tandem, nightscout, tmp_path):
    app, log = make_app(DT_SIGNATURE_SECRET_PREVIOUS="previous-dt-secret-77", verify_clock=lambda: 1_800_000_000)
    secrets = (*ALL_SECRETS, "previous-dt-secret-77")
    bodies = []

    def keep(answer):
        # The status page shown to whoever sent the secret carries it back in its Sync now form: that is no leak.
        bodies.append(answer[2].replace(f'name="secret" value="{SERVICE_SECRET}"'.encode(), b""))
        bodies.append(json.dumps(answer[1]).encode())
        return answer

    with served(app) as address:
        keep(request(address, "GET", "/update", bearer()))
        keep(request(address, "GET", "/check_login", bearer()))
        keep(request(address, "GET", "/", bearer()))
        keep(request(address, "GET", f"/runs?secret={SERVICE_SECRET}"))
        keep(request(address, "GET", "/runs", bearer("wrong")))
        keep(request(address, "GET", "/healthz"))
        for i, secret in enumerate((DT_SECRET, "previous-dt-secret-77", "wrong")):
            body = body_for(f"s-{i}")
            keep(request(address, "POST", "/", {"X-Dt-Signature": sign(body, secret=secret, now=1_800_000_000)}, body))
        keep(request(address, "GET", "/events", bearer()))
        nightscout.mode = "503"
        keep(request(address, "GET", "/update", bearer()))
        nightscout.close()  # connections refused
        keep(request(address, "GET", "/update", bearer()))
        keep(request(address, "GET", "/check_login", bearer()))
        tandem.password = "changed"
        app.syncer._clients = None  # a new process would log in again
        keep(request(address, "GET", "/update", bearer()))
        keep(request(address, "GET", "/", bearer()))
        keep(request(address, "GET", "/"))
    assert len(app.store.runs(100)) == 6
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("tcsync.sqlite3*"))
    everything = b"".join(bodies) + "".join(log).encode() + stored
    for secret in secrets:
        assert secret.encode() not in everything, secret


def test_secrets_in_a_log_line_from_any_thread_are_redacted(make_app):
    app, log = make_app()
    done = threading.Event()

    def other_thread():
        app.log(event="example", detail=f"token {SERVICE_SECRET} and {PASSWORD}")
        done.set()

    threading.Thread(target=other_thread).start()
    done.wait(5)
    [line] = log.events("example")
    assert SERVICE_SECRET not in line and PASSWORD not in line


# Slow clients: the service as its Procfile starts it, on real sockets --------------------------

@contextlib.contextmanager
def serving(tmp_path, before="", **env):
    """python tcsync_wsgi.py on 127.0.0.1 (no sync settings: only the web), after the Python code before;
    yields (address, its log file)."""
    port = free_port()
    out = tmp_path / "service.log"
    with out.open("w") as stdout:
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{before}\n"
                f"import runpy; runpy.run_path({tcsync_wsgi.__file__!r}, run_name='__main__')")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=stdout, stderr=subprocess.STDOUT,
                                env={"PATH": "/usr/bin:/bin", "LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": str(port),
                                     "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), **env})
    address = ("127.0.0.1", port)
    try:
        wait_for(lambda: proc.poll() is not None or "event=start" in out.read_text(), timeout=30)
        assert proc.poll() is None, out.read_text()
        yield address, out
    finally:
        proc.terminate()
        proc.wait(30)


BAD_SETTINGS = {"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "five", "PUMP_SERIAL_NUMBER": "abc-123",
                "DATABASE_URL": "mysql://me:db-password-9@db.example/x", "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET,
                "DT_SIGNATURE_SECRET": DT_SECRET}
PROBLEMS = ["TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number from 0 to 1440, got 'five'",
            "PUMP_SERIAL_NUMBER must be the pump's serial number (digits), got 'abc-123'",
            "DATABASE_URL must be a postgres:// or postgresql:// URL, got one starting with 'mysql'"]


def test_bad_settings_keep_the_web_up_naming_them_while_syncs_and_deliveries_answer_503(tmp_path):
    """On Heroku an exit is a crash loop and an "Application error" page: the page names the problems instead."""
    with serving(tmp_path, **BAD_SETTINGS) as (address, log):
        status, _, page = request(address, "GET", "/")
        assert status == 200 and b'id="state">settings</span>' in page
        text = page.decode()
        for problem in PROBLEMS:  # named, without the value it got (a pump serial, a host) for the public
            assert f"<li>{html.escape(problem.partition(', got ')[0])}</li>" in text
        assert "five" not in text and "abc-123" not in text and "mysql" not in text
        assert "Settings → Reveal Config Vars" in text and "sudo systemctl restart tcsync_wsgi" in text
        secret_page = request(address, "GET", "/", bearer())[2].decode()
        assert all(f"<li>{html.escape(problem)}</li>" in secret_page for problem in PROBLEMS)

        status, _, body = request(address, "GET", "/healthz")
        assert (status, json.loads(body)) == (503, {"status": "settings", "message": (
            "The service's settings have problems: the status page names them. Nothing syncs until they are fixed.")})
        status, _, body = request(address, "GET", "/healthz", bearer())
        assert (status, json.loads(body)["problems"]) == (503, PROBLEMS)

        delivery = body_for("kept-later")
        status, _, body = request(address, "POST", "/", {"X-Dt-Signature": sign(delivery)}, delivery)
        assert (status, json.loads(body)["error"]) == (503, "settings")  # the Data Connector sends it again later
        for method, path in (("GET", "/run"), ("HEAD", "/run"), ("POST", "/run"), ("GET", "/update"),
                             ("POST", "/check_login"), ("GET", "/runs"), ("GET", "/events.csv")):
            assert request(address, method, path, bearer())[0] == 503, (method, path)
        assert request(address, "GET", "/nope")[0] == 404
        assert request(address, "DELETE", "/run")[0] == 405
    lines = log.read_text().splitlines()
    [said] = [line for line in lines if "event=settings.problems" in line]
    assert said.startswith("at=error event=settings.problems") and "got 'five'" in said
    assert "db-password-9" not in log.read_text()
    assert not (tmp_path / "db").exists()  # no store opened with settings that are wrong


def test_with_a_bad_secret_no_one_is_authorized_to_read_the_problems(tmp_path):
    with serving(tmp_path, TCONNECTSYNC_HEROKU_SECRET="short", PUMP_SERIAL_NUMBER="abc-123") as (address, _):
        status, _, body = request(address, "GET", "/healthz", bearer("short"))
        assert status == 503 and "problems" not in json.loads(body)
        page = request(address, "GET", "/", bearer("short"))[2].decode()
        assert "abc-123" not in page
        assert "<li>TCONNECTSYNC_HEROKU_SECRET must be at least 8 characters (or unset)</li>" in page


@pytest.mark.parametrize("verb", ["sync", "check"])
def test_the_cli_still_exits_2_with_one_line_on_bad_settings(tmp_path, verb):
    done = subprocess.run([sys.executable, tcsync_wsgi.__file__, verb], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", **BAD_SETTINGS}, timeout=30)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"tcsync_wsgi: cannot start: {'; '.join(PROBLEMS)}\n"


def test_a_port_it_cannot_listen_on_still_stops_the_web_start_with_2(tmp_path):
    done = subprocess.run([sys.executable, tcsync_wsgi.__file__], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PORT": "http", "PUMP_SERIAL_NUMBER": "x"}, timeout=30)
    assert done.returncode == 2
    assert done.stderr == ("tcsync_wsgi: cannot start: PORT must be a TCP port number, got 'http'; PUMP_SERIAL_NUMBER "
                           "must be the pump's serial number (digits), got 'x'\n")


def test_a_client_that_stops_mid_request_is_closed_after_the_channel_timeout(tmp_path):
    """The idle timeout, when it is shorter than the header deadline (tests/test_slow_clients.py: the deadlines)."""
    with serving(tmp_path, WAITRESS_CHANNEL_TIMEOUT_SECS="2", WAITRESS_CONNECTION_LIMIT="500") as (address, log), \
            socket.create_connection(address, timeout=15) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        assert sock.recv(1024) == b""  # closed by the service, within the 15 s the socket waits
        assert time.monotonic() - t0 >= 2
    assert " connection_limit=500 channel_timeout=2 io=poll " in log.read_text()  # 500 x 3 files: past select()


def test_the_service_answers_when_its_sockets_are_numbered_above_1023(tmp_path):
    """select() cannot watch a descriptor above 1023; poll() can, and is used for a connection limit that gets there
    (the default stays below it: select() is faster)."""
    before = ("import os, resource\n"
              "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2048)), hard))\n"
              "taken = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]")  # the lowest numbers: in use
    with serving(tmp_path, before, WAITRESS_CONNECTION_LIMIT="1000") as (address, log):
        assert " connection_limit=1000 channel_timeout=30 io=poll " in log.read_text()
        status, _, body = request(address, "GET", "/healthz", timeout=10)
        assert (status, json.loads(body)["status"]) == (200, "idle")


def test_headers_over_32_kib_are_refused_with_431_and_the_service_goes_on(tmp_path):
    """A connection holds at most 32 KiB of headers (waitress's own limit is 256 KiB): what bounds the memory of
    hundreds of slow clients. A real request's longest header, a Data Connector token, is at most 4 KiB."""
    with serving(tmp_path) as (address, _):
        status, _, _ = request(address, "GET", "/healthz", headers={"X-Big": "a" * 33 * 1024}, timeout=10)
        assert status == 431
        status, _, _ = request(address, "GET", "/healthz", headers={"X-Big": "a" * 30 * 1024}, timeout=10)
        assert status == 200
