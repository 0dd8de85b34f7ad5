"""The status page's markup: templates read once from templates/, filled with escaped values, and the words for
times, numbers and readings (in the pump's time zone, never failing for any stored time)."""

from __future__ import annotations

import datetime as dt
import html
import re
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tcsync.readings import is_number, iso, local_time

# The words of the status page. $name is a value, escaped unless it is markup made by fill().
UNKNOWN_TIME = "unknown time"  # a stored time no calendar can show: a row kept before the receiver checked times


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")  # not the locale's


KIND_NAMES = {"temperature": "Temperature", "humidity": "Humidity", "co2": "CO₂", "pressure": "Pressure",
              "objectPresent": "Object", "waterPresent": "Water", "contact": "Contact", "motion": "Motion",
              "deskOccupancy": "Desk", "touch": "Touch", "touchCount": "Touches",
              "objectPresentCount": "Object count"}


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


def clock_text(ts: float | None, now: float, tz: dt.tzinfo) -> str:
    """'14:05', 'yesterday 23:10', 'Nov 20 14:05': the time in the pump's zone, with the day unless it is today;
    UNKNOWN_TIME for a time no calendar can show."""
    local, today = local_time(ts, tz), local_time(now, tz)
    if local is None or today is None:
        return UNKNOWN_TIME
    days = (today.date() - local.date()).days
    day = {0: "", 1: "yesterday ", -1: "tomorrow "}.get(days, f"{MONTHS[local.month - 1]} {local.day} ")
    return f"{day}{local:%H:%M}"


def time_html(ts: float | None, now: float, tz: dt.tzinfo) -> Markup:
    """<time> saying '14:05 (4 min ago)', the full time on hover; UNKNOWN_TIME for a time no calendar can show."""
    local, utc = local_time(ts, tz), iso(ts)
    if local is None or utc is None or ts is None:
        return Markup(UNKNOWN_TIME)
    return fill(PARTS["time"], iso=utc, title=f"{local.isoformat(timespec='seconds')} ({tz})",
                text=f"{clock_text(ts, now, tz)} ({age_text(now - ts)})")


def stamp(text: str | None) -> float | None:
    """Unix seconds of an ISO time the store wrote (iso()), None for none."""
    return dt.datetime.fromisoformat(text).timestamp() if text else None


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
