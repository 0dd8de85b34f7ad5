"""Issue 20: what a signed delivery may hold, what the reading code survives, filters both databases answer alike,
start-up problems as one line, and the headers and markup that keep the page's visitors safe.

Every test that touches the store runs on SQLite and PostgreSQL.
"""

import base64
import codecs
import json
import subprocess
import sys
import zoneinfo

import pytest
from conftest import ROOT, bearer, call, stored
from hypothesis import given, settings
from hypothesis import strategies as st
from test_receiver import sign

from tcsync.exports import csv_line, csv_lines
from tcsync.markup import UNKNOWN_TIME, clock_text, time_html
from tcsync.readings import event_json, iso, local_time
from tcsync.settings import SettingsError, load_settings
from tcsync.store import EVENT_COLUMNS, EventQuery, StoreError, StoreUnreachable, open_store

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: when the deliveries are signed and arrive
DAY = 86400


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Every test here runs on both stores, unless it marks itself SQLite only (it does not touch the store)."""
    return request.param


@pytest.fixture
def app(make_app):
    return make_app(verify_clock=lambda: NOW, clock=lambda: NOW)[0]


def event_body(event_id="a-1", timestamp="2027-01-15T07:59:00Z", value="4.5", labels=None, **event) -> bytes:
    """A delivery written as text, so that it can hold what json.dumps would never write (NaN, 1e999, a key twice)."""
    fields = {"eventId": json.dumps(event_id), "targetName": '"projects/p/devices/fridge1"',
              "eventType": '"temperature"', "timestamp": json.dumps(timestamp),
              "data": '{"temperature": {"value": ' + value + ', "samples": [{"value": 4.5}]}}',
              **{name: json.dumps(v) for name, v in event.items()}}
    inner = ", ".join(f'"{name}": {text}' for name, text in fields.items())
    return ('{"event": {' + inner + '}, "labels": ' + json.dumps(labels or {}) + ', "metadata": {}}').encode()


def post(app, body: bytes) -> tuple[int, dict]:
    status, _, answer = call(app, "POST", "/", headers={"X-Dt-Signature": sign(body, now=NOW)}, body=body)
    return status, json.loads(answer)


def strict_json(data: bytes):
    """JSON as any other program reads it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(data, parse_constant=refuse)


def nothing_stored(app) -> bool:
    return stored(app, "SELECT COUNT(*) FROM events") == [(0,)]


# 1. Admit only what can always be shown again ---------------------------------------------------

BIG_INT = "1" + "0" * 400  # JSON allows it; a float cannot hold it
REFUSED = {
    # the event's own time: from 2000-01-01 to a day after it arrived
    "year 9999 west of UTC": (event_body(timestamp="9999-12-31T23:59:59-12:00"), "bad_time"),
    "year 1 east of UTC": (event_body(timestamp="0001-01-01T00:00:00+14:00"), "bad_time"),
    "a moment before 2000": (event_body(timestamp="1999-12-31T23:59:59.999999Z"), "bad_time"),
    "a day and a moment ahead": (event_body(timestamp="2027-01-16T08:00:00.000001Z"), "bad_time"),
    "in 2030": (event_body(timestamp="2030-01-01T00:00:00Z"), "bad_time"),
    # numbers that are not finite floats, wherever they are
    "NaN": (event_body(value="NaN"), "bad_number"),
    "Infinity": (event_body(value="Infinity"), "bad_number"),
    "-Infinity": (event_body(value="-Infinity"), "bad_number"),
    "1e999": (event_body(value="1e999"), "bad_number"),
    "a 401-digit integer": (event_body(value=BIG_INT), "bad_number"),
    "a negative 401-digit integer": (event_body(value="-" + BIG_INT), "bad_number"),
    "a 5000-digit integer": (event_body(value="9" * 5000), "bad_number"),
    "NaN in a sample": (event_body().replace(b'[{"value": 4.5}]', b'[{"value": NaN}]'), "bad_number"),
    "1e999 in the metadata": (event_body().replace(b'"metadata": {}', b'"metadata": {"x": -1e999}'), "bad_number"),
    # longer than both databases index
    "event id of 201": (event_body(event_id="e" * 201), "too_long"),
    "event type of 201": (event_body(eventType="t" * 201), "too_long"),
    "target name of 201": (event_body(targetName="projects/p/devices/" + "d" * 182), "too_long"),
    "event id of 3000": (event_body(event_id="e" * 3000), "too_long"),
    # not UTF-8
    "UTF-16 with a BOM": (event_body().decode().encode("utf-16"), "not_utf8"),
    "UTF-16 without": (event_body().decode().encode("utf-16-le"), "not_utf8"),
    "UTF-32": (event_body().decode().encode("utf-32"), "not_utf8"),
    "UTF-8 with a BOM": (codecs.BOM_UTF8 + event_body(), "not_utf8"),
    "Latin-1": (event_body(labels={"name": "K"}).replace(b'"K"', '"Kühlschrank"'.encode("latin-1")), "not_utf8"),
    "CESU-8": (event_body(labels={"name": "K"}).replace(b'"K"', b'"\xed\xa0\x80"'), "not_utf8"),
    # a name twice in one object: one value stored, both in the NDJSON
    "event id twice": (event_body().replace(b'"eventId": "a-1"', b'"eventId": "a-1", "eventId": "a-2"'),
                       "duplicate_key"),
    "value twice": (event_body(value="4.5, \"value\": 30"), "duplicate_key"),
}


def test_what_could_not_always_be_shown_again_is_400_with_its_reason_and_nothing_is_kept(app):
    for case, (body, reason) in REFUSED.items():  # one app per database: a new one per case costs 0.5 s on PostgreSQL
        status, answer = post(app, body)
        assert (status, answer.get("error"), bool(answer.get("message"))) == (400, reason, True), (case, answer)
    assert nothing_stored(app) and app.store.failure is None


ADMITTED = {
    "2000-01-01 exactly": "2000-01-01T00:00:00Z",
    "a day ahead exactly": "2027-01-16T08:00:00Z",
    "no zone (UTC)": "2027-01-15T07:00:00",
    "not a time (the arrival time)": "not a time",
    "none (the arrival time)": None,
}


def test_times_inside_the_window_and_unreadable_ones_are_kept(app):
    for case, timestamp in ADMITTED.items():
        assert post(app, event_body(event_id=case, timestamp=timestamp))[0] == 200, case
    assert sorted(event_id for (event_id,) in stored(app, "SELECT event_id FROM events")) == sorted(ADMITTED)


def test_the_longest_ids_and_the_largest_finite_numbers_are_kept(app):
    body = event_body(event_id="e" * 200, eventType="t" * 200, targetName="projects/p/devices/" + "d" * 181,
                      value="1.7976931348623157e308")
    assert post(app, body) == (200, {"ok": True, "duplicate": False, "event_id": "e" * 200})
    assert post(app, event_body(event_id="big", value="9" * 308))[0] == 200


# Hostile rows written before these checks existed: read defensively, never a 500 -------------------

HOSTILE = [  # (event id, device, timestamp, event_time as release 1.0 computed it, body)
    ("year-10000", "far", "9999-12-31T23:59:59-12:00", 253402343999.0,
     event_body("year-10000", timestamp="9999-12-31T23:59:59-12:00")),
    ("year-0", "old", "0001-01-01T00:00:00+14:00", -62135647200.0,
     event_body("year-0", timestamp="0001-01-01T00:00:00+14:00")),
    ("huge-int", "int", "2027-01-15T07:50:00Z", NOW - 600, event_body("huge-int", value=BIG_INT)),
    ("nan", "nan", "2027-01-15T07:51:00Z", NOW - 540,
     event_body("nan", value="NaN").replace(b'"metadata": {}', b'"metadata": {"x": Infinity, "y": 1e999}')),
    ("not-json", "junk", None, NOW - 480, b"{not json"),
    ("utf-16", "utf16", "2027-01-15T07:53:00Z", NOW - 420,
     event_body("utf-16", labels={"name": "UTF-16"}).decode().encode("utf-16")),
    ("a-list", "list", None, NOW - 360, b"[1, 2]"),
    ("event-a-number", "num", None, NOW - 300, b'{"event": 5, "labels": [1]}'),
    ("data-a-list", "dl", None, NOW - 240, b'{"event": {"eventId": "x", "data": [1]}, "labels": {"name": 5}}'),
]


def store_hostile_rows(app) -> None:
    """Write the rows straight into the database, as an older release (or anything else) may have left them."""
    for event_id, device, timestamp, event_time, body in HOSTILE:
        app.store._write(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?)",
                         (event_id, "temperature", f"projects/p/devices/{device}", timestamp, NOW - 60, body, device,
                          event_time))


def test_hostile_stored_rows_are_shown_whole_on_every_route(app):
    store_hostile_rows(app)
    ids = sorted(event_id for event_id, *_ in HOSTILE)
    status, _, page = call(app, "GET", "/", headers=bearer())
    assert status == 200 and page.rstrip().endswith(b"</html>")
    # every device has a card but "far", whose only event lies in the future: it is listed, never a newest reading.
    # (Rows written straight into events have no readings: the cards show none, and no time; the time function's
    # "unknown time" is pinned by the property test below.)
    assert page.count(b'<article class="card') == len(HOSTILE) - 1
    assert call(app, "GET", "/")[0] == 200  # the public page too
    status, _, listing = call(app, "GET", "/events", "limit=1000", headers=bearer())
    events = strict_json(listing)["events"]
    assert status == 200 and sorted(e["event_id"] for e in events) == ids
    by_id = {e["event_id"]: e for e in events}
    assert by_id["year-10000"]["event_time"] is None and by_id["year-0"]["event_time"] is None
    assert by_id["nan"]["reading"] is None and by_id["huge-int"]["reading"] is None
    assert by_id["not-json"]["data"] is None
    status, _, sensors = call(app, "GET", "/sensors", headers=bearer())
    assert status == 200 and sorted(s["device"] for s in strict_json(sensors)["sensors"]) == \
        sorted(device for _, device, *_ in HOSTILE if device != "far")
    status, _, table = call(app, "GET", "/events.csv", headers=bearer())
    assert status == 200 and sorted(line.rsplit(b",", 1)[1] for line in table.splitlines()[1:]) == \
        [i.encode() for i in ids]
    status, _, lines = call(app, "GET", "/events.ndjson", headers=bearer())
    assert status == 200 and lines.count(b"\n") == len(HOSTILE) and lines.endswith(b"\n")
    assert app.store.failure is None


JSON_TEXT = st.recursive(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", BIG_INT, "-" + BIG_INT, "4.5", "27", "null", "true",
                     '"x"', '"temperature"', "[]", "{}"]),
    lambda inner: st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    | st.lists(st.tuples(st.sampled_from(["event", "data", "labels", "name", "temperature", "value", "samples",
                                          "eventType", "humidity", "relativeHumidity"]), inner), max_size=4).map(
        lambda pairs: "{" + ", ".join(f'"{name}": {value}' for name, value in pairs) + "}"), max_leaves=20)
TIMES = st.one_of(st.floats(), st.none(), st.integers(-10 ** 12, 10 ** 12).map(float))


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(JSON_TEXT.map(str.encode), st.binary(max_size=200)),
       event_type=st.sampled_from(["temperature", "humidity", "touch", "other"]), event_time=TIMES,
       received_at=TIMES)
def test_the_reading_code_never_raises_on_any_stored_row(body, event_type, event_time, received_at):
    row = ("id", event_type, "projects/p/devices/d", "ts", received_at, 0, body, "d", event_time)
    json.dumps(event_json(row), allow_nan=False)  # what /events writes is JSON, whatever the row holds
    csv_lines(row)


@settings(max_examples=300, deadline=None)
@given(ts=TIMES, zone=st.sampled_from(["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"]))
def test_a_time_is_shown_whatever_it_is_in_any_zone(ts, zone):
    tz = zoneinfo.ZoneInfo(zone)
    shown = time_html(ts, NOW, tz)
    assert (shown == UNKNOWN_TIME) == (local_time(ts, tz) is None or iso(ts) is None)
    assert clock_text(ts, NOW, tz) and (iso(ts) is None or iso(ts).endswith("Z"))


# 6. The same answers on both databases: bad filters are 400 before any query --------------------

def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


TYPE_MESSAGE = "type must be an event type (at most 200 characters, no NUL), got "
DEVICE_MESSAGE = "device must be a device id (the last part of targetName), got "
CURSOR_MESSAGE = 'before must be the "next" value of an earlier /events answer'
BAD_FILTERS = {
    "NUL in type": ("type=touch%00x", TYPE_MESSAGE + "'touch\\x00x'"),
    "type of 201": ("type=" + "t" * 201, TYPE_MESSAGE + repr("t" * 40)),
    "NUL in device": ("device=d%00x", DEVICE_MESSAGE + "'d\\x00x'"),
    "device of 201": ("device=" + "d" * 201, DEVICE_MESSAGE + repr("d" * 40)),
}
BAD_CURSORS = {
    "NUL in the cursor's id": cursor("1800000000.0 a\x00b"),
    "a cursor id of 201": cursor("1800000000.0 " + "e" * 201),
}


def test_bad_filters_and_cursors_are_400_on_both_databases_and_the_database_is_not_failing(app):
    for case, (query, message) in BAD_FILTERS.items():
        for path in ("/events", "/events.ndjson", "/events.csv"):
            status, _, answer = call(app, "GET", path, query, headers=bearer())
            assert (status, json.loads(answer)) == (400, {"error": message}), (case, path)
    for case, value in BAD_CURSORS.items():
        status, _, answer = call(app, "GET", "/events", "before=" + value, headers=bearer())
        assert (status, json.loads(answer)) == (400, {"error": CURSOR_MESSAGE}), case
    assert app.store.failure is None
    assert b'id="state">database failing' not in call(app, "GET", "/")[2]


def test_a_statement_the_database_refuses_does_not_mark_it_failing(app):
    from tcsync.store import QueryRefused

    with pytest.raises(QueryRefused):
        app.store.runs(2 ** 70)  # past both databases' 64-bit integers
    with pytest.raises(QueryRefused):
        app.store._write("INSERT INTO runs (trigger, started_at, outcome, uploaded) VALUES ('t', 0, 'ok', ?)",
                         (2 ** 70,))  # through the writer thread
    try:
        app.store.events(1, EventQuery(event_type="a\x00b"))
    except QueryRefused:
        assert app.store.dialect == "postgres"  # SQLite takes a NUL
    assert app.store.failure is None
    assert b'id="state">database failing' not in call(app, "GET", "/")[2]


# 7. Start-up: every bad setting a sentence, never a traceback, never a password -----------------

PASSWORD = "S3cret-Pw-9q"
BAD_SETTINGS = {
    "a 300-character zone": ({"TIMEZONE_NAME": "A" * 300}, "TIMEZONE_NAME must be a time zone name"),
    "a zone that is a folder": ({"TIMEZONE_NAME": "Europe"}, "TIMEZONE_NAME must be a time zone name"),
    "an interval of 1e300": ({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "1e300"},
                             "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number from 0 to 1440"),
    "an interval over a day": ({"TCONNECTSYNC_HEROKU_INTERVAL_MINS": "1441"},
                               "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number from 0 to 1440"),
    "a sync timeout over an hour": ({"TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS": "3601"},
                                    "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS must be a number above 0 and at most 3600"),
    "stale after more than a week": ({"TCONNECTSYNC_HEROKU_STALE_MINS": "10081"},
                                     "TCONNECTSYNC_HEROKU_STALE_MINS must be a number above 0 and at most 10080"),
    "a range of 400 digits": ({"DT_TEMPERATURE_RANGE": "-" + "9" * 400 + "..8"}, "DT_TEMPERATURE_RANGE must be"),
    "a range below -100 °C": ({"DT_TEMPERATURE_RANGE": "-101..8"}, "DT_TEMPERATURE_RANGE must be"),
    "a range above 100 °C": ({"DT_TEMPERATURE_RANGE": "2..100.5"}, "DT_TEMPERATURE_RANGE must be"),
    "a port of 5000 digits": ({"PORT": "9" * 5000}, "PORT must be a TCP port number"),
    "a 300-character host": ({"LISTEN_HOST": "a" * 300}, "LISTEN_HOST must be"),
    "a host with a space": ({"LISTEN_HOST": "a b"}, "LISTEN_HOST must be"),
    "a host that is no address": ({"LISTEN_HOST": "999.1.1.1"}, "LISTEN_HOST must be"),
    "a port that is a word": ({"DATABASE_URL": f"postgres://u:{PASSWORD}@db.example:notaport/db"},
                              "DATABASE_URL's port must be"),
    "a port past 65535": ({"DATABASE_URL": f"postgres://u:{PASSWORD}@db.example:99999/db"},
                          "DATABASE_URL's port must be"),
    "garbage after the scheme": ({"DATABASE_URL": "postgres://%zz" + PASSWORD}, "DATABASE_URL cannot be read"),
    "a space in the password": ({"DATABASE_URL": f"postgres://u:{PASSWORD} x@db.example/db"},
                                "DATABASE_URL cannot be read"),
    "an @ in the password": ({"DATABASE_URL": f"postgres://u:{PASSWORD}@x@db.example/db"},
                             "DATABASE_URL holds more than one @"),
    "a / in the password": ({"DATABASE_URL": f"postgres://u:{PASSWORD}/x@db.example/db"},
                            "DATABASE_URL's port must be"),
    "an unknown parameter": ({"DATABASE_URL": f"postgres://u:{PASSWORD}@db.example/db?colour=red"},
                             "DATABASE_URL cannot be read"),
    "a bad sslmode": ({"DATABASE_URL": f"postgres://u:{PASSWORD}@db.example/db?sslmode=maybe"},
                      "DATABASE_URL's sslmode must be"),
    "NS_URL with a [": ({"NS_URL": f"https://u:{PASSWORD}@[ns.example/"}, "NS_URL"),
}


@pytest.mark.parametrize("case", BAD_SETTINGS)
def test_each_bad_setting_is_one_sentence_naming_it_without_the_password(case):
    env, needle = BAD_SETTINGS[case]
    with pytest.raises(SettingsError) as raised:
        load_settings(env)
    assert needle in str(raised.value) and PASSWORD not in str(raised.value), str(raised.value)
    assert len(raised.value.problems) == 1


READABLE_URLS = {  # odd, but PostgreSQL's library reads them: kept, and the password it reads is redacted
    "a ] in the password": (f"postgres://u:{PASSWORD}]@db.example/db", PASSWORD + "]"),
    "a [ in the password": (f"postgres://u:{PASSWORD}[@db.example/db", PASSWORD + "["),
    "# and ? in the password": (f"postgres://u:{PASSWORD}#?x@db.example/db", PASSWORD + "#?x"),
    "the password as a parameter": (f"postgres://u@db.example/db?password={PASSWORD}", PASSWORD),
}


@pytest.mark.parametrize("case", READABLE_URLS)
def test_an_odd_database_url_that_libpq_reads_is_kept_with_its_password_redacted(case):
    url, password = READABLE_URLS[case]
    assert password in load_settings({"DATABASE_URL": url}).secret_values()


def test_a_value_libpq_refuses_only_when_connecting_is_a_setting_to_fix_not_an_outage():
    settings = load_settings({"DATABASE_URL": f"postgres://u:{PASSWORD}@127.0.0.1:9/db?target_session_attrs=maybe"})
    with pytest.raises(StoreError) as raised:  # main() exits 2 naming DATABASE_URL, not 1 to be started again
        open_store(settings)
    assert not isinstance(raised.value, StoreUnreachable) and PASSWORD not in str(raised.value)
    assert str(raised.value) == 'connection is bad: invalid target_session_attrs value: "maybe"'


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["TIMEZONE_NAME", "TCONNECTSYNC_HEROKU_INTERVAL_MINS", "TCONNECTSYNC_HEROKU_STALE_MINS",
                             "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS", "DT_TEMPERATURE_RANGE", "DATABASE_URL", "NS_URL",
                             "PORT", "WAITRESS_CONNECTION_LIMIT", "TCONNECTSYNC_HEROKU_FEATURES"]),
       value=st.text(max_size=80) | st.sampled_from(["postgres://", "https://", "1e308", "-0", "inf"]).flatmap(
           lambda prefix: st.text(max_size=40).map(lambda rest: prefix + rest)))
def test_no_setting_makes_load_settings_raise_anything_but_settings_error(name, value):
    try:
        load_settings({name: value}).secret_values()
    except SettingsError:
        pass


def test_bad_settings_stop_the_cli_with_status_2_and_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), "TIMEZONE_NAME": "A" * 300,
           "LISTEN_HOST": "a b", "TCONNECTSYNC_HEROKU_INTERVAL_MINS": "1e300",
           "DT_TEMPERATURE_RANGE": "-" + "9" * 400 + "..8", "DATABASE_URL": f"postgres://u:{PASSWORD} x@h/db"}
    done = subprocess.run([sys.executable, "tcsync_wsgi.py", "sync"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("tcsync_wsgi: cannot start: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    for name in ("TIMEZONE_NAME", "LISTEN_HOST", "TCONNECTSYNC_HEROKU_INTERVAL_MINS", "DT_TEMPERATURE_RANGE",
                 "DATABASE_URL"):
        assert name in done.stderr


# 8. Headers and markup ----------------------------------------------------------------------

CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; manifest-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; "
       "base-uri 'none'")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_status_page_sends_a_content_security_policy(app):
    for method, headers in (("GET", {}), ("GET", bearer()), ("HEAD", {})):
        assert call(app, method, "/", headers=headers)[1]["Content-Security-Policy"] == CSP


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_answer_says_no_referrer(app):
    answers = [call(app, "GET", "/nope"), call(app, "POST", "/", body=b"{}"), call(app, "GET", "/", query="secret=x")]
    for path, methods in app.routes.items():
        for method in methods:
            answers += [call(app, method, path, headers=bearer())]
    assert all(headers.get("Referrer-Policy") == "no-referrer" for _, headers, _ in answers), answers


def test_a_label_with_bidi_controls_is_isolated_on_the_page(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW, DT_TEMPERATURE_RANGE="2..8")
    name = "\u202eegdirF\u2066"  # an override and an unclosed isolate: they would flip the text after them
    assert post(app, event_body(labels={"name": name}, value="9.5"))[0] == 200
    page = call(app, "GET", "/")[2].decode()
    assert page.count(f"<bdi>{name}</bdi>") == 2  # the card's heading and the alert at the top
    assert "<bdi>fridge1</bdi>" in page


def test_csv_cells_starting_with_tab_or_cr_are_defused_too():
    assert csv_line(["\t=1+1", "\r=1", "=1", "ok", 5]) == b"'\t=1+1,\"'\r=1\",'=1,ok,5\r\n"


def test_head_on_the_exports_sends_the_headers_and_reads_nothing(app):
    assert post(app, event_body())[0] == 200
    exports = {"/events.ndjson": "application/x-ndjson", "/events.csv": "text/csv; charset=utf-8"}
    answers = {path: call(app, "GET", path, headers=bearer())[1] for path in exports}
    reads = []
    if app.store.dialect == "sqlite":  # every statement the reading connection runs
        app.store._connection("read").set_trace_callback(reads.append)
    for path, content_type in exports.items():
        status, headers, body = call(app, "HEAD", path, headers=bearer())
        assert (status, headers, body) == (200, answers[path], b"")
        assert headers["Content-Type"] == content_type
        assert call(app, "HEAD", path, "device=a%00b", headers=bearer())[0] == 400  # the filters are still checked
    assert reads == []
