"""Slow clients against the service as its Procfile starts it: memory, and how fast /healthz answers meanwhile.

    python bench/slow_clients.py [SOCKETS] [BODY_BYTES]

Opens SOCKETS connections (default 1 000) from this one process: half send a request line and then a header line
every half second, half send whole headers announcing a 1 MB body, BODY_BYTES of it at once (default 60 000, about
the largest delivery), then a byte every half second. A socket the service closes is opened again at once. For 40 s
(past the header and body deadlines, so sockets are freed and taken again), /healthz is asked every 0.2 s on a new
connection. Prints the service's RSS before and at its highest, the slowest and median /healthz, and how many
sockets the deadlines closed.
"""

import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import get, start, stop, tree_rss_mb, wait_200

SECS = 40


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    body_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 60_000
    with tempfile.TemporaryDirectory(prefix="tcsync-slow-") as tmp:
        proc, port = start("service", Path(tmp))
        try:
            wait_200(port, proc, time.perf_counter())
            time.sleep(1)
            before = tree_rss_mb(proc.pid)
            peak, latencies, reopened = swarm(port, count, body_bytes, proc.pid, before)
        finally:
            stop(proc)
    print(f"{count} slow sockets ({body_bytes} body bytes sent at once by half of them), {SECS} s: RSS {before:.1f} MB"
          f" before, {peak:.1f} MB at most (+{peak - before:.1f} MB); /healthz median"
          f" {statistics.median(latencies) * 1000:.0f} ms, slowest {max(latencies) * 1000:.0f} ms"
          f" ({len(latencies)} asked); {reopened} sockets closed by the service and opened again")
    return 0


def swarm(port: int, count: int, body_bytes: int, pid: int, peak: float) -> tuple[float, list[float], int]:
    def open_one(i):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"{" * body_bytes)
        else:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        return sock

    sockets = [open_one(i) for i in range(count)]
    stopping, reopened = threading.Event(), [0]

    def trickle():
        while not stopping.wait(0.5):
            for i, sock in enumerate(sockets):
                try:
                    sock.sendall(b"{" if i % 2 else b"X-Slow: 1\r\n")
                except OSError:
                    sock.close()
                    sockets[i] = open_one(i)
                    reopened[0] += 1

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    latencies, deadline = [], time.monotonic() + SECS
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            assert get(port, "/healthz", timeout=30)[0] == 200
            latencies.append(time.perf_counter() - t0)
            peak = max(peak, tree_rss_mb(pid))
            time.sleep(0.2)
    finally:
        stopping.set()
        thread.join(30)
        for sock in sockets:
            sock.close()
    return peak, latencies, reopened[0]


if __name__ == "__main__":
    sys.exit(main())
