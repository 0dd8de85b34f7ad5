"""waitress and its limits: how many connections, how long an idle one lives, how long a request may take to
arrive, how much of it is held.

The numbers were measured with bench/ (docs: Performance), not guessed. waitress restarts a connection's idle timer
on every byte and has no deadline for finishing a request, so a client sending a byte a second would hold its
connection for ever: DeadlineServer adds the deadlines nginx calls client_header_timeout and client_body_timeout.
"""

from __future__ import annotations

import collections
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

from tcsync.settings import Settings
from tcsync.web import MAX_DELIVERY_BYTES

FD_RESERVE = 100  # open files kept for the store, the sync lock, outgoing HTTPS calls, the log and Python itself
FDS_PER_CONNECTION = 3  # waitress: a socket, and a temporary file each for a large request body and answer
# With the deadlines, a client's slow connections are freed within seconds, but one client opening 1 000 at once
# still takes 1 000 places: twice that leaves room for everyone else. Each may hold up to MAX_HEADER_BYTES of
# request headers (waitress's default is 256 KiB; ours are far below 32 KiB: the longest is X-Dt-Signature's token,
# at most 4 KiB).
DEFAULT_CONNECTIONS_CEILING = 2000
MAX_HEADER_BYTES = 32 * 1024
# select() watches descriptors below 1024 only; past that it fails and takes waitress's loop down. poll() has no such
# limit, and is used whenever the connection limit could take descriptors past it.
SELECT_FDS = 1024
ACCEPTS_PER_TURN = 100
# One client (an address) may hold a tenth of the connection limit, at most this many: a client that opens 2 000
# slow sockets, and opens each again the moment it is closed, would otherwise keep the limit full for everyone.
FAIR_SHARE_CEILING = 200
# Connections over a share are refused in the same turn that accepts: up to this many a turn, so that a client
# opening them again at once cannot fill the listen backlog ahead of everyone else's.
REFUSALS_PER_TURN = 1000
# Answers that read nothing a delivery waits for: the status page (from its built view), /healthz, the open alerts.
LIGHT_PATHS = frozenset(("/", "/healthz", "/alerts"))
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, nothing kept in TIME_WAIT


class OverShare(Error):
    """waitress's error answer for a request whose client (behind a proxy) already holds its share."""

    code, reason = 429, "Too Many Requests"

    def to_response(self, ident=None):
        status, headers, body = super().to_response(ident)
        return status, [*headers, ("Retry-After", "1")], body


def fair_share(connection_limit: int) -> int:
    """How many connections one client may hold at once: a tenth of the limit, at most FAIR_SHARE_CEILING."""
    return max(1, min(FAIR_SHARE_CEILING, connection_limit // 10))


class TimedRequest(HTTPRequestParser):
    """waitress's request parser, noting when the request began and when its headers were complete."""

    began_at = 0.0
    headers_at: float | None = None
    # Behind a trusted proxy: asked once the headers are in whether the client they name may take the connection.
    admit_client: Callable[[TimedRequest], bool] | None = None

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.headers_at is None and self.headers_finished:
            self.headers_at = time.monotonic()
            if self.admit_client is not None and not self.error and not self.admit_client(self):
                self.error = OverShare("This client has too many connections open; try again in a moment.")
                self.completed = True  # answered at once with the 429; the rest of the body is not read
                return len(data)
        return consumed


class DeadlineChannel(HTTPChannel):
    """waitress's connection, knowing how long it has waited for the request it is reading."""

    client: str | None = None  # whose share this connection counts in (DeadlineServer.take); None: nobody's yet
    proxied = False  # from a trusted proxy: each request's X-Forwarded-For names the client

    def __init__(self, server, sock, addr, adj, map=None):
        self.first_request_due_from: float | None = time.monotonic()  # the first request's clock starts at accept
        super().__init__(server, sock, addr, adj, map)

    def parser_class(self, adj) -> TimedRequest:  # waitress makes each request's parser as self.parser_class(adj)
        request = TimedRequest(adj)
        request.began_at = self.first_request_due_from or time.monotonic()  # later ones: at their first byte
        self.first_request_due_from = None
        if self.proxied:
            request.admit_client = self.admit_forwarded_client
        return request

    def admit_forwarded_client(self, request: TimedRequest) -> bool:
        """Whether the client the proxy names (X-Forwarded-For's last entry, the one the proxy added) may take this
        connection; a proxy that names none is its own client."""
        forwarded = request.headers.get("X_FORWARDED_FOR", "").rpartition(",")[2].strip()
        return self.server.take(self, forwarded or self.addr[0])

    def del_channel(self, map=None):
        self.server.release(self)  # closed: its place in its client's share is free
        super().del_channel(map)

    def overdue(self, now: float, header_secs: int, body_secs: int) -> bool:
        """Whether the request being read has missed its deadline: its headers header_secs after it began (the
        connection's accept for the first request, its first byte for later ones), its body body_secs after them."""
        request = self.request
        if self.requests or self.total_outbufs_len:  # answering, not reading: the clock waits (idle timeout rules)
            if request is not None:
                request.began_at = now
                if request.headers_at is not None:
                    request.headers_at = now
            return False
        if request is None:  # between requests waitress's idle timeout rules; before the first, the header deadline
            return self.first_request_due_from is not None and now - self.first_request_due_from > header_secs
        if request.headers_at is None:
            return now - request.began_at > header_secs
        return now - request.headers_at > body_secs

    def stalled(self, now: float, idle_secs: int) -> bool:
        """Whether an answer has waited idle_secs on a client that reads none of it. waitress's idle timeout passes
        over a connection whose request still runs (a streamed export: its worker thread would wait for ever), and
        closes the others only once their socket takes more data, which a client that stopped reading never does."""
        return bool(self.total_outbufs_len) and now - self.last_activity > idle_secs  # time.time() of the last send


class PageFirstDispatcher(ThreadedTaskDispatcher):
    """waitress's worker threads, taking a GET or HEAD of LIGHT_PATHS before the deliveries waiting, plus one thread
    that takes only those. In a storm of deliveries all workers wait for their commits, and a GET / waited for one
    of them to finish (issue 28: p99 46-58 ms at the client, 1.5 ms inside the handler)."""

    def __init__(self):
        super().__init__()
        self.light_cv = threading.Condition(self.lock)
        self.closing = False

    def start_light_thread(self) -> None:
        self.start_new_thread(self.light_thread, "page")

    def add_task(self, task) -> None:
        """task: a waitress channel whose first request is the one to answer next."""
        request = task.requests[0] if getattr(task, "requests", None) else None
        task.light = bool(request) and request.command in ("GET", "HEAD") and request.path in LIGHT_PATHS
        if not task.light:
            super().add_task(task)
            return
        with self.lock:  # after the light ones already waiting, before every other
            self.queue.insert(next((i for i, t in enumerate(self.queue) if not getattr(t, "light", False)),
                                   len(self.queue)), task)
            self.queue_cv.notify()
            self.light_cv.notify()

    def light_thread(self, _thread_no) -> None:
        while True:
            with self.lock:
                while not self.closing and not (self.queue and getattr(self.queue[0], "light", False)):
                    self.light_cv.wait()
                if self.closing:
                    return
                task = self.queue.popleft()
            try:
                task.service()
            except BaseException:  # as waitress's own workers: log it, serve the next
                self.logger.exception("Exception when servicing %r", task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        with self.lock:
            self.closing = True
            self.light_cv.notify_all()
        return super().shutdown(cancel_pending, timeout)


class DeadlineServer(TcpWSGIServer):
    """waitress's server, closing connections that miss their deadlines (checked every second, in the main loop)."""

    channel_class = DeadlineChannel

    def __init__(self, application: Any, adj: Adjustments, header_secs: int, body_secs: int, trusted_proxy: str = ""):
        self.header_secs, self.body_secs = header_secs, body_secs
        self.trusted_proxy = trusted_proxy
        self.share = fair_share(adj.connection_limit)
        self.held: collections.Counter[str] = collections.Counter()  # open connections per client
        dispatcher = PageFirstDispatcher()
        dispatcher.set_thread_count(adj.threads)
        dispatcher.start_light_thread()
        super().__init__(application, adj=adj, dispatcher=dispatcher)

    def handle_accept(self) -> None:
        """Accept what waits, up to ACCEPTS_PER_TURN new connections (and REFUSALS_PER_TURN refused ones): waitress
        accepts one connection per turn of its loop, and each turn asks every open connection whether it reads or
        writes, so with a thousand open, a burst of new ones (a slow client's sockets opened again) would keep
        everyone else waiting in the backlog for seconds. A connection over its client's share is reset at once."""
        accepted = 0
        for _ in range(REFUSALS_PER_TURN):
            if accepted >= ACCEPTS_PER_TURN or len(self._map) >= self.adj.connection_limit:
                return
            try:
                pair = self.accept()
            except OSError:  # out of open files, or a bogus socket (waitress logs and goes on too)
                return
            if pair is None:  # nothing waits
                return
            accepted += self.open_channel(*pair)

    def open_channel(self, conn: socket.socket, addr: Any) -> bool:
        """A connection for conn, counted in its client's share (from a trusted proxy: once a request names the
        client); False when that share is full, and conn is reset instead."""
        peer = str(addr[0]) if isinstance(addr, tuple) else str(addr)
        proxied = self.trusted_proxy in ("*", peer)
        if not proxied and self.held[peer] >= self.share:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            conn.close()
            return False
        try:
            self.set_socket_options(conn)
        except OSError:  # the client has gone already
            conn.close()
            return False
        channel = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        channel.proxied = proxied
        if not proxied:
            self.take(channel, peer)
        return True

    def take(self, channel: DeadlineChannel, client: str) -> bool:
        """Count channel in client's share if there is room (it leaves the share it was in); whether there was."""
        if channel.client == client:
            return True
        self.release(channel)
        if self.held[client] >= self.share:
            return False
        self.held[client] += 1
        channel.client = client
        return True

    def release(self, channel: DeadlineChannel) -> None:
        """Free channel's place in its client's share."""
        if channel.client is not None:
            self.held[channel.client] -= 1
            if not self.held[channel.client]:
                del self.held[channel.client]
            channel.client = None

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # the idle timeout (now: time.time(), waitress's clock)
        monotonic = time.monotonic()
        for channel in self.active_channels.values():
            if channel.overdue(monotonic, self.header_secs, self.body_secs):
                channel.will_close = True  # closed by the main loop, as waitress closes an idle one
            elif channel.stalled(now, self.adj.channel_timeout):
                # Shut down, not closed here: the main loop sees the socket fail, closes it and wakes a waiting
                # worker (its write then ends with ClientDisconnected), as when a client goes away mid-answer.
                try:
                    channel.socket.shutdown(socket.SHUT_RDWR)
                except OSError:  # already gone
                    pass


def open_files_limit() -> int:
    """The process's limit on open files, first raised to its hard limit where the system allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # over the kernel's own ceiling (an unlimited hard limit): keep the soft one
            pass
    return soft


def connection_limit(settings: Settings) -> int:
    """How many connections waitress may hold open: WAITRESS_CONNECTION_LIMIT, or as many as the open-files limit
    leaves room for, at most DEFAULT_CONNECTIONS_CEILING, never fewer than waitress's own default of 100."""
    files = open_files_limit()  # raised to the hard limit either way: a configured limit needs the files too
    if settings.connection_limit:
        return settings.connection_limit
    return max(100, min(DEFAULT_CONNECTIONS_CEILING, (files - FD_RESERVE) // FDS_PER_CONNECTION))


def needs_poll(connections: int) -> bool:
    """Whether that many connections could take descriptors past select()'s reach."""
    return FD_RESERVE + connections * FDS_PER_CONNECTION > SELECT_FDS


def make_server(app: Any, settings: Settings) -> DeadlineServer:
    """waitress serving app with our limits and deadlines; raises OSError when it cannot listen (the port is taken,
    the address is not this machine's)."""
    # channel_request_lookahead=1 keeps a keep-alive connection readable while its request runs, so the
    # next request is read as it arrives instead of after a wake-up of the main thread: POST / x4, GET / +20 %.
    # threads=8: more deliveries in flight share one commit of the store's writer (+20 % over 4).
    # outbuf_high_watermark: a streamed export waits for the client past 1 MiB buffered instead of
    # waitress's 16 MiB (bench/export.py: +20 MB -> +5 MB for 100 000 events).
    # inbuf_overflow: a request body larger than any the service takes (a delivery) goes to a temporary file as it
    # arrives, not to memory up to waitress's 512 KiB: 1 000 slow clients sending 500 KB each took +266 MB.
    # Against slow clients: connection_limit() connections (poll() past select()'s reach, see SELECT_FDS), one idle
    # for channel_timeout closed, and the deadlines; all looked for every second (cleanup_interval; waitress's 30 s
    # would let a 10 s deadline run to 40 s).
    connections = connection_limit(settings)
    adj = Adjustments(host=settings.host, port=settings.port, ident="tcsync_wsgi",
                      max_request_body_size=1024 * 1024, max_request_header_size=MAX_HEADER_BYTES,
                      clear_untrusted_proxy_headers=True,
                      **proxy_adjustments(settings.trusted_proxy),
                      threads=8, channel_request_lookahead=1, outbuf_high_watermark=1024 * 1024,
                      inbuf_overflow=MAX_DELIVERY_BYTES + 1,
                      connection_limit=connections, asyncore_use_poll=needs_poll(connections),
                      channel_timeout=settings.channel_timeout_secs, cleanup_interval=1)
    return DeadlineServer(app, adj, settings.header_timeout_secs, settings.body_timeout_secs, settings.trusted_proxy)


def proxy_adjustments(trusted_proxy: str) -> dict[str, Any]:
    """waitress's settings that make a trusted proxy's client (X-Forwarded-For's last entry) the request's
    REMOTE_ADDR; none without one."""
    if not trusted_proxy:
        return {}
    return {"trusted_proxy": trusted_proxy, "trusted_proxy_count": 1, "trusted_proxy_headers": {"x-forwarded-for"}}
