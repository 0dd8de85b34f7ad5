"""Readings stored as numbers (schema 5): what each event measures goes into its own columns of the event's row at
insert (value, value2, state), and the page, the charts and /sensors read them there. The upgrades from schema 2 and
from schema 4 (readings in a table of their own), duplicates, pruning, events timed after now, and /events pages and
exports bounded by bytes. Every test runs on SQLite and PostgreSQL."""

import json
import re
import sqlite3
import threading

import pytest
from conftest import bearer, hold_first_commit, request, served, stored, wait_for
from test_events import BODIES, NEWEST_FIRST, NOW, SENSORS_OF_SENT, SENT, delivery, get, get_json, post

import tcsync.schema
import tcsync.store
from tcsync.readings import device_of, event_time_of

READINGS_OF_SENT = [  # (event_id, device, value, value2, state): every event of SENT that measures something
    ("bs", "fridge1", 95.0, None, None),  # battery %
    ("h1", "room2", 21.5, 40.0, None),  # a humidity event: two readings, its temperature first
    ("ns", "fridge1", 80.0, None, None),
    ("o1", "room2", None, None, "PRESENT"),  # a state: text, no number
    ("t1", "fridge1", 5.0, None, None),
    ("t2", "fridge1", 5.5, None, None),
    ("t3", "fridge1", 4.8, None, None),
    ("tc", "fridge1", None, None, "touched"),
]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


def public_page(address) -> bytes:
    status, _, page = request(address, "GET", "/")
    assert status == 200
    return page


def readings_table(app) -> list[tuple]:
    return sorted(stored(app, "SELECT event_id, device, value, value2, state FROM events"
                              " WHERE value IS NOT NULL OR state IS NOT NULL"))


def test_each_events_readings_are_stored_as_numbers_states_as_text_once_for_duplicates(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app) as address:
        for event_id, *_ in SENT:
            post(address, BODIES[event_id])
        for event_id in ("t1", "h1", "t1", "o1"):  # duplicates: counted, their readings not stored again
            assert post(address, BODIES[event_id])["duplicate"]
    assert readings_table(app) == READINGS_OF_SENT
    assert sorted(stored(app, "SELECT event_id, name FROM events WHERE event_id IN ('t1', 'h1', 'un')")) == [
        ("h1", "Room"), ("t1", "Fridge"), ("un", "Room")]


def test_copies_of_a_new_event_in_one_batch_store_the_kept_ones_readings_once(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app, threads=8) as address:
        post(address, delivery("warm-up", "temperature", "fridge1", "2027-01-15T06:00:00Z",
                               {"temperature": {"value": 3.0}}))  # a start's first delivery also prunes: done
        held, release, commits = hold_first_commit(app.store)  # the first commit waits for the copies behind it
        copies = [("first", 1.0), ("new", 2.0), ("new", 2.1), ("first", 1.1), ("new", 2.2)]
        threads = [threading.Thread(target=post, args=(address, delivery(
            event_id, "humidity", "room2", "2027-01-15T07:00:00Z",
            {"humidity": {"temperature": value, "relativeHumidity": value * 10}}))) for event_id, value in copies]
        threads[0].start()
        wait_for(held.is_set)
        for thread in threads[1:]:
            thread.start()
        wait_for(lambda: app.store._writes.qsize() == len(copies) - 1)
        release.set()
        for thread in threads:
            thread.join(30)
        events = {e["event_id"]: e for e in get_json(address, "/events?limit=10")["events"]}
    assert len(commits) == 2 and (events["first"]["duplicates"], events["new"]["duplicates"]) == (1, 2)
    kept = events["new"]["reading"][0]["value"]  # whichever copy was kept: its readings, once
    assert kept in (2.0, 2.1, 2.2)
    assert [row for row in readings_table(app) if row[0] in ("first", "new")] == [
        ("first", "room2", 1.0, 10.0, None), ("new", "room2", kept, pytest.approx(kept * 10), None)]


def test_pruning_an_event_removes_its_readings(make_app, monkeypatch):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    for n, event_id in enumerate(BODIES):  # t1, h1 and o1 arrived 31 days ago, the others in the last minutes
        received_at = NOW - 31 * 86400 if event_id in ("t1", "h1", "o1") else NOW - 100 + n
        app.store.add_event(json.loads(BODIES[event_id])["event"], received_at, BODIES[event_id])
    app.store.prune_events(NOW)
    assert readings_table(app) == [row for row in READINGS_OF_SENT if row[0] not in ("t1", "h1", "o1")]
    monkeypatch.setattr(tcsync.store, "KEEP_EVENTS", 2)
    app.store.prune_events(NOW)  # the 2 that arrived last are kept: t2 and t3
    assert readings_table(app) == [row for row in READINGS_OF_SENT if row[0] in ("t2", "t3")]
    assert sorted(row[0] for row in stored(app, "SELECT event_id FROM events")) == ["t2", "t3"]


def test_a_state_too_long_for_an_index_is_kept_and_listed_but_not_read_as_a_reading(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    states = {"short": "NOT_PRESENT", "at-bound": "P" * 200, "over": "P" * 3000}  # PostgreSQL's index: ~2 700 bytes
    bodies = {event_id: delivery(event_id, "objectPresent", f"door-{event_id}", "2027-01-15T07:00:00Z",
                                 {"objectPresent": {"state": state}}) for event_id, state in states.items()}
    with served(app) as address:
        for body in bodies.values():
            assert post(address, body) == {"ok": True, "duplicate": False, "event_id": json.loads(body)["event"][
                "eventId"]}
        sensors = {s["device"]: s["readings"] for s in get_json(address, "/sensors")["sensors"]}
        listed = {e["event_id"]: e["data"] for e in get_json(address, "/events")["events"]}
    assert sensors == {"door-short": {"objectPresent": {"value": "NOT_PRESENT", "unit": None,
                                                        "at": "2027-01-15T07:00:00Z"}},
                       "door-at-bound": {"objectPresent": {"value": "P" * 200, "unit": None,
                                                           "at": "2027-01-15T07:00:00Z"}},
                       "door-over": {}}
    assert listed == {event_id: {"objectPresent": {"state": state}} for event_id, state in states.items()}
    assert readings_table(app) == [("at-bound", "door-at-bound", None, None, "P" * 200),
                                   ("short", "door-short", None, None, "NOT_PRESENT")]


# -- the newest reading is never from the future --------------------------------------------------------------

def reading_line(page: str, kind: str) -> str:
    return re.search(rf'<li><span class="kind">{kind}</span> <strong>([^<]*)</strong>', page)[1]


def test_an_event_timed_after_now_is_listed_but_never_the_newest_reading(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW, DT_TEMPERATURE_RANGE="2..8")
    sent = [("warm-0700", "2027-01-15T07:00:00Z", 12.0), ("warm-0730", "2027-01-15T07:30:00Z", 12.5),
            ("ahead-2min", "2027-01-15T08:02:00Z", 12.7),  # inside the slack for a clock running ahead: it counts
            ("ahead-6h", "2027-01-15T14:00:00Z", 4.5)]  # later than the slack: kept and listed, never shown
    bodies = {event_id: delivery(event_id, "temperature", "fridge1", when, {"temperature": {"value": value}},
                                 {"name": "Fridge"}) for event_id, when, value in sent}
    bodies["year-2030"] = delivery("year-2030", "temperature", "fridge1", "2030-01-01T00:00:00Z",
                                   {"temperature": {"value": 4.5}}, {"name": "Wrong name"})
    with served(app) as address:
        for event_id, *_ in sent:
            post(address, bodies[event_id])
        # straight into the store: earlier releases kept any time (the receiver is to refuse this far ahead)
        app.store.add_event(json.loads(bodies["year-2030"])["event"], NOW, bodies["year-2030"])
        [sensor] = get_json(address, "/sensors")["sensors"]
        page = public_page(address).decode()
        listed = [e["event_id"] for e in get_json(address, "/events")["events"]]
        exported = get(address, "/events.ndjson")[1]
    assert sensor == {"device": "fridge1", "target": "projects/p/devices/fridge1", "name": "Fridge",
                      "last_event_at": "2027-01-15T08:02:00Z",
                      "readings": {"temperature": {"value": 12.7, "unit": "°C", "at": "2027-01-15T08:02:00Z"}}}
    assert app.store.series("fridge1", "temperature", NOW - 86400, NOW) == [
        (NOW - 3600, 12.0), (NOW - 1800, 12.5), (NOW + 120, 12.7)]
    assert reading_line(page, "Temperature") == "12.7 °C" and "Wrong name" not in page
    assert "<strong><bdi>Fridge</bdi></strong> is outside 2\N{EN DASH}8 °C since" in page and ": 12.7 °C now." in page
    assert 'aria-label="Temperature from 12.0 to 12.7 °C"' in page and "4.5" not in page
    assert re.search(r'<polyline class="line" points="[^"]* 1440\.0,[0-9.]+"/>', page)  # 2 min ahead: at the edge
    assert listed == ["year-2030", "ahead-6h", "ahead-2min", "warm-0730", "warm-0700"]
    assert exported == b"".join(bodies[i] + b"\n" for i in reversed(listed))


# -- the upgrades from schemas 2 and 4 -------------------------------------------------------------------------

# Schema 2 as the service wrote it (tcsync/store.py before readings had their table), kept here to make one.
SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS runs (id {id}, trigger TEXT NOT NULL, started_at {time} NOT NULL, finished_at {time},
    outcome TEXT NOT NULL, uploaded INTEGER NOT NULL DEFAULT 0, last_event_seq {bigint}, error TEXT, log_tail TEXT);
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, event_type TEXT NOT NULL, target TEXT, timestamp TEXT,
    received_at {time} NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0, body {bytes} NOT NULL, device TEXT,
    event_time {time} NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_started_at ON runs (started_at);
CREATE INDEX IF NOT EXISTS events_by_received_at ON events (received_at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time, event_id);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, event_type, event_time)
"""
# Schema 4 added a name to events and kept readings in a table of their own (and the alerts' tables, made anew).
SCHEMA_4_MORE = """
ALTER TABLE events ADD COLUMN name TEXT;
CREATE TABLE readings (event_id TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE, kind TEXT NOT NULL,
    device TEXT, value {number}, text TEXT, unit TEXT, event_time {time} NOT NULL, PRIMARY KEY (event_id, kind));
CREATE INDEX readings_by_device ON readings (device, kind, event_time);
CREATE TABLE announcements (identifier TEXT PRIMARY KEY, created_at {time} NOT NULL, notes TEXT NOT NULL,
    claimed_until {time}, sent_at {time}, dropped TEXT, attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE alerts (identifier TEXT PRIMARY KEY, kind TEXT NOT NULL, device TEXT, name TEXT, since {time} NOT NULL,
    started_at {time} NOT NULL, value {time}, unit TEXT, detail TEXT, ended_at {time}, end_value {time});
INSERT INTO alerts VALUES ('ended0', 'silent', 'fridge1', 'Fridge', 10.0, 70.0, NULL, NULL, '', 80.0, NULL);
INSERT INTO alerts VALUES ('ended1', 'battery_low', 'fridge1', 'Fridge', 5.0, 5.0, 9, '%', '', 50.0, 25)
"""
# Two announcements of one moment (before schema 6, nothing kept them apart) and one a little later: schema 6 gives
# each its own millisecond, in the order of their identifiers.
ANNOUNCEMENTS_4 = ("INSERT INTO announcements (identifier, created_at, notes)"
                   " VALUES ('b', 100.0, 'x'), ('a', 100.0, 'y'), ('c', 100.0004, 'z')")
# A body kept before the receiver refused numbers beyond a float's reach: it has no reading, and breaks nothing.
HUGE = delivery("huge", "temperature", "odd1", "2027-01-15T07:20:00Z", {"temperature": {"value": 10 ** 400}})


def schema_2_rows() -> list[tuple]:
    """SENT and HUGE as schema 2 kept them: t1 and h1 delivered twice."""
    rows = []
    for event_id, body in [*BODIES.items(), ("huge", HUGE)]:
        event = json.loads(body)["event"]
        rows.append((event_id, event["eventType"], event["targetName"], event["timestamp"], NOW,
                     int(event_id in ("t1", "h1")), body, device_of(event["targetName"]),
                     event_time_of(event["timestamp"], NOW)))
    return rows


def make_old_store(backend, version, request, path) -> None:
    """A store of schema 2, or of schema 4 with a readings table (its rows: one reading, to be dropped)."""
    statements = (SCHEMA_2 + (";" + SCHEMA_4_MORE if version == 4 else "")).format(
        **tcsync.schema.COLUMN_TYPES[backend]).split(";")
    insert = ("INSERT INTO events (event_id, event_type, target, timestamp, received_at, duplicates, body, device,"
              " event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
    reading = "INSERT INTO readings VALUES ('t1', 'temperature', 'fridge1', 5.0, NULL, '°C', 0)"
    if backend == "postgres":
        import psycopg

        with psycopg.connect(request.getfixturevalue("database_url"), autocommit=True) as db:
            for statement in statements:
                db.execute(statement)
            db.execute(f"CREATE TABLE tcsync_schema (version INTEGER NOT NULL); INSERT INTO tcsync_schema VALUES"
                       f" ({version})")
            db.cursor().executemany(insert.replace("?", "%s"), schema_2_rows())
            if version == 4:
                db.execute(reading)
                db.execute(ANNOUNCEMENTS_4)
    else:
        db = sqlite3.connect(path, isolation_level=None)
        for statement in statements:
            db.execute(statement)
        db.executemany(insert, schema_2_rows())
        if version == 4:
            db.execute(reading)
            db.execute(ANNOUNCEMENTS_4)
        db.execute(f"PRAGMA user_version={version}")
        db.close()


@pytest.mark.parametrize("version", [2, 4])
def test_an_older_store_gets_its_readings_and_shows_what_a_fresh_one_shows(make_app, backend, version, request,
                                                                           tmp_path, monkeypatch):
    monkeypatch.setattr(tcsync.store, "BACKFILL_BATCH", 4)  # several batches
    make_old_store(backend, version, request, tmp_path / "tcsync.sqlite3")
    upgraded, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    fresh_store = {"DATABASE_URL": request.getfixturevalue("pg_server").create_database()} \
        if backend == "postgres" else {"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "fresh.sqlite3")}
    fresh, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW, **fresh_store)
    answers = []
    for app in (upgraded, fresh):
        with served(app) as address:
            if app is fresh:
                for event_id in [*BODIES, "t1", "h1"]:
                    post(address, BODIES[event_id])
                app.store.add_event(json.loads(HUGE)["event"], NOW, HUGE)
            answers.append((get_json(address, "/sensors")["sensors"], public_page(address),
                            get(address, "/events?device=fridge1")[1], get(address, "/events?device=room2")[1]))
    assert answers[0] == answers[1]
    assert answers[0][0] == [SENSORS_OF_SENT[0], {
        "device": "odd1", "target": "projects/p/devices/odd1", "name": None, "last_event_at": "2027-01-15T07:20:00Z",
        "readings": {}}, SENSORS_OF_SENT[1]]
    assert readings_table(upgraded) == READINGS_OF_SENT
    assert b"<h3><bdi>Fridge</bdi></h3>" in answers[0][1] and b"<h3><bdi>Room</bdi></h3>" in answers[0][1]
    tables = "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name LIKE '%%read%%'"
    if backend == "sqlite":
        assert sqlite3.connect(tmp_path / "tcsync.sqlite3").execute("PRAGMA user_version").fetchone() == (6,)
    else:
        assert stored(upgraded, "SELECT version FROM tcsync_schema") == [(6,)]
        tables = "SELECT relname FROM pg_class WHERE relname LIKE '%%read%%'"
    if version == 4:
        assert sorted(stored(upgraded, "SELECT identifier, created_at, last_error FROM announcements")) == [
            ("a", 100.0, None), ("b", 100.001, None), ("c", 100.002, None)]
        # before 6 both ends were queued as they happened: what each family was told is read from that
        assert sorted(stored(upgraded, "SELECT identifier, told, told_start, told_start_at, told_end, told_end_at"
                                       " FROM alerts")) == [
            ("ended0", "end", "ended0-start", 70.0, "ended0-end", 80.0),
            ("ended1", "end", "ended1-start", 5.0, "ended1-end", 50.0)]
    assert sorted(stored(upgraded, tables)) == [("events_readings",)]  # the readings table and its index are gone


# -- pages and exports bounded by bytes -------------------------------------------------------------------------

def test_an_events_page_holds_at_most_page_bytes_of_bodies_and_next_continues_exactly(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    bodies = {f"big-{n:02}": delivery(f"big-{n:02}", "temperature", "fridge1", f"2027-01-15T07:{n:02}:00Z",
                                      {"temperature": {"value": 5.0}}, {"name": "Fridge", "note": "x" * 59_000})
              for n in range(40)}  # 40 of 60 KB: 2.3 MiB
    size = len(bodies["big-00"])
    assert {len(body) for body in bodies.values()} == {size} and 59_000 < size < 60_000
    per_page = tcsync.store.PAGE_BYTES // size
    with served(app) as address:
        for body in bodies.values():
            post(address, body)
        newest_first, path, pages = [], "/events?limit=1000", []
        while path:
            status, _, answer = request(address, "GET", path, bearer())
            page = json.loads(answer)
            assert status == 200 and len(answer) < tcsync.store.PAGE_BYTES + 40_000
            pages.append(len(page["events"]))
            newest_first += [e["event_id"] for e in page["events"]]
            path = f"/events?limit=1000&before={page['next']}" if "next" in page else None
        exported = get(address, "/events.ndjson")[1]
    assert pages == [per_page, per_page, 40 - 2 * per_page] and per_page == 17
    assert newest_first == sorted(bodies, reverse=True)
    assert exported == b"".join(bodies[i] + b"\n" for i in sorted(bodies))


def test_one_event_over_the_bound_is_still_a_page_and_exports_read_a_batch_per_bound(make_app, monkeypatch):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app) as address:
        for event_id, *_ in SENT:
            post(address, BODIES[event_id])
        monkeypatch.setattr(tcsync.store, "PAGE_BYTES", 1)  # every body is over it: one event per page, per batch
        first = get_json(address, "/events?limit=1000")
        assert [e["event_id"] for e in first["events"]] == ["t2"] and "next" in first
        assert get(address, "/events.ndjson")[1] == b"".join(BODIES[i] + b"\n" for i in reversed(NEWEST_FIRST))
        rows = get(address, "/events.csv?device=room2")[1].decode().split("\r\n")[1:-1]
    assert [row.split(",")[-1] for row in rows] == ["h1", "h1", "o1", "un"]

