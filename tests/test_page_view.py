"""The status page's built view (tcsync.view): a GET / never reads the store; the view follows what changes.

Real waitress where it matters. A store that is "slow" here is one whose reading connection a test holds: every read
waits, as behind a long query or a locked database."""

import re
import time

from conftest import bearer, call, request, served, wait_for
from test_alerts import Clock, body_of, deliver
from test_status_page import finish

from tcsync.page import STALE_NOTE_SECS
from tcsync.view import FRESH_WAIT_SECS, MIN_BUILD_SECS, TICK_SECS

NOW = 1_800_000_000.0
# How long a change may take to show: a tick, the pause between builds, a build (on a busy test machine), twice.
STALENESS = 2 * (TICK_SECS + MIN_BUILD_SECS) + 5


def cards(page: bytes) -> list[str]:
    return re.findall(r"<h3><bdi>([^<]*)</bdi></h3>", page.decode())


def reading(app, clock, device, event_id, value=5.0, minutes_ago=1):
    deliver(app, body_of(event_id, device, "temperature", {"temperature": {"value": value}},
                         clock.now - minutes_ago * 60, {"name": device}))


def test_a_get_while_the_store_is_slow_answers_from_the_last_built_view_without_waiting(make_app):
    clock = Clock(NOW)
    app, _ = make_app(clock=clock)
    reading(app, clock, "fridge1", "f-1")
    with served(app) as address:
        wait_for(lambda: cards(request(address, "GET", "/")[2]) == ["fridge1"], timeout=STALENESS)
        request(address, "GET", "/", bearer())  # the secret's view is built already too
        with app.store._locks["read"]:  # every read of the store waits from here on
            for headers in ({}, bearer()):
                status, _, page = request(address, "GET", "/", headers, timeout=20)  # would hang, not answer late
                assert status == 200 and cards(page) == ["fridge1"]
            assert "Recent runs" in request(address, "GET", "/", bearer(), timeout=20)[2].decode()
            reading(app, clock, "fridge2", "f-2")  # writes go on: the writer has its own connection
            assert cards(request(address, "GET", "/", timeout=20)[2]) == ["fridge1"]  # not read yet: the last view
        # the store answers again: the new sensor shows within the view's staleness, in both views
        wait_for(lambda: cards(request(address, "GET", "/")[2]) == ["fridge1", "fridge2"], timeout=STALENESS)
        wait_for(lambda: cards(request(address, "GET", "/", bearer())[2]) == ["fridge1", "fridge2"],
                 timeout=STALENESS)


def test_the_page_says_how_old_its_data_are_only_once_they_are_older_than_a_few_seconds(make_app):
    clock = Clock(NOW)
    app, _ = make_app(clock=clock)
    reading(app, clock, "fridge1", "f-1")
    wait_for(lambda: cards(call(app)[2]) == ["fridge1"], timeout=STALENESS)
    assert "as of" not in call(app)[2].decode()
    with app.store._locks["read"]:  # the builder cannot read: the view stays as it is
        clock.now += STALE_NOTE_SECS + 60
        for headers in (None, bearer()):
            page = call(app, headers=headers)[2].decode()
            assert "The sensors, syncs and events shown are as of" in page and cards(page.encode()) == ["fridge1"]
    wait_for(lambda: "as of" not in call(app)[2].decode(), timeout=STALENESS)


def test_another_process_run_shows_in_the_secret_view_and_the_strip_within_the_staleness(make_app):
    app, _ = make_app()
    assert "No syncs in the last 24 hours." in call(app)[2].decode()
    finish(app, time.time() - 60, "failed", "could not reach Nightscout (ns.example): ConnectionError")
    wait_for(lambda: "1 failed" in call(app)[2].decode(), timeout=STALENESS)
    wait_for(lambda: "could not reach Nightscout (ns.example)" in call(app, headers=bearer())[2].decode(),
             timeout=STALENESS)


def test_nothing_changed_means_no_new_build(make_app):
    clock = Clock(NOW)
    app, _ = make_app(clock=clock)
    reading(app, clock, "fridge1", "f-1")
    view = wait_for(lambda: (v := app.view.newest()) and cards(call(app)[2]) == ["fridge1"] and v)
    assert app.view.changes() == app.view.newest().key  # the builder compares this every tick: nothing to build
    assert app.view.newest() is view
    clock.now += 60  # the page's ages move on: a new build within the staleness
    wait_for(lambda: app.view.newest() is not view, timeout=STALENESS)


def test_a_button_answered_with_the_page_shows_what_it_did(make_app):
    app, _ = make_app()
    call(app)
    status, _, page = call(app, "POST", "/check_login", body=b"then=page",
                           headers={**bearer(), "Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200 and FRESH_WAIT_SECS > 0
    # the view was built after the check
    assert re.search(r"Last login check: <span class=\"verdict\">(ok|failed)", page.decode())
