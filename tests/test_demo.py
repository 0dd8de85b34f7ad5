"""`python tcsync_wsgi.py demo` as a person runs it: a process, its page, SIGTERM."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, request, wait_for
from pg_server import free_port

SPEED = "12"  # the fridge posts every 5/12 s, the timer syncs every 5 s: one warm spell in about 8 s


def wait_until(check, what, out_file: Path, timeout=20.0):
    """check()'s first true value within timeout seconds, else fail naming what, with the demo's output so far."""
    return wait_for(check, timeout, 0.2,
                    explain=lambda: f"the demo never showed {what}:\n{out_file.read_text()[-3000:]}")


def page(port, path="/"):
    try:
        status, _, body = request(("127.0.0.1", port), "GET", path, timeout=5)
    except OSError:
        return None, ""
    return status, body.decode()


def title(port) -> str:
    match = re.search(r"<title>([^<]*) · tconnectsync service</title>", page(port)[1])
    return match.group(1) if match else ""


def test_the_demo_shows_syncs_an_alert_its_announcement_and_its_end(tmp_path):
    port, out_file = free_port(), tmp_path / "demo.out"
    env = {"PATH": os.environ.get("PATH", ""), "PORT": str(port), "TCSYNC_DEMO_SPEED": SPEED,
           "PYTHONUNBUFFERED": "1", "DATABASE_URL": "postgres://must-not-be-used/", "ALERT_URLS": "ntfys://nope"}
    with out_file.open("w") as out:
        proc = subprocess.Popen([sys.executable, "tcsync_wsgi.py", "demo"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        banner = wait_until(lambda: re.search(r"demo: (http://127\.0\.0\.1:\d+/)\?secret=(\S+)", out_file.read_text()),
                            "its address", out_file)
        address, secret = banner.groups()
        assert address == f"http://127.0.0.1:{port}/"
        text = out_file.read_text()
        assert "Nothing here is real and nothing leaves this machine" in text
        store = Path(re.search(r"Its data lives in (\S+), deleted", text).group(1))
        assert store.is_dir()
        wait_until(lambda: "event=run.finished run_id=1 trigger=timer outcome=ok uploaded=36" in out_file.read_text(),
                   "a sync", out_file)
        assert wait_until(lambda: title(port), "the page", out_file) in ("ok", "alert")
        wait_until(lambda: title(port) == "alert", "the alert badge", out_file)
        assert page(port, "/alerts")[0] == 503
        wait_until(lambda: "the stand-in Nightscout received an announcement: Demo insulin fridge 9.1 °C: above 8 °C"
                   in out_file.read_text(), "the announcement in the stand-in Nightscout", out_file)
        wait_until(lambda: title(port) == "ok", "the alert's end", out_file)
        assert page(port, "/alerts")[0] == 200
        history = wait_until(lambda: "announced; end announced" in page(port, f"/?secret={secret}")[1],
                             "the end announced", out_file)
        assert history
        assert 'class="chart"' in page(port)[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=28) == 0
    finally:
        proc.kill()
    text = out_file.read_text()
    assert "event=stopped" in text and "Traceback" not in text
    assert f"demo: stopped; {store} deleted" in text
    assert not store.exists()
