"""The PostgreSQL test harness itself (pg_server.py and the fixtures in conftest.py)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import wait_for


def test_a_database_answers_on_127_0_0_1(database_url):
    assert database_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


def test_each_test_gets_a_new_empty_database(pg_server, database_url):
    other = pg_server.create_database()
    assert other != database_url
    for url in (database_url, other):
        with psycopg.connect(url) as db:
            assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
            db.execute("CREATE TABLE mine (x int)")  # the name is taken in one database only
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT current_database()").fetchone()[0] == database_url.rsplit("/", 1)[1]


@pytest.mark.parametrize("down", ["stop", "kill"])
def test_the_data_outlives_a_stop_and_a_start_on_the_same_port(pg_server, database_url, down):
    with psycopg.connect(database_url) as db:
        db.execute("CREATE TABLE kept (x int)")
        db.execute("INSERT INTO kept VALUES (42)")
    port = pg_server.port
    getattr(pg_server, down)()
    assert not pg_server.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database_url, connect_timeout=5)
    pg_server.start()
    assert pg_server.port == port
    with psycopg.connect(database_url) as db:
        assert db.execute("SELECT x FROM kept").fetchall() == [(42,)]


def test_the_server_runs_as_an_unprivileged_user(pg_server, database_url):
    with psycopg.connect(database_url) as db:
        data_directory = db.execute("SELECT current_setting('data_directory')").fetchone()[0]
    owners = {os.stat(data_directory).st_uid, os.stat(f"/proc/{pg_server.pid}").st_uid}
    if os.geteuid() == 0:
        assert owners == {pg_server.account.pw_uid} and 0 not in owners
    else:
        assert owners == {os.geteuid()}


def test_an_owner_killed_by_sigkill_leaves_no_server_and_no_folder(pg_server):  # pg_server: PostgreSQL is there
    code = "import pg_server, time; s = pg_server.PostgresServer(); print(s.base, s.pid, flush=True); time.sleep(60)"
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent)
    try:
        base, pid = owner.stdout.readline().split()
        assert os.path.isdir(base)
    finally:
        owner.send_signal(signal.SIGKILL)  # no atexit, no finalizer: the watchdog cleans up
        owner.communicate()
    wait_for(lambda: not os.path.exists(base) and not running(pid), timeout=30)


def running(pid) -> bool:
    """Whether the process runs: neither gone nor a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
