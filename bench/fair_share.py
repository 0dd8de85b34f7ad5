"""One client's many sockets against everyone else's /healthz (issue 27, N6).

    python bench/fair_share.py [SOCKETS] [SECS] [KIND ...]

For each KIND (body: slow bodies, a byte every half second; headers: header lines trickled every half second;
idle: keep-alive connections that asked once and then say nothing), a separate process keeps SOCKETS connections
open from 127.0.0.1 (default 2 000), opening again at once every one the service closes. Meanwhile a legitimate
client at 127.0.0.2 (Linux routes all of 127.0.0.0/8 to lo, so it can bind that as its source) asks /healthz every
quarter second on a new connection for SECS seconds (default 20), with a 5 s timeout. Prints, per kind, how many
answered, the median and slowest answer, and how many timed out.
"""

import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import start, stop, wait_200

ATTACKER, LEGITIMATE = "127.0.0.1", "127.0.0.2"
OPENERS = {
    "body": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{",
    "headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
    "idle": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
}
TRICKLES = {"body": b"{", "headers": b"X-Slow: 1\r\n", "idle": b""}


def open_one(port: int, kind: str) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(1)
    try:
        sock.bind((ATTACKER, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(OPENERS[kind])
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        return None


def alive(sock: socket.socket, kind: str) -> bool:
    """Whether the service still holds the socket open (an idle one's answer is read and dropped)."""
    try:
        if TRICKLES[kind]:
            sock.send(TRICKLES[kind])
        return sock.recv(65536) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def attack(port: int, kind: str, count: int, secs: float) -> None:
    sockets: list[socket.socket | None] = [None] * count
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        for i, sock in enumerate(sockets):
            if sock is None or not alive(sock, kind):
                if sock is not None:
                    sock.close()
                sockets[i] = open_one(port, kind)
        time.sleep(0.5)
    for sock in sockets:
        if sock is not None:
            sock.close()


def healthz_from_elsewhere(port: int, timeout: float = 5) -> float | None:
    """Seconds to a whole /healthz answer from 127.0.0.2, or None on a timeout or a refusal."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(LEGITIMATE, 0)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return None
    return time.perf_counter() - t0 if answer.startswith(b"HTTP/1.1 ") else None


def measure(kind: str, count: int, secs: float) -> str:
    with tempfile.TemporaryDirectory(prefix="tcsync-fair-") as tmp:
        proc, port = start("service", Path(tmp))
        try:
            wait_200(port, proc, time.perf_counter())
            attacker = multiprocessing.Process(target=attack, args=(port, kind, count, secs + 5))
            attacker.start()
            time.sleep(5)  # the sockets opened
            latencies, failed, deadline = [], 0, time.monotonic() + secs
            while time.monotonic() < deadline:
                took = healthz_from_elsewhere(port)
                if took is None:
                    failed += 1
                else:
                    latencies.append(took)
                time.sleep(0.25)
            attacker.join(30)
        finally:
            stop(proc)
    answered = (f"median {statistics.median(latencies) * 1000:.0f} ms, slowest {max(latencies) * 1000:.0f} ms,"
                f" over 1 s {sum(t > 1 for t in latencies)}") if latencies else "none answered"
    return f"{kind}: {count} sockets; {len(latencies) + failed} /healthz asked, {failed} timed out; {answered}"


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    for kind in sys.argv[3:] or list(OPENERS):
        print(measure(kind, count, secs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
