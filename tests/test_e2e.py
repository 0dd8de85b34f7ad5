"""End to end: the service on real waitress, real tconnectsync, loopback fakes of Tandem and Nightscout."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import jwt
import pytest
from conftest import (
    DT_SECRET, FIXTURE_NOW, NS_SECRET, PASSWORD, ROOT, SERVICE_SECRET, TESTS, bearer, request, runs_of, served,
    service_env, wait_for,
)

from pg_server import free_port

from tcsync.readings import iso


def sha1(text):
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()


SECRETS = (PASSWORD, NS_SECRET, sha1(NS_SECRET), SERVICE_SECRET)


def assert_no_secret(*texts):
    for text in texts:
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        for secret in SECRETS:
            assert secret not in text


def test_first_sync_uploads_the_fixture_treatments_and_a_second_uploads_none(make_app, tandem, nightscout,
                                                                                basal_fixture):
    app, log = make_app(clock=lambda: FIXTURE_NOW)
    with served(app) as address:
        status, headers, body = request(address, "POST", "/update", bearer())
        assert status == 200, body
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert nightscout.treatments == basal_fixture["expected_treatments"]
        assert b"sync ok" in body and b"Processed 2 events" in body

        status, _, body = request(address, "GET", "/update", bearer())
        assert status == 200
        assert len(nightscout.treatments) == 2

        [second, first] = runs_of(address)
        assert (first["outcome"], first["uploaded"], first["last_event_seq"]) == ("ok", 2, 417029)
        assert (second["outcome"], second["uploaded"], second["trigger"]) == ("ok", 0, "update")
        assert tandem.logins == 1 and tandem.login_attempts == 1
        assert_no_secret(body, *log)


def test_many_syncs_log_in_to_tandem_once(make_app, tandem, nightscout):
    app, _ = make_app()
    with served(app) as address:
        for _ in range(4):
            assert request(address, "GET", "/update", bearer())[0] == 200
        assert request(address, "GET", "/check_login", bearer())[0] == 200
    assert tandem.logins == 1
    assert len({t["pump_event_id"] for t in nightscout.treatments}) == len(nightscout.treatments) == 2


def test_twenty_concurrent_triggers_start_one_sync_and_upload_no_duplicate(make_app, tandem, nightscout):
    nightscout.delay_secs = 0.3  # keep the first sync running while the others arrive
    app, _ = make_app()
    answers = []
    gate = threading.Barrier(20)

    def trigger(method):
        gate.wait()
        answers.append((method, *request(address, method, f"/run?secret={SERVICE_SECRET}")))

    with served(app) as address:
        threads = [threading.Thread(target=trigger, args=(("HEAD", "GET", "POST")[i % 3],)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(status == 202 for _, status, _, _ in answers), answers
        bodies = [json.loads(body) for method, _, _, body in answers if method != "HEAD"]
        started = [b for b in bodies if b["started"]]
        run_id = (started or [b for b in bodies if not b["started"]])[0]["run_id"]
        assert all(b["run_id"] == run_id for b in bodies)
        assert all(b == {"started": False, "reason": "a sync is already running", "run_id": run_id}
                   for b in bodies if not b["started"])
        wait_for(lambda: runs_of(address)[0]["outcome"] != "running")
        assert len(runs_of(address)) == 1
    assert len(nightscout.treatments) == 2
    assert tandem.logins == 1


def test_head_run_triggers_a_sync_and_keeps_the_connection_usable(make_app):
    import http.client

    app, _ = make_app()
    with served(app) as address:
        conn = http.client.HTTPConnection(*address, timeout=10)
        conn.request("HEAD", "/run", headers=bearer())
        head = conn.getresponse()
        assert head.status == 202 and head.read() == b""
        length = int(head.getheader("Content-Length"))
        conn.request("GET", "/healthz")  # same connection: a stray HEAD body would corrupt this answer
        follow = conn.getresponse()
        assert follow.status == 200 and json.loads(follow.read())["status"] in ("idle", "ok")
        conn.close()
        assert length == len(json.dumps({"started": True, "run_id": 1}))
        wait_for(lambda: runs_of(address)[0]["outcome"] == "ok")
        assert runs_of(address)[0]["trigger"] == "run"


def test_check_login_200_when_fine_and_502_with_a_wrong_password(make_app, tandem):
    app, _ = make_app()
    with served(app) as address:
        status, _, body = request(address, "POST", "/check_login", bearer())
        assert status == 200 and b"No API errors returned!" in body
        assert_no_secret(body)
    assert not os.path.exists("tconnectsync-check-output.log")

    tandem.password = "changed-on-tandem"
    app, _ = make_app()
    with served(app) as address:
        status, _, body = request(address, "POST", "/check_login", bearer())
        assert status == 502 and b"API errors occurred" in body
        assert_no_secret(body)


def test_wrong_password_fails_the_run_with_a_clear_reason(make_app, tandem):
    tandem.password = "changed-on-tandem"
    app, log = make_app()
    with served(app) as address:
        status, _, body = request(address, "GET", "/update", bearer())
        assert status == 502
        [run] = runs_of(address)
    assert run["error"] == ("Tandem Source refused the credentials (HTTP 401): "
                            "check TCONNECT_EMAIL, TCONNECT_PASSWORD and TCONNECT_REGION")
    assert tandem.login_attempts == 1
    assert_no_secret(body, *log)


def test_nightscout_down_fails_the_run_with_a_redacted_one_line_reason(make_app, nightscout, tmp_path):
    nightscout.close()  # connections refused; tconnectsync's error would carry ?api_secret=<secret>
    app, log = make_app()
    with served(app) as address:
        status, _, body = request(address, "GET", "/update", bearer())
        assert status == 502
        [run] = runs_of(address)
    port = nightscout.url.split(":")[2].rstrip("/")
    assert run["error"] == (f"could not reach Nightscout (127.0.0.1:{port}): it refused the connection: nothing "
                            "answers on that port")
    assert_no_secret(body, *log, (tmp_path / "tcsync.sqlite3").read_bytes())


def test_a_nightscout_password_in_ns_url_is_in_no_answer_log_or_row(make_app, tmp_path):
    port = free_port()  # nothing listens there: Nightscout is unreachable
    password, decoded = "S3cret%40BasicPass", "S3cret@BasicPass"
    app, log = make_app(NS_URL=f"http://someuser:{password}@127.0.0.1:{port}/")
    answers = []
    with served(app) as address:
        answers.append(request(address, "GET", "/update", bearer()))
        assert answers[0][0] == 502
        for path in ("/", "/healthz", "/runs", "/events", "/sensors", "/events.csv", "/events.ndjson", "/nope"):
            answers += [request(address, "GET", path), request(address, "GET", path, bearer()),
                        request(address, "GET", f"{path}?secret={SERVICE_SECRET}")]
        [run] = runs_of(address)
    assert run["error"] == (f"could not reach Nightscout (127.0.0.1:{port}): it refused the connection: nothing "
                            "answers on that port")
    page = answers[2][2].decode()  # GET / with the secret: the error, naming the host
    assert run["error"] in page and "someuser" not in page
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("tcsync.sqlite3*"))
    everything = "".join(f"{status} {headers} {body.decode()}" for status, headers, body in answers) + "".join(log)
    everything += stored.decode("utf-8", "replace")
    for secret in (password, decoded, "someuser:"):
        assert secret not in everything, secret


def test_a_hung_nightscout_ends_the_run_at_the_deadline(make_app, nightscout):
    nightscout.mode = "stall"
    app, _ = make_app(TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS="1.5")
    with served(app) as address:
        status, _, _ = request(address, "GET", "/update", bearer())
        assert status == 502
        [run] = runs_of(address)
        assert run["error"].startswith("Nightscout (127.0.0.1:")
        assert "did not answer within the sync's time limit (TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS=1.5)" in run["error"]
        assert run["duration_ms"] < 5000
        assert request(address, "GET", "/run", bearer())[0] == 202  # the lock was released


def test_the_timer_syncs_repeatedly_without_overlap(make_app, nightscout):
    app, _ = make_app(timer=True, TCONNECTSYNC_HEROKU_INTERVAL_MINS="0.05")
    app.timer.start()
    with served(app) as address:
        body = request(address, "GET", "/")[2]
        assert b"Next scheduled sync" in body and b"no timer" not in body
        finished = wait_for(lambda: [r for r in runs_of(address) if r["outcome"] != "running"][1:] and
                            runs_of(address), timeout=20)
    app.timer.stop()
    older, newer = finished[-1], finished[-2]
    assert (older["trigger"], newer["trigger"]) == ("timer", "timer")
    assert newer["started_at"] >= older["finished_at"]
    assert len(nightscout.treatments) == 2


# The service as its Procfile starts it: a process, SIGTERM, the CLI -------------------------

def start_service(tandem, env, *args):
    """python tcsync_wsgi.py ARGS with tconnectsync pointed at the fake Tandem."""
    code = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import fakes;"
            " sys.exit(fakes.run_service(sys.argv[1], sys.argv[2:]))")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(tandem.urls()), *args],
                            env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_mid_sync_lets_the_sync_finish_and_exits_0(tandem, nightscout, tmp_path):
    nightscout.delay_secs = 1.0
    port = free_port()
    env = service_env(tandem, nightscout, tmp_path / "db.sqlite3", LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port))
    proc = start_service(tandem, env)
    try:
        address = ("127.0.0.1", port)
        wait_for(lambda: _answers(address))
        assert request(address, "POST", "/run", bearer())[0] == 202
        wait_for(lambda: nightscout.requests_seen)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=28)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    [(outcome, uploaded)] = sqlite3.connect(tmp_path / "db.sqlite3").execute("SELECT outcome, uploaded FROM runs")
    assert (outcome, uploaded) == ("ok", 2)
    assert "event=stopped" in out and "Traceback" not in err
    assert_no_secret(out, err)


def _answers(address):
    try:
        return request(address, "GET", "/healthz", timeout=1)[0] == 200
    except OSError:
        return False


@pytest.mark.parametrize(("password", "verb", "code", "needle"), [
    (PASSWORD, "sync", 0, "sync ok: uploaded 2"),
    ("changed", "sync", 1, "sync failed: uploaded 0; Tandem Source refused the credentials"),
    (PASSWORD, "check", 0, "No API errors returned!"),
])
def test_cli_one_shot_exit_codes(tandem, nightscout, tmp_path, password, verb, code, needle):
    tandem.password = password
    proc = start_service(tandem, service_env(tandem, nightscout, tmp_path / "db"), verb)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert needle in out
    assert_no_secret(out, err)


def test_cli_with_missing_settings_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "tcsync_wsgi.py", "sync"], cwd=ROOT,
                          env={"PATH": os.environ["PATH"], "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db")},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == ("tcsync_wsgi: missing settings: TCONNECT_EMAIL, TCONNECT_PASSWORD, NS_URL, NS_SECRET, "
                           "TIMEZONE_NAME\n")


@pytest.mark.parametrize(("dotenv", "env", "words"), [
    # a .env file in the working folder, which tconnectsync reads and this service does not; stdout buffered
    ("TCONNECT_REGION=eu\n", {}, "TCONNECT_REGION must be one of: ['US', 'EU']; Current value: eu"),
    # a setting of tconnectsync's own that this service does not check; stdout unbuffered
    ("", {"NIGHTSCOUT_PROFILE_UPLOAD_MODE": "merge", "PYTHONUNBUFFERED": "1"},
     "NIGHTSCOUT_PROFILE_UPLOAD_MODE must be one of: ['add', 'replace']; Current value: merge"),
])
def test_tconnectsyncs_refusal_at_import_is_the_runs_error_in_its_words_and_logged_before_it(tmp_path, dotenv, env,
                                                                                            words):
    if dotenv:
        (tmp_path / ".env").write_text(dotenv)
    settings = {"PATH": os.environ["PATH"], "TCONNECT_EMAIL": "pumper@example.com", "TCONNECT_PASSWORD": PASSWORD,
                "NS_URL": "http://127.0.0.1:9/", "NS_SECRET": NS_SECRET, "TIMEZONE_NAME": "Europe/Berlin",
                "CACHE_CREDENTIALS": "false", "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), **env}
    done = subprocess.run([sys.executable, str(ROOT / "tcsync_wsgi.py"), "sync"], cwd=tmp_path, env=settings,
                          capture_output=True, text=True, timeout=60)
    error = f"RuntimeError: tconnectsync refused its settings at import: {words}"
    assert done.returncode == 1, done.stderr
    # the summary is the last line, whole: the log's writer thread has written the run's lines before it
    assert done.stdout.endswith(f"\nsync failed: uploaded 0; {error}\n"), done.stdout
    lines = done.stdout.splitlines()
    said = [i for i, line in enumerate(lines) if "event=tconnectsync.import" in line]
    finished = [i for i, line in enumerate(lines) if "event=run.finished" in line]
    assert said and finished and said[0] < finished[0], done.stdout  # its words first, then the run's line
    assert lines[said[0]] == f"at=error event=tconnectsync.import said={json.dumps(words)}"
    assert json.dumps(error) in lines[finished[0]]
    assert_no_secret(done.stdout, done.stderr)


def test_shutdown_marks_a_run_that_outlives_the_grace_interrupted(make_app, nightscout):
    import time

    nightscout.mode = "stall"
    app, _ = make_app()
    run, why_not = app.syncer.start("run")
    assert why_not is None
    wait_for(lambda: nightscout.requests_seen)
    assert app.syncer.close(time.monotonic() + 0.3) is run
    [row] = app.store.runs(1)
    assert (row["outcome"], row["error"]) == ("interrupted", "the service stopped before this run finished")
    assert app.syncer.start("run") == (None, "the service is shutting down")
    nightscout.close()  # let the stalled run end
    assert run.done.wait(5)


def _warm_fridge_service(tandem, nightscout, tmp_path):
    """The service as a process, with a fridge reading of 9.4 °C (range 2..8) delivered to it: (process, address)."""
    port = free_port()
    env = service_env(tandem, nightscout, tmp_path / "db.sqlite3", LISTEN_HOST="127.0.0.1", LISTEN_PORT=str(port),
                      DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0")
    proc = start_service(tandem, env)
    address = ("127.0.0.1", port)
    wait_for(lambda: _answers(address))
    now = time.time()
    body = json.dumps({"event": {"eventId": "warm-1", "targetName": "projects/p/devices/fridge1",
                                 "eventType": "temperature", "data": {"temperature": {"value": 9.4}},
                                 "timestamp": iso(now - 60, "milliseconds")},
                       "labels": {"name": "Insulin fridge"}}).encode()
    claims = {"checksum_sha256": hashlib.sha256(body).hexdigest(), "iat": int(now), "exp": int(now) + 3600}
    token = jwt.encode(claims, DT_SECRET, algorithm="HS256")
    assert request(address, "POST", "/", {"X-Dt-Signature": token}, body)[0] == 200
    return proc, address


def test_the_service_as_a_process_announces_a_warm_fridge_from_its_watch_thread(tandem, nightscout, tmp_path):
    """The alert watch runs in serve(): a delivery outside the range wakes it, the announcement goes out at once."""
    proc, address = _warm_fridge_service(tandem, nightscout, tmp_path)
    try:
        [announcement] = wait_for(lambda: [doc for doc in nightscout.treatments if doc["eventType"] == "Announcement"])
        assert announcement["notes"].startswith("Insulin fridge 9.4 °C: above 8 °C since ")
        assert request(address, "GET", "/alerts")[0] == 503
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=28)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "event=alert.announced" in out and "Traceback" not in err


def test_sigterm_while_an_announcement_is_on_its_way_marks_it_sent_before_the_store_closes(tandem, nightscout,
                                                                                          tmp_path):
    """Stopping waits for the alerts' sender: what reached Nightscout is marked sent (else sent again after a start)."""
    nightscout.delay_secs = 2.0  # every answer of Nightscout comes 2 s late: SIGTERM arrives while one is awaited
    proc, _ = _warm_fridge_service(tandem, nightscout, tmp_path)
    try:
        wait_for(lambda: any(method == "POST" and path.startswith("/api/v1/treatments")
                             for method, path in list(nightscout.requests_seen)))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=28)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "event=alert.announced" in out and "Traceback" not in err
    assert "store is closed" not in out
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM announcements WHERE sent_at IS NOT NULL").fetchone() == (1,)
