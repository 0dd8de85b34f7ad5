"""The status page's built view (tcsync.view): a GET / never reads the store; the view follows what changes.

Real waitress where it matters. A store that is "slow" here is one whose reading connection a test holds: every read
waits, as behind a long query or a locked database."""

import re
import threading
import time

from conftest import bearer, call, hold_first_commit, request, served, wait_for
from test_alerts import Clock, body_of, deliver, sign
from test_status_page import finish

from tcsync.page import STALE_NOTE_SECS
from tcsync.server import make_server
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


def test_a_get_is_answered_while_every_worker_waits_for_a_held_commit(make_app):
    """The service's own server (make_server): GET / has a worker thread of its own, so a burst of deliveries whose
    commit waits (every one of waitress's workers holding one) does not hold the page."""
    app, _ = make_app(LISTEN_HOST="127.0.0.1", LISTEN_PORT="0")
    server = make_server(app, app.settings)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.task_dispatcher.shutdown(timeout=1)
        server.close()

    threading.Thread(target=loop, daemon=True).start()
    address = ("127.0.0.1", server.effective_port)
    held, release, _ = hold_first_commit(app.store)
    answers: list[int] = []
    bodies = [body_of(f"burst-{i}", f"dev{i}", "temperature", {"temperature": {"value": 5.0}}, time.time())
              for i in range(server.adj.threads + 4)]
    senders = [threading.Thread(target=lambda b=b: answers.append(
        request(address, "POST", "/", {"X-Dt-Signature": sign(b)}, b)[0])) for b in bodies]
    try:
        assert request(address, "GET", "/")[0] == 200  # the first view is built
        for sender in senders:
            sender.start()
        wait_for(held.is_set)
        wait_for(lambda: len(server.task_dispatcher.queue) > 0)  # every worker is busy: deliveries wait in line
        for headers in ({}, bearer()):
            assert request(address, "GET", "/", headers, timeout=20)[0] == 200  # answered while the commit is held
        assert request(address, "GET", "/healthz", timeout=20)[0] == 200
        assert answers == []  # none of the deliveries has been answered meanwhile
    finally:
        release.set()
        for sender in senders:
            sender.join(30)
        stop.set()
    assert answers == [200] * len(bodies)
