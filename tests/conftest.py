"""Shared test setup: tconnectsync's environment, loopback fakes, the service on real waitress."""

import contextlib
import http.client
import io
import json
import os
import threading
import time
import wsgiref.util
import wsgiref.validate
from pathlib import Path

import pytest

# tconnectsync reads its settings once, at import: harmless ones before any test imports it.
for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(name, None)
os.environ.update(CACHE_CREDENTIALS="false", NO_PROXY="127.0.0.1,localhost", TIMEZONE_NAME="America/New_York",
                  TCONNECT_REGION="US")

import fakes  # noqa: E402
import tcsync_wsgi  # noqa: E402
from tcsync.log import Log  # noqa: E402
from tcsync.settings import load_settings  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository: tcsync_wsgi.py and tcsync/
SHARED = Path(os.environ.get("TCSYNC_SHARED_DIR", ROOT.parent / "shared"))
PASSWORD = "right-password-Zq81"
NS_SECRET = "ns-secret-value-1234"
SERVICE_SECRET = "service-secret-8c1f2e"
DT_SECRET = "test-secret"
# The fixture's window: its expected treatments are for a sync that ends here.
FIXTURE_NOW = 1778127072.0  # 2026-05-07T00:11:12-04:00


def load_fixture(name: str) -> dict:
    return json.loads((SHARED / "fixtures" / name).read_text())


@pytest.fixture
def basal_fixture():
    return load_fixture("tandem_source_basal.json")


@pytest.fixture
def tandem(basal_fixture):
    fake = fakes.FakeTandem(basal_fixture, password=PASSWORD)
    fake.point_tconnectsync_here()
    yield fake
    fake.close()


@pytest.fixture
def nightscout():
    fake = fakes.FakeNightscout(api_secret=NS_SECRET)
    yield fake
    fake.close()


def service_env(tandem, nightscout, db_path, **extra) -> dict:
    """The environment a user would set, pointing at the fakes."""
    env = {
        "TCONNECT_EMAIL": tandem.email, "TCONNECT_PASSWORD": PASSWORD,
        "NS_URL": nightscout.url, "NS_SECRET": NS_SECRET,
        "TCONNECTSYNC_HEROKU_SECRET": SERVICE_SECRET, "TCONNECTSYNC_HEROKU_DB": str(db_path),
        "DT_SIGNATURE_SECRET": DT_SECRET, "TIMEZONE_NAME": "America/New_York",
    }
    env.update(extra)
    return env


class LogLines(list):
    """Captures the service's log lines (the Log writer)."""

    def __call__(self, line: str) -> None:
        self.append(line)

    def events(self, event: str) -> list[str]:
        return [line for line in self if f"event={event} " in line or line.endswith(f"event={event}\n")]


@pytest.fixture
def backend():
    """The store behind make_app: "sqlite"; a module parametrizes it to run its tests on PostgreSQL too."""
    return "sqlite"


@pytest.fixture
def backend_env(backend, request):
    """The settings that choose the backend: DATABASE_URL of a fresh database on the test server, or none."""
    return {"DATABASE_URL": request.getfixturevalue("database_url")} if backend == "postgres" else {}


@pytest.fixture
def make_app(tandem, nightscout, tmp_path, backend_env):
    """create_app with fakes configured; returns (app, log lines)."""
    apps = []

    def make(clock=None, timer=False, verify_clock=None, store=None, **extra):
        log = LogLines()
        extra = {**backend_env, **extra}
        settings = load_settings(service_env(tandem, nightscout, tmp_path / "tcsync.sqlite3", **extra))
        app = tcsync_wsgi.create_app(settings, clock=clock, log=Log(log), timer=timer,
                                     verify_clock=verify_clock, store=store and store(settings.db_path))
        apps.append(app)
        return app, log

    yield make
    for app in apps:
        if app.timer:
            app.timer.stop()
        app.syncer.close(time.monotonic() + 10)
        app.store.close()  # its connections: a PostgreSQL server has only so many


def call(app, method="GET", path="/", query="", headers=None, body=b"", wsgi_input=None, lint=True, client=""):
    """Drive the app (through wsgiref.validate unless lint=False), as if from the address client (REMOTE_ADDR: each
    has its own 5 wrong secrets a minute); returns (status, headers dict, body)."""
    environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
               "REMOTE_ADDR": client}
    wsgiref.util.setup_testing_defaults(environ)
    environ["wsgi.input"] = wsgi_input or io.BytesIO(body)
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(response_headers)

    result = (wsgiref.validate.validator(app) if lint else app)(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return seen["status"], seen["headers"], data


@contextlib.contextmanager
def served(app, threads=4):
    """The app on real waitress on 127.0.0.1; yields (host, port)."""
    import waitress

    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads, ident="tcsync_wsgi")
    stop = threading.Event()

    def loop():  # server.run() until stop, then close from this same thread
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.task_dispatcher.shutdown(timeout=1)
        server.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", server.effective_port
    finally:
        stop.set()
        thread.join(5)


def request(address, method, path, headers=None, body=None, timeout=30, source=None):
    """One HTTP request on a new connection (from the address source, if given, like 127.0.0.2: Linux routes all of
    127.0.0.0/8 to lo); returns (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(*address, timeout=timeout, source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def bearer(secret=SERVICE_SECRET) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def stored(app, sql):
    """Rows straight from the app's database, whichever backend it is."""
    return app.store._query(sql, kind="read")[0]


def runs_of(address):
    """GET /runs with the secret; the runs, newest first."""
    status, _, body = request(address, "GET", "/runs", bearer())
    assert status == 200
    return json.loads(body)["runs"]


def hold_first_commit(store) -> tuple[threading.Event, threading.Event, list]:
    """(held, release, commits): the store's next commit waits, once held is set, until release is set, so that
    what is queued meanwhile commits behind it in one batch; commits counts the commits."""
    held, release, commits = threading.Event(), threading.Event(), []

    def before_commit():
        commits.append(1)
        if len(commits) == 1:
            held.set()
            release.wait(30)

    store.before_commit = before_commit
    return held, release, commits


def wait_for(predicate, timeout=20.0, interval=0.02, explain=None):
    """Poll until predicate() is truthy and return that value; fail after timeout, adding explain()'s text if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout} s: {predicate}" + (f"\n{explain()}" if explain else ""))


# PostgreSQL: one real server for the session, started by the first test that asks for it -----------

@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of our own (pg_server.PostgresServer) on 127.0.0.1; stopped and removed at the end.

    No PostgreSQL on the machine is an error, not a skip: CI installs it (.ci/run). TCSYNC_TEST_PG=skip skips instead.
    """
    if os.environ.get("TCSYNC_TEST_PG") == "skip":
        pytest.skip("TCSYNC_TEST_PG=skip: the tests that need PostgreSQL are skipped")
    import pg_server as pg  # here, not at the top: most tests never load psycopg

    try:
        server = pg.PostgresServer()
    except pg.PostgresNotFound as missing:
        pytest.fail(str(missing), pytrace=False)
    yield server
    server.close()


@pytest.fixture
def database_url(pg_server):
    """The URL of a new, empty database on the session's server (postgresql://postgres@127.0.0.1:PORT/test_N)."""
    if not pg_server.running:  # a test that stopped it failed before starting it again
        pg_server.start()
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)  # a full run would otherwise leave about 1 GB in /tmp until its end


# Nightscout: a real server of each version for the session, started by the first test that asks for it -------------

NIGHTSCOUT_VERSIONS = ("15.0.6", "15.0.7")  # before and from 15.0.7, which upserts on identifier (ns_server.py)
_nightscouts = {}  # version -> ns_server.NightscoutServer, or the NightscoutUnavailable that kept it from starting


def _real_nightscout(version):
    """The session's server of this version, started at the first call; both versions install at once (in threads:
    two `npm ci` side by side take about as long as one) so that the second version's tests find it ready."""
    import ns_server  # here, not at the top: most tests never need it

    if not _nightscouts:
        try:
            ns_server.require_tools()
            ns_server.install_all_in_background(NIGHTSCOUT_VERSIONS)
        except ns_server.NightscoutUnavailable:
            pass  # each version reports it below
    if version not in _nightscouts:
        try:
            _nightscouts[version] = ns_server.NightscoutServer(version, api_secret=NS_SECRET)
        except ns_server.NightscoutUnavailable as missing:
            _nightscouts[version] = missing
    server = _nightscouts[version]
    if isinstance(server, ns_server.NightscoutUnavailable):
        pytest.skip(str(server))
    return server


@pytest.fixture(scope="session", params=NIGHTSCOUT_VERSIONS, ids=[f"ns{v}" for v in NIGHTSCOUT_VERSIONS])
def real_nightscout(request):
    """A real Nightscout (ns_server.NightscoutServer) of each version in turn: .url (ending with "/"), .api_secret
    (NS_SECRET, as the fake's), .version, .treatments(**find), .post_treatments(docs), .clear(). It may hold what an
    earlier test left: ask for clean_nightscout for an empty one. Stopped at the end of the session."""
    server = _real_nightscout(request.param)
    yield server
    server.close()
    del _nightscouts[request.param]  # pytest may set this version up again later in the session: start a new one


@pytest.fixture
def clean_nightscout(real_nightscout):
    """real_nightscout with no treatments, device statuses or entries."""
    real_nightscout.clear()
    return real_nightscout
