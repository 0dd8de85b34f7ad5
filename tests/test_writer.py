"""One writer per process: deliveries and run rows are committed in groups, and nothing is answered first."""

import json
import threading

import pytest
from conftest import request, served, stored, wait_for
from test_receiver import NOW, body_for, sign


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request):
    return request.param


class Commits:
    """The store's before_commit hook: counts commits, can hold the first one, can fail them."""

    def __init__(self, store, hold_first=True):
        self.store, self.count, self.failing = store, 0, False
        self.held, self.release = threading.Event(), threading.Event()
        if not hold_first:
            self.release.set()
        store.before_commit = self

    def __call__(self):
        self.count += 1
        if self.count == 1:  # held, then committed whatever `failing` says by then
            self.held.set()
            self.release.wait(30)
        elif self.failing:
            raise RuntimeError("the disk is full")

    def queued(self):
        return self.store._writes.qsize()


def deliver_in_thread(address, event_id, answers):
    def send():
        body = body_for(event_id)
        status, _, data = request(address, "POST", "/", {"X-Dt-Signature": sign(body)}, body)
        answers.append((event_id, status, json.loads(data)))

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def kept(app):
    return sorted(row[0] for row in stored(app, "SELECT event_id FROM events") if row[0] != "warm-up")


def warm_up(address):
    """The first delivery after a start also prunes old events (two more writes): get it out of the way."""
    body = body_for("warm-up")
    assert request(address, "POST", "/", {"X-Dt-Signature": sign(body)}, body)[0] == 200


@pytest.fixture
def served_app(make_app):
    """(app, log, address, commits): the service on waitress, warmed up, its commits counted."""
    app, log = make_app(verify_clock=lambda: NOW, clock=lambda: NOW)
    with served(app, threads=12) as address:
        warm_up(address)
        yield app, log, address, Commits(app.store)


def held_then_queued(address, commits, first_id, ids, answers):
    """Deliver first_id and hold its commit; deliver ids, which queue behind it; their threads, first one first."""
    threads = [deliver_in_thread(address, first_id, answers)]
    wait_for(commits.held.is_set)
    threads += [deliver_in_thread(address, event_id, answers) for event_id in ids]
    wait_for(lambda: commits.queued() == len(ids))
    return threads


def test_concurrent_deliveries_are_committed_together_and_each_gets_its_own_answer(served_app):
    app, _, address, commits = served_app
    answers = []
    ids = ["g-1", "g-2", "g-3", "g-1", "g-0", "g-4", "g-2", "g-5"]  # repeats inside the batch and across
    threads = held_then_queued(address, commits, "g-0", ids, answers)
    commits.release.set()
    for thread in threads:
        thread.join(30)
    assert commits.count == 2  # the held one, then all eight in one transaction
    duplicates = {}
    for event_id, status, answer in answers:
        assert (status, answer["event_id"]) == (200, event_id)
        duplicates.setdefault(event_id, []).append(answer["duplicate"])
    assert {event_id: sorted(flags) for event_id, flags in duplicates.items()} == {
        "g-0": [False, True], "g-1": [False, True], "g-2": [False, True], "g-3": [False], "g-4": [False],
        "g-5": [False]}
    assert sorted(stored(app, "SELECT event_id, duplicates FROM events WHERE event_id != 'warm-up'")) == [
        ("g-0", 1), ("g-1", 1), ("g-2", 1), ("g-3", 0), ("g-4", 0), ("g-5", 0)]


def test_no_answer_before_the_commit(served_app):
    app, _, address, commits = served_app
    answers = []
    thread = deliver_in_thread(address, "wait-1", answers)
    wait_for(commits.held.is_set)
    thread.join(0.5)  # the writer holds the commit: the request must still be waiting
    assert thread.is_alive() and answers == []
    assert kept(app) == []  # and the row is not visible to anyone yet
    commits.release.set()
    thread.join(30)
    assert answers == [("wait-1", 200, {"ok": True, "duplicate": False, "event_id": "wait-1"})]
    assert kept(app) == ["wait-1"]


def test_a_failing_commit_fails_exactly_its_batch_and_the_next_succeeds(served_app):
    app, log, address, commits = served_app
    answers = []
    first, *threads = held_then_queued(address, commits, "ok-1", [f"lost-{n}" for n in range(5)], answers)
    commits.failing = True  # for the batch behind the held commit, and each of its rows alone
    commits.release.set()
    for thread in threads:
        thread.join(30)
    commits.failing = False
    first.join(30)
    assert deliver_in_thread(address, "ok-2", answers).join(30) is None
    statuses = {event_id: (status, answer.get("error")) for event_id, status, answer in answers}
    assert statuses == {"ok-1": (200, None), "ok-2": (200, None),
                        **{f"lost-{n}": (503, "store_unavailable") for n in range(5)}}
    assert kept(app) == ["ok-1", "ok-2"]
    assert len(log.events("delivery.store_failed")) == 5


def test_closing_the_store_writes_everything_queued_first(served_app):
    app, _, address, commits = served_app
    answers = []
    threads = held_then_queued(address, commits, "drain-0", [f"drain-{n}" for n in range(1, 6)], answers)
    closing = threading.Thread(target=app.store.close)
    closing.start()
    commits.release.set()
    closing.join(30)
    for thread in threads:
        thread.join(30)
    status, _, data = request(address, "POST", "/", {"X-Dt-Signature": sign(body_for("late"))}, body_for("late"))
    assert sorted((event_id, status) for event_id, status, _ in answers) == [(f"drain-{n}", 200) for n in range(6)]
    assert (status, json.loads(data)["error"]) == (503, "store_unavailable")  # after close: refused, not lost
    reopened = type(app.store)(app.store._url) if hasattr(app.store, "_url") else type(app.store)(app.store.path)
    assert sorted(r[0] for r in reopened._query("SELECT event_id FROM events WHERE event_id != 'warm-up'")[0]) == [
        f"drain-{n}" for n in range(6)]
    reopened.close()
