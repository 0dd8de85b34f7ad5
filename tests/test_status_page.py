"""The status page in-process: its pure parts (times, strip, cards, charts), its states, escaping, caching, Sync now."""

import html
import json
import re
import zoneinfo

import pytest
from conftest import SERVICE_SECRET, LogLines, bearer, call, wait_for
from hypothesis import given
from hypothesis import strategies as st
from test_alerts import QUIET, Clock, temperature

import tcsync_wsgi
from tcsync.log import Log
from tcsync.page import PAGE_DATA_SECS
from tcsync.readings import iso
from tcsync.settings import SettingsError
from tcsync.sync import CREDENTIALS_REFUSED, Run
from tcsync.charts import DAY_SECS, axis_ticks, chart_html, out_since, segments, strip_html, thin
from tcsync.markup import age_text, clock_text, time_html
from tcsync.page import sensor_card, strip_summary
from tcsync.settings import load_settings

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, 03:00 in New York
NY = zoneinfo.ZoneInfo("America/New_York")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def state_of(page: bytes) -> str:
    return re.search(rb'id="state">([^<]*)</span>', page)[1].decode()


def sentence_of(page: bytes) -> str:
    """The header's sentence as a person reads it (tags dropped)."""
    return re.sub(r"<[^>]+>", "", re.search(rb'<p class="sentence">(.*?)</p>', page, re.S)[1].decode())


def badges_of(page: bytes) -> list[tuple[str, str, str]]:
    """The heading's badges, in order: (id, class, word) of each."""
    heading = re.search(rb"<h1>(.*?)</h1>", page, re.S)[1].decode()
    return [(badge_id, cls, word) for cls, badge_id, word in
            re.findall(r'<span class="badge ([^"]*)" id="([^"]*)">([^<]*)</span>', heading)]


def run_row(run_id, started_at, outcome="ok", error=None, trigger="timer"):
    return {"id": run_id, "trigger": trigger, "started_at": started_at, "finished_at": started_at + 4,
            "outcome": outcome, "uploaded": 0, "error": error}


def marks(page: str) -> dict[str, list[float]]:
    """The sync strip's marks by outcome: the x (minutes into the last 24 h) of each."""
    return {outcome: [float(x) for x in re.findall(r"M([0-9.]+) ", d)]
            for outcome, d in re.findall(r'<path class="run (\w+)" d="([^"]*)"', page)}


def chart_points(chart: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for points in re.findall(r'<polyline class="line" points="([^"]*)"', chart)
            for x, y in (pair.split(",") for pair in points.split())]


def values_from_chart(chart: str) -> list[float]:
    """The chart's points read back as values, through the labelled min and max."""
    points = chart_points(chart)
    low = float(re.search(r'class="min[^"]*"[^>]*>min (-?[0-9.]+)', chart)[1])
    high = float(re.search(r'class="max[^"]*"[^>]*>max (-?[0-9.]+)', chart)[1])
    y_low, y_high = max(y for _, y in points), min(y for _, y in points)
    return [low + (y_low - y) / (y_low - y_high) * (high - low) for _, y in points]


# Times ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0, "just now"), (44, "just now"), (240, "4 min ago"), (3599, "1 h ago"), (3900, "1 h 5 min ago"),
    (7 * 3600, "7 h ago"), (3 * 86400, "3 days ago"), (-240, "in 4 min"), (-20, "in a moment"),
])
def test_ages_read_like_a_person_says_them(seconds, text):
    assert age_text(seconds) == text


def test_times_are_in_the_pumps_zone_with_the_day_unless_today():
    assert clock_text(NOW - 300, NOW, NY) == "02:55"
    assert clock_text(NOW - 4 * 3600, NOW, NY) == "yesterday 23:00"
    assert clock_text(NOW - 3 * 86400, NOW, NY) == "Jan 12 03:00"
    assert time_html(NOW - 240, NOW, NY) == ('<time datetime="2027-01-15T07:56:00Z" '
                                             'title="2027-01-15T02:56:00-05:00 (America/New_York)">02:56 (4 min ago)'
                                             '</time>')


@pytest.mark.parametrize(("zone", "labels"), [
    ("America/New_York", ["06:00", "12:00", "18:00", "00:00"]),
    ("Asia/Kolkata", ["18:00", "00:00", "06:00", "12:00"]),  # +05:30: ticks on the half hour of UTC
])
def test_axis_ticks_fall_on_the_zones_six_hours(zone, labels):
    ticks = axis_ticks(NOW, zoneinfo.ZoneInfo(zone))
    assert [label for _, label in ticks] == labels
    assert all(0 < fraction < 1 for fraction, _ in ticks)


# The sync strip ------------------------------------------------------------------------------

def test_the_strip_has_one_mark_per_run_placed_by_time_with_now_at_the_right_edge():
    runs = [run_row(1, NOW - DAY_SECS + 600), run_row(2, NOW - 7200, "failed", "boom"), run_row(3, NOW - 3600),
            run_row(4, NOW - 10, "running")]
    page = strip_html(runs, NOW, NY)
    assert marks(page) == {"ok": [10.0, 1380.0], "failed": [1320.0], "running": [1436.0]}  # the last: at the edge
    assert '<path class="now" d="M1439.5 0V24"/>' in page
    assert "boom" not in page


def test_the_summary_names_the_last_failure_and_its_error_only_with_the_secret():
    runs = [run_row(1, NOW - 9000), run_row(2, NOW - 7200, "failed", "could not reach Nightscout (ns): X"),
            run_row(3, NOW - 3600)]
    public = re.sub(r"<[^>]+>", "", strip_summary(runs, NOW, NY, with_errors=False))
    assert public == "2 ok, 1 failed, last failure 01:00 (2 h ago)."
    secret = re.sub(r"<[^>]+>", "", strip_summary(runs, NOW, NY, with_errors=True))
    assert secret == "2 ok, 1 failed, last failure 01:00 (2 h ago): could not reach Nightscout (ns): X."
    assert strip_summary([], NOW, NY, True) == "No syncs in the last 24 hours."


# Charts and cards ----------------------------------------------------------------------------

FRIDGE = {"device": "fridge1", "target": "projects/p/devices/fridge1", "name": "Fridge",
          "last_event_at": "2027-01-15T07:45:00Z",
          "readings": {"temperature": {"value": 9.5, "unit": "°C", "at": "2027-01-15T07:45:00Z"},
                       "batteryStatus": {"value": 95, "unit": "%", "at": "2027-01-15T07:00:00Z"},
                       "networkStatus": {"value": 80, "unit": "%", "at": "2027-01-15T07:00:00Z"},
                       "contact": {"value": "OPEN", "unit": None, "at": "2027-01-15T07:40:00Z"}}}
TEMPERATURES = [(NOW - 3600 * h, v) for h, v in ((5, 4.0), (4, 4.5), (3, 5.0), (2, 8.5), (1.5, 6.0), (0.5, 8.6),
                                                 (0.25, 9.5))]


def test_a_chart_draws_the_readings_and_labels_min_and_max():
    chart = chart_html("temperature", "°C", TEMPERATURES, NOW, NY, None)
    assert values_from_chart(chart) == pytest.approx([v for _, v in TEMPERATURES], abs=0.01)
    assert [x for x, _ in chart_points(chart)] == [(at - (NOW - DAY_SECS)) / 60 for at, _ in TEMPERATURES]
    assert "max 9.5 °C (02:45)" in chart and "min 4.0 °C (22:00)" not in chart and "min 4.0 °C (yesterday 22:00)" \
        in chart
    assert 'class="band"' not in chart and "dot out" not in chart


def test_a_band_is_shaded_and_readings_outside_it_are_marked():
    chart = chart_html("temperature", "°C", TEMPERATURES, NOW, NY, (2.0, 8.0))
    assert values_from_chart(chart) == pytest.approx([v for _, v in TEMPERATURES], abs=0.01)
    assert chart.count('class="band"') == 1
    [outside] = re.findall(r'<path class="dot out" d="([^"]*)"', chart)
    assert outside.count("M") == 3  # 8.5, 8.6 and 9.5


def test_a_long_silence_breaks_the_line():
    points = [(NOW - 7200, 4.0), (NOW - 6300, 4.1), (NOW - 5400, 4.2), (NOW - 900, 4.3), (NOW, 4.4)]
    assert [len(part) for part in segments(points)] == [3, 2]
    assert chart_html("temperature", "°C", points, NOW, NY, None).count("<polyline") == 2


def test_a_sensor_reporting_every_minute_draws_the_lowest_and_highest_of_each_five_minutes():
    points = [(NOW - 3600 + 60 * i, 4.0 + (i % 5) / 10 + (5.0 if i == 32 else 0)) for i in range(60)]
    kept = thin(points)
    assert len(kept) == 24 and kept == sorted(kept)
    assert max(kept, key=lambda p: p[1]) == points[32] and min(v for _, v in kept) == 4.0
    assert thin(TEMPERATURES) == TEMPERATURES


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(name=st.one_of(st.none(), st.text()), device=st.text(min_size=1),
       points=st.lists(st.tuples(st.floats(NOW - 2 * DAY_SECS, NOW + 3600), finite), min_size=1, max_size=40),
       band=st.one_of(st.none(), st.tuples(finite, finite).filter(lambda b: b[0] < b[1])))
def test_any_sensor_data_draws_a_card_with_its_text_escaped(name, device, points, band):
    points.sort()
    sensor = {"device": device, "target": None, "name": name, "last_event_at": None,
              "readings": {"temperature": {"value": points[-1][1], "unit": "°C", "at": iso(points[-1][0])}}}
    card, _ = sensor_card(sensor, {"temperature": points}, NOW, NY, band)
    text = re.sub(r"<[^>]+>", "", card)
    assert "<" not in text and ">" not in text


def test_out_of_range_since_is_the_start_of_the_newest_streak():
    assert out_since(TEMPERATURES, (2.0, 8.0)) == NOW - 1800
    assert out_since(TEMPERATURES[:5], (2.0, 8.0)) is None
    assert out_since(TEMPERATURES, None) is None


def test_a_card_shows_the_readings_battery_signal_chart_and_an_alert_when_outside_the_band():
    card, alert = sensor_card(FRIDGE, {"temperature": TEMPERATURES}, NOW, NY, (2.0, 8.0))
    text = re.sub(r"<[^>]+>", " ", card)
    assert "Fridge" in text and "fridge1" in text
    assert re.search(r"Temperature\s+9\.5 °C\s+02:45 \(15 min ago\)", text)
    assert re.search(r"Contact\s+open\s+02:40 \(20 min ago\)", text)
    assert "battery 95 %, signal 80 %" in text
    assert 'class="card out"' in card and card.count("<figure") == 1
    assert re.sub(r"<[^>]+>", "", alert) == ("out of range Fridge is outside 2\N{EN DASH}8 °C since 02:30 "
                                             "(30 min ago): 9.5 °C now.")


def test_a_card_back_in_range_has_no_alert_but_says_it_was_out():
    card, alert = sensor_card({**FRIDGE, "name": None}, {"temperature": TEMPERATURES[:5]}, NOW, NY, (2.0, 8.0))
    assert alert is None
    assert "<h3><bdi>fridge1</bdi></h3>" in card and "Back inside 2\N{EN DASH}8 °C" in card


def test_a_humidity_sensor_gets_a_chart_per_kind():
    room = {"device": "room2", "target": "projects/p/devices/room2", "name": "Room", "last_event_at": None,
            "readings": {"humidity": {"value": 40, "unit": "%", "at": "2027-01-15T07:00:00Z"},
                         "temperature": {"value": 21.5, "unit": "°C", "at": "2027-01-15T07:00:00Z"}}}
    card, _ = sensor_card(room, {"temperature": [(NOW - 3600, 21.5)], "humidity": [(NOW - 3600, 40)]}, NOW, NY, None)
    assert re.findall(r"<figcaption>(\w+)", card) == ["Temperature", "Humidity"]
    assert "max 40 % (02:00)" in card


# Settings ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "band"), [("2..8", (2.0, 8.0)), (" -20 .. -15.5 ", (-20.0, -15.5)), ("", None)])
def test_the_temperature_range_setting(raw, band):
    assert load_settings({"DT_TEMPERATURE_RANGE": raw}).temperature_range == band


@pytest.mark.parametrize("raw", ["8..2", "2..2", "2-8", "two..8", "2..", "2..8..9"])
def test_a_bad_temperature_range_is_named_with_the_other_problems(raw):
    with pytest.raises(SettingsError) as raised:
        load_settings({"DT_TEMPERATURE_RANGE": raw, "TCONNECT_REGION": "eu"})
    assert raised.value.problems == ["TCONNECT_REGION must be US or EU (capitals), got 'eu'",
                                     "DT_TEMPERATURE_RANGE must be two numbers of °C from -100 to 100, the lower first,"
                                     f" like 2..8, got {raw!r}"]


# The page's states ---------------------------------------------------------------------------

@pytest.fixture
def app(make_app):
    return make_app(clock=lambda: NOW)[0]


def finish(app, started_at, outcome="ok", error=None):
    """A run recorded in the store, as the syncer (of this or another process) records it."""
    run = Run(app.store.start_run("timer", started_at), "timer", started_at, started_at + 4, outcome,
                          error=error)
    app.store.finish_run(run)
    return run


def test_ok_idle_before_any_sync_and_times_in_zone(app):
    page = call(app)[2]
    assert state_of(page) == "ok"
    assert sentence_of(page) == ("Ready: no sync has run yet. There is no timer: set TCONNECTSYNC_HEROKU_INTERVAL_MINS "
                                 "(5 is usual) in the Config Vars, or press Sync now on the page opened with the "
                                 "secret.")
    assert b'<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert b'<meta http-equiv="refresh" content="60">' in page
    assert b"Times are in America/New_York." in page
    assert not re.search(rb"""(src|href)=["']?(https?:)?//|url\(|<script""", page)  # no external assets, no script


def test_not_configured_names_the_settings(tmp_path):
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db"), "TCONNECT_EMAIL": "a@b.c"})
    page = call(tcsync_wsgi.create_app(settings, log=Log(LogLines())))[2]
    assert state_of(page) == "not configured"
    assert sentence_of(page) == ("Set TCONNECT_PASSWORD, NS_URL, NS_SECRET, TIMEZONE_NAME (on Heroku: Settings → "
                                 "Reveal Config Vars): syncs are refused until they are set.")
    assert b"<h2>Sensors</h2>" not in page and b"<p>Data Connector: off (optional)</p>" in page


def test_without_a_time_zone_syncs_are_refused_the_page_names_it_and_shows_utc(make_app):
    app, _ = make_app(clock=lambda: NOW, TIMEZONE_NAME="")
    assert app.settings.missing == ("TIMEZONE_NAME",)
    assert app.syncer.start("timer") == (None, "missing settings: TIMEZONE_NAME")
    status, _, body = call(app, "GET", "/run", headers=bearer())
    assert (status, json.loads(body)) == (503, {"started": False, "reason": "missing settings: TIMEZONE_NAME"})
    assert call(app, "GET", "/update", headers=bearer())[0] == 503
    finish(app, NOW - 300)  # another process's run: its time in UTC, said so
    page = call(app, headers=bearer())[2]
    assert state_of(page) == "not configured"
    assert sentence_of(page).startswith("Set TIMEZONE_NAME")
    assert b"Times are in UTC until TIMEZONE_NAME names your pump's time zone." in page
    assert b'title="2027-01-15T07:55:00+00:00 (UTC)">07:55 (5 min ago)' in page
    assert app.store.runs(5)[0]["trigger"] == "timer"  # nothing else ran


def sync(app, trigger="run"):
    """A real sync against the fakes; its run when done."""
    run, why_not = app.syncer.start(trigger)
    assert why_not is None
    assert run.done.wait(30)
    return run


def test_failing_says_why_and_what_to_do_only_with_the_secret(make_app, nightscout):
    app, _ = make_app(clock=lambda: NOW)
    host = nightscout.url.split("/")[2]
    nightscout.close()
    assert sync(app).outcome == "failed"
    public = call(app)[2]
    assert state_of(public) == "failing"
    assert sentence_of(public) == ("The last sync failed at 03:00 (just now); enter the service's secret at the "
                                   "bottom of this page to see why. The next sync tries again.")
    assert host.encode() not in public and b"Recent runs" not in public
    secret = call(app, headers=bearer())[2]
    assert sentence_of(secret) == (f"The last sync failed at 03:00 (just now): could not reach Nightscout ({host}): "
                                   "it refused the connection: nothing answers on that port. Check NS_URL and "
                                   "that your Nightscout site is up.")


def test_stale_says_since_when(make_app):
    now = [NOW]
    app, _ = make_app(clock=lambda: now[0], TCONNECTSYNC_HEROKU_STALE_MINS="60")
    assert sync(app).outcome == "ok"
    assert state_of(call(app)[2]) == "ok"
    now[0] += 2 * 3600
    page = call(app)[2]
    assert state_of(page) == "stale"
    assert sentence_of(page) == ("No successful sync since 03:00 (2 h ago), more than 60 minutes "
                                 "(TCONNECTSYNC_HEROKU_STALE_MINS), so the health check now tells your uptime monitor "
                                 "that syncs stopped. No sync ran lately: is a timer set "
                                 "(TCONNECTSYNC_HEROKU_INTERVAL_MINS), and does your uptime monitor keep the service "
                                 "awake?")


def test_paused_says_until_when_and_how_to_retry_and_then_what_failed(make_app, tandem):
    now = [NOW]
    app, _ = make_app(clock=lambda: now[0])
    tandem.password = "changed-on-tandem"
    assert sync(app).error == CREDENTIALS_REFUSED
    assert state_of(call(app)[2]) == "paused"
    assert sentence_of(call(app, headers=bearer())[2]) == (
        "Tandem Source refused the credentials (HTTP 401): check TCONNECT_EMAIL, TCONNECT_PASSWORD and "
        "TCONNECT_REGION. Timed syncs and monitor pings wait until 09:00 (in 6 h) (each failed login counts toward "
        "Tandem's account lockout); once the credentials are right, pressing Sync now tries again at once.")
    assert sentence_of(call(app)[2]).endswith("once the credentials are right, Sync now on the page opened with the "
                                              "secret tries again at once.")
    now[0] += 6 * 3600 + 60  # the pause is over: the timer tries again, and the page says what failed last
    page = call(app, headers=bearer())[2]
    assert state_of(page) == "stale" and b"paused until" not in page
    assert sentence_of(page).endswith("The last sync failed at 03:00 (6 h ago): Tandem Source refused the credentials "
                                      "(HTTP 401): check TCONNECT_EMAIL, TCONNECT_PASSWORD and TCONNECT_REGION. Log in "
                                      "at Tandem Source with the same email and password to check them, and check that "
                                      "TCONNECT_REGION is the region of your account (US, or EU for a European one).")


# An open alert and a sync or settings problem: both show, the alert first ------------------

FRIDGE_ALERT = "Insulin fridge out of range since 03:05 (55 min ago)."


def icon_colour(page: bytes) -> str:
    """The tab icon's colour: the dot's fill in its data: URL."""
    return html.unescape(re.search(rb'<link rel="icon" href="([^"]*)">', page)[1].decode()).split("fill='%23")[1][:6]


def warm_fridge(app):
    """The fridge read 9.4 °C at 03:05 (ALERT_AFTER_MINS=0: an alert at once); the clock is at 04:00."""
    temperature(app, "fridge1", 5, 9.4)
    app.alerts.check()
    assert "out_of_range" in [alert.kind for alert in app.alerts.open_alerts()]


def failed_sync(app, tandem, nightscout):
    tandem.mode = "503"
    assert sync(app).outcome == "failed"


def stale_sync(app, tandem, nightscout):
    app.clock.now -= 2 * 3600  # a sync that worked at 02:00, two hours before the page is read
    assert sync(app).outcome == "ok"
    app.clock.now += 2 * 3600


def refused_login(app, tandem, nightscout):
    tandem.password = "changed-on-tandem"
    assert sync(app).error == CREDENTIALS_REFUSED


SYNCS_ALERT = "Pump data not reaching Nightscout since 02:00 (2 h ago)."  # stale for 60 minutes: an alert too
PROBLEMS = {  # how each comes about, its settings, the alerts' sentence and its own on the public page
    "failing": (failed_sync, {}, FRIDGE_ALERT, "The last sync failed at 04:00 (just now); enter the service's "
                                               "secret at the bottom of this page to see why. The next sync tries "
                                               "again."),
    "stale": (stale_sync, {"TCONNECTSYNC_HEROKU_STALE_MINS": "60"}, f"{FRIDGE_ALERT} {SYNCS_ALERT}",  # urgent first
              "No successful sync since 02:00 (2 h ago), more than 60 minutes (TCONNECTSYNC_HEROKU_STALE_MINS), so "
              "the health check now tells your uptime monitor that syncs stopped. No sync ran lately: is a timer set "
              "(TCONNECTSYNC_HEROKU_INTERVAL_MINS), and does your uptime monitor keep the service awake?"),
    "paused": (refused_login, {}, FRIDGE_ALERT,
               f"{CREDENTIALS_REFUSED}. Timed syncs and monitor pings wait until 10:00 (in 6 h) (each failed login "
               "counts toward Tandem's account lockout); once the credentials are right, Sync now on the page opened "
               "with the secret tries again at once."),
    "not configured": (lambda *_: None, {"NS_URL": ""}, FRIDGE_ALERT,
                       "Set NS_URL (on Heroku: Settings → Reveal Config Vars): syncs are refused until they are set."),
}


@pytest.mark.parametrize("problem", PROBLEMS)
def test_an_open_alert_shows_beside_a_sync_problem_first_and_as_large(make_app, tandem, nightscout, problem):
    make_problem, settings, alerts_sentence, problem_sentence = PROBLEMS[problem]
    app, _ = make_app(clock=Clock(NOW + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET,
                      **settings)
    make_problem(app, tandem, nightscout)
    problem_class = "s-" + problem.replace(" ", "-")
    assert badges_of(call(app)[2]) == [("state", problem_class, problem)]  # the problem alone: as before
    warm_fridge(app)
    page = call(app)[2]
    assert badges_of(page) == [("state", "s-alert", "alert"), ("problem", problem_class, problem)]
    assert sentence_of(page) == f"{alerts_sentence} {problem_sentence}"
    assert f"<title>alert, {problem} · tconnectsync service</title>".encode() in page
    assert icon_colour(page) == "cf222e"  # the alert's red, even beside paused's amber or not configured's grey


def test_an_alert_alone_has_the_one_red_alert_badge(make_app):
    app, _ = make_app(clock=Clock(NOW + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    warm_fridge(app)
    page = call(app)[2]
    assert badges_of(page) == [("state", "s-alert", "alert")]
    assert sentence_of(page) == FRIDGE_ALERT
    assert "<title>alert · tconnectsync service</title>".encode() in page and icon_colour(page) == "cf222e"


def test_two_open_alerts_and_a_failure_name_each_alert_then_the_failure(make_app, tandem, nightscout):
    app, _ = make_app(clock=Clock(NOW + 3600), DT_TEMPERATURE_RANGE="2..8", ALERT_AFTER_MINS="0", **QUIET)
    failed_sync(app, tandem, nightscout)
    warm_fridge(app)
    temperature(app, "freezer1", 20, -10.0, {"name": "Freezer", "temperature_range": "-25..-15"})
    app.alerts.check()
    page = call(app)[2]
    assert [word for _, _, word in badges_of(page)] == ["alert", "failing"]
    assert sentence_of(page) == (f"{FRIDGE_ALERT} Freezer out of range since 03:20 (40 min ago). The last sync failed "
                                 "at 04:00 (just now); enter the service's secret at the bottom of this page to see "
                                 "why. The next sync tries again.")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_versions_and_the_database_path_only_with_the_secret(app, backend):
    public, secret = call(app)[2].decode(), call(app, headers=bearer())[2].decode()
    where = app.store.path  # the file, or postgresql://user@host:port/name: never a password
    assert "tcsync_wsgi 1.1.0</p>" in public and "tcsync_wsgi 1.1.0; tconnectsync 3.0.3, waitress " in secret
    assert f"; database {where}</p>" in secret
    for library in ("tconnectsync 3", "waitress", "PyJWT", "Python 3."):
        assert library not in public and library in secret
    assert where not in public
    assert where.endswith("/tcsync.sqlite3") if backend == "sqlite" else where.startswith("postgresql://postgres@")


def test_a_wrong_secret_in_the_address_says_so_and_shows_the_public_page(app):
    page = call(app, query="secret=wrong")[2]
    assert b"The secret is wrong" in page and b"Recent runs" not in page and b"wrong" not in \
        page.replace(b"The secret is wrong", b"")


def test_the_secret_page_lists_runs_in_zone_with_sync_now_and_the_csv_link(app):
    finish(app, NOW - 300, "failed", "boom")
    page = call(app, query=f"secret={SERVICE_SECRET}")[2].decode()
    assert re.search(r"<tr><td><time [^>]*>02:55 \(5 min ago\)</time></td><td>timer</td><td><span class=\"o failed\">"
                     r"failed</span></td><td class=\"up\">0</td><td class=\"error\">boom</td></tr>", page)
    assert ('<form method="post" action="/run"><input type="hidden" name="secret" value="service-secret-8c1f2e">'
            '<input type="hidden" name="then" value="/?secret">') in page
    assert '<a href="/events.csv?secret=service-secret-8c1f2e">' in page
    page = call(app, headers=bearer())[2].decode()  # a header, not the address: links do not carry the secret
    assert '<input type="hidden" name="then" value="/">' in page and '<a href="/events.csv">' in page


# Escaping ------------------------------------------------------------------------------------

def test_a_device_name_a_device_id_and_an_error_holding_markup_render_as_text(app):
    event = {"eventId": "x1", "eventType": "temperature", "targetName": "projects/p/devices/<b onclick=alert(1)>",
             "data": {"temperature": {"value": 4.5}}, "timestamp": "2027-01-15T07:50:00Z"}
    body = json.dumps({"event": event, "labels": {"name": "<script>alert('name')</script>"}}).encode()
    app.store.add_event(event, NOW, body)
    finish(app, NOW - 300, "failed", "<script>alert('error')</script>")
    page = call(app, headers=bearer())[2].decode()
    assert "<script" not in page and "<b onclick" not in page
    assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in page
    assert "&lt;b onclick=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(&#x27;error&#x27;)&lt;/script&gt;" in page


def test_at_most_twelve_cards_out_of_range_first_then_by_name(make_app):
    app, _ = make_app(clock=lambda: NOW, DT_TEMPERATURE_RANGE="2..8")
    for i, value in enumerate([4.0] * 13 + [9.0]):
        event = {"eventId": f"e{i}", "eventType": "temperature", "targetName": f"projects/p/devices/d{i:02}",
                 "data": {"temperature": {"value": value}}, "timestamp": "2027-01-15T07:50:00Z"}
        app.store.add_event(event, NOW, json.dumps({"event": event}).encode())
    page = call(app)[2].decode()
    assert re.findall(r"<h3><bdi>(\w+)</bdi></h3>", page) == ["d13", *(f"d{i:02}" for i in range(11))]
    assert "And 2 more devices, not shown here." in page


# Cost: what the page reads is built in the background (tcsync.view), again when a run finishes here or elsewhere --

def test_the_page_shows_a_run_that_finished_here_and_another_process_run_within_seconds(make_app):
    app, _ = make_app()
    before = call(app)[2].decode()
    assert marks(before) == {}
    run, why_not = app.syncer.start("run")
    assert why_not is None
    run.done.wait(30)
    wait_for(lambda: sum(map(len, marks(call(app)[2].decode()).values())) == 1, timeout=PAGE_DATA_SECS + 5)
    finish(app, app.clock() - 60)  # another process's run: shown within seconds (the syncer's refresh)
    wait_for(lambda: sum(map(len, marks(call(app)[2].decode()).values())) == 2, timeout=PAGE_DATA_SECS + 5)


def test_a_failing_database_is_a_state_not_an_error(app, tmp_path):
    app.store._connections["read"].close()  # the reading connection breaks, as a damaged disk would make it
    status, _, page = call(app, headers=bearer())
    assert status == 200 and state_of(page) == "database failing"
    assert b"Not shown while the database is failing." in page
    status, _, public = call(app)
    assert status == 200 and app.store.path.encode() not in public


# Sync now ------------------------------------------------------------------------------------

def test_sync_now_starts_a_run_and_sends_the_browser_back_to_the_page(app):
    form = f"secret={SERVICE_SECRET}&then=/".encode()
    status, headers, _ = call(app, "POST", "/run", headers=FORM, body=form)
    assert (status, headers["Location"]) == (303, "/")
    wait_for(lambda: app.syncer.current is None)
    assert [run["trigger"] for run in app.store.runs(5)] == ["run"]


def test_sync_now_keeps_the_secret_in_the_address_only_when_asked(app):
    form = f"secret={SERVICE_SECRET}&then=/%3Fsecret".encode()
    status, headers, _ = call(app, "POST", "/run", headers=FORM, body=form)
    assert (status, headers["Location"]) == (303, f"/?secret={SERVICE_SECRET}")


def test_then_must_be_the_page_and_without_it_run_answers_json_as_before(app):
    status, _, body = call(app, "POST", "/run", headers=FORM, body=f"secret={SERVICE_SECRET}&then=//evil".encode())
    assert status == 400 and json.loads(body)["error"].startswith("then must be /, /?secret or page")
    assert app.store.runs(5) == []
    status, headers, body = call(app, "POST", "/run", headers=FORM, body=f"secret={SERVICE_SECRET}".encode())
    assert status == 202 and json.loads(body)["started"] is True and "Location" not in headers


def test_sync_now_needs_the_secret(app):
    assert call(app, "POST", "/run", headers=FORM, body=b"then=/")[0] == 401


# Plain words, the secret form, Check login, Add to Home Screen ------------------------------

def visible_text(page: bytes) -> str:
    """What a person reads: the body's text, tags dropped and entities read."""
    body = page.decode().partition("<body>")[2]
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def test_the_public_page_speaks_in_plain_words_in_every_state(make_app, tandem, nightscout, tmp_path):
    """No route names or parameter syntax for people without the secret: what to do instead."""
    now = [NOW]
    pages = {}
    app, _ = make_app(clock=lambda: now[0])
    pages["idle, no timer"] = call(app)[2]
    nightscout.mode = "503"
    assert sync(app).outcome == "failed"
    pages["failing"] = call(app)[2]
    now[0] += 2 * 3600
    pages["stale"] = call(app)[2]
    tandem.password = "changed-on-tandem"
    app, _ = make_app(clock=lambda: now[0])
    assert sync(app).error == CREDENTIALS_REFUSED
    pages["paused"] = call(app)[2]
    settings = load_settings({"TCONNECTSYNC_HEROKU_DB": str(tmp_path / "db2"), "TCONNECTSYNC_HEROKU_SECRET": "x" * 8})
    pages["not configured"] = call(tcsync_wsgi.create_app(settings, log=Log(LogLines())))[2]
    for state, page in pages.items():
        text = visible_text(page)
        for route in ("/run", "/healthz", "/update", "/sensors", "/check_login", "?secret", "secret="):
            assert route not in text, (state, route)
    assert "Data Connector: off (optional)" in visible_text(pages["not configured"])


def test_the_secret_form_opens_the_secrets_view_without_writing_the_secret_into_a_link(app):
    public = call(app)[2].decode()
    assert ('<form method="post" action="/" class="secret">' in public and 'type="password" id="secret" '
            'name="secret" autocomplete="current-password" required>' in public)
    finish(app, NOW - 300, "failed", "boom")
    status, headers, page = call(app, "POST", "/", headers=FORM, body=f"secret={SERVICE_SECRET}".encode())
    page = page.decode()
    assert status == 200 and "Location" not in headers
    assert "Recent runs" in page and ">boom<" in page and 'class="secret"' not in page  # the secret's view
    assert '<a href="/events.csv">' in page  # no link carries the secret: it came in no address
    assert page.count(f'name="secret" value="{SERVICE_SECRET}"') == 3  # the three buttons' forms only
    assert page.count('<input type="hidden" name="then" value="page">') == 3  # their answer: this view again
    assert 'http-equiv="refresh"' not in page and "This view does not refresh itself" in page
    signed = call(app, "POST", "/", headers={**FORM, "X-Dt-Signature": "a.b.c"}, body=b"secret=x")
    assert signed[0] == 400 and signed[1]["Content-Type"] == "application/json"  # a delivery: never a 200 page
    wrong = call(app, "POST", "/", headers=FORM, body=b"secret=wrong-secret-1")[2].decode()
    assert "The secret is wrong: this is the page without it." in wrong and "Recent runs" not in wrong
    # the page opened with ?secret= keeps working as before: its buttons come back to that address
    page = call(app, query=f"secret={SERVICE_SECRET}")[2].decode()
    assert page.count('<input type="hidden" name="then" value="/?secret">') == 3


def test_check_login_on_the_page_shows_its_one_line_verdict(make_app, tandem):
    app, _ = make_app(clock=lambda: NOW)
    form = f"secret={SERVICE_SECRET}&then=page".encode()
    status, _, page = call(app, "POST", "/check_login", headers=FORM, body=form)
    assert status == 200
    assert re.search(r'</form></div>\n?<p class="check">Last login check: <span class="verdict">ok, <time [^>]*>03:00 '
                     r'\(just now\)</time></span></p>', page.decode())  # beside the buttons, not among the facts
    tandem.password = "changed-on-tandem"
    app.syncer._clients = None  # log in again, as a new process would
    status, headers, _ = call(app, "POST", "/check_login", headers=FORM,
                              body=f"secret={SERVICE_SECRET}&then=/%3Fsecret".encode())
    assert (status, headers["Location"]) == (303, f"/?secret={SERVICE_SECRET}")  # a page opened with ?secret=
    # a GET shows what the page's builder last built: the check's verdict within seconds
    page = wait_for(lambda: (p := call(app, query=f"secret={SERVICE_SECRET}")[2].decode()) and "verdict\">failed" in p
                    and p)
    assert re.search(r'<p class="check">Last login check: <span class="verdict">failed, <time [^>]*>03:00 '
                     r"\(just now\)</time>: the login check found errors: Tandem Source: ApiException: Error sending "
                     r"POST to login_api_url: \{&quot;status"
                     r"&quot;: &quot;FAILED&quot;, &quot;error&quot;: &quot;account/invalid_credentials&quot;\} "
                     r"\(HTTP 401\)</span></p>", page)
    assert "Last login check" not in call(app)[2].decode()  # only with the secret
    # a check is no sync: it pauses nothing, adds nothing to the back-off, turns no badge, draws no mark on the strip
    assert app.syncer.paused_until is None and app.syncer.consecutive_failures == 0 and app.syncer.last_run is None
    assert "<title>ok · tconnectsync service</title>" in page and "No syncs in the last 24 hours." in page


def test_sync_now_from_the_secrets_view_answers_that_view(app):
    status, headers, page = call(app, "POST", "/run", headers=FORM, body=f"secret={SERVICE_SECRET}&then=page".encode())
    assert status == 200 and "Location" not in headers and "Recent runs" in page.decode()
    wait_for(lambda: app.syncer.current is None)
    assert [run["trigger"] for run in app.store.runs(5)] == ["run"]


def test_add_to_home_screen_gets_the_name_and_an_icon_from_the_service(app):
    page = call(app)[2].decode()
    assert '<link rel="manifest" href="/manifest.webmanifest">' in page
    assert '<link rel="apple-touch-icon" href="/icon.png">' in page
    status, headers, body = call(app, path="/manifest.webmanifest")
    manifest = json.loads(body)
    assert (status, headers["Content-Type"]) == (200, "application/manifest+json")
    assert (manifest["name"], manifest["start_url"]) == ("tconnectsync service", "/")
    assert manifest["icons"] == [{"src": "/icon.png", "sizes": "256x256", "type": "image/png", "purpose": "any"}]
    status, headers, icon = call(app, path="/icon.png")
    assert (status, headers["Content-Type"]) == (200, "image/png")
    assert icon[:8] == b"\x89PNG\r\n\x1a\n" and icon[12:24] == b"IHDR" + (256).to_bytes(4, "big") * 2
    assert call(app, "HEAD", "/icon.png")[1]["Content-Length"] == str(len(icon))


@pytest.mark.parametrize(("env", "warned"), [
    ({"DYNO": "web.1"}, True),  # Heroku, SQLite, the receiver on: events vanish at the next restart
    ({}, False),  # a Raspberry Pi's disk keeps the file
    ({"DYNO": "web.1", "DT_SIGNATURE_SECRET": ""}, False),  # no receiver, no events to lose
])
def test_on_heroku_the_page_says_events_in_sqlite_vanish_at_the_next_restart(make_app, env, warned):
    app, _ = make_app(clock=lambda: NOW, **env)
    text = visible_text(call(app)[2])
    assert ("Data Connector events are kept in a file on the Heroku dyno, which Heroku wipes at every restart (at "
            "least once a day): they vanish then. Add Heroku Postgres" in " ".join(text.split())) is warned


def test_on_heroku_with_postgres_nothing_is_said(make_app, database_url):
    app, _ = make_app(clock=lambda: NOW, DYNO="web.1", DATABASE_URL=database_url)
    assert "wipes at every restart" not in call(app)[2].decode()
