"""In-process tests: settings, store, auth, routes and parameters through wsgiref.validate."""

import hashlib
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.parse

import pytest
from conftest import NS_SECRET, PASSWORD, SERVICE_SECRET, LogLines, call, service_env

import tcsync.settings
import tcsync_wsgi
from tcsync.web import SettingsProblemsApp
from tcsync.log import Log, Redactor
from tcsync.receiver import secret_matches
from tcsync.store import Store, open_store
from tcsync.sync import Run, Syncer, _Captures, _ThreadStdout
from tcsync.settings import SettingsError, load_settings


def auth(secret=SERVICE_SECRET):
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def app(make_app):
    return make_app()[0]


# Settings ------------------------------------------------------------------------------------

def test_defaults_with_nothing_set_list_every_missing_sync_setting():
    s = load_settings({})
    assert s.missing == ("TCONNECT_EMAIL", "TCONNECT_PASSWORD", "NS_URL", "NS_SECRET", "TIMEZONE_NAME")
    assert s.timezone_name == ""  # no silent America/New_York: syncs wait until a zone is named
    assert (s.interval_mins, s.stale_mins, s.sync_timeout_secs, s.port, s.host) == (0, 60, 120, 5000, "0.0.0.0")
    assert (s.connection_limit, s.channel_timeout_secs) == (None, 30)  # None: from the open-files limit
    assert (s.header_timeout_secs, s.body_timeout_secs) == (10, 30)
    assert s.features == ("BASAL", "BOLUS", "PUMP_EVENTS", "PROFILES")
    assert s.db_path.endswith("tcsync.sqlite3")


@pytest.mark.parametrize(("env", "needle"), [
    ({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "abc"}, "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number"),
    ({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "-1"}, "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number"),
    ({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "nan"}, "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number"),
    ({"TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS": "0"}, "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS must be a number"),
    ({"TCONNECTSYNC_HEROKU_FEATURES": "BASAL,NOPE"},
     "TCONNECTSYNC_HEROKU_FEATURES must be a comma list of BASAL, BOLUS, IOB, PUMP_EVENTS,"),
    ({"TCONNECT_REGION": "eu"}, "TCONNECT_REGION must be US or EU"),
    ({"PUMP_SERIAL_NUMBER": "abc"}, "PUMP_SERIAL_NUMBER must be"),
    ({"TIMEZONE_NAME": "Mars/Olympus"}, "TIMEZONE_NAME must be a time zone"),
    ({"CACHE_CREDENTIALS": "true"}, "CACHE_CREDENTIALS=true breaks"),
    ({"NS_URL": "my.nightscout.example"}, "NS_URL must start with https://"),
    ({"PORT": "http"}, "PORT must be a TCP port"),
    ({"TCONNECTSYNC_HEROKU_SECRET": "abc"}, "TCONNECTSYNC_HEROKU_SECRET must be at least 8 characters"),
    ({"DT_SIGNATURE_SECRET_PREVIOUS": "x"}, "DT_SIGNATURE_SECRET_PREVIOUS must be at least 8 characters"),
    ({"PORT": "\u00b2"}, "PORT must be a TCP port"),
    ({"PUMP_SERIAL_NUMBER": "\u00b2"}, "PUMP_SERIAL_NUMBER must be"),
    ({"WAITRESS_CONNECTION_LIMIT": "0"}, "WAITRESS_CONNECTION_LIMIT must be a whole number of at least 1, got '0'"),
    ({"WAITRESS_CONNECTION_LIMIT": "many"}, "WAITRESS_CONNECTION_LIMIT must be a whole number"),
    ({"WAITRESS_CHANNEL_TIMEOUT_SECS": "2.5"}, "WAITRESS_CHANNEL_TIMEOUT_SECS must be a whole number"),
    ({"WAITRESS_CHANNEL_TIMEOUT_SECS": "-1"}, "WAITRESS_CHANNEL_TIMEOUT_SECS must be a whole number"),
    ({"WAITRESS_CHANNEL_TIMEOUT_SECS": "9999999999"}, "WAITRESS_CHANNEL_TIMEOUT_SECS must be a whole number"),
    ({"WAITRESS_HEADER_TIMEOUT_SECS": "0"}, "WAITRESS_HEADER_TIMEOUT_SECS must be a whole number of at least 1"),
    ({"WAITRESS_BODY_TIMEOUT_SECS": "1.5"}, "WAITRESS_BODY_TIMEOUT_SECS must be a whole number of at least 1"),
])
def test_each_bad_setting_is_named(env, needle):
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert needle in str(raised.value)


@pytest.mark.parametrize(("env", "zone"), [
    ({"TIMEZONE_NAME": "Europe/Berlin"}, "Europe/Berlin"),
    ({"TZ": "Asia/Kolkata"}, "Asia/Kolkata"),  # as tconnectsync reads it: TZ when TIMEZONE_NAME is unset
    ({"TIMEZONE_NAME": "Europe/Berlin", "TZ": "Asia/Kolkata"}, "Europe/Berlin"),
])
def test_the_pumps_time_zone_comes_from_timezone_name_or_tz(env, zone):
    s = load_settings(env)
    assert s.timezone_name == zone and "TIMEZONE_NAME" not in s.missing


def test_a_bad_zone_in_tz_is_named_as_tz():
    with pytest.raises(SettingsError) as raised:
        load_settings({"TZ": ":/etc/localtime"})
    assert str(raised.value) == ("TZ must be a time zone name like America/New_York (or set TIMEZONE_NAME), "
                                 "got ':/etc/localtime'")


def test_a_bad_ns_url_is_named_without_its_password():
    with pytest.raises(SettingsError) as raised:
        load_settings({"NS_URL": "someuser:S3cretPass@ns.example/"})
    assert str(raised.value) == ("NS_URL must start with https:// (or http://), got 'ns.example/' "
                                 "(after its user:password@)")


def test_every_problem_is_listed_at_once():
    with pytest.raises(SettingsError) as raised:
        load_settings({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "x", "TCONNECT_REGION": "eu"})
    assert len(raised.value.problems) == 2


def test_settings_parse_and_derive():
    s = load_settings({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "30", "PORT": "8080", "LISTEN_PORT": "9",
                       "WAITRESS_CONNECTION_LIMIT": "2000", "WAITRESS_CHANNEL_TIMEOUT_SECS": " 45 ",
                       "WAITRESS_HEADER_TIMEOUT_SECS": "5", "WAITRESS_BODY_TIMEOUT_SECS": "60",
                       "TCONNECTSYNC_HEROKU_FEATURES": "basal, bolus", "NS_URL": "https://ns.example/sub",
                       "API_SECRET": "from-api-secret"})
    assert (s.interval_mins, s.stale_mins, s.port) == (30, 90, 8080)
    assert (s.connection_limit, s.channel_timeout_secs, s.header_timeout_secs, s.body_timeout_secs) == (2000, 45, 5, 60)
    assert s.features == ("BASAL", "BOLUS")
    assert s.ns_url == "https://ns.example/sub/"
    assert s.ns_secret == "from-api-secret"


def test_settings_repr_holds_no_secret():
    s = load_settings({"TCONNECT_PASSWORD": PASSWORD, "NS_SECRET": NS_SECRET, "NS_URL": "https://u:pw-in-url@ns.example/",
                       "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET, "DT_SIGNATURE_SECRET": "dt-secret-1"})
    assert not any(v in repr(s) for v in (PASSWORD, NS_SECRET, SERVICE_SECRET, "dt-secret-1", "pw-in-url"))


@pytest.mark.parametrize(("name", "url"), [
    ("NS_URL", "https://someuser:S3cret%40Pass@ns.example/"),
    ("DATABASE_URL", "postgresql://someuser:S3cret%40Pass@db.example:5432/name"),
])
def test_a_password_in_a_configured_url_is_a_secret_as_written_and_decoded(name, url):
    values = load_settings({name: url}).secret_values()
    assert "S3cret%40Pass" in values and "S3cret@Pass" in values


def test_our_feature_list_is_tconnectsyncs():
    from tconnectsync.features import ALL_FEATURES, DEFAULT_FEATURES

    assert tcsync.settings.ALL_FEATURES == tuple(ALL_FEATURES)
    assert tcsync.settings.DEFAULT_FEATURES == tuple(DEFAULT_FEATURES)


@pytest.mark.parametrize(("verb", "env", "needle"), [
    # a bad setting keeps the web up (tests/test_faults.py); the CLI still stops
    (["sync"], {"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "abc"}, "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number"),
    ([], {"TCONNECTSYNC_HEROKU_DB": "/proc/no/such/dir/x.sqlite3"},
     "cannot use the database /proc/no/such/dir/x.sqlite3"),
])
def test_bad_configuration_stops_the_process_with_status_2_and_one_line(tmp_path, verb, env, needle):
    done = subprocess.run([sys.executable, tcsync_wsgi.__file__, *verb], env={"PATH": "/usr/bin:/bin", **env},
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_with_settings_problems_every_route_answers_validly_and_nothing_is_opened(tmp_path):
    settings = tcsync.settings.read_settings({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "five",
                                              "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET,
                                              "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db")})
    assert settings.problems == ("TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number from 0 to 1440, got 'five'",)
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()))
    assert isinstance(app, SettingsProblemsApp) and not (tmp_path / "db").exists()
    expected = {("GET", "/"): 200, ("HEAD", "/"): 200, ("GET", "/manifest.webmanifest"): 200, ("GET", "/icon.png"): 200,
                ("GET", "/healthz"): 503, ("HEAD", "/healthz"): 503, ("POST", "/"): 503, ("GET", "/run"): 503,
                ("GET", "/update"): 503, ("POST", "/check_login"): 503, ("GET", "/runs"): 503,
                ("GET", "/events"): 503, ("GET", "/events.ndjson"): 503, ("GET", "/sensors"): 503,
                ("GET", "/nope"): 404, ("PUT", "/"): 405}
    for (method, path), status in expected.items():
        assert call(app, method, path, headers=auth())[0] == status, (method, path)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    page = call(app, "POST", "/", headers=form, body=f"secret={SERVICE_SECRET}".encode())[2]
    assert b"got &#x27;five&#x27;" in page and b'http-equiv="refresh"' not in page
    assert b"The secret is wrong" in call(app, "POST", "/", headers=form, body=b"secret=not-it-at-all")[2]
    app.stop()
    app.close(0)


def test_a_taken_port_stops_the_process_with_status_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, tcsync_wsgi.__file__], cwd=tmp_path, capture_output=True, text=True,
                              env={"LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": str(port)}, timeout=30)
    assert done.returncode == 2
    assert done.stderr == (f"tcsync_wsgi: cannot listen on 127.0.0.1:{port}: Address already in use"
                           " (set PORT or LISTEN_PORT, LISTEN_HOST)\n")


# Store ---------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request, tmp_path):
    """Settings naming a fresh store of each backend."""
    env = {"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db")}
    if request.param == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    return load_settings(env)


def test_a_run_left_running_by_a_killed_process_is_interrupted_at_next_start(store_settings):
    store = open_store(store_settings)
    run_id = store.start_run("timer", 1000.0)
    store.close()
    app = tcsync_wsgi.create_app(store_settings, log=Log(LogLines()))
    [row] = app.store.runs(10)
    assert (row["id"], row["outcome"]) == (run_id, "interrupted")
    assert app.store.path == (store_settings.database_url or store_settings.db_path)
    app.store.close()


def test_a_successful_check_is_not_a_successful_sync_after_restart(store_settings):
    store = open_store(store_settings)
    run = Run(store.start_run("check", 10.0), "check", 10.0, finished_at=11.0, outcome="ok")
    store.finish_run(run)
    syncer = Syncer(load_settings({}), store, Log(LogLines()))
    assert syncer.last_success_at is None and syncer.last_run is None  # a check is no sync: no badge from it
    store.close()


def test_store_keeps_the_newest_1000_runs(store_settings):
    store = open_store(store_settings)
    for i in range(1005):
        store.start_run("run", float(i))
    runs = store.runs(1000)
    assert len(runs) == 1000
    assert (runs[0]["id"], runs[-1]["id"]) == (1005, 6)
    store.close()


def test_store_uses_wal(tmp_path):
    Store(str(tmp_path / "db"))
    assert sqlite3.connect(tmp_path / "db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# Auth, redaction -----------------------------------------------------------------------------

def test_secret_matches():
    assert secret_matches("abc", "abc")
    assert not secret_matches("abd", "abc")
    assert not secret_matches("", "")
    for near_miss in ("", "a", "ab", "abcd", "bc", "ABC"):
        assert not secret_matches(near_miss, "abc"), near_miss
    assert not secret_matches("é" * 3, "abc")


def test_redactor_hides_secrets_their_sha1_and_api_secret_values():
    import hashlib

    sha1 = hashlib.sha1(NS_SECRET.encode()).hexdigest()
    redact = Redactor([NS_SECRET, sha1, PASSWORD])
    text = redact(f"url=http://x/api/v1/treatments?api_secret=other&x=1 {sha1} {PASSWORD} {NS_SECRET}")
    assert text == "url=http://x/api/v1/treatments?api_secret=[redacted]&x=1 [redacted] [redacted] [redacted]"


def test_captured_tconnectsync_output_is_redacted():
    log = Log(LogLines(), redact=Redactor([NS_SECRET]))
    captures = _Captures(log)
    captures.by_thread[threading.get_ident()] = lines = []
    elsewhere = io.StringIO()
    stdout = _ThreadStdout(elsewhere, captures)  # what a check's prints go through
    stdout.write(f"GET /x?api_secret={NS_SECRET}&y=1 secret {NS_SECRET}\n")
    assert not captures.add(8, "another thread")
    assert lines == ["GET /x?api_secret=[redacted]&y=1 secret [redacted]\n"]
    assert elsewhere.getvalue() == ""


# Routes --------------------------------------------------------------------------------------

def test_status_page_is_public_html_without_runs(app):
    status, headers, body = call(app)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'id="state">ok</span>' in body
    assert b"Recent runs" not in body
    assert b"no timer" in body


def test_status_page_names_missing_settings(tmp_path):
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), "TCONNECT_EMAIL": "a@b.c"})
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()))
    status, _, body = call(app)
    assert status == 200
    assert b"not configured" in body
    assert b"TCONNECT_PASSWORD, NS_URL, NS_SECRET, TIMEZONE_NAME" in body


def test_status_page_says_the_timer_waits_for_missing_settings(tmp_path):
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), "TCONNECTSYNC_HEROKU_INTERVAL_MINS": "5"})
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()), timer=True)
    assert app.timer is None
    assert b"none: the timer waits for the missing settings" in call(app)[2]


def test_status_page_with_the_secret_shows_runs(app):
    app.store.start_run("run", 1.0)
    status, _, body = call(app, headers=auth())
    assert status == 200 and b"Recent runs" in body


def test_head_answers_like_get_with_exact_length_and_no_body(app):
    for path in ("/", "/healthz"):
        get = call(app, "GET", path)
        head = call(app, "HEAD", path)
        assert head[0] == get[0]
        assert head[1]["Content-Length"] == str(len(get[2])) and head[2] == b""


def test_healthz_idle_before_any_sync(app):
    status, headers, body = call(app, path="/healthz")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "idle", "last_success_at": None, "last_run": None}


def test_healthz_without_the_secret_says_the_last_outcome_never_the_error(make_app, nightscout):
    nightscout.mode = "503"
    app, _ = make_app()
    run, _ = app.syncer.start("run")
    assert run.done.wait(30) and run.outcome == "failed" and "503" in run.error
    public = {"status": "idle", "last_success_at": None,
              "last_run": {"outcome": "failed", "finished_at": run.as_json()["finished_at"]}}
    for query, headers in (("", {}), ("secret=wrong", {}), ("", auth("wrong"))):
        assert json.loads(call(app, path="/healthz", query=query, headers=headers)[2]) == public
    status, headers, _ = call(app, "HEAD", "/healthz")
    assert status == 200 and int(headers["Content-Length"]) == len(json.dumps(public))
    for query, headers in ((f"secret={SERVICE_SECRET}", {}), ("", auth())):
        full = json.loads(call(app, path="/healthz", query=query, headers=headers)[2])
        assert full == {"status": "idle", "last_success_at": None, "last_run": run.as_json()}


def test_healthz_stale_once_the_threshold_passes_with_no_success(make_app):
    now = [1_000_000.0]
    app, _ = make_app(clock=lambda: now[0], TCONNECTSYNC_HEROKU_INTERVAL_MINS="5", timer=True)
    assert json.loads(call(app, path="/healthz")[2])["status"] == "idle"
    now[0] += 60 * 60 + 1  # the default stale threshold: max(60, 3 x 5) minutes
    status, _, body = call(app, path="/healthz")
    assert status == 503 and json.loads(body)["status"] == "stale"


def test_unknown_path_404_and_wrong_method_405_with_allow(app):
    assert call(app, path="/nope")[0] == 404
    status, headers, _ = call(app, "DELETE", "/run")
    assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
    status, headers, _ = call(app, "PUT", "/")
    assert status == 405 and headers["Allow"] == "GET, HEAD, POST"
    assert call(app, "HEAD", "/update")[0] == 405


@pytest.mark.parametrize("path", ["/run", "/update", "/check_login", "/runs", "/events"])
def test_guarded_routes_need_the_secret(app, path):
    status, headers, body = call(app, path=path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, body = call(app, path=path, headers=auth("wrong"))
    assert status == 403 and json.loads(body) == {"error": "The secret is wrong."}
    status, _, body = call(app, path=path, query="secret=wrong")
    assert status == 403


@pytest.mark.parametrize("path", ["/run", "/update", "/check_login", "/runs", "/events"])
def test_guarded_routes_are_disabled_without_a_configured_secret(make_app, path):
    app, _ = make_app(TCONNECTSYNC_HEROKU_SECRET="")
    status, _, body = call(app, path=path, headers=auth(""))
    assert status == 403 and b"TCONNECTSYNC_HEROKU_SECRET" in body


def test_secret_accepted_as_bearer_query_or_form(app):
    assert call(app, path="/runs", headers=auth())[0] == 200
    for scheme in ("bearer", "BEARER"):  # an auth scheme's name is case-insensitive (RFC 9110 11.1)
        assert call(app, path="/runs", headers={"Authorization": f"{scheme} {SERVICE_SECRET}"})[0] == 200
    assert call(app, path="/runs", query=f"secret={SERVICE_SECRET}")[0] == 200
    form = f"secret={SERVICE_SECRET}&days=2&pretend=1".encode()
    status, _, body = call(app, "POST", "/run", headers={"Content-Type": "application/x-www-form-urlencoded"},
                           body=form)
    assert status == 202 and json.loads(body)["started"] is True


# Only the exact secret passes: not a prefix, not an empty one, not one a character longer, on every guarded route
# and every way of sending it. Each route gets a parameter it refuses (400) after the secret is checked, so that
# passing the check shows without starting a sync, and refusal (403) shows that the check came first.
NEAR_MISSES = ["", SERVICE_SECRET[:1], SERVICE_SECRET[:-1], SERVICE_SECRET + "x", SERVICE_SECRET.upper(),
               SERVICE_SECRET[1:], "x" + SERVICE_SECRET[1:]]
REFUSED_AFTER_AUTH = {"/run": "days=0", "/update": "days=0", "/check_login": "days=0", "/runs": "limit=0",
                      "/events": "limit=0", "/events.csv": "colour=red", "/events.ndjson": "colour=red",
                      "/sensors": "colour=red"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def with_secret(app, path, how, secret):
    """The route's status with its refused parameter and this secret, sent as a ?secret=, a Bearer or a form, each
    secret from its own address (past 5 wrong ones, one address would get 429: test_guess_throttle)."""
    query = REFUSED_AFTER_AUTH[path]
    encoded = urllib.parse.quote(secret)
    client = secret_client(secret)
    if how == "query":
        return call(app, path=path, query=f"{query}&secret={encoded}", client=client)[0]
    if how == "bearer":
        return call(app, path=path, query=query, headers=auth(secret), client=client)[0]
    return call(app, "POST", path, headers=FORM, body=f"{query}&secret={encoded}".encode(), client=client)[0]


def secret_client(secret: str) -> str:
    """An address of its own for each secret tried."""
    return f"secret-{hashlib.sha256(secret.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


@pytest.mark.parametrize(("path", "how"), [(path, how) for path in REFUSED_AFTER_AUTH for how in ("query", "bearer")]
                         + [(path, "form") for path in ("/run", "/update", "/check_login")])
def test_only_the_exact_secret_passes_on_every_route_every_way(app, path, how):
    assert with_secret(app, path, how, SERVICE_SECRET) == 400
    assert {secret: with_secret(app, path, how, secret) for secret in NEAR_MISSES} == dict.fromkeys(NEAR_MISSES, 403)
    assert call(app, path=path, query="secret")[0] == 403  # a bare ?secret is an empty one
    assert app.store.runs(10) == []


@pytest.mark.parametrize("path", ["/", "/healthz"])
def test_a_near_miss_secret_gets_the_public_answer_of_public_routes(make_app, nightscout, path):
    app, _ = make_app(clock=lambda: 1_800_000_000.0)
    nightscout.mode = "503"  # a failed sync: its error is one of the parts shown only with the secret
    run, _ = app.syncer.start("run")
    assert run.done.wait(30) and run.outcome == "failed"
    public = call(app, path=path)[2]
    with_secret = call(app, path=path, headers=auth())[2]
    assert b"last_uploaded_entry 503" in with_secret and b"last_uploaded_entry 503" not in public
    note = b'<p class="note">The secret is wrong: this is the page without it.</p>'
    for secret in NEAR_MISSES:
        assert call(app, path=path, headers=auth(secret), client=secret_client(secret))[2] == public, secret
        by_address = call(app, path=path, query=f"secret={urllib.parse.quote(secret)}",
                          client=secret_client(secret) + "-page")[2]
        assert by_address.replace(note, b"") == public, secret


@pytest.mark.parametrize(("query", "needle"), [
    ("days=0", "days must be a whole number from 1 to 30"),
    ("days=31", "days must be"),
    ("days=abc", "days must be"),
    ("days=99999999999999999999", "days must be"),
    ("days=1&days=2", "parameter 'days' was given more than once"),
    ("pretend=maybe", "pretend must be"),
    ("features=BASAL,NOPE", "unknown feature NOPE"),
    ("colour=red", "unknown parameter 'colour'"),
    ("days=%FF", "not valid UTF-8"),
    ("days=%C2%B2", "days must be"),  # a superscript two: str.isdigit() says yes, int() says no
])
def test_bad_parameters_are_400_naming_the_parameter(app, query, needle):
    for path in ("/run", "/update"):
        status, _, body = call(app, path=path, query=query, headers=auth())
        assert status == 400, (path, query)
        assert needle in json.loads(body)["error"]
    assert app.store.runs(10) == []


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=1001", "limit=x", "verbose=1", "limit=%C2%B2"])
def test_bad_runs_parameters_are_400(app, query):
    assert call(app, path="/runs", query=query, headers=auth())[0] == 400


def test_runs_lists_newest_first_with_every_field(app):
    app.store.start_run("run", 1.0)
    app.store.start_run("timer", 2.0)
    status, _, body = call(app, path="/runs", query="limit=1", headers=auth())
    assert status == 200
    assert json.loads(body) == {"runs": [{
        "id": 2, "trigger": "timer", "started_at": "1970-01-01T00:00:02Z", "finished_at": None,
        "outcome": "running", "uploaded": 0, "last_event_seq": None, "error": None, "duration_ms": None}]}


def test_sync_routes_refuse_when_settings_are_missing(tmp_path):
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"),
                              "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET})
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()))
    status, _, body = call(app, path="/run", headers=auth())
    assert status == 503
    assert json.loads(body)["reason"] == ("missing settings: TCONNECT_EMAIL, TCONNECT_PASSWORD, NS_URL, NS_SECRET, "
                                           "TIMEZONE_NAME")
    status, _, body = call(app, path="/check_login", headers=auth())
    assert status == 503 and b"missing settings: TCONNECT_EMAIL" in body
    assert app.store.runs(10) == []


class BrokenStore(Store):
    """A store whose run listing fails with a bug, to exercise the error boundary."""

    def runs(self, limit):
        raise KeyError(f"boom {SERVICE_SECRET}")


def test_an_unexpected_exception_is_a_plain_500_logged_once_without_secrets(tandem, nightscout, tmp_path):
    log = LogLines()
    settings = load_settings(service_env(tandem, nightscout, tmp_path / "db"))
    app = tcsync_wsgi.create_app(settings, store=BrokenStore(settings.db_path), log=Log(log))
    status, _, body = call(app, path="/runs", headers=auth())
    assert status == 500
    assert body == b"Internal error; the service log has the details.\n"
    [line] = log.events("unhandled")
    assert "KeyError" in line and SERVICE_SECRET not in line and "[redacted]" in line


def test_every_request_is_one_logfmt_line_without_the_query(app):
    log = app.log._write
    call(app, path="/runs", query=f"secret={SERVICE_SECRET}")
    [line] = log.events("request")
    assert line == f"at=info event=request method=GET path=/runs status=200 ms={line.split('ms=')[1].strip()}\n"


def test_every_answer_says_nosniff(make_app):
    """Every route and method, with and without the secret, 404, 405, HEAD, the streamed exports and a 500."""
    app, _ = make_app(store=BrokenStore)
    answers = [call(app, "GET", "/nope"), call(app, "DELETE", "/run"), call(app, "HEAD", "/update")]
    for path, methods in app.routes.items():
        for method in methods:
            answers += [call(app, method, path), call(app, method, path, headers=auth())]
    statuses = {status for status, _, _ in answers}
    assert {200, 202, 401, 404, 405, 500} <= statuses
    assert all(headers.get("X-Content-Type-Options") == "nosniff" for _, headers, _ in answers), answers


# Log lines: each field capped, no line over 4 KiB, whole lines in writes of at most 4 KiB -------

def test_a_100_kb_path_is_one_short_log_line_that_says_what_was_cut(app):
    assert call(app, path="/" + "a" * 100_000)[0] == 404
    [line] = app.log._write.events("request")
    assert len(line.encode()) <= 4096
    assert f"path=\"/{'a' * 299}...[cut 99701 chars]\" status=404" in line


def test_a_secret_at_a_fields_cut_is_redacted_not_halved(app):
    call(app, path="/" + "a" * 280 + SERVICE_SECRET)  # 302 characters: a cut first would keep 19 of the secret's
    [line] = app.log._write.events("request")
    assert f"path=/{'a' * 280}[redacted] status=404" in line


def test_no_log_line_is_over_4_kib_whatever_its_fields_or_characters():
    lines = LogLines()
    log = Log(lines)
    log(event="wide", **{f"field{i}": "é" * 1000 for i in range(20)})  # 20 fields of 600 bytes after their cut
    log.write_redacted("€" * 5000)  # tconnectsync's lines come this way, whole
    wide, long = lines
    assert wide.startswith('at=info event=wide field0="' + "é" * 300 + '...[cut 700 chars]" field1="')
    assert long.startswith("€" * 1000)
    for line in lines:
        assert len(line.encode()) <= 4096 and line.endswith(" chars]\n") and line.count("\n") == 1


def test_the_log_writer_writes_whole_lines_in_writes_of_at_most_4_kib(tmp_path):
    """The real writer thread, its stdout a packet socket: each os.write arrives as one record."""
    script = ("from tcsync.log import Log\n"
              "log = Log()\n"
              "for i in range(300):\n"
              "    log(event='example', i=i, text='€' * 290)\n"  # 900 bytes in 300 characters
              "log.write_redacted('x' * 10_000)\n"
              "log.close()\n"
              "log(event='after_close')\n")  # written at once by this thread (the CLI's last lines come after it)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=theirs, stderr=subprocess.PIPE,
                                 cwd=os.path.dirname(tcsync_wsgi.__file__))
        theirs.close()
        ours.settimeout(30)
        writes = list(iter(lambda: ours.recv(1 << 20), b""))
    assert child.wait(30) == 0, child.stderr.read()
    assert max(map(len, writes)) <= 4096
    assert all(write.endswith(b"\n") for write in writes)
    lines = b"".join(writes).decode().splitlines()
    assert [line.split()[2] for line in lines[:300]] == [f"i={i}" for i in range(300)]
    assert len(lines) == 302 and lines[300].startswith("x" * 4000) and lines[300].endswith(" chars]")
    assert lines[301] == "at=info event=after_close"
    assert len(writes) < 200  # lines still share writes
