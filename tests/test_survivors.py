"""Behaviours a mutation test found unpinned (issue 27): each test here failed on a one-line break of the behaviour
it names. The alerts through signed deliveries and the app's clock moved by hand; PostgreSQL restarted for real."""

import time

import pytest
from conftest import request, served
from test_alerts import QUIET, T0, Clock, alerts_of, body_of, deliver, sign, temperature

from tcsync.alertbook import AlertBook


def battery(app, n, percent, at):
    deliver(app, body_of(f"b{n}", "fridge1", "batteryStatus", {"batteryStatus": {"percentage": percent}}, at))


def open_kinds(app) -> list[str]:
    return [alert["kind"] for alert in alerts_of(app)[1]["alerts"]]


def test_a_battery_alert_starts_at_10_percent_and_ends_at_20_and_nothing_changes_between(make_app):
    clock = Clock(T0 + 3600)
    app, _ = make_app(clock=clock, **QUIET)
    steps = [(11, []), (10, ["battery_low"]), (11, ["battery_low"]), (19, ["battery_low"]), (20, []),
             (19, []), (11, []), (10, ["battery_low"])]
    seen = []
    for n, (percent, _) in enumerate(steps):
        battery(app, n, percent, T0 + n * 60)
        app.alerts.judge()
        seen.append(open_kinds(app))
    assert seen == [expected for _, expected in steps]


def test_an_announcement_sent_is_never_claimed_again_when_its_claim_runs_out(make_app):
    app, _ = make_app()
    book = AlertBook(app.store)
    book.queue("a-start", T0, "notes")
    [(identifier, _, _)] = book.claim(T0)
    book.sent(identifier, T0 + 1)
    assert [book.claim(T0 + later) for later in (0, AlertBook.CLAIM_SECS + 1, 86400)] == [[], [], []]


def test_a_silent_alert_stays_open_across_minute_checks_until_an_event(make_app):
    clock = Clock(T0 - 60)
    app, _ = make_app(clock=clock, SENSOR_SILENT_MINS="60")
    clock.now = T0
    temperature(app, "fridge1", 0, 5.0)
    for minute in range(60, 70):  # silent from minute 60 on: ten minute checks, nothing changes
        clock.now = T0 + minute * 60
        app.alerts.judge()
        assert open_kinds(app) == ["silent"]
    temperature(app, "fridge1", 69, 5.0)  # heard again
    app.alerts.judge()
    assert open_kinds(app) == []


@pytest.mark.parametrize("backend", ["postgres"])
def test_after_a_postgresql_restart_while_idle_the_next_delivery_is_kept(make_app, pg_server):
    """Each kept connection's first statement after the restart fails; it is retried once on a new connection."""
    app, _ = make_app(verify_clock=time.time)

    def deliver_now(event_id):
        body = body_of(event_id, "fridge1", "temperature", {"temperature": {"value": 5.0}}, time.time())
        return request(address, "POST", "/", {"X-Dt-Signature": sign(body)}, body)[0]

    with served(app) as address:
        assert deliver_now("before") == 200
        pg_server.stop()
        pg_server.start()  # no request in between: the service's connections are all stale now
        assert [deliver_now("after"), request(address, "GET", "/healthz")[0]] == [200, 200]
    assert [row[0] for row in app.store.read("SELECT event_id FROM events ORDER BY event_id")] == ["after", "before"]
