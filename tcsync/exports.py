"""What /events and the exports read from a request (filters, the cursor, the limit) and how they write rows:
NDJSON as received, CSV a row per reading, defused for spreadsheets."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import math
import re
from collections.abc import Callable, Iterator

from tcsync.readings import document_of, iso, readings_of
from tcsync.receiver import MAX_ID_CHARS
from tcsync.request import HTTPError
from tcsync.store import EventQuery

EVENT_FILTERS = ("type", "device", "since", "until")
DEVICE_ID = re.compile(rf"[^/\s\x00]{{1,{MAX_ID_CHARS}}}")  # the last part of a targetName the receiver admits


def time_param(params: dict[str, str], name: str) -> float | None:
    """ISO 8601 with Z or an offset, or Unix seconds; 400 naming the parameter otherwise."""
    raw = params.get(name, "").strip()
    if name not in params:
        return None
    if re.fullmatch(r"[0-9]{1,11}(\.[0-9]{1,9})?", raw):
        return float(raw)
    try:  # an unencoded + in "+01:00" arrives as a space
        when = dt.datetime.fromisoformat(raw.replace(" ", "+") if "T" in raw else raw)
        if when.tzinfo is not None:
            return when.timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    raise HTTPError(400, f"{name} must be an ISO 8601 time with Z or an offset (2026-11-22T08:00:00Z)"
                         f" or Unix seconds, got {raw[:40]!r}")


def event_query(params: dict[str, str]) -> EventQuery:
    """The event filters of /events and the exports, checked before any query: what no stored event can hold
    (a NUL, more than MAX_ID_CHARS) is a 400 on both databases, not an error of one of them."""
    event_type, device = params.get("type"), params.get("device")
    if event_type is not None and (len(event_type) > MAX_ID_CHARS or "\x00" in event_type):
        raise HTTPError(400, f"type must be an event type (at most {MAX_ID_CHARS} characters, no NUL),"
                             f" got {event_type[:40]!r}")
    if device is not None and not re.fullmatch(DEVICE_ID, device):
        raise HTTPError(400, f"device must be a device id (the last part of targetName), got {device[:40]!r}")
    return EventQuery(event_type, device, time_param(params, "since"), time_param(params, "until"))


def encode_cursor(cursor: tuple[float, str]) -> str:
    """An opaque /events cursor: where the listing stopped."""
    return base64.urlsafe_b64encode(f"{cursor[0]!r} {cursor[1]}".encode()).decode().rstrip("=")


def cursor_param(params: dict[str, str]) -> tuple[float, str] | None:
    raw = params.get("before")
    if raw is None:
        return None
    try:
        text = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True).decode()
        event_time, event_id = text.split(" ", 1)
        if math.isfinite(float(event_time)) and 0 < len(event_id) <= MAX_ID_CHARS and "\x00" not in event_id:
            return float(event_time), event_id
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        pass
    raise HTTPError(400, "before must be the \"next\" value of an earlier /events answer")


def ndjson_line(row: tuple) -> bytes:
    """The delivery exactly as received, one per line (line breaks, JSON whitespace, become spaces)."""
    body = bytes(row[6])
    return (body.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in body or b"\r" in body else body) + b"\n"


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_HEADER = ("event_time", "received_at", "device", "name", "event_type", "value", "unit", "event_id")


def csv_line(cells) -> bytes:
    out = io.StringIO()
    # A spreadsheet runs a cell starting with = + - @ as a formula, and some skip a leading tab or carriage return
    # before looking (OWASP's CSV injection list): text cells starting with any of them get a leading '.
    csv.writer(out).writerow(["'" + c if isinstance(c, str) and c[:1] in FORMULA_STARTS else c for c in cells])
    return out.getvalue().encode()


def csv_lines(row: tuple) -> bytes:
    """One row per reading (humidity: temperature, then relative humidity), one row if none."""
    event_id, event_type, _, _, received_at, _, body, device, event_time = row
    event, labels = document_of(bytes(body))
    name = labels.get("name") if isinstance(labels.get("name"), str) else ""
    readings = [(value, unit or "") for _, value, unit in readings_of(event_type, event.get("data"))] or [("", "")]
    return b"".join(csv_line((iso(event_time, "milliseconds"), iso(received_at), device or "", name, event_type,
                              value, unit, event_id)) for value, unit in readings)


class Releasing:
    """An answer's chunks that call release() once when closed: waitress closes an answer after its last chunk,
    and when the client goes away or the answer fails part way."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]):
        self._chunks, self._release = chunks, release

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        release, self._release = self._release, None
        try:
            self._chunks.close()
        finally:
            if release:
                release()
