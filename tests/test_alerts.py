"""Alerts through the real service: signed deliveries with their own event times, the fake Nightscout recording
announcements, the fake Tandem failing; /alerts and the page. The clock is the app's, moved by hand."""

import dataclasses
import hashlib
import html
import json
import time
import zoneinfo

import jwt
import pytest
from conftest import DT_SECRET, bearer, call, request, served, wait_for

from tcsync.alertbook import Alert
from tcsync.alerts import onset, recovery
from tcsync.notes import bounded_note, duration, end_notes, start_notes
from tcsync.notes import clock as clock_words
from tcsync.plain import safe_name
from tcsync.readings import iso

QUIET = {"SENSOR_SILENT_MINS": "1440"}  # no silences in the tests about other alerts
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, 03:00 in New York (the tests' TIMEZONE_NAME), a Friday
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
# A name label as anyone with access to the DT Studio project may set it: markup, a link, a newline, a terminal
# colour, a right-to-left override, Markdown emphasis and heading, an entity; 60 000 characters in all.
HOSTILE = ("<script>alert(1)</script><img src=x onerror=alert(1)>[x](javascript:alert(1))\n\x1b[31m\u202e*bold*"
           "# head&amp;")
HOSTILE_NAME = HOSTILE + "x" * (60_000 - len(HOSTILE))
DANGEROUS = "<>[]()`*_#&\n\x1b\u202e"


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def body_of(event_id, device, event_type, data, at, labels=None) -> bytes:
    event = {"eventId": event_id, "targetName": f"projects/p/devices/{device}", "eventType": event_type,
             "data": data, "timestamp": iso(at, "milliseconds")}
    return json.dumps({"event": event, "labels": labels if labels is not None else {"name": "Insulin fridge"}}).encode()


def sign(body: bytes) -> str:
    now = time.time()
    return jwt.encode({"checksum_sha256": hashlib.sha256(body).hexdigest(), "iat": int(now), "exp": int(now) + 3600},
                      DT_SECRET, algorithm="HS256")


def deliver(app, body: bytes) -> dict:
    status, _, answer = call(app, "POST", "/", headers={"X-Dt-Signature": sign(body)}, body=body)
    assert status == 200, answer
    return json.loads(answer)


def temperature(app, device, minute, value, labels=None, event_id=None):
    """A temperature reading timed T0 + minute minutes."""
    deliver(app, body_of(event_id or f"{device}-{minute}", device, "temperature", {"temperature": {"value": value}},
                         T0 + minute * 60, labels))


def announcements(nightscout) -> list[dict]:
    return [doc for doc in nightscout.treatments if doc.get("eventType") == "Announcement"]


def sent(nightscout) -> list[dict]:
    """Every announcement POSTed, re-sends included."""
    return [doc for name, doc in nightscout.posted if name == "treatments" and doc.get("eventType") == "Announcement"]


def alerts_of(app, secret=False):
    status, _, body = call(app, "GET", "/alerts", headers=bearer() if secret else {})
    return status, json.loads(body)


# -- the pure parts ---------------------------------------------------------------------------------------------

def test_onset_counts_the_delay_by_the_readings_own_times():
    out = lambda v: v > 8  # noqa: E731
    assert onset([(0, 5), (60, 9), (600, 9.5)], out, 900) is None  # out for 9 minutes
    assert onset([(0, 5), (60, 9), (600, 9.5), (960, 9.4)], out, 900) == (60, 960, 9.4)
    assert onset([(0, 9), (60, 5)], out, 0) is None  # the newest is inside
    assert onset([(0, 5), (60, 9)], out, 0) == (60, 60, 9)  # 0: at the first reading outside


def test_recovery_is_the_first_reading_after_the_last_one_outside():
    out = lambda v: v > 8  # noqa: E731
    assert recovery([(60, 9), (120, 5), (180, 9)], out, 60) is None  # the newest is outside again
    assert recovery([(60, 9), (120, 5), (180, 9), (240, 5), (300, 4)], out, 60) == (240, 5)
    assert recovery([(0, 5), (60, 9)], out, 60) is None


def test_durations_read_as_people_say_them():
    assert [duration(s) for s in (0, 25 * 60, 3900, 3600, 49 * 3600)] == ["0 min", "25 min", "1 h 5 min", "1 h",
                                                                         "2 days 1 h"]


# -- the fridge, end to end -------------------------------------------------------------------------------------

def test_a_warm_fridge_is_announced_once_when_it_starts_and_once_when_it_ends(make_app, nightscout):
    clock = Clock(T0 + 7200)
    app, log = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", **QUIET)
    for minute, value in ((0, 4.5), (5, 5.0), (10, 9.4), (20, 9.6)):  # out for 10 minutes: under the 15 of the delay
        temperature(app, "fridge1", minute, value)
    app.alerts.check()
    assert (alerts_of(app), sent(nightscout)) == ((200, {"alerts": []}), [])
    temperature(app, "fridge1", 25, 9.8)  # out for 15 minutes: an alert
    assert app.alerts.send_pending() == 1
    [start] = sent(nightscout)
    assert start["notes"] == "Insulin fridge 9.8 °C: above 8 °C since 03:10"  # New York time
    assert (start["eventType"], start["isAnnouncement"], start["enteredBy"]) == ("Announcement", True, "tcsync_wsgi")
    assert start["created_at"] == "2027-01-15T08:25:00.000Z"  # when it became an alert: 15 minutes outside
    assert start["identifier"].startswith("tcsync-") and start["identifier"].endswith("-start")
    status, document = alerts_of(app)
    assert status == 503 and [(a["kind"], a["device"], a["name"], a["since"], a["value"], a["unit"])
                               for a in document["alerts"]] == [
        ("out_of_range", "fridge1", "Insulin fridge", "2027-01-15T08:10:00Z", 9.8, "°C")]
    temperature(app, "fridge1", 30, 9.9)  # still out: nothing new
    app.alerts.check()
    assert len(sent(nightscout)) == 1 and len(log.events("alert.started")) == 1

    app.store.close()  # a restart mid-alert sends nothing new
    app, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", **QUIET)
    app.alerts.check()
    assert len(sent(nightscout)) == 1 and alerts_of(app)[0] == 503
    temperature(app, "fridge1", 75, 5.1)  # back inside at 04:15, out for 1 h 5 min
    temperature(app, "fridge1", 80, 4.9)
    app.alerts.check()
    assert len(sent(nightscout)) == 1 and alerts_of(app) == (200, {"alerts": []})  # ended, not yet told: 5 min fine
    temperature(app, "fridge1", 90, 4.8)  # fine for ALERT_AFTER_MINS (15): now its end is told
    app.alerts.check()
    assert [doc["notes"] for doc in sent(nightscout)] == [
        "Insulin fridge 9.8 °C: above 8 °C since 03:10",
        "Insulin fridge back in range: 5.1 °C at 04:15, out of range for 1 h 5 min"]
    assert sent(nightscout)[1]["created_at"] == "2027-01-15T09:30:00.000Z"  # when it was told: fine 15 min
    assert alerts_of(app) == (200, {"alerts": []})
    assert len(announcements(nightscout)) == 2


def test_a_late_old_reading_neither_opens_nor_closes_what_newer_readings_contradict(make_app, nightscout):
    app, _ = make_app(clock=Clock(T0 + 7200), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    temperature(app, "fridge1", 0, 5.0)
    temperature(app, "fridge1", 30, 5.2)
    temperature(app, "fridge1", 10, 12.0)  # late, and older than a reading inside: nothing opens
    assert alerts_of(app)[0] == 200
    temperature(app, "fridge1", 40, 11.0)  # now it is out
    temperature(app, "fridge1", 60, 11.5)
    temperature(app, "fridge1", 50, 4.0)  # late, inside, but older than the newest (out): nothing closes
    app.alerts.check()
    status, document = alerts_of(app)
    assert status == 503 and document["alerts"][0]["since"] == "2027-01-15T08:40:00Z"
    assert [doc["notes"] for doc in sent(nightscout)] == ["Insulin fridge 11.0 °C: above 8 °C since 03:40"]


def test_each_device_is_judged_by_its_own_label_range_and_a_room_is_no_fridge(make_app, nightscout):
    app, _ = make_app(clock=Clock(T0 + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    freezer = {"name": "Freezer", "temperature_range": "-25..-15"}
    temperature(app, "freezer1", 0, -18.0, freezer)  # inside its own range, far outside 2..8
    temperature(app, "fridge1", 0, 4.0, {"name": "Fridge", "temperature_range": "2..8"})
    room = {"name": "Living room"}
    deliver(app, body_of("room-1", "room1", "humidity", {"humidity": {"temperature": 21.0, "relativeHumidity": 40}},
                         T0, room))  # a humidity sensor: DT_TEMPERATURE_RANGE is not its range
    deliver(app, body_of("odd-1", "odd1", "temperature", {"temperature": {"value": 30.0}}, T0,
                         {"name": "Odd", "temperature_range": "warm"}))  # a bad label: ignored, the default applies
    app.alerts.check()
    assert [(a["device"], a["value"]) for a in alerts_of(app)[1]["alerts"]] == [("odd1", 30.0)]
    temperature(app, "freezer1", 5, -12.0, freezer)
    app.alerts.check()
    assert sorted(a["device"] for a in alerts_of(app)[1]["alerts"]) == ["freezer1", "odd1"]
    assert [doc["notes"] for doc in sent(nightscout)] == ["Odd 30.0 °C: above 8 °C since 03:00",
                                                          "Freezer -12.0 °C: above -15 °C since 03:05"]
    page = call(app)[2].decode()
    assert "The label temperature_range &#x27;warm&#x27; is not LOW..HIGH: ignored." in page


def test_a_silent_sensor_and_a_low_battery(make_app, nightscout):
    clock = Clock(T0 - 60)  # the service runs from before: the silence counts from the sensor's newest event
    app, _ = make_app(clock=clock, SENSOR_SILENT_MINS="60", ALERT_AFTER_MINS="0")
    clock.now = T0 + 30 * 60
    temperature(app, "fridge1", 0, 5.0)
    deliver(app, body_of("b-1", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": 15}}, T0))
    app.alerts.check()
    assert alerts_of(app) == (200, {"alerts": []})
    clock.now = T0 + 60 * 60  # an hour after its newest event: silent
    app.alerts.check()
    deliver(app, body_of("b-2", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": 9}}, T0 + 3700))
    deliver(app, body_of("b-3", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": 15}}, T0 + 3800))
    app.alerts.check()  # the battery reports again: the silence ended; 15 % is not yet back
    assert [a["kind"] for a in alerts_of(app)[1]["alerts"]] == ["battery_low"]
    deliver(app, body_of("b-4", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": 96}}, T0 + 3900))
    app.alerts.send_pending()
    notes = [doc["notes"] for doc in sent(nightscout)]
    assert notes[0] == "Insulin fridge has sent nothing since 03:00"
    assert sorted(notes[1:3]) == ["Insulin fridge battery low: 9 % at 04:01",  # both at 04:01:40: either first
                                  "Insulin fridge reports again at 04:01, after 1 h 2 min without a word"]
    assert notes[3:] == ["Insulin fridge battery back to 96 % at 04:05"]
    assert alerts_of(app) == (200, {"alerts": []})


# -- syncs, Nightscout, settings --------------------------------------------------------------------------------

def test_failing_syncs_are_announced_and_their_end_too(make_app, tandem, nightscout):
    started = T0 + 3600  # a fixed hour: from the wall clock, the 31 minutes below crossed midnight before midnight
    clock = Clock(started)
    app, _ = make_app(clock=clock, TCONNECTSYNC_HEROKU_STALE_MINS="30", **QUIET)
    app.alerts.timer_on = True  # syncs are expected, as with the timer on
    tandem.mode = "503"
    assert call(app, "GET", "/update", headers=bearer())[0] == 502
    clock.now += 31 * 60
    app.alerts.check()
    [start] = sent(nightscout)
    since = clock_words(started, app.tz)
    assert start["notes"] == (f"Pump data has not reached Nightscout since {since}: ApiException: Error sending POST"
                              ' to login api url: {"error": "Service Unavailable"} HTTP 503')  # made plain text
    tandem.mode = "ok"
    assert call(app, "GET", "/update", headers=bearer())[0] == 200
    app.alerts.check()
    notes = [doc["notes"] for doc in sent(nightscout)]
    assert len(notes) == 2 and notes[1].startswith("Pump data reaches Nightscout again: a sync succeeded at ")


def test_nightscout_down_means_the_announcement_waits_and_goes_out_once_with_its_time(make_app, nightscout):
    clock = Clock(T0 + 3600)
    app, log = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    nightscout.mode = "503"
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0 and len(log.events("alert.not_sent")) == 1
    nightscout.mode = "ok"
    assert app.alerts.send_pending() == 0  # it waits half a minute before the next try
    clock.now += 31
    assert app.alerts.send_pending() == 1
    assert app.alerts.send_pending() == 0
    [doc] = sent(nightscout)
    assert doc["created_at"] == "2027-01-15T08:00:00.000Z"  # its own time, not when it finally went


def test_a_wrong_ns_secret_keeps_the_announcement_waiting_with_the_setting_named_until_it_is_fixed(make_app,
                                                                                                     nightscout):
    clock = Clock(T0 + 3600)
    app, log = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    nightscout.api_secret = "not-what-we-send-1234"  # Nightscout answers 401
    temperature(app, "fridge1", 0, 11.0)
    assert app.alerts.send_pending() == 0 and log.events("alert.refused") == []
    [waiting] = log.events("alert.not_sent")
    assert 'error="Nightscout refused NS_SECRET (401): check NS_SECRET"' in waiting and waiting.startswith("at=error")
    assert app.alerts.book.recent(0)[0][1] == ("waiting for Nightscout: Nightscout refused NS_SECRET (401): "
                                               "check NS_SECRET")
    page = call(app, headers=bearer())[2].decode()
    assert "Nightscout refused NS_SECRET (401): check NS_SECRET" in page
    nightscout.api_secret = "ns-secret-value-1234"  # the person fixed it
    clock.now += 31
    assert app.alerts.send_pending() == 1 and [doc["notes"] for doc in sent(nightscout)] == [
        "Insulin fridge 11.0 °C: above 8 °C since 03:00"]
    assert app.alerts.book.recent(0)[0][1] == "announced"
    wait_for(lambda: "check NS_SECRET" not in call(app, headers=bearer())[2].decode())  # the page's next build


def test_ns_alerts_off_sends_nothing_but_still_tells_the_page_and_the_monitor(make_app, nightscout):
    app, _ = make_app(clock=Clock(T0 + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", NS_ALERTS="off",
                      **QUIET)
    temperature(app, "fridge1", 0, 11.0)
    app.alerts.check()
    assert sent(nightscout) == [] and alerts_of(app)[0] == 503
    page = call(app)[2].decode()
    assert 'id="state">alert</span>' in page and "<bdi>Insulin fridge</bdi> out of range since" in page


def test_alerts_over_waitress_get_and_head_and_the_secrets_week(make_app):
    app, _ = make_app(clock=Clock(T0 + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    with served(app) as address:
        assert request(address, "GET", "/alerts")[::2] == (200, b'{"alerts": []}')
        temperature(app, "fridge1", 0, 11.0)
        status, headers, body = request(address, "HEAD", "/alerts")
        assert (status, body, headers["Content-Length"]) == (503, b"", str(len(request(address, "GET", "/alerts")[2])))
        temperature(app, "fridge1", 5, 5.0)
        assert request(address, "GET", "/alerts")[::2] == (200, b'{"alerts": []}')
        status, _, body = request(address, "GET", "/alerts", bearer())
        [ended] = json.loads(body)["ended"]
        assert (status, ended["kind"], ended["ended_at"], ended["end_value"]) == (
            200, "out_of_range", "2027-01-15T08:05:00Z", 5.0)
        page = request(address, "GET", "/", bearer())[2].decode()
        assert "Alerts in the last 7 days" in page and "<bdi>Insulin fridge</bdi> out of range" in page


@pytest.mark.parametrize("backend", ["postgres"])
def test_two_services_on_one_postgresql_database_announce_each_start_and_end_once(make_app, nightscout):
    clock = Clock(T0 + 3600)
    first, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="10", **QUIET)
    second, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="10", **QUIET)
    for minute, value in ((0, 5.0), (5, 9.0), (10, 9.2), (15, 9.5), (20, 4.0), (25, 4.1), (30, 4.2)):
        temperature(first if minute % 2 else second, "fridge1", minute, value)  # the deliveries go either way
        for app in (first, second):
            app.alerts.check()
    assert [doc["notes"] for doc in sent(nightscout)] == [
        "Insulin fridge 9.5 °C: above 8 °C since 03:05",
        "Insulin fridge back in range: 4.0 °C at 03:20, out of range for 15 min"]


# -- names and notes safe and bounded ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "shown"), [
    ("Insulin fridge", "Insulin fridge"),
    ("<b>Fridge</b>", "b Fridge /b"),  # markup characters become spaces, the words stay apart
    ("[Fridge](javascript:alert(1))", "Fridge javascript:alert 1"),  # no link can form: [ ] ( ) are gone
    ("\x1b[1;31mFridge\x1b[0m", "Fridge"),  # a terminal's colour codes go whole, not just their ESC
    ("\x1b]8;;https://evil.example\x07Fridge\x1b]8;;\x07", "Fridge"),  # a terminal's hyperlink, too
    ("Fridge\u202e2\u2066x\u2069\u200b\u200f\ufeff", "Fridge2x"),  # bidi controls and zero widths (Cf) go
    ("  Fridge\n\n\tby\u2028the\u00a0door  ", "Fridge by the door"),  # every whitespace run one space, stripped
    ("*Fridge* _2_ `x` # &amp;", "Fridge 2 x amp;"),
    ("x" * 64, "x" * 64),  # exactly 64: whole
    ("x" * 65, "x" * 63 + "…"),  # one more: cut, the … counted in the 64
    ("x" * 62 + " yz", "x" * 62 + "…"),  # the cut drops the space it would end on
    ("\x1b[31m" * 10 + "x" * 64, "x" * 64),  # what is removed does not count
])
def test_a_safe_name_is_plain_one_line_text_of_at_most_64_characters(name, shown):
    assert safe_name(name) == shown and len(shown) <= 64


def test_a_name_with_nothing_left_falls_back_to_the_device_id_else_a_sensor():
    assert safe_name("<>[]()", "fridge1") == "fridge1"
    assert safe_name("\x00\x07\u202e\u200b\n\x1b[0m", "fridge1") == "fridge1"  # only controls
    assert safe_name("", "<b>fridge1</b>") == "b fridge1 /b"  # the id is made safe too
    assert safe_name("\u202e", "\u202e") == safe_name("", None) == safe_name(None) == "a sensor"


def test_a_note_is_at_most_300_characters():
    assert bounded_note("x" * 300) == "x" * 300
    assert bounded_note("x" * 301) == "x" * 299 + "…"
    error = "<b>Tandem said</b>\n" + "no " * 500  # a sync's error, from elsewhere: plain and short in the note
    note = start_notes(Alert("id", "sync_failing", None, None, T0 - 3600, T0, detail=error), NEW_YORK, now=T0)
    assert note == "Pump data has not reached Nightscout since 02:00: b Tandem said /b " + "no " * 47 + "n…"
    assert len(note) == 50 + 160


def test_a_time_not_on_the_day_of_now_names_its_day():
    two_days_ago = T0 - 2 * 86400 + 103 * 60  # Wednesday 04:43 in New York; now is Friday 03:00
    alert = Alert("id", "out_of_range", "fridge1", "Insulin fridge", two_days_ago, two_days_ago + 900, 9.8, "°C",
                  "above 8 °C", T0 - 3600, 5.1)
    assert start_notes(alert, NEW_YORK, now=T0) == "Insulin fridge 9.8 °C: above 8 °C since Wed 13 Jan 04:43"
    assert end_notes(alert, NEW_YORK, now=T0) == ("Insulin fridge back in range: 5.1 °C at 02:00, out of range for "
                                                  "45 h 17 min")  # today: no day
    assert end_notes(dataclasses.replace(alert, ended_at=two_days_ago + 3900), NEW_YORK, now=T0) == (
        "Insulin fridge back in range: 5.1 °C at Wed 13 Jan 05:48, out of range for 1 h 5 min")
    battery = Alert("id", "battery_low", "fridge1", "Insulin fridge", T0 - 86400, T0 - 86400, 9, "%")
    assert start_notes(battery, NEW_YORK, now=T0) == "Insulin fridge battery low: 9 % at Thu 14 Jan 03:00"
    assert start_notes(battery, NEW_YORK) == "Insulin fridge battery low: 9 % at 03:00"  # without now: as before


def test_an_alert_that_began_yesterday_says_since_which_day(make_app, nightscout):
    app, _ = make_app(clock=Clock(T0), DT_TEMPERATURE_RANGE="2..8", **QUIET)
    temperature(app, "fridge1", -190, 9.5)  # Thursday 23:50 in New York
    temperature(app, "fridge1", -175, 9.6)  # Friday 00:05: out for 15 minutes, an alert
    temperature(app, "fridge1", -10, 9.7)  # today, 02:50: still out
    app.alerts.send_pending()
    assert [doc["notes"] for doc in sent(nightscout)] == ["Insulin fridge 9.6 °C: above 8 °C since Thu 14 Jan 23:50"]


def test_a_hostile_name_label_is_announced_plain_and_short_shown_short_and_kept_whole(make_app, nightscout):
    app, _ = make_app(clock=Clock(T0 + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    temperature(app, "fridge1", 0, 11.0, {"name": HOSTILE_NAME})
    temperature(app, "fridge1", 5, 5.0, {"name": HOSTILE_NAME})
    app.alerts.send_pending()
    shown = "script alert 1 /script img src=x onerror=alert 1 x javascript:a…"
    assert [doc["notes"] for doc in sent(nightscout)] == [
        f"{shown} 11.0 °C: above 8 °C since 03:00", f"{shown} back in range: 5.0 °C at 03:05, out of range for 5 min"]
    for doc in sent(nightscout):
        assert len(doc["notes"]) <= 300 and not set(doc["notes"]) & set(DANGEROUS)

    status, document = alerts_of(app, secret=True)
    [ended] = document["ended"]
    assert (status, ended["name"], len(ended["name"])) == (200, shown, 64)

    page = call(app, headers=bearer())[2].decode()
    on_page = html.escape(HOSTILE_NAME[:63] + "…")  # escaped and in <bdi> there: cut only
    assert f"<h3><bdi>{on_page}</bdi></h3>" in page and f"<td><bdi>{on_page}</bdi> out of range</td>" in page
    assert "x" * 100 not in page

    events = json.loads(call(app, "GET", "/events", headers=bearer())[2])
    assert [item["labels"]["name"] for item in events["events"]] == [HOSTILE_NAME, HOSTILE_NAME]
