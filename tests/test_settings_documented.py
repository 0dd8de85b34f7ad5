"""Every setting the code reads is in docs/settings.md, and every setting that page lists in its table is read by the
code: a new setting cannot ship undocumented, and the page cannot promise one that does nothing."""

import re
from pathlib import Path

from tcsync.settings import read_settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
TABLE_ROW_NAME = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.MULTILINE)
CODE_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")

# Environments that walk every branch that reads a name: nothing set; everything set (with testing modes, a port
# given as PORT, a time zone as TIMEZONE_NAME); and the fall-backs (TZ, API_SECRET, LISTEN_PORT, on Heroku).
FULL = {"TCONNECT_EMAIL": "a@example.com", "TCONNECT_PASSWORD": "p", "NS_URL": "https://ns.example.com/",
        "NS_SECRET": "nightscout-secret", "TIMEZONE_NAME": "Europe/Berlin", "ENABLE_TESTING_MODES": "true",
        "TCONNECTSYNC_HEROKU_FEATURES": "BASAL", "PORT": "5000", "DT_SIGNATURE_SECRET": "dt-secret-123"}
FALLBACKS = {"TZ": "Europe/Berlin", "API_SECRET": "nightscout-secret", "LISTEN_PORT": "5000", "DYNO": "web.1"}


class ReadNames(dict):
    """An environment that remembers every name the settings asked it for."""

    def __init__(self, values):
        super().__init__(values)
        self.asked = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.asked.add(name)
        return super().__contains__(name)


def names_the_code_reads() -> set[str]:
    asked = set()
    for values in ({}, FULL, FALLBACKS):
        env = ReadNames(values)
        read_settings(env)
        asked |= env.asked
    return asked


def test_every_setting_the_code_reads_is_documented():
    documented = set(CODE_NAME.findall(SETTINGS_PAGE.read_text()))
    read = names_the_code_reads()
    assert {"TCONNECT_EMAIL", "TIMEZONE_NAME", "WAITRESS_BODY_TIMEOUT_SECS", "TZ", "DYNO"} <= read  # the walk works
    assert sorted(read - documented) == []


def test_every_setting_in_the_table_is_read_by_the_code():
    listed = set(TABLE_ROW_NAME.findall(SETTINGS_PAGE.read_text()))
    assert len(listed) >= 30
    assert sorted(listed - names_the_code_reads()) == []
