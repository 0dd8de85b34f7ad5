"""Alerts a family can trust: a backlog in any order starts one silence, a sensor flapping across its range is one
episode, thousands of silent sensors are one announcement and never hold back a warm fridge. Signed deliveries
through the app, with their own event times; the app's clock moved by hand; the fake Nightscout (15.0.6 rules)."""

import random

import pytest
from conftest import bearer, call
from test_alerts import T0, Clock, alerts_of, body_of, deliver, sent, temperature

from tcsync.notes import clock as clock_words
from tcsync.notes import duration
from tcsync.readings import iso


def notes(nightscout) -> list[str]:
    return [doc["notes"] for doc in sent(nightscout)]


@pytest.mark.parametrize("order", ["oldest first", "newest first", "shuffled"])
def test_a_backlog_in_any_order_starts_one_silence_and_a_fresh_reading_ends_it_once(make_app, nightscout, order):
    clock = Clock(T0)
    app, _ = make_app(clock=clock, SENSOR_SILENT_MINS="600")
    clock.now = T0 + 1000 * 60  # the sensor was away for hours; its backlog arrives now
    minutes = [300, 310, 320]  # readings from 700, 690 and 680 minutes ago
    if order == "newest first":
        minutes.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(minutes)
    for minute in minutes:
        temperature(app, "fridge1", minute, 5.0)
        app.alerts.check()  # a minute check between every two deliveries
    since = minutes[0]  # the newest event when the first check found it silent; told once, never again
    assert notes(nightscout) == [f"Insulin fridge has sent nothing since {clock_words(T0 + since * 60, app.tz)}"]
    temperature(app, "fridge1", 999, 5.1)  # fresh: one minute old
    app.alerts.check()
    assert notes(nightscout)[1:] == [f"Insulin fridge reports again at 19:39, after {duration((999 - since) * 60)}"
                                     " without a word"]
    assert alerts_of(app) == (200, {"alerts": []})


def test_a_service_that_was_away_does_not_blame_the_sensor_for_it(make_app, nightscout):
    clock = Clock(T0)
    temperature_at_start = T0 - 50 * 60  # the sensor's newest event: 50 minutes before the service started
    app, _ = make_app(clock=clock, SENSOR_SILENT_MINS="60")
    deliver(app, body_of("old", "fridge1", "temperature", {"temperature": {"value": 5.0}}, temperature_at_start))
    clock.now = T0 + 30 * 60  # 80 minutes after its newest event, 30 after the service came back
    app.alerts.check()
    assert notes(nightscout) == []
    clock.now = T0 + 60 * 60  # an hour since the service came back
    app.alerts.check()
    assert notes(nightscout) == ["Insulin fridge has sent nothing since 02:10"]
    assert sent(nightscout)[0]["created_at"] == iso(T0 + 3600, "milliseconds")


def test_a_sensor_crossing_its_range_40_times_is_one_episode_told_at_most_once_an_hour(make_app, nightscout):
    clock = Clock(T0)
    app, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", SENSOR_SILENT_MINS="1440")
    for minute in range(80):  # out, in, out, in ... every minute: 40 times out
        clock.now = T0 + minute * 60
        temperature(app, "fridge1", minute, 9.5 if minute % 2 == 0 else 5.0)
        app.alerts.check()
    assert notes(nightscout) == [
        "Insulin fridge 9.5 °C: above 8 °C since 03:00",  # minute 0
        "Insulin fridge back in range: 5.0 °C at 03:01, out of range for 1 min",  # minute 1
        "Insulin fridge 9.5 °C: above 8 °C since 03:00",  # minute 60: the first start told an hour before
        "Insulin fridge back in range: 5.0 °C at 04:01, out of range for 1 h 1 min"]  # minute 61
    assert [doc["created_at"] for doc in sent(nightscout)] == [
        iso(T0 + minute * 60, "milliseconds") for minute in (0, 1, 60, 61)]
    [(alert, start_fate, end_fate)] = app.alerts.book.recent(0)  # one episode, reopened 39 times
    assert (alert.kind, start_fate, end_fate) == ("out_of_range", "announced", "announced")


def test_an_end_is_told_only_once_the_readings_stayed_fine_for_alert_after_mins(make_app, nightscout):
    clock = Clock(T0)
    app, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="10", SENSOR_SILENT_MINS="1440")
    for minute, value in ((0, 9.0), (10, 9.5), (15, 5.0), (20, 9.0), (30, 9.2), (35, 5.0), (40, 5.1), (45, 5.0)):
        clock.now = T0 + minute * 60
        temperature(app, "fridge1", minute, value)
        app.alerts.check()
    assert notes(nightscout) == ["Insulin fridge 9.5 °C: above 8 °C since 03:00",
                                 "Insulin fridge back in range: 5.0 °C at 03:35, out of range for 35 min"]
    assert sent(nightscout)[1]["created_at"] == iso(T0 + 45 * 60, "milliseconds")  # fine from 03:35 for 10 min


def test_a_battery_around_its_limits_is_one_episode(make_app, nightscout):
    clock = Clock(T0)
    app, _ = make_app(clock=clock, ALERT_AFTER_MINS="0", SENSOR_SILENT_MINS="1440")
    for step in range(200):
        clock.now = T0 + step * 60
        percent = 9 if step % 2 == 0 else 21
        deliver(app, body_of(f"b{step}", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": percent}},
                             clock.now))
        app.alerts.check()
    told = notes(nightscout)
    assert len(told) == 8 and told[:2] == ["Insulin fridge battery low: 9 % at 03:00",
                                           "Insulin fridge battery back to 21 % at 03:01"]  # before: 182


def test_two_thousand_silent_sensors_are_one_announcement_and_a_warm_fridge_goes_first(make_app, nightscout):
    clock = Clock(T0 - 60)
    app, _ = make_app(clock=clock, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", SENSOR_SILENT_MINS="60")
    clock.now = T0
    for n in range(2000):
        temperature(app, f"s{n:04}", 0, 5.0, labels={"name": f"Sensor {n:04}"})
    clock.now = T0 + 61 * 60  # all of them silent now
    temperature(app, "fridge1", 61, 11.0, labels={"name": "Insulin fridge"})  # and the fridge warm
    app.alerts.judge()
    assert app.alerts.send_pending() == 2
    assert notes(nightscout) == [
        "Insulin fridge 11.0 °C: above 8 °C since 04:01",
        "2000 sensors silent since 03:00: Sensor 0000, Sensor 0001 and 1998 more"]
    status, document = alerts_of(app)  # public: bounded
    assert status == 503 and len(document["alerts"]) == 50 and document["more"] == 1951
    assert document["alerts"][0]["name"] == "Insulin fridge"  # the most urgent kind first
    listed, offset = [], 0
    while offset is not None:  # with the secret: every one, a page at a time
        status, _, body = call(app, "GET", "/alerts", f"offset={offset}", headers=bearer())
        page = __import__("json").loads(body)
        listed += page["alerts"]
        offset = page.get("next_offset")
    assert len(listed) == 2001 and len({(a["kind"], a["device"]) for a in listed}) == 2001
    page = call(app)[2]
    assert len(page) < 100_000 and b"And 1996 more alerts" in page
