"""Slow clients, on real sockets with the service as its Procfile starts it (test_faults.serving): deadlines for a
request's headers and body, many trickling sockets at once, and slow readers of exports.

The deadlines are short here (WAITRESS_HEADER_TIMEOUT_SECS=2, WAITRESS_BODY_TIMEOUT_SECS=3) so the tests are quick;
waitress's own idle timeout stays at its 30 s, so a close before that is the deadline's doing.
"""

import datetime as dt
import hashlib
import json
import re
import resource
import select
import socket
import threading
import time
import wsgiref.util

import jwt
import pytest
from conftest import DT_SECRET, SERVICE_SECRET, request, wait_for
from test_faults import corrupt_schema, serving

from tcsync.store import Store

DEADLINES = {"WAITRESS_HEADER_TIMEOUT_SECS": "2", "WAITRESS_BODY_TIMEOUT_SECS": "3"}
HEADER_SECS, BODY_SECS, IDLE_SECS = 2, 3, 30
AUTH = f"Authorization: Bearer {SERVICE_SECRET}\r\n".encode()


def seconds_until_closed(sock, trickle: bytes = b"", every: float = 0.25, limit: float = 15) -> float:
    """Seconds until the service closes sock (it answers nothing first), sending trickle every `every` s meanwhile."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if select.select([sock], [], [], every)[0]:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            assert data == b"", f"the service answered instead of closing: {data[:200]!r}"
            return time.monotonic() - t0
        if trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0
    raise AssertionError(f"still open after {limit} s")


def signed_delivery(event_id: str) -> tuple[bytes, str]:
    """A delivery timed now, and its X-Dt-Signature, as the Data Connector signs them."""
    now = time.time()
    when = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = json.dumps({"event": {"eventId": event_id, "targetName": "projects/p/devices/fridge", "eventType":
                                 "temperature", "data": {"temperature": {"value": 4.5, "updateTime": when}},
                                 "timestamp": when}, "labels": {}, "metadata": {}}).encode()
    token = jwt.encode({"checksum": hashlib.sha1(body).hexdigest(), "checksum_sha256": hashlib.sha256(body).hexdigest(),
                        "iat": int(now), "exp": int(now) + 3600, "jti": event_id}, DT_SECRET, algorithm="HS256")
    return body, token


def answers_within(address, seconds: float, i: int, source: str | None = None) -> list[float]:
    """GET /healthz, GET / and a signed POST /, each on a new connection (from source, if given); each must answer
    within `seconds`."""
    latencies = []
    body, token = signed_delivery(f"probe-{i}")
    for method, path, headers, data in (("GET", "/healthz", {}, None), ("GET", "/", {}, None),
                                        ("POST", "/", {"X-Dt-Signature": token}, body)):
        t0 = time.perf_counter()
        status, _, answer = request(address, method, path, headers, data, timeout=seconds, source=source)
        latencies.append(time.perf_counter() - t0)
        assert status == 200, (method, path, answer[:300])
    return latencies


def expected_start(hard_limit: int, header: int = HEADER_SECS, body: int = BODY_SECS, idle: int = IDLE_SECS) -> str:
    """The start line's limits for the default connection limit under this open-files hard limit."""
    limit = max(100, min(2000, (hard_limit - 100) // 3))
    io = "poll" if 100 + 3 * limit > 1024 else "select"
    return f" connection_limit={limit} channel_timeout={idle} io={io} header_timeout={header} body_timeout={body} "


# Deadlines, one connection at a time ---------------------------------------------------------------

def test_the_deadlines_default_to_10_and_30_seconds_and_the_start_line_says_them(tmp_path):
    with serving(tmp_path) as (_, log):
        assert expected_start(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 10, 30) in log.read_text()


def test_a_client_that_stops_mid_headers_is_closed_at_the_header_deadline(tmp_path):
    with serving(tmp_path, **DEADLINES) as (address, log), socket.create_connection(address) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
        waited = seconds_until_closed(sock)
    assert HEADER_SECS <= waited + 0.1 < IDLE_SECS / 2, waited  # the deadline, checked every second; not the idle 30 s
    assert expected_start(resource.getrlimit(resource.RLIMIT_NOFILE)[1]) in log.read_text()


def test_a_client_that_sends_nothing_is_closed_at_the_header_deadline(tmp_path):
    with serving(tmp_path, **DEADLINES) as (address, _), socket.create_connection(address) as sock:
        waited = seconds_until_closed(sock)
    assert HEADER_SECS <= waited + 0.1 < IDLE_SECS / 2, waited


def test_a_client_that_trickles_its_headers_is_closed_at_the_header_deadline(tmp_path):
    """A byte every quarter second restarts waitress's idle timer every time; the deadline still comes."""
    with serving(tmp_path, **DEADLINES) as (address, _), socket.create_connection(address) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        waited = seconds_until_closed(sock, trickle=b"a")
    assert HEADER_SECS <= waited + 0.1 < IDLE_SECS / 2, waited


def test_a_client_that_trickles_its_body_is_closed_at_the_body_deadline(tmp_path):
    with serving(tmp_path, DT_SIGNATURE_SECRET=DT_SECRET, **DEADLINES) as (address, _), \
            socket.create_connection(address) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Dt-Signature: x\r\nContent-Length: 5000\r\n\r\n")
        waited = seconds_until_closed(sock, trickle=b"{")
    assert BODY_SECS <= waited + 0.1 < IDLE_SECS / 2, waited


def test_a_slow_request_inside_the_deadlines_is_answered_and_the_next_one_has_its_own(tmp_path):
    """The header clock starts at the connection, then at each request's first byte: a kept-alive connection
    idle for longer than the header deadline (not the idle timeout) still gets its next request answered."""
    with serving(tmp_path, **DEADLINES) as (address, _), socket.create_connection(address, timeout=10) as sock:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.3)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
        time.sleep(HEADER_SECS + 1.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")


# Many at once ---------------------------------------------------------------------------------------

class Swarm:
    """`count` sockets from one client, half trickling header lines, half trickling a body, each reopened as soon
    as the service closes it: what a slowloris does."""

    def __init__(self, address, count: int):
        self.address, self.reopened = address, 0
        self.sockets = [self.open(i) for i in range(count)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.trickle, daemon=True)

    def open(self, i: int) -> socket.socket:
        """A new slow socket; a closed one when the service resets it at once (past the client's fair share): the
        next round's send fails and opens another."""
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(self.address)
            if i % 2:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nX-Dt-Signature: x\r\nContent-Length: 60000\r\n\r\n")
            else:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            sock.close()
        return sock

    def trickle(self) -> None:
        while not self.stop.wait(0.5):
            for i, sock in enumerate(self.sockets):
                try:
                    sock.sendall(b"{" if i % 2 else b"X-Slow: 1\r\n")
                except OSError:  # closed by the service: open another
                    sock.close()
                    self.sockets[i] = self.open(i)
                    self.reopened += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        for sock in self.sockets:
            sock.close()


def test_healthz_the_page_and_a_delivery_answer_within_1_s_while_1000_sockets_trickle_from_one_other_client(
        tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2500:
        pytest.skip(f"needs an open-files hard limit of 2500 (this machine's is {hard}): 1 000 sockets at each end")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2500), hard))
    with serving(tmp_path, DT_SIGNATURE_SECRET=DT_SECRET, **DEADLINES) as (address, log), \
            Swarm(address, 1000) as swarm:
        latencies, i = [], 0
        # until the service closed as many sockets as there are (each reopened at once): the deadlines, and past
        # the client's fair share (200 of 2 000), at once
        while swarm.reopened < 1000 or i < 5:
            latencies += answers_within(address, 1.0, i, source="127.0.0.2")
            i += 1
            time.sleep(0.1)
            assert i < 200, f"the service closed only {swarm.reopened} sockets"
        assert max(latencies) < 1.0
    assert expected_start(hard) in log.read_text()
    print(f"\n{i} rounds while 1 000 sockets trickled ({swarm.reopened} closed by the service and opened again):"
          f" slowest answer {max(latencies) * 1000:.0f} ms")


# Slow readers of exports ------------------------------------------------------------------------------

def fill(db_path, count: int = 200, pad: int = 60_000) -> None:
    """count events of about `pad` bytes each: an NDJSON export of count x pad bytes, far more than the socket
    buffers and waitress's 1 MiB hold, so a slow reader's export waits on its reader."""
    store = Store(str(db_path))
    start = time.time() - count
    for i in range(count):
        event = {"eventId": f"ev-{i:04d}", "targetName": "projects/p/devices/fridge", "eventType": "temperature",
                 "data": {"temperature": {"value": 4.5}},
                 "timestamp": dt.datetime.fromtimestamp(start + i, dt.UTC).isoformat().replace("+00:00", "Z")}
        body = json.dumps({"event": event, "labels": {"name": "fridge", "pad": "x" * pad}, "metadata": {}}).encode()
        store.add_event(event, start + i, body)
    store.close()


def export_socket(address, path: str = "/events.ndjson") -> socket.socket:
    """A reader with a small receive buffer that has asked for an export and read nothing yet."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(address)
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
    return sock


def first_answer(sock) -> bytes:
    """The start of an answer: its whole head, and for a 503 its whole body (up to its Content-Length), however
    many recv calls that takes (under load one may bring the head alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1024)
        assert chunk, f"closed before the answer's head was whole: {data!r}"
        data += chunk
    if not data.startswith(b"HTTP/1.1 503 "):
        return data
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\nContent-Length: ([0-9]+)\r\n", head + b"\r\n")[1])
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, f"closed before the 503's body was whole: {body!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_eight_slow_export_readers_leave_the_page_health_and_deliveries_answering(tmp_path):
    fill(tmp_path / "db")
    with serving(tmp_path, DT_SIGNATURE_SECRET=DT_SECRET, TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET) as (address, _):
        readers = [export_socket(address) for _ in range(8)]
        firsts = [first_answer(sock) for sock in readers]
        stop = threading.Event()

        def read_slowly():  # 1 KiB from each running export every half second
            while not stop.wait(0.5):
                for sock, first in zip(readers, firsts, strict=True):
                    if first.startswith(b"HTTP/1.1 200 "):
                        sock.recv(1024)

        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        try:
            latencies = []
            for i in range(6):
                latencies += answers_within(address, 1.0, i)
                time.sleep(0.2)
        finally:
            stop.set()
            reader.join(10)
        busy = [first for first in firsts if first.startswith(b"HTTP/1.1 503 ")]
        assert len(busy) == 6 and sum(first.startswith(b"HTTP/1.1 200 ") for first in firsts) == 2, firsts
        for first in busy:
            head, _, body = first.partition(b"\r\n\r\n")
            assert b"\r\nRetry-After: 10\r\n" in head
            assert json.loads(body) == {"error": "2 exports are being downloaded already; try again in a few seconds."}
        for sock in readers:
            sock.close()
        # the slots are free again once the readers hang up; an export still has every row once, in order
        export = wait_for(lambda: downloaded(address, "/events.ndjson"))
        assert [json.loads(line)["event"]["eventId"] for line in export.splitlines()] == \
               [f"ev-{i:04d}" for i in range(200)] + [f"probe-{i}" for i in range(6)]  # the probes' deliveries too
    print(f"\nslowest answer while 8 export readers read slowly: {max(latencies) * 1000:.0f} ms")


def test_a_reader_that_stops_reading_is_closed_after_the_idle_timeout_and_frees_its_export(tmp_path):
    """waitress's idle timeout passes over a connection whose request is still being answered: without more, a
    reader that stops reading would hold its worker thread and export for ever."""
    fill(tmp_path / "db")
    with serving(tmp_path, TCONNECTSYNC_HEROKU_SECRET=SERVICE_SECRET, WAITRESS_CHANNEL_TIMEOUT_SECS="2") as \
            (address, _):
        stalled = [export_socket(address) for _ in range(2)]
        assert all(sock.recv(1024).startswith(b"HTTP/1.1 200 ") for sock in stalled)
        t0 = time.monotonic()
        assert downloaded(address, "/events.csv") is None  # both places taken
        export = wait_for(lambda: downloaded(address, "/events.csv"), timeout=15)
        waited = time.monotonic() - t0
        assert 2 <= waited < 10, waited  # the idle timeout, checked every second
        assert [row.rsplit(",", 1)[1] for row in export.decode().splitlines()[1:]] == \
               [f"ev-{i:04d}" for i in range(200)]
        # One place is free; the other stalled reader may be cut a second later. Until it is, reading from it would
        # let its export run on to the end: first a third reader holds the free place, and a download gets the
        # other one only once both stalled readers are cut off.
        holder = wait_for(lambda: export_taken(address), timeout=15)
        wait_for(lambda: downloaded(address, "/events.csv"), timeout=15)
        holder.close()
        for sock in stalled:  # cut off
            assert len(read_until_closed(sock)) < 200 * 60_000
            sock.close()


def export_taken(address) -> socket.socket | None:
    """A reader holding one of the two export places (it has its answer's first bytes), or None if both are taken."""
    sock = export_socket(address)
    if sock.recv(1024).startswith(b"HTTP/1.1 200 "):
        return sock
    sock.close()
    return None


def downloaded(address, path: str) -> bytes | None:
    """The export, or None if the service answered 503 (two exports are running)."""
    status, _, body = request(address, "GET", path, {"Authorization": f"Bearer {SERVICE_SECRET}"}, timeout=10)
    assert status in (200, 503), (status, body[:300])
    return body if status == 200 else None


def read_until_closed(sock) -> bytes:
    """What arrives until the service closes the connection (a reset ends it too)."""
    sock.settimeout(15)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def begin_export(app, path: str = "/events.ndjson"):
    """An export asked of the app as waitress asks it, nothing read yet; (status, headers, the answer's chunks)."""
    environ = {"PATH_INFO": path, "HTTP_AUTHORIZATION": f"Bearer {SERVICE_SECRET}"}
    wsgiref.util.setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = int(status.split()[0]), dict(headers)

    chunks = app(environ, start_response)
    return seen["status"], seen["headers"], chunks


def test_two_exports_at_once_a_third_waits_and_each_place_is_freed_however_its_answer_ends(make_app, tmp_path):
    app, _ = make_app()
    for i in range(3):
        app.store.add_event({"eventId": f"e{i}", "eventType": "temperature", "timestamp": "2027-01-15T08:00:00Z"},
                            1_800_000_000 + i, b'{"event": {}}')
    first, second = begin_export(app), begin_export(app, "/events.csv")
    assert (first[0], second[0]) == (200, 200)
    status, headers, chunks = begin_export(app)
    assert (status, headers["Retry-After"]) == (503, "10")
    assert json.loads(b"".join(chunks)) == {"error": "2 exports are being downloaded already; try again in a few "
                                                     "seconds."}
    next(iter(first[2]))
    first[2].close()  # what waitress does when the client goes away part way
    third = begin_export(app)
    assert third[0] == 200 and b"".join(third[2]) == b'{"event": {}}\n' * 3
    third[2].close()  # read to the end, then closed: as waitress does
    fourth = begin_export(app)
    assert fourth[0] == 200 and begin_export(app)[0] == 503  # two places taken again (second, and this one)
    second[2].close()
    fourth[2].close()

    corrupt_schema(tmp_path / "tcsync.sqlite3")  # a failing database frees the place it took too
    failed = [begin_export(app) for _ in range(3)]
    assert [(status, json.loads(b"".join(chunks))["error"]) for status, _, chunks in failed] == \
           [(503, f"the database {tmp_path / 'tcsync.sqlite3'} is failing; see the status page")] * 3
