"""waitress and its limits: how many connections, how long an idle one lives, how much of a request it holds.

The numbers were measured with bench/ (docs: Performance), not guessed.
"""

from __future__ import annotations

import resource
from typing import Any

from tcsync.settings import Settings

FD_RESERVE = 100  # open files kept for the store, the sync lock, outgoing HTTPS calls, the log and Python itself
FDS_PER_CONNECTION = 3  # waitress: a socket, and a temporary file each for a large request body and answer
# Each open connection may hold the request headers it has sent so far, up to MAX_HEADER_BYTES (waitress's default is
# 256 KiB; ours are far below 32 KiB: the longest is X-Dt-Signature's token, at most 4 KiB).
MAX_HEADER_BYTES = 32 * 1024
# select() watches descriptors below 1024 only; past that it fails and takes waitress's loop down. poll() has no such
# limit but cost 45 % of POST / throughput under wrk (527 vs 905 deliveries/s, medians of 3 alternating rounds), so
# it is used only for a WAITRESS_CONNECTION_LIMIT that select() cannot hold.
SELECT_FDS = 1024


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
    and select()'s 1024 descriptors leave room for (308), never fewer than waitress's own default of 100. Slow
    clients each hold one; at waitress's 100, a hundred of them kept everyone else out."""
    files = open_files_limit()  # raised to the hard limit either way: a configured limit needs the files too
    if settings.connection_limit:
        return settings.connection_limit
    return max(100, (min(files, SELECT_FDS) - FD_RESERVE) // FDS_PER_CONNECTION)


def needs_poll(connections: int) -> bool:
    """Whether that many connections could take descriptors past select()'s reach."""
    return FD_RESERVE + connections * FDS_PER_CONNECTION > SELECT_FDS


def make_server(app: Any, settings: Settings):
    """waitress serving app with our limits; raises OSError when it cannot listen (the port is taken, the address
    is not this machine's)."""
    import waitress

    # channel_request_lookahead=1 keeps a keep-alive connection readable while its request runs, so the
    # next request is read as it arrives instead of after a wake-up of the main thread: POST / x4, GET / +20 %.
    # threads=8: more deliveries in flight share one commit of the store's writer (+20 % over 4).
    # outbuf_high_watermark: a streamed export waits for the client past 1 MiB buffered instead of
    # waitress's 16 MiB (bench/export.py: +20 MB -> +5 MB for 100 000 events).
    # Against slow clients: three times waitress's connections (connection_limit(); poll() only past select()'s
    # reach, see SELECT_FDS), and one idle for channel_timeout closed, looked for every half of it (waitress
    # looks every 30 s, so a 2 s timeout would take up to 32 s).
    timeout, connections = settings.channel_timeout_secs, connection_limit(settings)
    return waitress.create_server(app, host=settings.host, port=settings.port, ident="tcsync_wsgi",
                                  max_request_body_size=1024 * 1024, max_request_header_size=MAX_HEADER_BYTES,
                                  clear_untrusted_proxy_headers=True,
                                  threads=8, channel_request_lookahead=1, outbuf_high_watermark=1024 * 1024,
                                  connection_limit=connections, asyncore_use_poll=needs_poll(connections),
                                  channel_timeout=timeout, cleanup_interval=max(1, timeout // 2))
