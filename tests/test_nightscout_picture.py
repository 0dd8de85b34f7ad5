"""What the family sees: the real Nightscout's own page (cgm-remote-monitor 15.0.7, installed with its web bundle,
tests/ns_server.py) in Debian's chromium at a phone's size, showing the service's announcement.

The service posts the announcement itself (a fridge reading out of range, through the app, as in
tests/test_nightscout_e2e.py). Nightscout's page shows an announcement this way (lib/plugins/treatmentnotify.js,
lib/api3/alarmSocket.js, lib/client/index.js, lib/client/renderer.js): when the newest treatment is an announcement
less than 10 minutes old, each data cycle of the server sends it to the open pages over the /alarm socket; the page
writes its note into the header bar's title (h1.customTitle, in orange: #container.announcing) for 5 minutes. On a
phone the title is cut to fit (ellipsis); the whole note is in the tooltip of the announcement's orange mark on the
chart (mouseover: a tap on a phone).

The screenshot (the top 560 pixels of the page) goes to artifacts/screenshots/nightscout-announcement-phone.png; the
one in the docs, docs/nightscout-announcement.png, is a copy of one (the page shows the time, so no two runs give the
same file: the test checks the text on the page, not the pixels).

The first run installs 15.0.7 with its web bundle (about 3 minutes on 2 cores, once per machine); then the test takes
about 15 seconds, Nightscout's and chromium's start included.
"""

import time
from pathlib import Path

import pytest
from conftest import NS_SECRET
from test_alerts import body_of, deliver
from test_browser import SCREENSHOTS, browser  # noqa: F401 (the fixture)

from tcsync.alerts import ENTERED_BY
from tcsync.readings import iso

VERSION = "15.0.7"
PHONE = {"width": 390, "height": 844}
TOP = 560  # pixels of the page kept in the picture: the header bar, the reading and the chart with the tooltip
NOTE_PREFIX = "Insulin fridge 9.4 °C: above 8 °C since "
TITLE = "#toolbar h1.customTitle"
ANNOUNCEMENT_DOT = "circle.treatment-dot[stroke='orange']"  # Nightscout's mark of an announcement on its chart


@pytest.fixture(scope="module")
def bundled_nightscout():
    import ns_server

    try:
        server = ns_server.NightscoutServer(VERSION, api_secret=NS_SECRET, bundle=True)
    except ns_server.NightscoutUnavailable as missing:
        pytest.skip(str(missing))
    yield server
    server.close()


def a_family_site(ns, now):
    """What a family's site holds besides our announcement: a profile (without one Nightscout's page leaves for its
    profile editor) and the last hour of CGM readings, every 5 minutes, the newest 2 minutes old."""
    def day(value):
        return [{"time": "00:00", "value": value, "timeAsSeconds": 0}]

    profile = {"dia": 4, "carbratio": day(10), "carbs_hr": 20, "delay": 20, "sens": day(50), "basal": day(0.8),
               "target_low": day(80), "target_high": day(160), "timezone": "America/New_York", "units": "mg/dl"}
    assert ns.post("profile", {"defaultProfile": "Default", "startDate": "2020-01-01T00:00:00.000Z",
                               "units": "mg/dl", "store": {"Default": profile}})[0] == 200
    readings = [{"type": "sgv", "sgv": 118 + 2 * i, "direction": "Flat", "device": "cgm",
                 "date": int((now - (2 + 5 * i) * 60) * 1000), "dateString": iso(now - (2 + 5 * i) * 60)}
                for i in range(12)]
    assert ns.post("entries", readings)[0] == 200


def test_nightscout_shows_the_services_announcement_in_its_header_bar(browser, bundled_nightscout, make_app):  # noqa: F811
    """The note in the header bar (cut to fit a phone's width, as Nightscout does), and whole in Nightscout's own
    tooltip on its orange mark on the chart (a tap on a phone)."""
    ns = bundled_nightscout
    ns.clear()
    a_family_site(ns, time.time())
    app, log = make_app(NS_URL=ns.url, DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0")  # the real clock
    # Service workers blocked: Nightscout's reloads the page once it is installed
    context = browser.new_context(viewport=PHONE, timezone_id="America/New_York", service_workers="block")
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        assert page.goto(ns.url).status == 200  # a reader (Nightscout's default AUTH_DEFAULT_ROLES) sees the page
        page.wait_for_function("() => window.Nightscout && Nightscout.client && Nightscout.client.alarmSocket"
                               " && Nightscout.client.alarmSocket.connected", timeout=20_000)
        assert page.locator(TITLE).inner_text() == "Nightscout"

        # The fridge warms: one reading out of range, now. The service writes the alert and posts its announcement.
        deliver(app, body_of("fridge1-warm", "fridge1", "temperature", {"temperature": {"value": 9.4}},
                             time.time() - 20))
        assert app.alerts.send_pending() == 1 and len(log.events("alert.announced")) == 1
        (kept,) = [t for t in ns.treatments() if t.get("eventType") == "Announcement"]
        assert (kept["enteredBy"], kept["isAnnouncement"]) == (ENTERED_BY, True)
        note = kept["notes"]
        assert note.startswith(NOTE_PREFIX), note

        # Nightscout's page puts it in its header bar, in its announcement colour.
        page.wait_for_function(f"(note) => document.querySelector('{TITLE}').textContent === note"
                               " && document.querySelector('#container').classList.contains('announcing')",
                               arg=note, timeout=15_000)
        title = page.locator(TITLE)
        assert title.is_visible() and title.evaluate("h => getComputedStyle(h).color") == "rgb(255, 165, 0)"
        # and its mark on the chart, tapped, shows the whole note in Nightscout's tooltip
        page.locator(ANNOUNCEMENT_DOT).hover()
        tooltip = page.locator(".tooltip").filter(has_text=note)
        tooltip.wait_for(state="visible", timeout=5_000)
        box = tooltip.bounding_box()
        assert 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"] and box["y"] + box["height"] <= TOP
        assert "Entered By: tcsync_wsgi" in tooltip.inner_text()
        assert errors == []

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        picture = SCREENSHOTS / "nightscout-announcement-phone.png"
        page.screenshot(path=picture, clip={"x": 0, "y": 0, "width": PHONE["width"], "height": TOP})
        assert Path(picture).stat().st_size < 150_000
    finally:
        context.close()
