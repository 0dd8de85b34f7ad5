"""Idle RSS and time to first 200 of `python tcsync_wsgi.py serve`, with and without ALERT_URLS (median of N runs).

Usage: python bench/idle.py REPO N (docs/performance.md, Apprise and idle memory)."""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(port: int) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.01)


def once(repo: str, extra: dict) -> tuple[float, int]:
    """(seconds from the start to the first 200, VmRSS in KiB 3 s later)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PATH": os.environ["PATH"], "PORT": str(port), "LISTEN_HOST": "127.0.0.1",
               "TCONNECTSYNC_HEROKU_DB": f"{tmp}/db.sqlite3", "TCONNECTSYNC_HEROKU_SECRET": "s" * 16,
               "NS_URL": "http://127.0.0.1:9/", "NS_SECRET": "n" * 16, "TCONNECT_EMAIL": "a@b.c",
               "TCONNECT_PASSWORD": "pw", "TIMEZONE_NAME": "UTC", **extra}
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "tcsync_wsgi.py", "serve"], cwd=repo, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            first_200(port)
            first = time.monotonic() - started
            time.sleep(3)
            with open(f"/proc/{process.pid}/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
            return first, rss
        finally:
            process.terminate()
            process.wait()


def main(repo: str, runs: int) -> None:
    for label, extra in (("without ALERT_URLS", {}), ("with ALERT_URLS", {"ALERT_URLS": "json://127.0.0.1:9/x"})):
        measured = [once(repo, extra) for _ in range(runs)]
        print(f"{label}: first 200 {statistics.median(m[0] for m in measured) * 1000:.0f} ms, "
              f"idle RSS {statistics.median(m[1] for m in measured) / 1024:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
