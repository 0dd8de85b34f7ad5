"""Pins for what issue 20's mutation test found unpinned: each test fails on a plausible one-line bug there.

Through HTTP (the app on waitress) wherever it can be; every test that stores events runs on SQLite and PostgreSQL.
"""

import hashlib
import io
import json
import re
import sqlite3
import threading

import jwt
import pytest
from conftest import DT_SECRET, SERVICE_SECRET, bearer, hold_first_commit, request, served, wait_for

import tcsync.page
import tcsync.store
import tcsync.sync
import tcsync.web

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the clock of the deliveries' signatures and of their arrival


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    """Every test here runs on both stores, unless it marks itself SQLite only (it does not touch the store)."""
    return request.param


def sign(body: bytes, secret: str = DT_SECRET) -> str:
    """An X-Dt-Signature as the Data Connector makes it: HS256 over both checksums of these exact bytes."""
    return jwt.encode({"checksum": hashlib.sha1(body).hexdigest(), "checksum_sha256": hashlib.sha256(body).hexdigest(),
                       "iat": int(NOW), "exp": int(NOW) + 3600, "jti": "j"}, secret, algorithm="HS256")


def delivery(event_id: str, when: str, value: float = 5.0, device: str = "fridge1", labels=None) -> bytes:
    event = {"eventId": event_id, "targetName": f"projects/p/devices/{device}", "eventType": "temperature",
             "data": {"temperature": {"value": value, "updateTime": when}}, "timestamp": when}
    return json.dumps({"event": event, "labels": labels or {}, "metadata": {"deviceId": device}},
                      separators=(",", ":")).encode()


def post(address, body: bytes) -> tuple[int, dict]:
    status, _, answer = request(address, "POST", "/", {"X-Dt-Signature": sign(body)}, body)
    return status, json.loads(answer)


def deliver(address, *bodies: bytes) -> None:
    for body in bodies:
        status, answer = post(address, body)
        assert (status, answer["duplicate"]) == (200, False), answer


def get(address, path: str, headers=None) -> tuple[int, bytes]:
    status, _, body = request(address, "GET", path, bearer() if headers is None else headers)
    return status, body


def get_json(address, path: str) -> dict:
    status, body = get(address, path)
    assert status == 200, (path, body)
    return json.loads(body)


def listing(address, path: str) -> tuple[list[str], str | None]:
    """The event ids of one /events page and its next cursor (None if absent); nothing else is in the answer."""
    answer = get_json(address, path)
    assert set(answer) <= {"events", "next"}
    return [e["event_id"] for e in answer["events"]], answer.get("next")


def walk(address, path: str, most_pages: int) -> list[str]:
    """Follow next from path until an answer has none; bounded, since a bad cursor may loop."""
    seen, page = [], path
    for _ in range(most_pages):
        ids, after = listing(address, page)
        seen += ids
        if after is None:
            return seen
        page = f"{path}&before={after}"
    raise AssertionError(f"still a next after {most_pages} pages: {seen}")


@pytest.fixture
def app_on_waitress(make_app):
    """The service on waitress, its clocks at NOW; yields (address, app, log)."""
    app, log = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app, threads=12) as address:
        yield address, app, log


# 1. /events with exactly `limit` matching events -------------------------------------------------

def test_events_with_exactly_limit_matches_has_no_next_and_one_more_leads_to_the_last(app_on_waitress):
    address, _, _ = app_on_waitress
    deliver(address, *(delivery(f"p{n}", f"2027-01-15T07:00:0{n}Z", device="other" if n == 3 else "fridge1")
                       for n in range(4)))
    assert listing(address, "/events?limit=4") == (["p3", "p2", "p1", "p0"], None)
    assert listing(address, "/events?limit=3&device=fridge1") == (["p2", "p1", "p0"], None)
    assert listing(address, "/events?limit=1&device=other") == (["p3"], None)
    ids, after = listing(address, "/events?limit=3")  # one more than the limit: a next, leading to the last one
    assert ids == ["p3", "p2", "p1"] and after is not None
    assert listing(address, f"/events?limit=3&before={after}") == (["p0"], None)
    ids, after = listing(address, "/events?limit=2&device=fridge1")
    assert ids == ["p2", "p1"] and listing(address, f"/events?limit=2&device=fridge1&before={after}") == (["p0"], None)


# 2. Paging through events microseconds apart ------------------------------------------------------

# (eventId, fraction of 2026-05-07T04:11:12): ids out of step with time, ties in time (the vendor's nanoseconds
# beyond the microsecond are dropped), steps of one microsecond.
MICRO = [("m-k", "000001"), ("m-c", "000002"), ("m-a", "000002500"), ("m-z", "000002999"), ("m-b", "000003"),
         ("m-y", "000004"), ("m-d", "00001"), ("m-x", "000999"), ("m-e", "001"), ("m-w", "001000001")]
MICRO_OLDEST_FIRST = [i for i, _ in sorted(MICRO, key=lambda item: (int(item[1][:6].ljust(6, "0")), item[0]))]


def test_paging_events_microseconds_apart_gives_each_once_in_both_directions(app_on_waitress, monkeypatch):
    address, _, _ = app_on_waitress
    bodies = {event_id: delivery(event_id, f"2026-05-07T04:11:12.{fraction}Z") for event_id, fraction in MICRO}
    deliver(address, *bodies.values())
    newest_first = MICRO_OLDEST_FIRST[::-1]
    assert walk(address, "/events?limit=1", len(MICRO) + 2) == newest_first
    assert walk(address, "/events?limit=3", len(MICRO) + 2) == newest_first
    assert listing(address, "/events?limit=1000") == (newest_first, None)
    # The other direction: the exports read oldest first, batch after batch; a batch of one steps like limit=1.
    monkeypatch.setattr(tcsync.store, "EXPORT_BATCH", 1)
    status, export = get(address, "/events.ndjson")
    assert status == 200 and export == b"".join(bodies[i] + b"\n" for i in MICRO_OLDEST_FIRST)


# 3. A body with a bare CR, exported as NDJSON ------------------------------------------------------

def ndjson_case(event_id: str, when: str, sep: bytes, labels: dict) -> bytes:
    """A delivery with sep as the JSON whitespace after the event object (JSON allows CR, LF, tab, space there)."""
    body = delivery(event_id, when, labels=labels)
    assert body.count(b',"labels":') == 1
    return body.replace(b',"labels":', b"," + sep + b'"labels":')


def test_ndjson_keeps_one_line_per_event_whatever_line_breaks_the_bodies_hold(app_on_waitress):
    address, _, _ = app_on_waitress
    cases = [  # (id, the separator in the body, its labels); in time order
        ("cr", b"\r", {"name": "a\rb"}),  # a bare CR between tokens; in the label, the escape \r (JSON's only way)
        ("crlf", b"\r\n", {"name": "c\r\nd"}),
        ("lf", b"\n", {}),
        ("cr-cr", b"\r\r", {}),
        ("ls", b"", {"name": "e\u2028f\x85g"}),  # U+2028 and U+0085 raw in a string (JSON allows them)
        ("plain", b"", {}),
    ]
    bodies = [ndjson_case(event_id, f"2027-01-15T07:00:0{n}Z", sep, labels)
              for n, (event_id, sep, labels) in enumerate(cases)]
    bodies[4] = json.dumps(json.loads(bodies[4]), separators=(",", ":"), ensure_ascii=False).encode()
    assert b"\r" in bodies[0] and b"\n" not in bodies[0] and b"\\r" in bodies[0]
    deliver(address, *bodies)
    raw_cr_in_a_string = delivery("cr-in-string", "2027-01-15T07:00:09Z").replace(b'"fridge1"}', b'"fri\rdge1"}')
    assert post(address, raw_cr_in_a_string) == (400, {"error": "bad_json", "message": "the body is not JSON"})

    status, export = get(address, "/events.ndjson")
    assert status == 200
    # Each line is its body with every CR and LF byte a space (CRLF: two spaces); nothing else changes.
    expected = [ndjson_case(event_id, f"2027-01-15T07:00:0{n}Z", b" " * len(sep), labels)
                for n, (event_id, sep, labels) in enumerate(cases)]
    expected[4] = bodies[4]
    assert export == b"".join(line + b"\n" for line in expected)
    assert export.split(b"\n") == [*expected, b""]
    assert export.splitlines() == expected  # bytes: LF, CR and CRLF
    text_lines = io.TextIOWrapper(io.BytesIO(export), encoding="utf-8", newline=None).readlines()  # universal newlines
    assert len(text_lines) == len(cases)
    parsed = [json.loads(line) for line in text_lines]
    assert [d["event"]["eventId"] for d in parsed] == [event_id for event_id, _, _ in cases]
    assert [d["labels"].get("name") for d in parsed] == ["a\rb", "c\r\nd", None, None, "e\u2028f\x85g", None]


# 4. Exports longer than one internal batch ----------------------------------------------------------

# (eventId, second past 07:00, device), in the order they arrive: ties in time, ids out of step with arrival.
BATCHED = [("b-3", 0, "dev-a"), ("b-1", 0, "dev-b"), ("b-0", 0, "dev-a"), ("b-2", 0, "dev-a"), ("c-0", 1, "dev-b"),
           ("d-2", 2, "dev-a"), ("d-0", 2, "dev-b"), ("d-1", 2, "dev-a"), ("e-0", 3, "dev-a"), ("f-0", 4, "dev-b")]


@pytest.mark.parametrize("batch", [3, 1000])
def test_an_export_longer_than_a_batch_has_every_row_once_in_order(app_on_waitress, monkeypatch, batch):
    address, _, _ = app_on_waitress
    bodies = {event_id: delivery(event_id, f"2027-01-15T07:00:0{second}Z", value=4 + n / 10, device=device,
                                 labels={"name": device})
              for n, (event_id, second, device) in enumerate(BATCHED)}
    deliver(address, *bodies.values())
    monkeypatch.setattr(tcsync.store, "EXPORT_BATCH", batch)
    every = sorted(BATCHED, key=lambda item: (item[1], item[0]))
    for query, chosen in (("", every),  # 10 rows: batches of 3, 3, 3, 1
                          ("?device=dev-a", [i for i in every if i[2] == "dev-a"]),  # 6: two full batches, then none
                          ("?device=dev-b&since=2027-01-15T07:00:01Z", [i for i in every if i[0] in ("c-0", "d-0",
                                                                                                     "f-0")])):
        status, export = get(address, "/events.ndjson" + query)
        assert status == 200 and export == b"".join(bodies[event_id] + b"\n" for event_id, _, _ in chosen), query
        status, export = get(address, "/events.csv" + query)
        assert status == 200
        rows = export.decode().split("\r\n")
        assert rows[0] == "event_time,received_at,device,name,event_type,value,unit,event_id" and rows[-1] == ""
        assert rows[1:-1] == [
            f"2027-01-15T07:00:0{second}.000Z,2027-01-15T08:00:00Z,{device},{device},temperature,"
            f"{4 + [b[0] for b in BATCHED].index(event_id) / 10},°C,{event_id}" for event_id, second, device in chosen]


# 5. Three or more copies of one eventId in one writer batch -------------------------------------------

def test_copies_of_one_event_id_committed_in_one_batch_count_every_duplicate(app_on_waitress):
    address, app, _ = app_on_waitress
    deliver(address, delivery("warm-up", "2027-01-15T06:00:00Z"))  # a start's first delivery also prunes: done
    held, release, commits = hold_first_commit(app.store)  # the first commit waits until the copies queue behind it
    answers, threads = [], []

    def send(event_id: str, value: float):
        body = delivery(event_id, "2027-01-15T07:00:00Z", value=value)
        answers.append((event_id, *post(address, body)))

    def start(event_id: str, value: float):
        threads.append(threading.Thread(target=send, args=(event_id, value)))
        threads[-1].start()

    start("kept", 1.0)  # stored alone, its commit held
    wait_for(held.is_set)
    queued = [("new", 2.0), ("new", 2.1), ("kept", 1.1), ("new", 2.2), ("kept", 1.2), ("new", 2.3), ("kept", 1.3),
              ("once", 3.0)]
    for event_id, value in queued:
        start(event_id, value)
    wait_for(lambda: app.store._writes.qsize() == len(queued))
    release.set()
    for thread in threads:
        thread.join(30)
    assert len(commits) == 2  # the held one, then all eight copies together
    flags = {}
    for event_id, status, answer in answers:
        assert (status, answer["ok"], answer["event_id"]) == (200, True, event_id)
        flags.setdefault(event_id, []).append(answer["duplicate"])
    assert {event_id: sorted(f) for event_id, f in flags.items()} == {
        "kept": [False, True, True, True], "new": [False, True, True, True], "once": [False]}
    events = {e["event_id"]: e for e in get_json(address, "/events?limit=10")["events"]}
    assert {event_id: e["duplicates"] for event_id, e in events.items()} == {
        "kept": 3, "new": 3, "once": 0, "warm-up": 0}
    assert events["kept"]["reading"]["value"] == 1.0  # the first delivery is what is kept
    assert events["new"]["reading"]["value"] in (2.0, 2.1, 2.2, 2.3)


# 6. A failed write, then a good one: no longer failing, before any read ---------------------------------

REFUSE_SQLITE = ("CREATE TRIGGER refuse_bad BEFORE INSERT ON events WHEN NEW.event_id = 'bad-1'"
                 " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
REFUSE_POSTGRES = ("CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                   " IF NEW.event_id = 'bad-1' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$;"
                   " CREATE TRIGGER refuse_bad BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_bad()")


def refuse_bad_1(backend, request, tmp_path):
    """Another client of the database makes it refuse the event bad-1: a real write failure, nothing mocked."""
    if backend == "postgres":
        import psycopg

        with psycopg.connect(request.getfixturevalue("database_url"), autocommit=True) as db:
            db.execute(REFUSE_POSTGRES)
    else:
        db = sqlite3.connect(tmp_path / "tcsync.sqlite3", isolation_level=None)
        db.execute(REFUSE_SQLITE)
        db.close()


def state_of(page: bytes) -> str:
    return re.search(rb'id="state">([^<]*)</span>', page)[1].decode()


def test_a_good_write_after_a_failed_one_clears_the_failure_before_any_read(app_on_waitress, monkeypatch, backend,
                                                                            request, tmp_path):
    address, _, _ = app_on_waitress
    # Reads clear the failure too: the page may read nothing between the writes and its badge. Its reads are cached
    # (SHARED_STATE_SECS, PAGE_DATA_SECS); here for longer than the test takes, so that no read can hide the writes.
    for module, name in ((tcsync.store, "SHARED_STATE_SECS"), (tcsync.sync, "SHARED_STATE_SECS"),
                         (tcsync.page, "PAGE_DATA_SECS"), (tcsync.web, "PAGE_DATA_SECS")):
        monkeypatch.setattr(module, name, 3600)
    good = delivery("good-1", "2027-01-15T07:00:00Z")
    idle = {"status": "idle", "last_success_at": None, "last_run": None}
    deliver(address, good)
    status, page = get(address, "/", {})
    assert (status, state_of(page)) == (200, "ok")  # the page has read and cached what it shows
    refuse_bad_1(backend, request, tmp_path)

    status, answer = post(address, delivery("bad-1", "2027-01-15T07:01:00Z"))
    assert (status, answer["error"]) == (503, "store_unavailable")
    status, page = get(address, "/", {})
    assert (status, state_of(page)) == (200, "database failing") and b"The database is failing;" in page
    assert get(address, "/healthz", {}) == (200, json.dumps(idle).encode())  # it says nothing of the store

    assert post(address, good) == (200, {"ok": True, "duplicate": True, "event_id": "good-1"})  # a good write
    status, page = get(address, "/", {})
    assert (status, state_of(page)) == (200, "ok") and b"The database is failing" not in page
    assert get(address, "/healthz", {}) == (200, json.dumps(idle).encode())


# 7. A reading exactly on the range's edge ----------------------------------------------------------------------

def test_readings_exactly_on_the_ranges_edges_are_inside(make_app):
    app, _ = make_app(verify_clock=lambda: NOW, clock=lambda: NOW, DT_TEMPERATURE_RANGE="2..8")
    readings = {"edge-high": [7.5, 8.0, 8.0], "edge-low": [2.5, 2.0, 2.0], "just-out": [8.0, 8.0, 8.01]}
    with served(app) as address:
        for device, values in readings.items():
            deliver(address, *(delivery(f"{device}-{n}", f"2027-01-15T07:{10 * n:02}:00Z", value, device,
                                        {"name": device}) for n, value in enumerate(values)))
        status, page = get(address, "/", {})
    assert status == 200 and state_of(page) == "ok"
    card = r'<article class="card([^"]*)"><h3><bdi>([^<]*)</bdi></h3>(.*?)</article>'
    cards = {name: (cls, body) for cls, name, body in re.findall(card, page.decode(), re.S)}
    assert sorted(cards) == ["edge-high", "edge-low", "just-out"]
    for name in ("edge-high", "edge-low"):
        cls, body = cards[name]
        assert cls == "" and "out of range" not in body and "Back inside" not in body
        assert 'class="dot out"' not in body and 'class="dot"' in body
    cls, body = cards["just-out"]  # the control: a hundredth over is out, and only its newest reading
    assert cls == " out" and "outside 2\N{EN DASH}8 °C since" in body and body.count('class="dot out"') == 1
    header = page.decode().split("<dl>")[0]
    assert header.count("out of range") == 1
    assert "<strong><bdi>just-out</bdi></strong> is outside 2\N{EN DASH}8 °C" in header


# 8. A successful /check_login is not a successful sync ----------------------------------------------------------

def test_a_successful_check_login_is_not_a_successful_sync(make_app, monkeypatch):
    monkeypatch.setattr(tcsync.sync, "SHARED_STATE_SECS", 0)  # /healthz and the page read the runs table every time
    app, _ = make_app()
    with served(app) as address:
        status, body = get(address, "/check_login")
        assert status == 200 and b"No API errors returned!" in body and body.endswith(b"\ncheck ok\n")
        [run] = get_json(address, "/runs")["runs"]
        assert (run["trigger"], run["outcome"]) == ("check", "ok")
        healthz = {"status": "idle", "last_success_at": None, "last_run": None}  # a check is no sync: not its run
        assert get(address, "/healthz", {}) == (200, json.dumps(healthz).encode())
        for headers in ({}, bearer()):
            status, page = get(address, "/", headers)
            assert (status, state_of(page)) == (200, "ok")
            assert "<dt>Last successful sync</dt><dd>none yet</dd>" in page.decode()
            assert "Ready: no sync has run yet." in page.decode()
    app, _ = make_app()  # a process started afterwards, on the same store
    with served(app) as address:
        assert json.loads(get(address, "/healthz", {})[1])["last_success_at"] is None
        assert "<dd>none yet</dd>" in get(address, "/", {})[1].decode()
        assert get(address, "/update")[0] == 200  # the control: a sync is a success
        [sync, _] = get_json(address, "/runs")["runs"]
        assert json.loads(get(address, "/healthz", {})[1])["last_success_at"] == sync["finished_at"]
        assert "<dd>none yet</dd>" not in get(address, "/", {})[1].decode()


# 9. DT_SIGNATURE_SECRET_PREVIOUS is redacted like the current secret --------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("setting", ["DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_PREVIOUS"])
def test_both_signature_secrets_are_redacted_from_logs_and_answers(make_app, nightscout, setting):
    planted = "planted-dt-secret-5d0c"
    other = "other-dt-secret-9e4a"
    app, log = make_app(DT_SIGNATURE_SECRET=planted if setting == "DT_SIGNATURE_SECRET" else other,
                        DT_SIGNATURE_SECRET_PREVIOUS=planted if setting != "DT_SIGNATURE_SECRET" else other)
    # An upstream that echoes what it was sent into its error (the value gets there however it may).
    nightscout._route = lambda *_: (500, {"message": f"no such collection {planted}"}, {})
    with served(app) as address:
        assert get(address, f"/x/{planted}/y", {})[0] == 404
        status, answer = get(address, "/update")
        assert status == 502
        assert answer.endswith(b'\nsync failed: ApiException: Nightscout last_uploaded_entry 500 response:'
                               b' {"message": "no such collection [redacted]"} (HTTP 500)\n')
        [run] = get_json(address, "/runs")["runs"]
        page = get(address, "/")[1]
    assert run["error"] == ('ApiException: Nightscout last_uploaded_entry 500 response:'
                            ' {"message": "no such collection [redacted]"} (HTTP 500)')
    assert "no such collection [redacted]" in page.decode()
    [line] = [line for line in log.events("request") if "status=404" in line]
    assert " path=/x/[redacted]/y status=404 " in line
    [finished] = log.events("run.finished")
    assert "no such collection [redacted]" in finished
    everything = answer + page + json.dumps(run).encode() + "".join(log).encode()
    assert planted.encode() not in everything


# 10. Authorization: Bearer with more than one space -------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite"])
def test_bearer_with_several_spaces_before_the_token_is_accepted(make_app):
    app, _ = make_app()
    with served(app) as address:
        for spaces in (1, 2, 5):
            assert get(address, "/runs", {"Authorization": "Bearer" + " " * spaces + SERVICE_SECRET}) == (
                200, b'{"runs": []}')
            status, body = get(address, "/runs", {"Authorization": "Bearer" + " " * spaces + "wrong-secret-123"})
            assert (status, json.loads(body)) == (403, {"error": "The secret is wrong."})
