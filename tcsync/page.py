"""The status page: a pure function of a read model (PageView), drawn with the templates in templates/.

The web layer gathers a PageView (plain values: no request, no App) and calls render_status(). The markup and
the words for times and numbers are tcsync.markup's; the strip and the charts, tcsync.charts'. Every value goes
into a template through fill(), which escapes it; nothing is fetched from elsewhere.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import string
import urllib.parse
from collections.abc import Iterable

from tcsync import __version__
from tcsync.alertbook import Alert
from tcsync.alerts import range_of
from tcsync.charts import DAY_SECS, band_text, chart_html, out_of_range, out_since, strip_html, thin
from tcsync.homescreen import tab_icon
from tcsync.markup import (
    KIND_NAMES, PARTS, STATUS_PAGE, Markup, fill, join, number_text, reading_text, stamp, time_html,
)
from tcsync.outbound import upserts_on
from tcsync.plain import NAME_LIMIT, shorten
from tcsync.readings import NUMERIC_KINDS, is_number
from tcsync.settings import without_value
from tcsync.store import SHARED_STATE_SECS, Store, StoreError
from tcsync.sync import CREDENTIALS_REFUSED, Run

PAGE_DATA_SECS = SHARED_STATE_SECS  # how long a rendered public page is reused while nothing it shows changed
STALE_NOTE_SECS = 5.0  # the page says how old its data are once they are older than this (view.ViewBuilder)
MAX_CARDS = 12  # sensor cards drawn: a family has a few sensors (the bench has 50); the others are counted


def shown_name(name: str) -> str:
    """A name from a delivery as the page shows it: cut to NAME_LIMIT characters with … (as in the announcements),
    escaped by fill(), in <bdi> in the templates (its bidi controls cannot reorder the words around it)."""
    return shorten(name, NAME_LIMIT)


def failure_advice(error: str) -> str:
    """The README's 'what to do' for a sync's error, or ''."""
    return next((advice for needle, advice in FAILURE_ADVICE if needle in error), "")


# -- the sync strip

def strip_summary(runs: list[dict], now: float, tz: dt.tzinfo, with_errors: bool) -> Markup:
    """'71 ok, 3 failed, last failure 09:12: could not reach Nightscout'; the error only with the secret."""
    if not runs:
        return fill(SENTENCES["no_syncs"])
    counts = collections.Counter(run["outcome"] for run in runs)
    parts = [fill(PARTS["count"], outcome=outcome, count=counts[outcome])
             for outcome in ("ok", "failed", "interrupted", "running") if counts[outcome]]
    failed = [run for run in runs if run["outcome"] == "failed"]
    if failed:
        last = failed[-1]
        reason = f": {last['error']}" if with_errors and last["error"] else ""
        parts.append(fill(PARTS["last_failure"], when=time_html(last["started_at"], now, tz), reason=reason))
    return Markup(", ".join(parts) + ".")


# -- sensor cards


def sensor_card(sensor: dict, series: dict[str, list[tuple[float, float]]], now: float, tz: dt.tzinfo,
                band: tuple[float, float] | None, notes: Iterable[Markup] = ()) -> tuple[Markup, Markup | None]:
    """A device's card (Store.sensors() item; series by kind from Store.series(); notes: its open alerts, a bad
    range label) and, when its temperature is outside the band now, the header's alert."""
    readings, name = sensor["readings"], shown_name(sensor["name"] or sensor["device"])

    def when(kind: str) -> Markup:
        return time_html(stamp(readings[kind]["at"]), now, tz)

    shown = [kind for kind in readings if kind not in ("batteryStatus", "networkStatus")]
    shown.sort(key=lambda kind: (*NUMERIC_KINDS, kind).index(kind))  # temperature first, then the others
    lines = join(fill(PARTS["reading"], kind=KIND_NAMES.get(kind, kind), when=when(kind),
                      value=reading_text(readings[kind]["value"], readings[kind]["unit"])) for kind in shown)
    health = [f"{label} {number_text(readings[kind]['value'], '%')} %" for kind, label in
              (("batteryStatus", "battery"), ("networkStatus", "signal")) if kind in readings]
    temperatures = series.get("temperature", [])
    since = out_since(temperatures, band)
    alert = note = Markup()
    if since is not None and band:
        range_text = band_text(band)
        alert = fill(PARTS["alert"], name=name, since=time_html(since, now, tz), range=range_text,
                     value=reading_text(temperatures[-1][1], "°C"))
        note = fill(PARTS["card_alert"], since=time_html(since, now, tz), range=range_text)
    elif band and any(out_of_range(value, band) for _, value in temperatures):
        note = fill(PARTS["card_note"], range=band_text(band))
    charts = join(chart_html(kind, readings[kind]["unit"], thin(series[kind]), now, tz, band if kind == "temperature"
                             else None) for kind in NUMERIC_KINDS if series.get(kind))
    card = fill(PARTS["card"], name=name, out=" out" if alert else "", note=join([note, *notes]), readings=lines,
                charts=charts,
                device=fill(PARTS["device"], device=sensor["device"]) if sensor["name"] else Markup(),
                health=fill(PARTS["health"], text=", ".join(health)) if health else Markup())
    return card, alert or None


# -- what the page reads from the store, drawn, reused for a moment


@dataclasses.dataclass
class PageData:
    """What the status page read from the store and drew from it (view.ViewBuilder builds it in the background)."""

    strip: Markup
    summary: Markup
    summary_with_errors: Markup
    cards: Markup
    alerts: Markup


def card_order(sensor: dict, band: tuple[float, float] | None) -> tuple[bool, str]:
    """Newest temperature out of range first, then by name: the same order at every refresh."""
    temperature = sensor["readings"].get("temperature", {}).get("value")
    outside = is_number(temperature) and out_of_range(temperature, band)
    return not outside, (sensor["name"] or sensor["device"]).lower()


def gather_page_data(store: Store, now: float, tz: dt.tzinfo, band: tuple[float, float] | None, with_sensors: bool,
                     open_alerts: Iterable[Alert] = ()) -> PageData:
    """Read the last 24 h of runs and the sensors' readings, and draw the strip and up to MAX_CARDS cards, each
    with its own range (range_of: its label, else DT_TEMPERATURE_RANGE for temperature sensors)."""
    try:
        runs = store.runs_since(now - DAY_SECS)
        sensors = store.sensors(now) if with_sensors else []
        ranges = {s["device"]: range_of(store.latest_labels(s["device"]), "humidity" in s["readings"], band)
                  for s in sensors}
        sensors.sort(key=lambda s: card_order(s, ranges[s["device"]][0]))
        series = [{kind: store.series(sensor["device"], kind, now - DAY_SECS, now)
                   for kind in NUMERIC_KINDS if kind in sensor["readings"]} for sensor in sensors[:MAX_CARDS]]
    except StoreError:
        unavailable = fill(PARTS["unavailable"])
        return PageData(unavailable, Markup(), Markup(), unavailable, Markup())
    cards = [sensor_card(sensor, by_kind, now, tz, ranges[sensor["device"]][0],
                         card_notes(sensor["device"], ranges[sensor["device"]][1], open_alerts, now, tz))
             for sensor, by_kind in zip(sensors, series, strict=False)]
    cards.sort(key=lambda card: card[1] is None)  # out of range now, by the readings: first
    if len(sensors) > MAX_CARDS:
        cards.append((fill(PARTS["more_sensors"], count=len(sensors) - MAX_CARDS), None))
    return PageData(strip_html(runs, now, tz), strip_summary(runs, now, tz, False), strip_summary(runs, now, tz, True),
                    join(card for card, _ in cards) if cards else fill(PARTS["no_sensors"]),
                    join(alert for _, alert in cards if alert))


def card_notes(device: str, range_problem: str | None, open_alerts: Iterable[Alert], now: float,
               tz: dt.tzinfo) -> list[Markup]:
    """A card's notes: its open silence and battery alerts (out of range shows from the readings), a bad label."""
    notes = [fill(PARTS["card_watch"], what=ALERT_WORDS[alert.kind], since=time_html(alert.since, now, tz))
             for alert in open_alerts if alert.device == device and alert.kind in ("silent", "battery_low")]
    if range_problem:
        notes.append(fill(PARTS["card_label"], problem=range_problem))
    return notes


# -- the page


@dataclasses.dataclass(frozen=True)
class PageView:
    """Everything one status page shows, as plain values (web.App.page_view gathers it)."""

    now: float
    tz: dt.tzinfo
    zone: str  # the pump's time zone, as set; "" while unset (times are then in UTC)
    health: str  # "ok", "stale" or "idle" (web.App.health)
    last_ok: float | None  # when the newest successful sync finished
    authorized: bool  # the right secret came along: errors, runs, versions and Sync now are shown
    wrong_secret: bool  # a secret came in the address and it was wrong
    secret: str  # the service's own, for the buttons and the CSV link (written only when authorized)
    secret_in_address: bool  # only then may links and redirects the page asks for carry the secret
    answers_post: bool  # the answer to a form (the secret form, a button): it cannot reload itself
    on_heroku: bool  # the dyno's disk, and a SQLite file on it, is wiped at every restart
    missing: tuple[str, ...]  # sync settings not given
    stale_mins: float
    interval_mins: float
    receiver_on: bool  # DT_SIGNATURE_SECRET is set
    events: tuple[int, float | None] | str | None  # web.App.event_summary()'s answer
    store_failure: str | None  # read before anything else this page reads from the store
    store_where: str
    store_dialect: str
    last_run: dict | None
    current: Run | None
    paused_until: float | None
    started_at: float  # when this process started (the stale sentence counts from it before any success)
    has_timer: bool
    next_at: float | None  # the timer's next sync
    recent_runs: list[dict] | None  # the newest runs, with the secret only; None if the store failed
    open_alerts: tuple[Alert, ...]  # the alert watch's, as it last judged: the first few, the most urgent first
    more_alerts: int  # how many more are open
    alert_history: list[tuple[Alert, str, str | None]] | None  # with the secret: 7 days, with their announcements
    drawn: PageData
    drawn_as_of: float  # when what the page read from the store was last known to be current (view.ViewBuilder)
    versions: str  # the libraries' versions, shown with the secret
    nightscout: dict = dataclasses.field(default_factory=dict)  # Syncer.nightscout: its version, or a problem
    channels: tuple[str, ...] = ()  # ALERT_URLS' channels by their labels ("ntfy (ntfy.sh)"), never their URLs
    last_test: tuple[float, tuple[str, ...]] | None = None  # the last test alert of this process: when, a line each


def why_failed(view: PageView) -> Markup:
    """What the last run's failure was and what to do (the error only with the secret), or why nothing ran."""
    last_run = view.last_run or {}
    if last_run.get("outcome") != "failed":
        return fill(SENTENCES["why_quiet"])
    when = time_html(stamp(last_run["started_at"]), view.now, view.tz)
    if not view.authorized:
        return fill(SENTENCES["why_secret"], when=when)
    error = last_run.get("error") or ""
    advice = failure_advice(error)
    return fill(SENTENCES["why"], when=when, error=error, advice=f" {advice}." if advice else "")


def problem_state(view: PageView) -> tuple[str, Markup] | None:
    """A sync or settings problem's badge word and sentence, the first that applies, or None."""
    now, tz = view.now, view.tz
    if view.missing:
        return "not configured", fill(SENTENCES["not configured"], missing=", ".join(view.missing))
    if view.store_failure:
        detail = f": {view.store_failure} ({view.store_where})" if view.authorized else ""
        return "database failing", fill(SENTENCES["database failing"], detail=detail,
                                        advice=DATABASE_ADVICE[view.store_dialect])
    if view.paused_until and now < view.paused_until:  # once it is over, the timer tries again
        return "paused", fill(SENTENCES["paused"], until=time_html(view.paused_until, now, tz),
                              manual="pressing Sync now" if view.authorized else
                              "Sync now on the page opened with the secret")
    if view.health == "stale":
        since = fill(SENTENCES["since_ok" if view.last_ok else "since_start"],
                     when=time_html(view.last_ok or view.started_at, now, tz))
        return "stale", fill(SENTENCES["stale"], since=since, limit=f"{view.stale_mins:g}", why=why_failed(view))
    if (view.last_run or {}).get("outcome") == "failed":
        return "failing", why_failed(view)
    return None


def page_state(view: PageView) -> tuple[tuple[str, ...], Markup]:
    """The badges' words, the most urgent first, and the header's sentence: what is wrong and what to do.

    An open alert and a sync or settings problem both show, the alert first: a family must not miss the fridge
    because a sync failed meanwhile. "ok" only when there is neither."""
    now, tz = view.now, view.tz
    badges, sentences = [], []
    if view.open_alerts:
        badges.append("alert")
        sentences.extend(fill(SENTENCES["alert"], name=shown_name(alert.name or "Pump data"),
                              what=ALERT_WORDS[alert.kind], since=time_html(alert.since, now, tz))
                         for alert in view.open_alerts)
        if view.more_alerts:  # the first few, the most urgent first: the page stays small whatever is open
            sentences.append(fill(SENTENCES["more_alerts"], count=view.more_alerts))
    problem = problem_state(view)
    if problem:
        badges.append(problem[0])
        sentences.append(problem[1])
    if badges:
        return tuple(badges), Markup(" ".join(sentences))
    if view.last_ok is None:
        first = "first_timer" if view.has_timer else "first_no_timer"
        return ("ok",), fill(SENTENCES["idle"], first=fill(SENTENCES[first]))
    return ("ok",), fill(SENTENCES["ok"], when=time_html(view.last_ok, now, tz))


def facts_html(view: PageView) -> Markup:
    now, tz = view.now, view.tz
    if view.paused_until and now < view.paused_until:
        next_sync = fill(SENTENCES["next_paused"], until=time_html(view.paused_until, now, tz),
                         reason=CREDENTIALS_REFUSED)
    elif view.has_timer and view.next_at:
        next_sync = time_html(view.next_at, now, tz)
    elif view.has_timer:
        next_sync = fill(SENTENCES["next_after_current"])
    else:
        next_sync = fill(SENTENCES["next_no_timer" if not view.interval_mins else "next_waits"])
    rows = [("Last successful sync", time_html(view.last_ok, now, tz) if view.last_ok else "none yet"),
            ("Next scheduled sync", next_sync)]
    if view.current:
        rows.append(("Running now", fill(SENTENCES["running"], id=view.current.id or "",
                                         trigger=view.current.trigger,
                                         when=time_html(view.current.started_at, now, tz))))
    if view.missing:
        rows.append(("Missing settings", ", ".join(view.missing)))
    if view.authorized and (view.nightscout.get("problem") or view.nightscout.get("version")):
        rows.append(("Nightscout", nightscout_words(view.nightscout)))
    if view.authorized and view.channels:
        rows.append(("Alert channels", ", ".join(view.channels)))
    if view.authorized and view.last_test:
        rows.append(("Last test alert", fill(SENTENCES["last_test"], when=time_html(view.last_test[0], now, tz),
                                             lines="; ".join(view.last_test[1]))))
    return join(fill(PARTS["fact"], label=label, value=value) for label, value in rows)


def check_verdict_html(view: PageView) -> Markup:
    """The secret's view, beside the buttons: what the last Check login found (a check is no sync: only here)."""
    check = next((run for run in view.recent_runs or () if run["trigger"] == "check"), None)
    if not check or check["outcome"] == "running":
        return Markup()
    when = time_html(dt.datetime.fromisoformat(check["started_at"]).timestamp(), view.now, view.tz)
    return fill(PARTS["last_check"], verdict=fill(SENTENCES["last_check"], outcome=check["outcome"], when=when,
                                                  verdict=f": {check['error']}" if check["error"] else ""))


def nightscout_words(said: dict) -> str:
    """What the site last told: the problem to fix, else its version and how it replaces a treatment sent again."""
    if said.get("problem"):
        return said["problem"]
    return f"version {said['version']}: it replaces a treatment sent again by its {upserts_on(said['version'])}"


def runs_html(view: PageView) -> Markup:
    """The secret's part: recent runs and the CSV export (with the secret in the link if the page has it in its
    address)."""
    if not view.authorized:
        return Markup()
    if view.recent_runs is None:
        return fill(PARTS["unavailable"])
    rows = join(fill(PARTS["run_row"], outcome=run["outcome"], trigger=run["trigger"], uploaded=run["uploaded"],
                     when=time_html(stamp(run["started_at"]), view.now, view.tz),
                     error=run["error"] or "") for run in view.recent_runs)
    query = "?" + urllib.parse.urlencode({"secret": view.secret}) if view.secret_in_address else ""
    return fill(PARTS["runs"], rows=rows, csv=f"/events.csv{query}",
                csv_note="" if view.secret_in_address else SENTENCES["csv_bearer"].template)


def alerts_html(view: PageView) -> Markup:
    """The secret's list of the last 7 days' alerts: start, end, what, what Nightscout and each channel was told."""
    if view.alert_history is None:
        return Markup()
    rows = join(fill(PARTS["alert_row"], name=shown_name(alert.name or "Pump data"), what=ALERT_WORDS[alert.kind],
                     start=time_html(alert.started_at, view.now, view.tz),
                     end=time_html(alert.ended_at, view.now, view.tz) if alert.ended_at else "open",
                     told=start_fate + (f"; end {end_fate}" if end_fate else ""))
                for alert, start_fate, end_fate in view.alert_history)
    return fill(PARTS["alerts"], rows=rows) if view.alert_history else fill(PARTS["no_alerts"])


def receiver_text(view: PageView) -> Markup:
    if view.events is None:
        return fill(SENTENCES["receiver_off"])
    if isinstance(view.events, str):
        return fill(SENTENCES["receiver_unknown"])
    count, last = view.events
    return fill(SENTENCES["receiver_on"], count=count, last=time_html(last, view.now, view.tz) if last else "never")


def header_notes(view: PageView) -> Markup:
    """Under the sentence: sensors outside their range now, and events that vanish at Heroku's next restart."""
    storage = view.on_heroku and view.receiver_on and view.store_dialect == "sqlite"
    old = view.now - view.drawn_as_of > STALE_NOTE_SECS  # a slow database: say so rather than pass it off as now
    return join((view.drawn.alerts, fill(PARTS["storage"]) if storage else Markup(),
                 fill(PARTS["as_of"], when=time_html(view.drawn_as_of, view.now, view.tz)) if old else Markup()))


def footer_html(receiver: Markup, versions: str, zone: Markup, answers_post: bool, form_shows: str) -> Markup:
    """The receiver's state, the versions, the time zone, whether the page refreshes, and the secret form saying
    what the secret shows ("": no form)."""
    return fill(PARTS["footer"], receiver=receiver, versions=versions, zone=zone,
                refreshes=SENTENCES["no_refresh" if answers_post else "refreshes"].template,
                secret_form=fill(PARTS["secret_form"], what=form_shows) if form_shows else Markup())


def frame(badges: tuple[str, ...], sentence: Markup, answers_post: bool, **parts: Markup) -> str:
    """The page around the parts given (the others empty): its badges (the first, the most urgent, gives the tab
    icon's colour), its sentence, and a reload every minute unless it answers a form (it would come back without
    the secret)."""
    empty = dict.fromkeys(("alerts", "wrong_secret", "buttons", "facts", "syncs", "sensors", "runs", "footer"), "")
    badge_html = Markup(" ".join(fill(PARTS["badge"], word=word, state_class=word.replace(" ", "-"), id=badge_id)
                                 for word, badge_id in zip(badges, BADGE_IDS, strict=False)))
    return fill(STATUS_PAGE, title=", ".join(badges), badges=badge_html, sentence=sentence, icon=tab_icon(badges[0]),
                refresh=Markup() if answers_post else fill(PARTS["refresh"]), **{**empty, **parts})


def render_status(view: PageView) -> str:
    """The status page: state and what to do, times, the sync strip, sensor cards; runs only with the secret."""
    badges, sentence = page_state(view)
    data = view.drawn
    versions = f"tcsync_wsgi {__version__}"
    if view.authorized:
        versions += f"; {view.versions}; database {view.store_where}"
    zone = fill(SENTENCES["zone"], zone=view.zone) if view.zone else fill(SENTENCES["zone_unset"])
    form_shows = "why syncs fail, the recent runs, Sync now and Check login" if view.secret and not view.authorized \
        else ""
    # The buttons come back to a page like this one: with the secret in its address only if it had it there.
    then = "page" if view.answers_post else "/?secret" if view.secret_in_address else "/"
    return frame(badges, sentence, view.answers_post, alerts=header_notes(view), facts=facts_html(view),
                 syncs=fill(PARTS["syncs"], strip=data.strip,
                            summary=data.summary_with_errors if view.authorized else data.summary),
                 sensors=fill(PARTS["sensors"], cards=data.cards) if view.receiver_on else Markup(),
                 runs=join([runs_html(view), alerts_html(view)]),
                 footer=footer_html(receiver_text(view), versions, zone, view.answers_post, form_shows),
                 wrong_secret=fill(PARTS["wrong_secret"]) if view.wrong_secret else Markup(),
                 buttons=join([fill(PARTS["buttons"], secret=view.secret, then=then), check_verdict_html(view)])
                 if view.authorized else Markup())


# -- while settings are unusable


@dataclasses.dataclass(frozen=True)
class ProblemsView:
    """What the page shows while settings are unusable (web.SettingsProblemsApp)."""

    problems: tuple[str, ...]  # Settings.problems: each names its setting and what it must be
    authorized: bool  # the right secret came along: the value each problem got is shown too
    secret: str  # "" if unusable: then no one is authorized and the page offers no form
    wrong_secret: bool
    answers_post: bool
    on_heroku: bool
    versions: str


def render_problems(view: ProblemsView) -> str:
    """The page naming every settings problem and how to fix it, under a red "settings" badge."""
    items = join(fill(PARTS["problem"], text=problem if view.authorized else without_value(problem))
                 for problem in view.problems)
    offer_form = bool(view.secret) and not view.authorized  # an unusable secret authorizes no one
    fix = fill(PARTS["problems"], items=items, elsewhere=Markup() if view.on_heroku else fill(PARTS["fix_elsewhere"]),
               values=fill(PARTS["values_with_secret"]) if offer_form else Markup())
    footer = footer_html(fill(SENTENCES["receiver_settings"]), f"tcsync_wsgi {__version__}" + (
        f"; {view.versions}" if view.authorized else ""), Markup(), view.answers_post,
        "the value each setting got" if offer_form else "")
    return frame(("settings",), fill(SENTENCES["settings"]), view.answers_post, alerts=fix, footer=footer,
                 wrong_secret=fill(PARTS["wrong_secret"]) if view.wrong_secret else Markup())


FAILURE_ADVICE = (  # a sync's error -> what to do, as the README's Troubleshooting says it
    (CREDENTIALS_REFUSED, "Log in at Tandem Source with the same email and password to check them, and check that "
                          "TCONNECT_REGION is the region of your account (US, or EU for a European one)"),
    ("no working DNS", "Check this machine's network: its DNS (on a Pi, the router it gets its address from) does not "
                       "answer; the next sync tries again"),
    ("could not reach Nightscout", "Check NS_URL and that your Nightscout site is up"),
    ("Nightscout last_uploaded_entry 401", "Nightscout refused NS_SECRET: use the API_SECRET of your Nightscout site"),
    ("did not answer within the sync's time limit",
     "Usually a temporary outage; the next sync tries again. Raise the limit if it keeps happening"),
    ("could not reach Tandem Source", "Usually a temporary outage; the next sync tries again"),
    ("503 response", "Nightscout is down or restarting; the next sync tries again, nothing needs restarting"),
    ("tconnectsync refused its settings",
     "Fix that setting in the Config Vars or the settings file; tconnectsync also reads a .env file in the service's "
     "folder, which this service does not check"),
)
BADGE_IDS = ("state", "problem")  # the first badge, the page's state; the second, a sync or settings problem
ALERT_WORDS = {"out_of_range": "out of range", "silent": "silent", "battery_low": "battery low",
               "sync_failing": "not reaching Nightscout"}
DATABASE_ADVICE = {
    "sqlite": "Stop the service, move the damaged file away, and start again: a new file is made.",
    "postgres": "The service reconnects by itself once the database answers again; no restart is needed.",
}
SENTENCES = {name: string.Template(text) for name, text in {
    "not configured": "Set $missing (on Heroku: Settings → Reveal Config Vars): syncs are refused until they are set.",
    "database failing": "The database is failing$detail; Data Connector deliveries are refused with 503 until it "
                        "works again. $advice",
    "paused": CREDENTIALS_REFUSED + ". Timed syncs and monitor pings wait until $until (each failed login counts "
                                    "toward Tandem's account lockout); once the credentials are right, $manual tries "
                                    "again at once.",
    "stale": "No successful sync $since, more than $limit minutes (TCONNECTSYNC_HEROKU_STALE_MINS), so the health "
             "check now tells your uptime monitor that syncs stopped. $why",
    "since_ok": "since $when", "since_start": "since the service started $when",
    "why": "The last sync failed at $when: $error.$advice",
    "why_secret": "The last sync failed at $when; enter the service's secret at the bottom of this page to see why. "
                  "The next sync tries again.",
    "why_quiet": "No sync ran lately: is a timer set (TCONNECTSYNC_HEROKU_INTERVAL_MINS), and does your uptime monitor "
                 "keep the service awake?",
    "ok": "Syncs work: the last one succeeded $when.",
    "alert": "<bdi>$name</bdi> $what since $since.",
    "more_alerts": "And $count more alerts: /alerts lists them.",
    "no_syncs": "No syncs in the last 24 hours.",
    "idle": "Ready: no sync has run yet. $first",
    "first_timer": "The timer starts the first one in a few seconds.",
    "first_no_timer": "There is no timer: set TCONNECTSYNC_HEROKU_INTERVAL_MINS (5 is usual) in the Config Vars, or "
                      "press Sync now on the page opened with the secret.",
    "next_paused": "paused until $until: $reason (Sync now tries again at once)",
    "next_after_current": "after the current sync",
    "next_no_timer": "none: no timer is set (TCONNECTSYNC_HEROKU_INTERVAL_MINS)",
    "next_waits": "none: the timer waits for the missing settings",
    "running": "run $id ($trigger), started $when",
    "last_check": "$outcome, $when$verdict",
    "last_test": "$when: $lines",
    "receiver_off": "off (optional)",
    "receiver_on": "on; $count events in the last 24 h; last $last",
    "receiver_unknown": "on; events unknown while the database fails",
    "receiver_settings": "deliveries are refused with 503 until the settings are fixed; the Data Connector sends "
                         "them again later",
    "zone": "Times are in $zone.",
    "zone_unset": "Times are in UTC until TIMEZONE_NAME names your pump's time zone.",
    "refreshes": "This page refreshes every minute.",
    "no_refresh": "This view does not refresh itself: enter the secret again to see what changed.",
    "csv_bearer": " (it needs the secret: send it as a Bearer header, or open this page with ?secret=THE-SECRET in its "
                  "address)",
    "settings": "Some settings cannot be used, so nothing syncs and Data Connector deliveries are refused (the Data "
                "Connector sends them again for hours: nothing is lost once the settings are fixed).",
}.items()}


