"""The status page: a pure function of a read model (PageView), drawn with the templates in templates/.

The web layer gathers a PageView (plain values: no request, no App) and calls render_status(). Times are shown
in the pump's zone; charts are inline SVG computed here; nothing is fetched from elsewhere. Every value goes into
a template through fill(), which escapes it.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import html
import itertools
import math
import re
import string
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcsync import __version__
from tcsync.readings import NUMERIC_KINDS, is_number, iso
from tcsync.store import SHARED_STATE_SECS, Store, StoreError
from tcsync.sync import CREDENTIALS_REFUSED, Run

DAY_SECS = 86400
PAGE_DATA_SECS = SHARED_STATE_SECS  # how long the page reuses what it read from the store (see web.App.page_data)
AXIS_UNITS = 1440  # SVG x units across the last 24 h: one per minute
MARK_UNITS = 4  # a run's mark in the sync strip, in minutes: wide enough to see on a phone
MAX_CARDS = 12  # sensor cards drawn: a family has a few sensors (the bench has 50); the others are counted
THIN_SECS = 300  # a chart draws at most the lowest and the highest reading of each 5 minutes
PLOT_UNITS = 100  # SVG y units of a chart


class Markup(str):
    """HTML made by fill(): inserted into another template as it is."""


def fill(template: string.Template, **values: Any) -> Markup:
    """The template with every value escaped, except Markup from an earlier fill()."""
    return Markup(template.substitute({name: value if isinstance(value, Markup) else html.escape(str(value))
                                       for name, value in values.items()}))


def join(parts: Iterable[Markup]) -> Markup:
    return Markup("".join(part if isinstance(part, Markup) else html.escape(part) for part in parts))


def number_text(value: float, unit: str | None = "°C") -> str:
    """4.5 and 5.0 (°C, one decimal), 40 (%), 101325 (Pa), 412 (ppm)."""
    return f"{value:.1f}" if unit == "°C" and abs(value) < 100 else f"{value:.0f}"


def reading_text(value: Any, unit: str | None) -> str:
    text = number_text(value, unit) if is_number(value) else str(value).replace("_", " ").lower()
    return f"{text} {unit}" if unit else text


def age_text(seconds: float) -> str:
    """'4 min ago', 'in 2 h 5 min', 'just now': coarse, for people."""
    minutes = round(abs(seconds) / 60)
    if abs(seconds) < 45:
        return "just now" if seconds >= 0 else "in a moment"
    if minutes < 60:
        text = f"{minutes} min"
    elif minutes < 6 * 60:
        text = f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    elif minutes < 48 * 60:
        text = f"{round(minutes / 60)} h"
    else:
        text = f"{round(minutes / 1440)} days"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def clock_text(ts: float, now: float, tz: dt.tzinfo) -> str:
    """'14:05', 'yesterday 23:10', 'Nov 20 14:05': the time in the pump's zone, with the day unless it is today."""
    local = dt.datetime.fromtimestamp(ts, tz)
    days = (dt.datetime.fromtimestamp(now, tz).date() - local.date()).days
    day = {0: "", 1: "yesterday ", -1: "tomorrow "}.get(days, f"{MONTHS[local.month - 1]} {local.day} ")
    return f"{day}{local:%H:%M}"


def time_html(ts: float, now: float, tz: dt.tzinfo) -> Markup:
    """<time> saying '14:05 (4 min ago)', the full time on hover."""
    local = dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")
    return fill(PARTS["time"], iso=iso(ts), title=f"{local} ({tz})",
                text=f"{clock_text(ts, now, tz)} ({age_text(now - ts)})")


def axis_ticks(now: float, tz: dt.tzinfo) -> list[tuple[float, str]]:
    """(fraction of the last 24 h, '06:00') at each local 00:00, 06:00, 12:00 and 18:00."""
    start = now - DAY_SECS
    first = math.ceil(start / 900) * 900  # quarter hours: every zone's offset is a multiple of 15 minutes
    ticks = []
    for ts in range(int(first), int(now), 900):
        local = dt.datetime.fromtimestamp(ts, tz)
        if local.minute == 0 and local.hour % 6 == 0:
            ticks.append(((ts - start) / DAY_SECS, f"{local:%H:%M}"))
    return ticks


def axis_html(ticks: list[tuple[float, str]]) -> Markup:
    """The time labels under a strip or chart; none so close to an edge that it would stick out."""
    return join(fill(PARTS["tick_label"], left=f"{f * 100:.2f}", text=text) for f, text in ticks if 0.07 < f < 0.88)


def tick_lines(ticks: list[tuple[float, str]], height: int) -> Markup:
    path = "".join(f"M{f * AXIS_UNITS:.1f} 0V{height}" for f, _ in ticks)
    return fill(PARTS["ticks"], d=path) if path else Markup()


def failure_advice(error: str) -> str:
    """The README's 'what to do' for a sync's error, or ''."""
    return next((advice for needle, advice in FAILURE_ADVICE if needle in error), "")


# -- the sync strip


def strip_html(runs: list[dict], now: float, tz: dt.tzinfo) -> Markup:
    """One mark per run of the last 24 h, coloured and shaped by outcome; the right edge is now."""
    start = now - DAY_SECS
    ticks = axis_ticks(now, tz)
    by_outcome: dict[str, list[str]] = {}
    for run in runs:  # one path per outcome, one rectangle in it per run: a quarter of the bytes of <rect>s
        y = MARK_Y.get(run["outcome"], 0)
        x = min(max(run["started_at"] - start, 0) / 60, AXIS_UNITS - MARK_UNITS)
        by_outcome.setdefault(run["outcome"], []).append(f"M{x:.1f} {y}h{MARK_UNITS}v{24 - y}h-{MARK_UNITS}z")
    marks = join(fill(PARTS["marks"], outcome=outcome, d="".join(d)) for outcome, d in by_outcome.items())
    return fill(PARTS["strip"], ticks=tick_lines(ticks, 24), marks=marks, axis=axis_html(ticks),
                label=f"{len(runs)} syncs in the last 24 hours")


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


def out_of_range(value: float, band: tuple[float, float] | None) -> bool:
    return band is not None and not band[0] <= value <= band[1]


def band_text(band: tuple[float, float]) -> str:
    return f"{band[0]:g}\N{EN DASH}{band[1]:g} °C"


def out_since(points: list[tuple[float, float]], band: tuple[float, float] | None) -> float | None:
    """When the newest readings started being outside the band (None if the newest is inside)."""
    since = None
    for at, value in reversed(points):
        if not out_of_range(value, band):
            break
        since = at
    return since


def thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lowest and the highest reading of each THIN_SECS, in time order: a sensor that reports every few seconds
    still draws a small chart, with its peaks."""
    buckets: dict[int, list[tuple[float, float]]] = {}
    for point in points:
        buckets.setdefault(int(point[0] // THIN_SECS), []).append(point)
    kept: list[tuple[float, float]] = []
    for bucket in buckets.values():
        extremes = {min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])}
        kept += bucket if len(bucket) <= 2 else sorted(extremes)
    return kept


def segments(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where the sensor was silent for long (3 x its usual interval, at least 30 min)."""
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    silent = max(1800.0, 3 * gaps[len(gaps) // 2]) if gaps else 0.0
    parts: list[list[tuple[float, float]]] = []
    for i, point in enumerate(points):
        if i == 0 or point[0] - points[i - 1][0] > silent:
            parts.append([])
        parts[-1].append(point)
    return parts


def chart_html(kind: str, unit: str | None, points: list[tuple[float, float]], now: float, tz: dt.tzinfo,
               band: tuple[float, float] | None) -> Markup:
    """A 24 h line chart of one numeric kind: min and max labelled, the band (if any) shaded, readings outside it
    marked. x in minutes of the last 24 h, y in PLOT_UNITS, top down."""
    start, unit_text = now - DAY_SECS, f" {unit}" if unit else ""
    values = [value for _, value in points]
    low, high = min(values), max(values)
    bottom, top = min(low, *band) if band else low, max(high, *band) if band else high
    pad = (top - bottom) * 0.1 or max(1.0, abs(top) / 100)
    bottom, top = bottom - pad, top + pad
    span = top - bottom if math.isfinite(top - bottom) and top > bottom else 0.0  # 0: values beyond floats' reach

    def x(at: float) -> str:  # a reading a little ahead of now (Store.series allows for clock skew): at the edge
        return f"{(min(at, now) - start) / 60:.1f}"

    def y(value: float) -> float:
        return (top - value) / span * PLOT_UNITS if span else PLOT_UNITS / 2

    lines = join(fill(PARTS["line"], points=" ".join(f"{x(at)},{y(value):.2f}" for at, value in part))
                 for part in segments(points))
    single = [part[0] for part in segments(points) if len(part) == 1]
    outside = [(at, value) for at, value in points if out_of_range(value, band)]
    dots = join(fill(PARTS["dots"], cls=cls, d="".join(f"M{x(at)} {y(value):.2f}h0" for at, value in chosen))
                for cls, chosen in (("dot", single + points[-1:]), ("dot out", outside)) if chosen)
    shaded = fill(PARTS["band"], y=f"{y(band[1]):.2f}", height=f"{y(band[0]) - y(band[1]):.2f}") if band \
        else Markup()
    lowest, highest = min(points, key=lambda p: p[1]), max(points, key=lambda p: p[1])
    ticks = axis_ticks(now, tz)
    return fill(PARTS["chart"], title=f"{KIND_NAMES.get(kind, kind)}, last 24 hours", band=shaded,
                ticks=tick_lines(ticks, PLOT_UNITS), lines=lines, dots=dots, axis=axis_html(ticks),
                guides=fill(PARTS["guides"], d=f"M0 {y(high):.2f}H{AXIS_UNITS}M0 {y(low):.2f}H{AXIS_UNITS}"),
                label=f"{KIND_NAMES.get(kind, kind)} from {number_text(low, unit)} to {number_text(high, unit)}"
                      f"{unit_text}", max_top=f"{y(high):.2f}", min_top=f"{y(low):.2f}",
                # each label on the outer side of its line, unless that is off the chart; one label if just one value
                max_in=" in" if y(high) < 15 else "", min_in=" in" if y(low) > 85 else "",
                max=f"max {number_text(high, unit)}{unit_text} ({clock_text(highest[0], now, tz)})",
                min=f"min {number_text(low, unit)}{unit_text} ({clock_text(lowest[0], now, tz)})" if low < high
                else "")


def sensor_card(sensor: dict, series: dict[str, list[tuple[float, float]]], now: float, tz: dt.tzinfo,
                band: tuple[float, float] | None) -> tuple[Markup, Markup | None]:
    """A device's card (Store.sensors() item; series by kind from Store.series()) and, when its temperature is
    outside the band now, the header's alert."""
    readings, name = sensor["readings"], sensor["name"] or sensor["device"]

    def when(kind: str) -> Markup:
        return time_html(dt.datetime.fromisoformat(readings[kind]["at"]).timestamp(), now, tz)

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
    card = fill(PARTS["card"], name=name, out=" out" if alert else "", note=note, readings=lines, charts=charts,
                device=fill(PARTS["device"], device=sensor["device"]) if sensor["name"] else Markup(),
                health=fill(PARTS["health"], text=", ".join(health)) if health else Markup())
    return card, alert or None


# -- what the page reads from the store, drawn, reused for a moment


@dataclasses.dataclass
class PageData:
    """What the status page read from the store and drew from it, reused for a moment (web.App.page_data)."""

    built_at: float  # time.monotonic()
    fresh_for: float  # seconds: PAGE_DATA_SECS, or longer when reading and drawing took long
    last_run: dict | None  # the syncer's, when built: a run that finished here since means draw again
    current: Run | None
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
                     last_run: dict | None, current: Run | None) -> PageData:
    """Read the last 24 h of runs and the sensors' readings, and draw the strip and up to MAX_CARDS cards."""
    t0 = time.perf_counter()
    try:
        runs = store.runs_since(now - DAY_SECS)
        sensors = sorted(store.sensors(now), key=lambda s: card_order(s, band)) if with_sensors else []
        series = [{kind: store.series(sensor["device"], kind, now - DAY_SECS, now)
                   for kind in NUMERIC_KINDS if kind in sensor["readings"]} for sensor in sensors[:MAX_CARDS]]
    except StoreError:
        unavailable = fill(PARTS["unavailable"])
        return PageData(time.monotonic(), PAGE_DATA_SECS, last_run, current, unavailable, Markup(), Markup(),
                        unavailable, Markup())
    cards = [sensor_card(sensor, by_kind, now, tz, band) for sensor, by_kind in zip(sensors, series, strict=False)]
    cards.sort(key=lambda card: card[1] is None)  # out of range now, by the readings: first
    if len(sensors) > MAX_CARDS:
        cards.append((fill(PARTS["more_sensors"], count=len(sensors) - MAX_CARDS), None))
    return PageData(time.monotonic(), max(PAGE_DATA_SECS, 20 * (time.perf_counter() - t0)), last_run, current,
                    strip_html(runs, now, tz), strip_summary(runs, now, tz, False), strip_summary(runs, now, tz, True),
                    join(card for card, _ in cards) if cards else fill(PARTS["no_sensors"]),
                    join(alert for _, alert in cards if alert))


# -- the page


@dataclasses.dataclass(frozen=True)
class PageView:
    """Everything one status page shows, as plain values (web.App.page_view gathers it)."""

    now: float
    tz: dt.tzinfo
    zone: str  # the pump's time zone, as set
    health: str  # "ok", "stale" or "idle" (web.App.health)
    last_ok: float | None  # when the newest successful sync finished
    authorized: bool  # the right secret came along: errors, runs, versions and Sync now are shown
    wrong_secret: bool  # a secret came in the address and it was wrong
    bearer: bool  # the secret came in a header: links the page writes do not carry it
    secret: str  # the service's own, for Sync now and the CSV link (written only when authorized)
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
    drawn: PageData
    versions: str  # the libraries' versions, shown with the secret


def why_failed(view: PageView) -> Markup:
    """What the last run's failure was and what to do (the error only with the secret), or why nothing ran."""
    last_run = view.last_run or {}
    if last_run.get("outcome") != "failed":
        return fill(SENTENCES["why_quiet"])
    when = time_html(dt.datetime.fromisoformat(last_run["started_at"]).timestamp(), view.now, view.tz)
    if not view.authorized:
        return fill(SENTENCES["why_secret"], when=when)
    error = last_run.get("error") or ""
    advice = failure_advice(error)
    return fill(SENTENCES["why"], when=when, error=error, advice=f" {advice}." if advice else "")


def page_state(view: PageView) -> tuple[str, Markup]:
    """The badge's word and the header's sentence: what is wrong and what to do."""
    now, tz = view.now, view.tz
    if view.missing:
        return "not configured", fill(SENTENCES["not configured"], missing=", ".join(view.missing))
    if view.store_failure:
        detail = f": {view.store_failure} ({view.store_where})" if view.authorized else ""
        return "database failing", fill(SENTENCES["database failing"], detail=detail,
                                        advice=DATABASE_ADVICE[view.store_dialect])
    if view.paused_until and now < view.paused_until:  # once it is over, the timer tries again
        return "paused", fill(SENTENCES["paused"], until=time_html(view.paused_until, now, tz),
                              manual="pressing Sync now" if view.authorized else "a manual /run")
    if view.health == "stale":
        since = fill(SENTENCES["since_ok" if view.last_ok else "since_start"],
                     when=time_html(view.last_ok or view.started_at, now, tz))
        return "stale", fill(SENTENCES["stale"], since=since, limit=f"{view.stale_mins:g}", why=why_failed(view))
    if (view.last_run or {}).get("outcome") == "failed":
        return "failing", why_failed(view)
    if view.last_ok is None:
        first = "first_timer" if view.has_timer else "first_no_timer"
        return "ok", fill(SENTENCES["idle"], first=fill(SENTENCES[first]))
    return "ok", fill(SENTENCES["ok"], when=time_html(view.last_ok, now, tz))


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
    return join(fill(PARTS["fact"], label=label, value=value) for label, value in rows)


def runs_html(view: PageView) -> Markup:
    """The secret's part: recent runs and the CSV export (with the secret in the link if the page has it in its
    address)."""
    if not view.authorized:
        return Markup()
    if view.recent_runs is None:
        return fill(PARTS["unavailable"])
    rows = join(fill(PARTS["run_row"], outcome=run["outcome"], trigger=run["trigger"], uploaded=run["uploaded"],
                     when=time_html(dt.datetime.fromisoformat(run["started_at"]).timestamp(), view.now, view.tz),
                     error=run["error"] or "") for run in view.recent_runs)
    query = "" if view.bearer else "?" + urllib.parse.urlencode({"secret": view.secret})
    return fill(PARTS["runs"], rows=rows, csv=f"/events.csv{query}",
                csv_note=SENTENCES["csv_bearer"].template if view.bearer else "")


def receiver_text(view: PageView) -> Markup:
    if view.events is None:
        return fill(SENTENCES["receiver_off"])
    if isinstance(view.events, str):
        return fill(SENTENCES["receiver_unknown"])
    count, last = view.events
    return fill(SENTENCES["receiver_on"], count=count, last=time_html(last, view.now, view.tz) if last else "never")


def render_status(view: PageView) -> str:
    """The status page: state and what to do, times, the sync strip, sensor cards; runs only with the secret."""
    state, sentence = page_state(view)
    data = view.drawn
    versions = f"tcsync_wsgi {__version__}"
    if view.authorized:
        versions += f"; {view.versions}; database {view.store_where}"
    return fill(STATUS_PAGE, state=state, state_class=state.replace(" ", "-"), sentence=sentence,
                icon=ICON.substitute(colour=ICON_COLOURS.get(state, "cf222e")),
                alerts=data.alerts, facts=facts_html(view), strip=data.strip,
                summary=data.summary_with_errors if view.authorized else data.summary,
                sensors=fill(PARTS["sensors"], cards=data.cards) if view.receiver_on else Markup(),
                runs=runs_html(view), receiver=receiver_text(view), versions=versions, zone=view.zone,
                wrong_secret=fill(PARTS["wrong_secret"]) if view.wrong_secret else Markup(),
                sync_now=fill(PARTS["sync_now"], secret=view.secret, then="/" if view.bearer else "/?secret")
                if view.authorized else Markup())


# The words of the status page. $name is a value, escaped unless it is markup made by fill().
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # not the locale's
KIND_NAMES = {"temperature": "Temperature", "humidity": "Humidity", "co2": "CO₂", "pressure": "Pressure",
              "objectPresent": "Object", "waterPresent": "Water", "contact": "Contact", "motion": "Motion",
              "deskOccupancy": "Desk", "touch": "Touch", "touchCount": "Touches",
              "objectPresentCount": "Object count"}
# The browser tab's icon: a dot in the state's colour (red unless listed), inline so that nothing is fetched.
ICON = string.Template("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 2 2'%3E"
                       "%3Ccircle cx='1' cy='1' r='1' fill='%23$colour'/%3E%3C/svg%3E")
ICON_COLOURS = {"ok": "1a7f37", "paused": "9a5b00", "not configured": "59636e"}
MARK_Y = {"ok": 8}  # an ok run's mark is shorter than the others: the outcome shows without colour too
FAILURE_ADVICE = (  # a sync's error -> what to do, as the README's Troubleshooting says it
    (CREDENTIALS_REFUSED, "Log in at Tandem Source with the same email and password to check them"),
    ("could not reach Nightscout", "Check NS_URL and that your Nightscout site is up"),
    ("Nightscout last_uploaded_entry 401", "Nightscout refused NS_SECRET: use the API_SECRET of your Nightscout site"),
    ("did not answer within the sync's time limit",
     "Usually a temporary outage; the next sync tries again. Raise the limit if it keeps happening"),
    ("could not reach Tandem Source", "Usually a temporary outage; the next sync tries again"),
    ("503 response", "Nightscout is down or restarting; the next sync tries again, nothing needs restarting"),
    ("tconnectsync refused its settings", "The line just before it in the service's log says which setting"),
)
DATABASE_ADVICE = {
    "sqlite": "Stop the service, move the damaged file away, and start again: a new file is made.",
    "postgres": "The service reconnects by itself once the database answers again; no restart is needed.",
}
SENTENCES = {name: string.Template(text) for name, text in {
    "not configured": "Set $missing: syncs are refused until they are set.",
    "database failing": "The database is failing$detail; Data Connector deliveries are refused with 503 until it "
                        "works again. $advice",
    "paused": CREDENTIALS_REFUSED + ". Timed syncs wait until $until; once the password is right, $manual tries "
                                    "again at once.",
    "stale": "No successful sync $since, more than $limit minutes (TCONNECTSYNC_HEROKU_STALE_MINS): /healthz "
             "answers 503. $why",
    "since_ok": "since $when", "since_start": "since the service started $when",
    "why": "The last sync failed at $when: $error.$advice",
    "why_secret": "The last sync failed at $when; open this page with ?secret= to see why. The next sync tries again.",
    "why_quiet": "No sync ran lately: is the timer on, or is a monitor calling /run?",
    "ok": "Syncs work: the last one succeeded $when.",
    "no_syncs": "No syncs in the last 24 hours.",
    "idle": "Ready: no sync has run yet. $first",
    "first_timer": "The timer starts the first one in a few seconds.",
    "first_no_timer": "There is no timer (TCONNECTSYNC_HEROKU_INTERVAL_MINS), so syncs run when /run is called.",
    "next_paused": "paused until $until: $reason (a manual /run tries again now)",
    "next_after_current": "after the current sync",
    "next_no_timer": "no timer (TCONNECTSYNC_HEROKU_INTERVAL_MINS is unset or 0): syncs run when /run is called",
    "next_waits": "none: the timer waits for the missing settings",
    "running": "run $id ($trigger), started $when",
    "receiver_off": "not configured (set DT_SIGNATURE_SECRET)",
    "receiver_on": "configured; $count events in the last 24 h; last $last",
    "receiver_unknown": "configured; events unknown while the database fails",
    "csv_bearer": " (send the secret as a Bearer header)",
}.items()}


# The markup and CSS, read once at start.
TEMPLATES = Path(__file__).resolve().parent / "templates"


def load_parts(text: str) -> dict[str, string.Template]:
    """The pieces of parts.html: each starts at a line <!-- name -->; its lines are joined without line breaks."""
    pieces: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        marker = re.fullmatch(r"<!-- ([a-z_]+) -->", line)
        if marker:
            name = marker[1]
            pieces[name] = []
        elif name:
            pieces[name].append(line)
    return {name: string.Template("".join(lines)) for name, lines in pieces.items()}


PARTS = load_parts((TEMPLATES / "parts.html").read_text(encoding="utf-8"))
STATUS_PAGE = string.Template((TEMPLATES / "status.html").read_text(encoding="utf-8").replace(
    "/* status.css */\n", (TEMPLATES / "status.css").read_text(encoding="utf-8")))
