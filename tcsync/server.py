"""waitress and its limits: how many connections, how long an idle one lives, how long a request may take to
arrive, how much of it is held.

The numbers were measured with bench/ (docs: Performance), not guessed. waitress restarts a connection's idle timer
on every byte and has no deadline for finishing a request, so a client sending a byte a second would hold its
connection for ever: DeadlineServer adds the deadlines nginx calls client_header_timeout and client_body_timeout.
"""

from __future__ import annotations

import resource
import socket
import time
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer

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


class TimedRequest(HTTPRequestParser):
    """waitress's request parser, noting when the request began and when its headers were complete."""

    began_at = 0.0
    headers_at: float | None = None

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.headers_at is None and self.headers_finished:
            self.headers_at = time.monotonic()
        return consumed


class DeadlineChannel(HTTPChannel):
    """waitress's connection, knowing how long it has waited for the request it is reading."""

    def __init__(self, server, sock, addr, adj, map=None):
        self.first_request_due_from: float | None = time.monotonic()  # the first request's clock starts at accept
        super().__init__(server, sock, addr, adj, map)

    def parser_class(self, adj) -> TimedRequest:  # waitress makes each request's parser as self.parser_class(adj)
        request = TimedRequest(adj)
        request.began_at = self.first_request_due_from or time.monotonic()  # later ones: at their first byte
        self.first_request_due_from = None
        return request

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


class DeadlineServer(TcpWSGIServer):
    """waitress's server, closing connections that miss their deadlines (checked every second, in the main loop)."""

    channel_class = DeadlineChannel

    def __init__(self, application: Any, adj: Adjustments, header_secs: int, body_secs: int):
        self.header_secs, self.body_secs = header_secs, body_secs
        super().__init__(application, adj=adj)

    def handle_accept(self) -> None:
        """Accept what waits, up to ACCEPTS_PER_TURN: waitress accepts one connection per turn of its loop, and each
        turn asks every open connection whether it reads or writes, so with a thousand open, a burst of new ones
        (a slow client's sockets opened again) would keep everyone else waiting in the backlog for seconds."""
        for _ in range(ACCEPTS_PER_TURN):
            open_before = len(self._map)
            super().handle_accept()
            if len(self._map) in (open_before, self.adj.connection_limit):  # nothing waited, or the limit is reached
                return

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
                      threads=8, channel_request_lookahead=1, outbuf_high_watermark=1024 * 1024,
                      inbuf_overflow=MAX_DELIVERY_BYTES + 1,
                      connection_limit=connections, asyncore_use_poll=needs_poll(connections),
                      channel_timeout=settings.channel_timeout_secs, cleanup_interval=1)
    return DeadlineServer(app, adj, settings.header_timeout_secs, settings.body_timeout_secs)
