"""What each Data Connector event measures, its device and its own time: pure functions of a body."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
from typing import Any


def local_time(ts: float | None, tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """The one way a stored time becomes a datetime: None for a time no datetime can hold in that zone (years
    outside 1..9999, infinities, NaN), which a row stored before the receiver checked event times may hold."""
    if ts is None:
        return None
    try:
        return dt.datetime.fromtimestamp(ts, tz)
    except (ValueError, OverflowError, OSError, TypeError):
        return None


def iso(ts: float | None, timespec: str = "seconds") -> str | None:
    """UTC ISO-8601 with a Z, or None (also for a time no datetime can hold)."""
    when = local_time(ts)
    return None if when is None else when.isoformat(timespec=timespec).replace("+00:00", "Z")


def device_of(target: str | None) -> str | None:
    """The device id: the last segment of targetName (projects/p/devices/d1 -> d1)."""
    return target.rsplit("/", 1)[-1] or None if target else None


def event_time_of(timestamp: str | None, received_at: float) -> float:
    """The event's own time in Unix seconds (the vendor writes up to 9 fractional digits); else its receive time."""
    try:
        when = dt.datetime.fromisoformat(timestamp)
        return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
    except (TypeError, ValueError, OverflowError, OSError):
        return received_at


# What each event type measures, from the vendor's python-client (disruptive/events/events.py):
# event type -> (kind, field of data[event type], unit) per reading. A touch is its own reading.
STATE_TYPES = ("objectPresent", "waterPresent", "contact", "motion", "deskOccupancy")
READINGS: dict[str, tuple[tuple[str, str | None, str | None], ...]] = {
    "temperature": (("temperature", "value", "°C"),),
    "humidity": (("temperature", "temperature", "°C"), ("humidity", "relativeHumidity", "%")),
    "co2": (("co2", "ppm", "ppm"),),
    "pressure": (("pressure", "pascal", "Pa"),),
    **{name: ((name, "state", None),) for name in STATE_TYPES},
    "touch": (("touch", None, None),),
    "touchCount": (("touchCount", "total", None),),
    "objectPresentCount": (("objectPresentCount", "total", None),),
    "batteryStatus": (("batteryStatus", "percentage", "%"),),
    "networkStatus": (("networkStatus", "signalStrength", "%"),),
}
NUMERIC_KINDS = ("temperature", "humidity", "co2", "pressure")

MAX_FLOAT = sys.float_info.max


def is_number(value: Any) -> bool:
    """A finite number a float can hold (not a bool; not an integer past float's range, as old rows may hold)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_FLOAT <= value <= MAX_FLOAT


def readings_of(event_type: str, data: Any) -> list[tuple[str, Any, str | None]]:
    """(kind, value, unit) for each reading an event carries; [] for other types or data that does not fit."""
    spec = READINGS.get(event_type)
    fields = data.get(event_type) if isinstance(data, dict) else None
    if spec is None or not isinstance(fields, dict):
        return []
    readings = []
    for kind, field, unit in spec:
        value = "touched" if field is None else fields.get(field)
        if not (isinstance(value, str) if field in ("state", None) else is_number(value)):
            return []
        readings.append((kind, value, unit))
    return readings


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What is read of a delivery once, when it arrives, for the store, the alerts and the log line."""

    event: dict
    labels: dict
    device: str | None
    event_time: float
    readings: list[tuple[str, Any, str | None]]


def delivery_of(event: dict, labels: dict, received_at: float) -> Delivery:
    """A delivery's event (with eventId and eventType) and labels, read: its device, its own time, its readings."""
    when = event_time_of(event.get("timestamp"), received_at)
    return Delivery(event, labels, device_of(event.get("targetName")), when,
                    readings_of(event["eventType"], event.get("data")))


def reading_json(event_type: str, data: Any) -> dict | list | None:
    """An event's reading as /events shows it: {"value", "unit"} (temperature adds its samples), a list for
    humidity (temperature, then relative humidity), or None."""
    readings = [{"value": value, "unit": unit} for _, value, unit in readings_of(event_type, data)]
    if not readings:
        return None
    if event_type == "temperature" and isinstance(data["temperature"].get("samples"), list):
        readings[0]["samples"] = [{"value": s["value"], "at": s.get("sampleTime")}
                                  for s in data["temperature"]["samples"]
                                  if isinstance(s, dict) and is_number(s.get("value"))]
    return readings if len(readings) > 1 else readings[0]


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def _int_or_none(text: str) -> int | None:
    """An integer a float can hold, else None (a 401-digit value in an old row)."""
    if len(text) > 310:  # past float's range whatever the digits; int() refuses 4 300 of them
        return None
    value = int(text)
    return value if -MAX_FLOAT <= value <= MAX_FLOAT else None


def document_of(body: bytes) -> tuple[dict, dict]:
    """(event, labels) of a stored delivery body, read defensively: the receiver checked it when it arrived, but a
    row stored before those checks may hold anything. Not JSON, or no object: ({}, {}); NaN, Infinity and numbers
    past float's range read as null, so that what /events writes back is JSON."""
    try:
        document = json.loads(body, parse_constant=lambda _: None, parse_float=_finite_or_none,
                              parse_int=_int_or_none)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return {}, {}
    event = document.get("event") if isinstance(document, dict) else None
    labels = document.get("labels") if isinstance(document, dict) else None
    return event if isinstance(event, dict) else {}, labels if isinstance(labels, dict) else {}


def event_json(row: tuple) -> dict:
    """One stored event as /events shows it: its data exactly as received, its labels, its reading."""
    event_id, event_type, target, timestamp, received_at, duplicates, body, device, event_time = row
    event, labels = document_of(bytes(body))
    data = event.get("data")
    return {"event_id": event_id, "event_type": event_type, "target": target, "device": device,
            "timestamp": timestamp, "event_time": iso(event_time, "milliseconds"), "received_at": iso(received_at),
            "duplicates": duplicates, "data": data, "labels": labels, "reading": reading_json(event_type, data)}
