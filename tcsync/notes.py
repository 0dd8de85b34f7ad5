"""The words of the announcements, in the pump's time zone: what started or ended, since when, for how long; names
made plain and every note bounded, since Nightscout shows it on its pages and pushes it to phones."""

from __future__ import annotations

import datetime as dt

from tcsync.alertbook import Alert
from tcsync.plain import plain_text, safe_name, shorten

DETAIL_LIMIT = 160  # characters of outside text (a sync's error) in a note
NOTE_LIMIT = 300  # characters of a whole note: Nightscout shows it on its pages and pushes it to phones
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # not the locale's
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def bounded_note(text: str) -> str:
    """A note at most NOTE_LIMIT characters long."""
    return shorten(text, NOTE_LIMIT)


def clock(ts: float, tz: dt.tzinfo, day_of: float | None = None) -> str:
    """'14:05', or 'Sat 6 Dec 14:05' when it is not the day of day_of (both in tz); never raises."""
    try:
        local = dt.datetime.fromtimestamp(ts, tz)
        if day_of is not None and local.date() != dt.datetime.fromtimestamp(day_of, tz).date():
            return f"{WEEKDAYS[local.weekday()]} {local.day} {MONTHS[local.month - 1]} {local:%H:%M}"
        return f"{local:%H:%M}"
    except (OverflowError, OSError, ValueError):
        return "an unknown time"


def duration(seconds: float) -> str:
    """'1 h 5 min', '25 min', '2 days 3 h'."""
    minutes = max(0, round(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{minutes // 1440} days" + (f" {minutes % 1440 // 60} h" if minutes % 1440 // 60 else "")


def degrees(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} °C"


def start_notes(alert: Alert, tz: dt.tzinfo, *, now: float | None = None) -> str:
    """The start's announcement, at most NOTE_LIMIT characters. Its times name their day unless it is the day of
    now (the moment the note is written); without now, 'since' names its day unless it is the day the alert
    started, and the others never do."""
    return bounded_note(start_words(alert, tz, now))


def end_notes(alert: Alert, tz: dt.tzinfo, *, now: float | None = None) -> str:
    """The end's announcement, at most NOTE_LIMIT characters; its time names its day unless it is the day of now
    (without now: never)."""
    return bounded_note(end_words(alert, tz, now))


def start_words(alert: Alert, tz: dt.tzinfo, now: float | None) -> str:
    name, detail = safe_name(alert.name, alert.device), plain_text(alert.detail, DETAIL_LIMIT)
    when = clock(alert.since, tz, alert.started_at if now is None else now)
    if alert.kind == "out_of_range":
        return f"{name} {degrees(alert.value)}: {detail} since {when}"
    if alert.kind == "silent":
        return f"{name} has sent nothing since {when}"
    if alert.kind == "battery_low":
        return f"{name} battery low: {alert.value:g} % at {clock(alert.started_at, tz, now)}"
    reason = f": {detail}" if detail else ""
    return f"Pump data has not reached Nightscout since {when}{reason}"


def end_words(alert: Alert, tz: dt.tzinfo, now: float | None) -> str:
    name, ended_at = safe_name(alert.name, alert.device), alert.ended_at or alert.started_at
    when, lasted = clock(ended_at, tz, now), duration(ended_at - alert.since)
    if alert.kind == "out_of_range":
        return f"{name} back in range: {degrees(alert.end_value)} at {when}, out of range for {lasted}"
    if alert.kind == "silent":
        return f"{name} reports again at {when}, after {lasted} without a word"
    if alert.kind == "battery_low":
        return f"{name} battery back to {alert.end_value:g} % at {when}"
    return f"Pump data reaches Nightscout again: a sync succeeded at {when}, after {lasted} without one"


GROUP_WORDS = {("out_of_range", "start"): "out of range since", ("silent", "start"): "silent since",
               ("battery_low", "start"): "with a low battery since", ("out_of_range", "end"): "back in range at",
               ("silent", "end"): "report again at", ("battery_low", "end"): "with their battery back at"}
GROUP_NAMES = 2  # names a grouped note gives before "and N more"


def group_notes(kind: str, phase: str, alerts: list[Alert], tz: dt.tzinfo, now: float) -> str:
    """'30 sensors silent since 14:05: Insulin fridge, Freezer and 28 more' (the earliest start, the latest end)."""
    moment = min(a.since for a in alerts) if phase == "start" else max(a.ended_at or a.started_at for a in alerts)
    named = [safe_name(a.name, a.device) for a in alerts[:GROUP_NAMES]]
    more = len(alerts) - len(named)
    return bounded_note(f"{len(alerts)} sensors {GROUP_WORDS[kind, phase]} {clock(moment, tz, now)}: "
                        f"{', '.join(named)}" + (f" and {more} more" if more else ""))
