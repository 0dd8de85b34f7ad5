"""Smoke tests: the fakes drive the real tconnectsync 3.0.3, in-process."""

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from fakes import FakeNightscout, FakeTandem

EMAIL = "pumper@example.com"
PASSWORD = "right-password"
NS_SECRET = "ns-secret-value-1234"
FIXTURE = json.loads(Path("/work/shared/fixtures/tandem_source_basal.json").read_text())
START = datetime.fromisoformat("2026-05-07T00:00:00-04:00")
END = datetime.fromisoformat("2026-05-07T00:11:12-04:00")

for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "REQUESTS_PROXY"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.lower(), None)
os.environ.update(
    CACHE_CREDENTIALS="false",
    TCONNECT_EMAIL=EMAIL,
    TCONNECT_PASSWORD=PASSWORD,
    NS_URL="http://127.0.0.1:9/",
    NS_SECRET=NS_SECRET,
    TIMEZONE_NAME="America/New_York",
    NO_PROXY="127.0.0.1,localhost",
)


@pytest.fixture
def tandem():
    """A FakeTandem that tconnectsync points at."""
    fake = FakeTandem(FIXTURE, EMAIL, PASSWORD)
    fake.point_tconnectsync_here()
    yield fake
    fake.close()


@pytest.fixture
def nightscout():
    """An empty FakeNightscout."""
    fake = FakeNightscout(NS_SECRET)
    yield fake
    fake.close()


def _clients(nightscout):
    """Build tconnectsync's Tandem and Nightscout clients (imported after the environment is set)."""
    from tconnectsync.api import TConnectApi
    from tconnectsync.nightscout import NightscoutApi

    return TConnectApi(EMAIL, PASSWORD, "US"), NightscoutApi(nightscout.url, NS_SECRET)


def _sync(tconnect, ns):
    """Run one tconnectsync sync over the fixture window with the default features."""
    from tconnectsync import secret
    from tconnectsync.features import DEFAULT_FEATURES
    from tconnectsync.sync.tandemsource.heroku_helpers import run_oneshot

    return run_oneshot(tconnect, ns, False, DEFAULT_FEATURES, secret, time_start=START, time_end=END)


def test_first_sync_uploads_the_fixture_treatments(tandem, nightscout):
    tconnect, ns = _clients(nightscout)
    assert _sync(tconnect, ns) == (2, 417029)
    assert nightscout.treatments == FIXTURE["expected_treatments"]
    assert nightscout.uploads == 2
    assert tandem.logins == 1


def test_second_sync_uploads_nothing_and_reuses_the_login(tandem, nightscout):
    tconnect, ns = _clients(nightscout)
    _sync(tconnect, ns)
    added, last_seq = _sync(tconnect, ns)
    assert (added, last_seq) == (0, 417029)
    assert nightscout.treatments == FIXTURE["expected_treatments"]
    assert tandem.logins == 1


def test_wrong_password_raises_401(tandem, nightscout):
    from tconnectsync.api.common import ApiException

    tandem.password = "changed-password"
    tconnect, _ = _clients(nightscout)
    with pytest.raises(ApiException) as caught:
        _ = tconnect.tandemsource  # logs in lazily
    assert caught.value.status_code == 401
    assert tandem.login_attempts == 1
    assert tandem.logins == 0


def test_check_login_reports_no_errors(tandem, nightscout, monkeypatch, tmp_path, capsys):
    from tconnectsync import secret
    from tconnectsync.check import check_login

    for name, value in {"TCONNECT_EMAIL": EMAIL, "TCONNECT_PASSWORD": PASSWORD,
                        "NS_URL": nightscout.url, "NS_SECRET": NS_SECRET}.items():
        monkeypatch.setattr(secret, name, value)
    monkeypatch.chdir(tmp_path)
    tconnect, _ = _clients(nightscout)
    check_login(tconnect, START, END)
    out = capsys.readouterr().out
    assert "No API errors returned!" in out
    assert "Found raw events count: 2" in out
    assert (tmp_path / "tconnectsync-check-output.log").exists()
