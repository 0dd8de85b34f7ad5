"""Received events are readable: /events with data and readings, filters, paging, exports, /sensors."""

import base64
import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import bearer, request, served
from hypothesis import given, settings
from hypothesis import strategies as st
from test_receiver import sign

from tcsync.readings import READINGS as READING_SPECS
from tcsync.readings import reading_json
from tcsync.store import Store, StoreError

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
TEST_DATA = Path(__file__).resolve().parent / "test_data"


def delivery(event_id, event_type, device, when, data, labels=None, metadata=None) -> bytes:
    event = {"eventId": event_id, "targetName": f"projects/p/devices/{device}", "eventType": event_type,
             "data": data, "timestamp": when}
    return json.dumps({"event": event, "labels": labels or {}, "metadata": metadata or {"deviceId": device}},
                      separators=(",", ":")).encode()


FRIDGE, ROOM = {"name": "Fridge"}, {"name": "Room", "floor": "1"}
SAMPLES = [{"value": 5.0, "sampleTime": "2027-01-15T06:59:30Z"}, {"value": 5.0, "sampleTime": "2027-01-15T07:00:00Z"}]
# (id, type, device, timestamp, data, labels), in the order they arrive: t3 comes late and is older.
SENT = [
    ("t1", "temperature", "fridge1", "2027-01-15T07:00:00.123456789Z",
     {"temperature": {"value": 5.0, "updateTime": "2027-01-15T07:00:00.123456789Z", "samples": SAMPLES}}, FRIDGE),
    ("h1", "humidity", "room2", "2027-01-15T07:05:00Z",
     {"humidity": {"temperature": 21.5, "relativeHumidity": 40, "updateTime": "2027-01-15T07:05:00Z"}}, ROOM),
    ("o1", "objectPresent", "room2", "2027-01-15T07:06:00Z", {"objectPresent": {"state": "PRESENT"}}, ROOM),
    ("tc", "touch", "fridge1", "2027-01-15T07:07:00Z", {"touch": {"updateTime": "2027-01-15T07:07:00Z"}}, FRIDGE),
    ("ns", "networkStatus", "fridge1", "2027-01-15T07:08:00Z",
     {"networkStatus": {"signalStrength": 80, "rssi": -70, "transmissionMode": "LOW_POWER_STANDARD_MODE",
                        "cloudConnectors": [{"id": "cc1", "signalStrength": 80, "rssi": -70}]}}, FRIDGE),
    ("bs", "batteryStatus", "fridge1", "2027-01-15T07:09:00Z", {"batteryStatus": {"percentage": 95}}, FRIDGE),
    ("un", "labelsChanged", "room2", "2027-01-15T07:10:00Z",
     {"added": {"x": "1"}, "modified": {}, "removed": []}, ROOM),
    ("t2", "temperature", "fridge1", "2027-01-15T07:15:00+00:00", {"temperature": {"value": 5.5}}, FRIDGE),
    ("t3", "temperature", "fridge1", "2027-01-15T06:45:00Z", {"temperature": {"value": 4.8}}, FRIDGE),
]
BODIES = {item[0]: delivery(*item) for item in SENT}
NEWEST_FIRST = ["t2", "un", "bs", "ns", "tc", "o1", "h1", "t1", "t3"]
READINGS = {
    "t1": {"value": 5.0, "unit": "°C", "samples": [{"value": 5.0, "at": "2027-01-15T06:59:30Z"},
                                                   {"value": 5.0, "at": "2027-01-15T07:00:00Z"}]},
    "h1": [{"value": 21.5, "unit": "°C"}, {"value": 40, "unit": "%"}],
    "o1": {"value": "PRESENT", "unit": None}, "tc": {"value": "touched", "unit": None},
    "ns": {"value": 80, "unit": "%"}, "bs": {"value": 95, "unit": "%"}, "un": None,
    "t2": {"value": 5.5, "unit": "°C"}, "t3": {"value": 4.8, "unit": "°C"},
}


def post(address, body):
    status, _, answer = request(address, "POST", "/", {"X-Dt-Signature": sign(body, now=NOW)}, body)
    assert status == 200, answer
    return json.loads(answer)


def get(address, path, expect=200):
    status, headers, body = request(address, "GET", path, bearer())
    assert status == expect, (path, body)
    return headers, body


def get_json(address, path, expect=200):
    return json.loads(get(address, path, expect)[1])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Every test here runs on both stores, but for the SQLite file's own upgrade and version check."""
    return request.param


@pytest.fixture
def delivered(make_app):
    """The service on waitress with SENT delivered, t1 and h1 twice; yields (address, app, log)."""
    app, log = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app) as address:
        for event_id, *_ in SENT:
            post(address, BODIES[event_id])
        assert post(address, BODIES["t1"])["duplicate"] and post(address, BODIES["h1"])["duplicate"]
        yield address, app, log


def ids(address, query=""):
    return [e["event_id"] for e in get_json(address, "/events?limit=1000" + query)["events"]]


def test_events_carry_data_labels_device_and_reading(delivered):
    address, _, _ = delivered
    answer = get_json(address, "/events?limit=100")
    assert "next" not in answer
    assert [e["event_id"] for e in answer["events"]] == NEWEST_FIRST
    for item in answer["events"]:
        event_id, event_type, device, when, data, labels = next(s for s in SENT if s[0] == item["event_id"])
        assert (item["event_type"], item["device"]) == (event_type, device)
        assert item["target"] == f"projects/p/devices/{device}"
        assert (item["timestamp"], item["data"], item["labels"]) == (when, data, labels)
        assert item["reading"] == READINGS[event_id]
        assert item["duplicates"] == (1 if event_id in ("t1", "h1") else 0)
    t1 = next(e for e in answer["events"] if e["event_id"] == "t1")
    assert (t1["event_time"], t1["received_at"]) == ("2027-01-15T07:00:00.123Z", "2027-01-15T08:00:00Z")


def test_the_delivery_log_line_has_device_and_reading(delivered):
    _, _, log = delivered
    lines = {}
    for line in log.events("request"):
        if " delivery=" in line:
            lines.setdefault(line.split(" delivery=")[1].split()[0], line)  # the first delivery of each
    assert lines["t1"].endswith(" delivery=t1 type=temperature target=projects/p/devices/fridge1 device=fridge1"
                                " duplicate=False reading=5.0 unit=°C\n")
    assert lines["h1"].endswith(" device=room2 duplicate=False reading=21.5,40 unit=°C,%\n")
    assert lines["o1"].endswith(" device=room2 duplicate=False reading=PRESENT\n")
    assert lines["un"].endswith(" device=room2 duplicate=False\n")
    assert "X-Dt-Signature" not in "".join(log) and '"data"' not in "".join(log)


@pytest.mark.parametrize(("query", "expected"), [
    ("&type=temperature", ["t2", "t1", "t3"]),
    ("&device=room2", ["un", "o1", "h1"]),
    ("&since=2027-01-15T07:06:00Z", ["t2", "un", "bs", "ns", "tc", "o1"]),
    (f"&since={int(NOW) - 3240}", ["t2", "un", "bs", "ns", "tc", "o1"]),  # Unix seconds, 07:06
    ("&since=2027-01-15T08:06:00%2B01:00", ["t2", "un", "bs", "ns", "tc", "o1"]),
    ("&since=2027-01-15T08:06:00+01:00", ["t2", "un", "bs", "ns", "tc", "o1"]),  # an unencoded + (a space)
    ("&until=2027-01-15T07:00:00Z", ["t3"]),  # until is exclusive; t1 is 0.123 s later
    ("&device=fridge1&type=temperature&since=2027-01-15T06:50:00Z&until=2027-01-15T07:15:00Z", ["t1"]),
    ("&device=nobody", []),
])
def test_each_filter(delivered, query, expected):
    assert ids(delivered[0], query) == expected


def test_paging_returns_every_event_once_while_deliveries_continue(delivered):
    address, _, _ = delivered
    seen, path, page = [], "/events?limit=2", 0
    while True:
        answer = get_json(address, path)
        seen += [e["event_id"] for e in answer["events"]]
        page += 1
        if page == 2:  # a newer event lands above the cursor, an older one below it
            post(address, delivery("late-new", "temperature", "fridge1", "2027-01-15T07:59:00Z",
                                   {"temperature": {"value": 6}}))
            post(address, delivery("late-old", "temperature", "fridge1", "2027-01-15T05:00:00Z",
                                   {"temperature": {"value": 4}}))
            post(address, BODIES["tc"])  # a redelivery changes nothing
        if "next" not in answer:
            break
        assert len(answer["events"]) == 2
        path = f"/events?limit=2&before={answer['next']}"
    assert seen == [*NEWEST_FIRST, "late-old"]
    assert ids(address, "&type=temperature")[0] == "late-new"


def test_paging_with_a_filter_keeps_the_filter(delivered):
    address, _, _ = delivered
    first = get_json(address, "/events?type=temperature&limit=2")
    rest = get_json(address, f"/events?type=temperature&limit=2&before={first['next']}")
    assert [e["event_id"] for e in first["events"] + rest["events"]] == ["t2", "t1", "t3"]
    assert "next" not in rest


def test_ndjson_lines_are_the_bodies_as_sent_oldest_first(delivered):
    address, _, _ = delivered
    headers, body = get(address, "/events.ndjson")
    assert headers["Content-Type"] == "application/x-ndjson"
    assert "Content-Length" not in headers and headers["Transfer-Encoding"] == "chunked"
    assert body.split(b"\n") == [BODIES[i] for i in reversed(NEWEST_FIRST)] + [b""]
    _, body = get(address, "/events.ndjson?device=room2&since=2027-01-15T07:06:00Z")
    assert body == BODIES["o1"] + b"\n" + BODIES["un"] + b"\n"


def test_csv_has_a_row_per_reading_oldest_first(delivered):
    address, _, _ = delivered
    headers, body = get(address, "/events.csv")
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == ["event_time", "received_at", "device", "name", "event_type", "value", "unit", "event_id"]
    got = [(r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows[1:]]
    assert got == [
        ("fridge1", "Fridge", "temperature", "4.8", "°C", "t3"),
        ("fridge1", "Fridge", "temperature", "5.0", "°C", "t1"),
        ("room2", "Room", "humidity", "21.5", "°C", "h1"),
        ("room2", "Room", "humidity", "40", "%", "h1"),
        ("room2", "Room", "objectPresent", "PRESENT", "", "o1"),
        ("fridge1", "Fridge", "touch", "touched", "", "tc"),
        ("fridge1", "Fridge", "networkStatus", "80", "%", "ns"),
        ("fridge1", "Fridge", "batteryStatus", "95", "%", "bs"),
        ("room2", "Room", "labelsChanged", "", "", "un"),
        ("fridge1", "Fridge", "temperature", "5.5", "°C", "t2"),
    ]
    assert rows[1][:2] == ["2027-01-15T06:45:00.000Z", "2027-01-15T08:00:00Z"]


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app) as address:
        post(address, delivery("=cmd", "temperature", "d", "2027-01-15T07:00:00Z", {"temperature": {"value": -3.5}},
                               {"name": "@SUM(A1)"}))
        _, body = get(address, "/events.csv")
    [row] = list(csv.reader(io.StringIO(body.decode())))[1:]
    assert (row[3], row[5], row[7]) == ("'@SUM(A1)", "-3.5", "'=cmd")


# /sensors after SENT, as the service answered it since /sensors came (schema 2 read it from the bodies).
SENSORS_OF_SENT = [
    {"device": "fridge1", "target": "projects/p/devices/fridge1", "name": "Fridge",
     "last_event_at": "2027-01-15T07:15:00Z", "readings": {
         "temperature": {"value": 5.5, "unit": "°C", "at": "2027-01-15T07:15:00Z"},
         "touch": {"value": "touched", "unit": None, "at": "2027-01-15T07:07:00Z"},
         "networkStatus": {"value": 80, "unit": "%", "at": "2027-01-15T07:08:00Z"},
         "batteryStatus": {"value": 95, "unit": "%", "at": "2027-01-15T07:09:00Z"}}},
    {"device": "room2", "target": "projects/p/devices/room2", "name": "Room",
     "last_event_at": "2027-01-15T07:10:00Z", "readings": {
         "temperature": {"value": 21.5, "unit": "°C", "at": "2027-01-15T07:05:00Z"},
         "humidity": {"value": 40, "unit": "%", "at": "2027-01-15T07:05:00Z"},
         "objectPresent": {"value": "PRESENT", "unit": None, "at": "2027-01-15T07:06:00Z"}}},
]


def test_sensors_has_the_newest_reading_of_each_kind(delivered):
    address, _, _ = delivered
    status, _, body = request(address, "GET", "/sensors", bearer())
    assert status == 200 and json.loads(body) == {"sensors": SENSORS_OF_SENT}
    assert b'"value": 80,' in body and b'"value": 5.5,' in body  # whole numbers as sent: 80, not 80.0


def test_series_gives_the_points_of_one_kind(delivered):
    _, app, _ = delivered
    assert app.store.series("fridge1", "temperature", NOW - 86400, NOW) == [
        (NOW - 4500, 4.8), (pytest.approx(NOW - 3600 + 0.123457), 5.0), (NOW - 2700, 5.5)]
    assert app.store.series("room2", "humidity", NOW - 86400, NOW) == [(NOW - 3300, 40)]
    assert app.store.series("room2", "temperature", NOW - 3000, NOW) == []


@pytest.mark.parametrize(("query", "needle"), [
    ("since=yesterday", "since must be an ISO 8601 time"),
    ("since=2027-01-15T07:00:00", "since must be an ISO 8601 time"),  # no zone: ambiguous
    ("until=1e9", "until must be an ISO 8601 time"),
    ("before=not-a-cursor!", "before must be the \"next\" value"),
    ("before=" + base64.urlsafe_b64encode(b"nan x").decode(), "before must be"),
    ("device=a/b", "device must be a device id"),
    ("device=", "device must be a device id"),
    ("limit=0", "limit must be"),
    ("colour=red", "unknown parameter 'colour'"),
])
def test_bad_parameters_are_400_naming_them(delivered, query, needle):
    address, _, _ = delivered
    for path in ("/events", "/events.ndjson", "/events.csv"):
        if path != "/events" and query.split("=")[0] in ("before", "limit"):
            continue  # the exports take every matching event
        assert needle in get_json(address, f"{path}?{query}", expect=400)["error"]


def test_the_new_routes_need_the_secret_and_head_works(delivered):
    address, _, _ = delivered
    for path in ("/events", "/events.ndjson", "/events.csv", "/sensors"):
        assert request(address, "GET", path)[0] == 401
        assert request(address, "GET", path, bearer("wrong-secret-123"))[0] == 403
    for path in ("/events", "/sensors"):
        status, headers, body = request(address, "HEAD", path, bearer())
        assert (status, body) == (200, b"") and int(headers["Content-Length"]) > 100
    for path in ("/events.ndjson", "/events.csv"):  # streamed: no length, and no export work (test_admission.py)
        status, headers, body = request(address, "HEAD", path, bearer())
        assert (status, body) == (200, b"") and "Content-Length" not in headers


ODD_DATA = [None, [], "x", {"temperature": None}, {"temperature": {"value": "hot"}}, {"temperature": {"value": True}},
            {"temperature": {"value": 3, "samples": [None, {"value": "x"}]}},
            {"humidity": {"temperature": 20}}, {"objectPresent": {"state": 1}}]


def test_odd_data_is_kept_and_listed_without_a_reading(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app) as address:
        for n, data in enumerate(ODD_DATA):
            event_type = next(iter(data)) if isinstance(data, dict) else "temperature"
            post(address, delivery(f"odd-{n}", event_type, "d", "not a time", data))
        events = get_json(address, "/events?limit=100")["events"]
        assert get(address, "/events.csv")[0]["Content-Type"].startswith("text/csv")
        assert get_json(address, "/sensors")["sensors"][0]["readings"] == {"temperature": {
            "value": 3, "unit": "°C", "at": "2027-01-15T08:00:00Z"}}
    readings = {e["event_id"]: e["reading"] for e in events}
    assert readings.pop("odd-6") == {"value": 3, "unit": "°C", "samples": []}
    assert set(readings.values()) == {None} and len(readings) == len(ODD_DATA) - 1
    assert {e["event_time"] for e in events} == {"2027-01-15T08:00:00.000Z"}  # the receive time


json_st = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                    max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(event_type=st.sampled_from([*READING_SPECS, "other"]), data=json_st,
       inner=st.dictionaries(st.sampled_from(["value", "temperature", "relativeHumidity", "state", "total",
                                              "percentage", "signalStrength", "ppm", "pascal", "samples"]), json_st))
def test_reading_extraction_never_fails_on_any_json(event_type, data, inner):
    for candidate in (data, {event_type: inner}):
        reading = reading_json(event_type, candidate)
        assert reading is None or isinstance(reading, (dict, list))
        json.dumps(reading)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_store_written_by_release_1_0_0_is_upgraded_in_place(make_app, tmp_path):
    shutil.copy(TEST_DATA / "store_release_1.0.0.db", tmp_path / "tcsync.sqlite3")
    app, _ = make_app(clock=lambda: NOW + 60)
    with served(app) as address:
        events = get_json(address, "/events")["events"]
        sensors = get_json(address, "/sensors")["sensors"]
        [run] = get_json(address, "/runs")["runs"]
    assert [(e["event_id"], e["device"], e["event_time"], e["reading"]) for e in events] == [
        ("v1-odd", None, "2027-01-15T08:00:00.000Z", None),  # no timestamp: when it arrived
        ("v1-temp", "fridge1", "2027-01-15T07:00:00.123Z", {
            "value": 5.25, "unit": "°C", "samples": [{"value": 5.25, "at": "2027-01-15T07:00:00.123456789Z"}]}),
        ("v1-hum", "room2", "2027-01-15T06:00:00.000Z", [{"value": 21.5, "unit": "°C"}, {"value": 40, "unit": "%"}]),
    ]
    assert [(s["device"], s["name"], sorted(s["readings"])) for s in sensors] == [
        ("fridge1", "Fridge", ["temperature"]), ("room2", None, ["humidity", "temperature"])]
    assert (run["trigger"], run["outcome"]) == ("timer", "interrupted")
    assert sqlite3.connect(tmp_path / "tcsync.sqlite3").execute("PRAGMA user_version").fetchone() == (6,)


def test_a_store_from_a_newer_release_is_refused(tmp_path):
    db = tmp_path / "tcsync.sqlite3"
    sqlite3.connect(db).execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        Store(str(db))
