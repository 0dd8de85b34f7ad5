"""PostgreSQL (DATABASE_URL) against a real server the tests start: two processes, restarts, outages."""

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import SERVICE_SECRET, bearer, request, runs_of, served, service_env, wait_for
from psycopg.conninfo import conninfo_to_dict
from pg_server import free_port
from test_e2e import start_service
from test_receiver import NOW, body_for, sign

import tcsync_wsgi
from tcsync.log import Redactor
from tcsync.postgres import PostgresStore, tls_options
from tcsync.readings import iso
from tcsync.settings import SettingsError, load_settings
from tcsync.store import open_store

PASSWORD = "pg-Passw0rd-9e1"  # the test server trusts 127.0.0.1 and ignores it; it must never show anywhere


def with_password(url: str) -> str:
    return url.replace("://postgres@", f"://postgres:{PASSWORD}@", 1)


def stored(url, sql):
    import psycopg

    with psycopg.connect(url) as db:
        return db.execute(sql).fetchall()


def test_psycopg_is_imported_only_with_a_database_url(tmp_path):
    code = ("import sys, tcsync_wsgi as t; from tcsync.log import Log; from tcsync.settings import load_settings;"
            " t.create_app(load_settings({'TCONNECTSYNC_HEROKU_DB': sys.argv[1]}), log=Log(lambda line: None));"
            " print('psycopg' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "db")], capture_output=True, text=True,
                          cwd=os.path.dirname(tcsync_wsgi.__file__), timeout=30)
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr


def test_a_database_url_that_is_not_postgres_is_refused_without_echoing_it():
    with pytest.raises(SettingsError) as raised:
        load_settings({"DATABASE_URL": f"mysql://me:{PASSWORD}@db/x"})
    assert str(raised.value) == ("DATABASE_URL must be a postgres:// or postgresql:// URL, got one starting with "
                                 "'mysql'")


@pytest.mark.parametrize(("url", "options"), [
    ("postgres://u:p@ec2-3-1-2-3.compute-1.amazonaws.com:5432/d8x", {"sslmode": "require"}),  # as Heroku writes it
    ("postgres://u:p@db.example.com/d?sslmode=verify-full", {}),
    ("postgresql://u@127.0.0.1:5432/d", {}),
    ("postgresql://u@localhost/d", {}),
    ("postgresql:///d?host=/var/run/postgresql", {}),
])
def test_connections_to_other_machines_are_encrypted(url, options):
    assert tls_options(conninfo_to_dict(url)) == options


def test_the_store_is_the_same_after_a_restart_and_names_no_password(database_url, tmp_path):
    url = with_password(database_url)
    settings = load_settings({"DATABASE_URL": url, "TCONNECTSYNC_HEROKU_DB": str(tmp_path / "no")})
    store = open_store(settings)
    assert isinstance(store, PostgresStore) and PASSWORD not in store.path
    run_id = store.start_run("timer", 100.0)
    assert not store.add_event({"eventId": "e1", "eventType": "touch"}, 200.0, b'{"event": {}}')
    store.close()
    again = open_store(settings)
    assert [r["id"] for r in again.runs(10)] == [run_id]
    assert again.add_event({"eventId": "e1", "eventType": "touch"}, 201.0, b"{}")  # still a duplicate
    assert not (tmp_path / "no").exists()
    assert PASSWORD not in Redactor(settings.secret_values())(f"x {url} y")


# Two service processes on one database -------------------------------------------------------

def start_web(tandem, nightscout, tmp_path, url, name, **extra):
    port = free_port()
    env = service_env(tandem, nightscout, tmp_path / f"{name}.sqlite3", DATABASE_URL=url, LISTEN_HOST="127.0.0.1",
                      LISTEN_PORT=str(port), **extra)
    proc = start_service(tandem, env)
    address = ("127.0.0.1", port)
    wait_for(lambda: answers(address) or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, proc.communicate()
    return proc, address


def answers(address):
    try:
        return request(address, "GET", "/healthz", timeout=1)[0] in (200, 503)
    except OSError:
        return False


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out + err


def test_two_processes_on_one_database_sync_one_at_a_time_and_share_events(database_url, tandem, nightscout,
                                                                         tmp_path):
    url = with_password(database_url)
    tandem.pump_log_secs = 0.3  # each sync holds Tandem long enough for the others to collide
    # Timers every 1.8 s on both: they collide with each other and with the storm, and leave it room.
    a, address_a = start_web(tandem, nightscout, tmp_path, url, "a", TCONNECTSYNC_HEROKU_INTERVAL_MINS="0.03")
    b, address_b = start_web(tandem, nightscout, tmp_path, url, "b", TCONNECTSYNC_HEROKU_INTERVAL_MINS="0.03")
    outputs = []
    try:
        answers_seen = []

        def storm(address):  # /run and /update back to back until each has started a sync at least once
            started = set()
            deadline = time.monotonic() + 60
            for i in itertools.count():
                path = "/run" if i % 2 else "/update"
                status, _, body = request(address, "POST", path, bearer(), timeout=60)
                answers_seen.append(status)
                if status == 200 or b'"started": true' in body:
                    started.add(path)
                if (i >= 8 and len(started) == 2) or time.monotonic() > deadline:
                    return

        def deliver(address, ids):
            for event_id in ids:
                body = body_for(event_id, timestamp=iso(time.time()))  # the processes' clocks are the real one
                answers_seen.append(request(address, "POST", "/", {"X-Dt-Signature": sign(body, now=time.time())},
                                            body)[0])

        ids = [f"ev-{i % 10}" for i in range(30)]  # each id three times, spread over both processes
        threads = [threading.Thread(target=storm, args=(address_a,)), threading.Thread(target=storm, args=(address_b,)),
                   threading.Thread(target=deliver, args=(address_a, ids[0::2])),
                   threading.Thread(target=deliver, args=(address_b, ids[1::2]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert set(answers_seen) <= {200, 202, 409} and answers_seen.count(200) >= 30
        wait_for(lambda: {r["trigger"] for r in runs_of(address_a)} >= {"run", "update", "timer"}, timeout=30)
        wait_for(lambda: runs_of(address_a) == runs_of(address_b))  # one history, whichever process answers
        assert tandem.most_pump_logs_in_flight == 1  # never two syncs at the same moment
        assert len(nightscout.treatments) == 2  # nothing uploaded twice
        assert sorted(stored(url, "SELECT event_id, duplicates FROM events")) == [(f"ev-{i}", 2) for i in range(10)]
        wait_for(lambda: json.loads(request(address_a, "GET", "/healthz")[2])["last_success_at"]
                 == json.loads(request(address_b, "GET", "/healthz")[2])["last_success_at"], timeout=5)
    finally:
        for proc in (a, b):
            outputs.append(stop(proc))
    assert all(PASSWORD not in text for text in outputs)

    # Restarted: the runs and events are still there.
    runs = stored(url, "SELECT id, outcome FROM runs ORDER BY id DESC")
    assert runs and all(outcome in ("ok", "interrupted") for _, outcome in runs)
    a, address_a = start_web(tandem, nightscout, tmp_path, url, "a")
    try:
        assert [(r["id"], r["outcome"]) for r in runs_of(address_a)] == runs
        _, _, body = request(address_a, "GET", "/events?limit=100", bearer())
        assert sorted(e["event_id"] for e in json.loads(body)["events"]) == [f"ev-{i}" for i in range(10)]
    finally:
        stop(a)


# The database goes away and comes back -------------------------------------------------------

def test_a_database_outage_refuses_deliveries_and_recovers_without_a_restart(pg_server, database_url, make_app,
                                                                            nightscout):
    url = with_password(database_url)
    app, log = make_app(verify_clock=lambda: NOW, DATABASE_URL=url)
    answered = {}

    def deliver(event_id):
        body = body_for(event_id, timestamp=iso(time.time()))  # the service's clock is the real one
        status, _, answer = request(address, "POST", "/", {"X-Dt-Signature": sign(body)}, body)
        answered[event_id] = status
        return status, json.loads(answer)

    with served(app) as address:
        assert deliver("before-1")[0] == 200
        pg_server.stop()
        try:
            for n in range(5):
                assert deliver(f"during-{n}") == (503, {"error": "store_unavailable",
                                                         "message": "the event could not be stored; retry later"})
            page = request(address, "GET", "/", bearer())[2].decode()
            assert "failing" in page and "postgresql://postgres@127.0.0.1" in page
            assert request(address, "GET", "/healthz")[0] == 200
            status, _, text = request(address, "GET", "/update", bearer())
            assert status == 200 and b"sync ok" in text  # syncs go on, unrecorded
            assert request(address, "GET", "/runs", bearer())[0] == 503
        finally:
            pg_server.start()
        assert deliver("after-1")[0] == 200  # the same process, a new connection
        assert deliver("during-0")[0] == 200  # the vendor's retry of a refused one is kept now
    kept = {row[0] for row in stored(database_url, "SELECT event_id FROM events")}
    assert {event_id for event_id, status in answered.items() if status == 200} == kept
    assert kept == {"before-1", "after-1", "during-0"}
    assert len(nightscout.treatments) == 2
    assert not any(PASSWORD in line for line in log)
    assert log.events("delivery.store_failed")
    assert SERVICE_SECRET not in "".join(log)
