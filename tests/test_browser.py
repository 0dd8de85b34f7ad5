"""The status page in a real browser: Debian's chromium, driven by Playwright, against the service on waitress
with the fakes of Tandem and Nightscout, at a phone's and a desktop's size.

Needs /usr/bin/chromium (.ci/run installs Debian's chromium where it is missing; TCSYNC_TEST_CHROMIUM names another
binary). Without it these tests fail; TCSYNC_TEST_BROWSER=skip skips them instead. Screenshots go to
artifacts/screenshots/ (not committed) for a person to look at.
"""

import datetime as dt
import json
import math
import os
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import SERVICE_SECRET, LogLines, bearer, request, runs_of, served, wait_for
from test_receiver import sign

import tcsync_wsgi
from tcsync.log import Log
from tcsync.markup import clock_text
from tcsync.readings import iso
from tcsync.settings import load_settings, read_settings
from tcsync.store import Store
from tcsync.sync import Run

CHROMIUM = os.environ.get("TCSYNC_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"  # the repository's artifacts/
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
WITH_SECRET = "/?" + urllib.parse.urlencode({"secret": SERVICE_SECRET})


@pytest.fixture(scope="module")
def browser():
    """One chromium for the module."""
    if os.environ.get("TCSYNC_TEST_BROWSER") == "skip":
        pytest.skip("TCSYNC_TEST_BROWSER=skip: the browser tests are skipped")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or set TCSYNC_TEST_CHROMIUM to one), or "
                    "set TCSYNC_TEST_BROWSER=skip to skip the browser tests", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


class Tab:
    """A page at one viewport, reused by every test; it keeps the console errors it saw."""

    def __init__(self, browser, name, viewport):
        self.name, self.page, self.errors = name, browser.new_page(viewport=viewport), []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, address, path="/"):
        self.errors.clear()
        response = self.page.goto(f"http://{address[0]}:{address[1]}{path}")
        assert response.status == 200
        # under the page's policy: anything it blocked (a style, the icon, Sync now's post) is a console error
        assert response.headers["content-security-policy"].startswith("default-src 'none'; ")
        return self.page

    def check(self, scenario, dark=False):
        """No sideways scrolling, no console error; a screenshot for people (and one in dark colours)."""
        page = self.page
        assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"], self.name
        assert self.errors == []
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{scenario}-{self.name}.png", full_page=True)
        if dark:
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=SCREENSHOTS / f"{scenario}-{self.name}-dark.png", full_page=True)
            page.emulate_media(color_scheme="light")


@pytest.fixture(scope="module")
def tabs(browser):
    return [Tab(browser, name, viewport) for name, viewport in VIEWPORTS.items()]


# What the page shows, read from the DOM ---------------------------------------------------------

MARK_COUNT = """[...document.querySelectorAll('svg.strip path.run')]
    .reduce((n, path) => n + (path.getAttribute('d').match(/M/g) || []).length, 0)"""
CHART = """(figure) => ({
    points: [...figure.querySelectorAll('polyline.line')].flatMap(line =>
        line.getAttribute('points').trim().split(/\\s+/).map(pair => pair.split(',').map(Number))),
    min: figure.querySelector('.min').textContent, max: figure.querySelector('.max').textContent,
    outside: ((figure.querySelector('path.dot.out') || {getAttribute: () => ''}).getAttribute('d').match(/M/g)
              || []).length})"""


def chart_values(page, readings, card=0):
    """The first chart of a card read back as values, through the smallest and largest reading sent; checks that
    its min and max labels name those two."""
    chart = page.locator(".card").nth(card).locator("figure.chart").first.evaluate(CHART)
    low, high = min(value for _, value in readings), max(value for _, value in readings)
    assert chart["min"].startswith(f"min {low:.1f} °C (") and chart["max"].startswith(f"max {high:.1f} °C (")
    ys = [y for _, y in chart["points"]]
    return [low + (max(ys) - y) / (max(ys) - min(ys)) * (high - low) for y in ys], chart


def runs_in_the_last_day(address):
    since = time.time() - 86400
    return [run for run in json.loads(request(address, "GET", "/runs?limit=1000", bearer())[2])["runs"]
            if dt.datetime.fromisoformat(run["started_at"]).timestamp() >= since]


def page_shows_all_of_it(app, address):
    """Wait for the page's view (built in the background, tcsync.view) to show what the scenario just stored: a view
    built after this call, and every run of the last day in its strip."""
    app.view.fresh()
    wait_for(lambda: f"{len(runs_in_the_last_day(address))} syncs in the last 24 hours"
             in request(address, "GET", "/")[2].decode(), timeout=15)


# Setting the scene: history written as the service writes it, readings delivered as the Data Connector does ----

def history(db_path, now, failing_since=None, slept=(16, 13)):
    """A day of timer runs every 15 minutes before this start: failures 10 h to 8 h ago (Nightscout was down), none
    while the dyno slept, failures from failing_since (seconds ago) on."""
    store = Store(str(db_path))
    for i in range(96, 0, -1):
        started = now - i * 900
        if slept[1] * 3600 <= now - started < slept[0] * 3600:
            continue
        failed = 8 * 3600 <= now - started < 10 * 3600 or (failing_since and now - started < failing_since)
        run = Run(store.start_run("timer", started), "timer", started, started + 3,
                              "failed" if failed else "ok", 0 if failed else i % 3,
                              error="could not reach Nightscout (your-site.example.com): ConnectionError" if failed
                              else None)
        store.finish_run(run)
    store.close()


def fridge_curve(now, hours=24, door_open_since=None):
    """(time, °C) every 15 minutes: a fridge cycling between 3.6 and 5.4 °C every 3 hours; warming past 8 °C once the
    door is open."""
    readings = []
    for i in range(hours * 4, 0, -1):
        at = now - i * 900 + 60
        value = 4.5 + 0.9 * math.sin(i * math.pi / 6)
        if door_open_since and now - at < door_open_since:
            value = 8.4 + (door_open_since - (now - at)) / 900 * 0.4
        readings.append((at, round(value, 2)))
    return readings


def deliver(address, device, name, event_type, data, at, event_id):
    event = {"eventId": event_id, "targetName": f"projects/p/devices/{device}", "eventType": event_type,
             "data": data, "timestamp": iso(at, "milliseconds")}
    body = json.dumps({"event": event, "labels": {"name": name} if name else {}}).encode()
    status, _, answer = request(address, "POST", "/", {"X-Dt-Signature": sign(body, now=time.time())}, body)
    assert status == 200, answer


def deliver_sensor(address, device, name, readings, battery=96, signal=72):
    for i, (at, value) in enumerate(readings):
        deliver(address, device, name, "temperature", {"temperature": {"value": value}}, at, f"{device}-t{i}")
    now = readings[-1][0]
    deliver(address, device, name, "batteryStatus", {"batteryStatus": {"percentage": battery}}, now - 600,
            f"{device}-b")
    deliver(address, device, name, "networkStatus", {"networkStatus": {"signalStrength": signal}}, now - 600,
            f"{device}-n")


# The scenarios -----------------------------------------------------------------------------

def test_healthy_with_a_fridge_sensor_and_sync_now(make_app, tmp_path, tabs):
    now = time.time()
    history(tmp_path / "tcsync.sqlite3", now)
    app, _ = make_app(DT_TEMPERATURE_RANGE="2..8")
    readings = fridge_curve(now)
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 200
        deliver_sensor(address, "emu04dq1fkk5hcle2jpbsaq", "Insulin fridge", readings)
        for tab in tabs:
            page_shows_all_of_it(app, address)  # the scenario's writes, and the last tab's Sync now
            page = tab.open(address)
            assert page.text_content("#state") == "ok"
            assert page.evaluate(MARK_COUNT) == len(runs_in_the_last_day(address))
            values, chart = chart_values(page, readings)
            assert values == pytest.approx([value for _, value in readings], abs=0.01)
            assert chart["outside"] == 0 and page.locator(".alert").count() == 0
            assert page.get_by_role("button", name="Sync now").count() == 0  # only with the secret
            tab.check("healthy", dark=True)

            page = tab.open(address, WITH_SECRET)
            newest = runs_of(address)[0]["id"]
            with page.expect_navigation():
                page.get_by_role("button", name="Sync now").click()
            assert page.url.endswith(WITH_SECRET)  # back on the page, the secret still in its address
            [started] = [run for run in runs_of(address) if run["id"] > newest]
            assert started["trigger"] == "run"
            wait_for(lambda: runs_of(address)[0]["outcome"] != "running")
            assert tab.errors == []


def test_failing_with_its_reason(make_app, nightscout, tmp_path, tabs):
    now = time.time()
    history(tmp_path / "tcsync.sqlite3", now, failing_since=40 * 60)
    app, _ = make_app(DT_TEMPERATURE_RANGE="2..8")
    host = nightscout.url.split("/")[2]
    nightscout.close()  # Nightscout is down
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 502
        deliver_sensor(address, "emu04dq1fkk5hcle2jpbsaq", "Insulin fridge", fridge_curve(now))
        for tab in tabs:
            page_shows_all_of_it(app, address)  # the scenario's writes, and the last tab's Sync now
            page = tab.open(address)
            assert page.text_content("#state") == "failing"
            assert host not in page.content()  # the reason only with the secret
            page = tab.open(address, WITH_SECRET)
            assert page.text_content("#state") == "failing"
            assert f"could not reach Nightscout ({host}): it refused the connection: nothing answers on that port. " \
                   "Check NS_URL and that your Nightscout site is up." in page.text_content(".sentence")
            assert page.evaluate(MARK_COUNT) == len(runs_in_the_last_day(address))
            tab.check("failing")


def test_not_configured(tmp_path, tabs):
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db.sqlite3")})
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()))
    try:
        with served(app) as address:
            for tab in tabs:
                page = tab.open(address)
                assert page.text_content("#state") == "not configured"
                assert page.text_content(".sentence") == (
                    "Set TCONNECT_EMAIL, TCONNECT_PASSWORD, NS_URL, NS_SECRET, TIMEZONE_NAME (on Heroku: Settings → "
                    "Reveal Config Vars): syncs are refused until they are set.")
                assert page.evaluate(MARK_COUNT) == 0
                tab.check("not-configured")
    finally:
        app.store.close()


def test_a_sensor_out_of_range_and_markup_in_names_and_errors(make_app, tmp_path, tabs):
    now = time.time()
    history(tmp_path / "tcsync.sqlite3", now)
    store = Store(str(tmp_path / "tcsync.sqlite3"))
    run = Run(store.start_run("timer", now - 120), "timer", now - 120, now - 110, "failed",
                          error="<script>window.pwned = 'error'</script>")
    store.finish_run(run)
    store.close()
    app, _ = make_app(DT_TEMPERATURE_RANGE="2..8")
    readings = fridge_curve(now, hours=6, door_open_since=50 * 60)
    outside = [(at, value) for at, value in readings if not 2 <= value <= 8]
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 200
        deliver_sensor(address, "fridge1", "Fridge", readings)
        deliver(address, "<img src=x onerror=window.pwned=1>", "<script>window.pwned = 'name'</script>",
                "temperature", {"temperature": {"value": 4.2}}, now - 300, "odd-1")
        for tab in tabs:
            page_shows_all_of_it(app, address)  # the scenario's writes, and the last tab's Sync now
            page = tab.open(address, WITH_SECRET)
            since = clock_text(outside[0][0], time.time(), app.tz)
            # out for 50 minutes, past ALERT_AFTER_MINS (15): an alert, which outranks the working syncs' ok
            assert page.text_content("#state") == "alert"
            assert page.text_content(".sentence").startswith(f"Fridge out of range since {since} (")
            alert = page.text_content("header .alert")
            assert alert.startswith(f"out of range Fridge is outside 2\N{EN DASH}8 °C since {since} (")
            assert alert.endswith(f": {outside[-1][1]:.1f} °C now.")
            fridge = page.locator(".card", has_text="Fridge").first
            assert fridge.get_attribute("class") == "card out"
            names = [h3.text_content() for h3 in page.locator(".card h3").all()]
            values, chart = chart_values(page, readings, card=names.index("Fridge"))
            assert values == pytest.approx([value for _, value in readings], abs=0.01)
            assert chart["outside"] == len(outside)
            assert page.evaluate("window.pwned") is None
            odd = page.locator(".card", has_text="window.pwned = 'name'")
            assert odd.locator("h3").text_content() == "<script>window.pwned = 'name'</script>"
            assert odd.locator(".device").text_content() == "<img src=x onerror=window.pwned=1>"
            assert "<script>window.pwned = 'error'</script>" in page.text_content("table.runs")
            tab.check("out-of-range")


ALERT_END = """() => {  // how far down the page the alert's sentence ends: it runs to its first time
    const sentence = document.querySelector('.sentence'), range = document.createRange();
    range.setStart(sentence, 0);
    range.setEndAfter(sentence.querySelector('time'));
    return range.getBoundingClientRect().bottom + window.scrollY;
}"""


def test_a_fridge_out_of_range_while_syncs_fail_shows_both_badges_the_alert_first(make_app, nightscout, tmp_path,
                                                                                  tabs):
    now = time.time()
    history(tmp_path / "tcsync.sqlite3", now, failing_since=40 * 60)
    app, _ = make_app(DT_TEMPERATURE_RANGE="2..8")
    readings = fridge_curve(now, hours=6, door_open_since=50 * 60)
    outside = [(at, value) for at, value in readings if not 2 <= value <= 8]
    nightscout.close()  # Nightscout is down: the last sync failed
    with served(app) as address:
        assert request(address, "GET", "/update", bearer())[0] == 502
        deliver_sensor(address, "fridge1", "Insulin fridge", readings)
        for tab in tabs:
            page_shows_all_of_it(app, address)  # the scenario's writes, and the last tab's Sync now
            page = tab.open(address)
            since = clock_text(outside[0][0], time.time(), app.tz)
            alert, problem = page.locator("#state"), page.locator("#problem")
            assert (alert.is_visible(), alert.text_content(), problem.is_visible(), problem.text_content()) == (
                True, "alert", True, "failing")
            red = "rgb(207, 34, 46)"  # --fail
            assert [badge.evaluate("badge => getComputedStyle(badge).backgroundColor")
                    for badge in (alert, problem)] == [red, red]
            assert page.title() == "alert, failing · tconnectsync service"
            sentence = page.text_content(".sentence")
            assert sentence.startswith(f"Insulin fridge out of range since {since} (")
            assert ("). The last sync failed at " in sentence and sentence.endswith(
                "; enter the service's secret at the bottom of this page to see why. The next sync tries again."))
            assert page.locator(".sentence").is_visible()
            if tab.name == "phone":  # on a phone the alert's words are on the first screen, without scrolling
                assert page.evaluate(ALERT_END) <= VIEWPORTS["phone"]["height"]
            tab.check("alert-and-failing", dark=True)


def test_settings_problems_get_a_red_badge_and_the_page_names_them(tmp_path, tabs):
    settings = read_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db.sqlite3"), "TCONNECTSYNC_HEROKU_SECRET":
                              SERVICE_SECRET, "TCONNECTSYNC_HEROKU_INTERVAL_MINS": "five", "TCONNECT_REGION": "eu"})
    app = tcsync_wsgi.create_app(settings, log=Log(LogLines()))
    with served(app) as address:
        for tab in tabs:
            page = tab.open(address)
            assert page.text_content("#state") == "settings"
            badge = page.locator("#state").evaluate("badge => getComputedStyle(badge).backgroundColor")
            assert badge == "rgb(207, 34, 46)"  # the failing red, --fail
            assert page.locator(".problems li").all_text_contents() == [
                "TCONNECTSYNC_HEROKU_INTERVAL_MINS must be a number from 0 to 1440", "TCONNECT_REGION must be US or EU "
                "(capitals)"]
            assert "Settings → Reveal Config Vars" in page.text_content("header")
            tab.check("settings")
            page.fill("#secret", SERVICE_SECRET)  # with the secret: the values they got too
            with page.expect_navigation():
                page.get_by_role("button", name="Open with the secret").click()
            assert page.locator(".problems li").all_text_contents()[1] == ("TCONNECT_REGION must be US or EU "
                                                                           "(capitals), got 'eu'")
            assert tab.errors == []


def test_the_secret_form_then_check_login(make_app, tandem, tabs):
    app, _ = make_app()
    with served(app) as address:
        for tab in tabs:
            page = tab.open(address)
            assert page.get_by_role("button", name="Check login").count() == 0  # only with the secret
            assert page.locator("h2", has_text="Recent runs").count() == 0
            page.fill("#secret", "not-the-secret")
            with page.expect_navigation():
                page.get_by_role("button", name="Open with the secret").click()
            assert page.text_content(".note") == "The secret is wrong: this is the page without it."
            page.fill("#secret", SERVICE_SECRET)
            with page.expect_navigation():
                page.get_by_role("button", name="Open with the secret").click()
            assert page.url == f"http://{address[0]}:{address[1]}/"  # the secret is in no address
            assert page.locator("h2", has_text="Recent runs").count() == 1
            tab.check("secret-view")
            with page.expect_navigation():
                page.get_by_role("button", name="Check login").click()
            verdict = page.locator(".check .verdict")
            assert verdict.text_content().startswith("ok, ")
            assert page.locator("h2", has_text="Recent runs").count() == 1  # still the secret's view
            tab.check("check-login")
        tandem.password = "changed-on-tandem"  # Tandem refuses: the page says so in one line
        app.syncer._clients = None
        page = tabs[0].page
        with page.expect_navigation():
            page.get_by_role("button", name="Check login").click()
        verdict = page.locator(".check .verdict")
        assert verdict.text_content().startswith("failed, ")
        assert verdict.text_content().endswith(": the login check found errors: Tandem Source: ApiException: Error "
                                               'sending POST to login_api_url: {"status": "FAILED", "error": '
                                               '"account/invalid_credentials"} (HTTP 401)')
        assert tabs[0].errors == []
