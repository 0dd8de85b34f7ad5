"""tcsync_wsgi: keep Tandem pump history flowing into Nightscout, and receive Data Connector events.

One module, read top to bottom in the order data flows:
Settings -> Store -> Sync -> Timer -> Auth and signatures -> HTTP -> Main.
Run-time dependencies: the standard library, waitress, tconnectsync (imported lazily, at the first
sync or check), PyJWT (imported lazily, at the first Data Connector delivery) and psycopg (imported
only when DATABASE_URL names a PostgreSQL database).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import collections
import csv
import dataclasses
import datetime as dt
import fcntl
import hashlib
import hmac
import html
import io
import itertools
import json
import logging
import math
import os
import queue
import re
import resource
import signal
import sqlite3
import string
import sys
import threading
import time
import urllib.parse
import zoneinfo
from http import HTTPStatus
from importlib import metadata
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__version__ = "1.0.0"

# ---------------------------------------------------------------------------------------------
# Settings: built once from the environment; nothing else reads os.environ for our own settings.
# ---------------------------------------------------------------------------------------------

# tconnectsync.features.ALL_FEATURES, copied so that validating settings does not import
# tconnectsync (slow, and it exits the process on bad settings); a test checks they agree.
ALL_FEATURES = ("BASAL", "BOLUS", "IOB", "PUMP_EVENTS", "PUMP_EVENTS_BASAL_SUSPENSION",
                "PROFILES", "CGM", "CGM_ALERTS", "DEVICE_STATUS")
TESTING_FEATURES = ("BOLUS_BG",)  # tconnectsync adds these when ENABLE_TESTING_MODES is true
DEFAULT_FEATURES = ("BASAL", "BOLUS", "PUMP_EVENTS", "PROFILES")
MIN_SECRET_CHARS = 8


class SettingsError(Exception):
    """One or more settings are unusable; the message lists every problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the service reads from the environment, validated."""

    secret: str = dataclasses.field(default="", repr=False)
    interval_mins: float = 0.0
    features: tuple[str, ...] = DEFAULT_FEATURES
    allowed_features: tuple[str, ...] = ALL_FEATURES
    db_path: str = "tcsync.sqlite3"
    database_url: str = dataclasses.field(default="", repr=False)  # PostgreSQL instead of db_path when set
    sync_timeout_secs: float = 120.0
    stale_mins: float = 60.0
    host: str = "0.0.0.0"
    port: int = 5000
    connection_limit: int | None = None  # None: as many as the open-files limit allows (connection_limit())
    channel_timeout_secs: int = 30
    tconnect_email: str = ""
    tconnect_password: str = dataclasses.field(default="", repr=False)
    tconnect_region: str = "US"
    ns_url: str = dataclasses.field(default="", repr=False)  # may hold a password: https://user:pass@host/
    ns_secret: str = dataclasses.field(default="", repr=False)
    timezone_name: str = "America/New_York"
    dt_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    temperature_range: tuple[float, float] | None = None  # °C; the status page marks readings outside it
    missing: tuple[str, ...] = ()  # sync settings not given: syncs are refused, the web stays up

    def secret_values(self) -> list[str]:
        """Every secret value that must never leave the process."""
        values = [self.secret, self.tconnect_password, self.ns_secret, *self.dt_secrets]
        for url in (self.ns_url, self.database_url):  # user:password@ (a Nightscout behind basic auth)
            password = urllib.parse.urlsplit(url).password or ""
            values += [password, urllib.parse.unquote(password)]
        if self.ns_secret:
            values.append(hashlib.sha1(self.ns_secret.encode()).hexdigest())
        return [v for v in values if v]


def _number(env, name: str, default: float, problems: list[str], *, positive: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        problems.append(f"{name} must be a number {'above' if positive else 'of at least'} 0, got {raw!r}")
        return default
    return value


def _whole_number(env, name: str, default: int | None, problems: list[str]) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if is_digits(raw) and len(raw) <= 9 and int(raw) >= 1:
        return int(raw)
    problems.append(f"{name} must be a whole number of at least 1, got {raw[:40]!r}")
    return default


def is_digits(text: str) -> bool:
    """ASCII digits only (str.isdigit() also says yes to '²', which int() refuses)."""
    return re.fullmatch(r"[0-9]+", text) is not None


def parse_features(raw: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Comma list of tconnectsync features; raises ValueError naming the unknown ones."""
    names = tuple(dict.fromkeys(n.strip().upper() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"unknown feature {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}")
    return names


def parse_range(raw: str) -> tuple[float, float]:
    """"A..B" with A < B (2..8, -20..-15, 2.5 .. 8); raises ValueError otherwise."""
    match = re.fullmatch(r"\s*(-?[0-9]+(?:\.[0-9]+)?)\s*\.\.\s*(-?[0-9]+(?:\.[0-9]+)?)\s*", raw)
    if not match or float(match[1]) >= float(match[2]):
        raise ValueError(raw)
    return float(match[1]), float(match[2])


def load_settings(env=None) -> Settings:
    """Read and validate the environment; raises SettingsError listing every problem."""
    env = os.environ if env is None else env
    problems: list[str] = []
    interval = _number(env, "TCONNECTSYNC_HEROKU_INTERVAL_MINS", 0.0, problems, positive=False)
    timeout = _number(env, "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS", 120.0, problems, positive=True)
    stale = _number(env, "TCONNECTSYNC_HEROKU_STALE_MINS", max(60.0, 3 * interval), problems, positive=True)

    allowed = ALL_FEATURES
    if env.get("ENABLE_TESTING_MODES", "").strip().lower() in ("true", "1"):
        allowed += TESTING_FEATURES
    features = DEFAULT_FEATURES
    if env.get("TCONNECTSYNC_HEROKU_FEATURES", "").strip():
        try:
            features = parse_features(env["TCONNECTSYNC_HEROKU_FEATURES"], allowed)
        except ValueError as e:
            problems.append(f"TCONNECTSYNC_HEROKU_FEATURES: {e}")

    connection_limit = _whole_number(env, "WAITRESS_CONNECTION_LIMIT", None, problems)
    channel_timeout = _whole_number(env, "WAITRESS_CHANNEL_TIMEOUT_SECS", 30, problems)

    port_name = "PORT" if env.get("PORT", "").strip() else "LISTEN_PORT"
    port_raw = env.get(port_name, "").strip() or "5000"
    port = int(port_raw) if is_digits(port_raw) else -1
    if not 0 <= port <= 65535:
        problems.append(f"{port_name} must be a TCP port number, got {port_raw!r}")

    # tconnectsync calls sys.exit(1) at import on these, or silently misbehaves: check first.
    region = env.get("TCONNECT_REGION", "").strip() or "US"
    if region not in ("US", "EU"):
        problems.append(f"TCONNECT_REGION must be US or EU (capitals), got {region!r}")
    serial = env.get("PUMP_SERIAL_NUMBER", "").strip()
    if serial and not is_digits(serial):
        problems.append(f"PUMP_SERIAL_NUMBER must be the pump's serial number (digits), got {serial!r}")
    tz_name = env.get("TIMEZONE_NAME", "").strip() or env.get("TZ", "").strip() or "America/New_York"
    try:
        zoneinfo.ZoneInfo(tz_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(f"TIMEZONE_NAME must be a time zone name like America/New_York, got {tz_name!r}")
    cache = env.get("CACHE_CREDENTIALS", "").strip().lower()
    if cache in ("true", "1"):
        problems.append("CACHE_CREDENTIALS=true breaks tconnectsync 3.0.3's login; unset it or set it to false")
    ns_url = env.get("NS_URL", "").strip()
    if ns_url:
        if not re.match(r"https?://[^/\s]+", ns_url):
            shown = ns_url.rpartition("@")[2]  # never echo a user:password@
            problems.append(f"NS_URL must start with https:// (or http://), got {shown!r}"
                            + (" (after its user:password@)" if shown != ns_url else ""))
        ns_url = ns_url.rstrip("/") + "/"  # tconnectsync joins paths onto it

    database_url = env.get("DATABASE_URL", "").strip()
    if database_url and not re.match(r"postgres(ql)?://", database_url):  # never echo it: it holds a password
        problems.append(f"DATABASE_URL must be a postgres:// or postgresql:// URL, got one starting with "
                        f"{database_url.split(':', 1)[0][:20]!r}")

    temperature_range = None
    if env.get("DT_TEMPERATURE_RANGE", "").strip():
        try:
            temperature_range = parse_range(env["DT_TEMPERATURE_RANGE"])
        except ValueError:
            problems.append("DT_TEMPERATURE_RANGE must be two numbers of °C, the lower first, like 2..8, got "
                            f"{env['DT_TEMPERATURE_RANGE'].strip()[:40]!r}")

    for name in ("TCONNECTSYNC_HEROKU_SECRET", "DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_PREVIOUS"):
        if 0 < len(env.get(name, "")) < MIN_SECRET_CHARS:  # guessable, and its redaction would garble the log
            problems.append(f"{name} must be at least {MIN_SECRET_CHARS} characters (or unset)")

    values = {
        "TCONNECT_EMAIL": env.get("TCONNECT_EMAIL", "").strip(),
        "TCONNECT_PASSWORD": env.get("TCONNECT_PASSWORD", ""),
        "NS_URL": ns_url,
        "NS_SECRET": env.get("NS_SECRET", "") or env.get("API_SECRET", ""),
    }
    if problems:
        raise SettingsError(problems)
    return Settings(
        secret=env.get("TCONNECTSYNC_HEROKU_SECRET", ""),
        interval_mins=interval,
        features=features,
        allowed_features=allowed,
        db_path=os.path.abspath(env.get("TCONNECTSYNC_HEROKU_DB", "").strip() or "tcsync.sqlite3"),
        database_url=database_url,
        sync_timeout_secs=timeout,
        stale_mins=stale,
        host=env.get("LISTEN_HOST", "").strip() or "0.0.0.0",
        port=port,
        connection_limit=connection_limit,
        channel_timeout_secs=channel_timeout,
        tconnect_email=values["TCONNECT_EMAIL"],
        tconnect_password=values["TCONNECT_PASSWORD"],
        tconnect_region=region,
        ns_url=ns_url,
        ns_secret=values["NS_SECRET"],
        timezone_name=tz_name,
        dt_secrets=tuple(s for s in (env.get("DT_SIGNATURE_SECRET", ""),
                                     env.get("DT_SIGNATURE_SECRET_PREVIOUS", "")) if s),
        temperature_range=temperature_range,
        missing=tuple(name for name, value in values.items() if not value),
    )


# ---------------------------------------------------------------------------------------------
# Store: runs and events in SQLite (WAL) or PostgreSQL; one writer thread commits, reads have their own connection.
# ---------------------------------------------------------------------------------------------

SCHEMA_VERSION = 2
# The one schema; the column types that differ between SQLite and PostgreSQL, side by side.
COLUMN_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY", "time": "REAL", "bytes": "BLOB", "bigint": "INTEGER"},
    "postgres": {"id": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "time": "DOUBLE PRECISION",
                 "bytes": "BYTEA", "bigint": "BIGINT"},
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id {id},
    trigger TEXT NOT NULL,
    started_at {time} NOT NULL,
    finished_at {time},
    outcome TEXT NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0,
    last_event_seq {bigint},
    error TEXT,
    log_tail TEXT
);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    target TEXT,
    timestamp TEXT,
    received_at {time} NOT NULL,
    duplicates INTEGER NOT NULL DEFAULT 0,
    body {bytes} NOT NULL,
    device TEXT,
    event_time {time} NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_started_at ON runs (started_at);
CREATE INDEX IF NOT EXISTS events_by_received_at ON events (received_at);
CREATE INDEX IF NOT EXISTS events_by_time ON events (event_time, event_id);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, event_type, event_time);
"""
# Schema 1 (release 1.0.0) had no device or event_time: added, then filled from each stored event.
UPGRADE_FROM_1 = ("ALTER TABLE events ADD COLUMN device TEXT",
                  "ALTER TABLE events ADD COLUMN event_time REAL NOT NULL DEFAULT 0")
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")
SYNC_LOCK_KEY = 0x7463_7379_6E63  # "tcsync": PostgreSQL advisory lock ids, one for syncs, one for migrations
MIGRATE_LOCK_KEY = SYNC_LOCK_KEY + 1
KEEP_RUNS = 1000
KEEP_EVENTS = 100_000
KEEP_EVENTS_SECS = 30 * 86400
EXPORT_BATCH = 1000  # rows per query while streaming an export: bounded memory, short lock holds
RUN_COLUMNS = "id, trigger, started_at, finished_at, outcome, uploaded, last_event_seq, error"
EVENT_COLUMNS = "event_id, event_type, target, timestamp, received_at, duplicates, body, device, event_time"


def iso(ts: float | None, timespec: str = "seconds") -> str | None:
    """UTC ISO-8601 with a Z, or None."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


class StoreError(Exception):
    """The database failed; the message says how (never with a password)."""


class StoreUnreachable(StoreError):
    """The database server could not be reached: it may come back, unlike a wrong schema."""


def schema_statements(dialect: str) -> list[str]:
    return [s.strip() for s in SCHEMA.format(**COLUMN_TYPES[dialect]).split(";") if s.strip()]


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
SOURCES_OF_KIND = {kind: tuple(t for t, spec in READINGS.items() if any(k == kind for k, _, _ in spec))
                   for kind in NUMERIC_KINDS}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def readings_of(event_type: str, data: Any) -> list[tuple[str, Any, str | None]]:
    """(kind, value, unit) for each reading an event carries; [] for other types or data that does not fit."""
    spec = READINGS.get(event_type)
    fields = data.get(event_type) if isinstance(data, dict) else None
    if spec is None or not isinstance(fields, dict):
        return []
    readings = []
    for kind, field, unit in spec:
        value = "touched" if field is None else fields.get(field)
        if not (isinstance(value, str) if field in ("state", None) else _is_number(value)):
            return []
        readings.append((kind, value, unit))
    return readings


def reading_json(event_type: str, data: Any) -> dict | list | None:
    """An event's reading as /events shows it: {"value", "unit"} (temperature adds its samples), a list for
    humidity (temperature, then relative humidity), or None."""
    readings = [{"value": value, "unit": unit} for _, value, unit in readings_of(event_type, data)]
    if not readings:
        return None
    if event_type == "temperature" and isinstance(data["temperature"].get("samples"), list):
        readings[0]["samples"] = [{"value": s["value"], "at": s.get("sampleTime")}
                                  for s in data["temperature"]["samples"]
                                  if isinstance(s, dict) and _is_number(s.get("value"))]
    return readings if len(readings) > 1 else readings[0]


def _document(body: bytes) -> tuple[dict, dict]:
    """(event, labels) of a stored delivery body; it was checked when it arrived."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}, {}
    labels = document.get("labels")
    return document.get("event", {}), labels if isinstance(labels, dict) else {}


def event_json(row: tuple) -> dict:
    """One stored event as /events shows it: its data exactly as received, its labels, its reading."""
    event_id, event_type, target, timestamp, received_at, duplicates, body, device, event_time = row
    event, labels = _document(bytes(body))
    data = event.get("data")
    return {"event_id": event_id, "event_type": event_type, "target": target, "device": device,
            "timestamp": timestamp, "event_time": iso(event_time, "milliseconds"), "received_at": iso(received_at),
            "duplicates": duplicates, "data": data, "labels": labels, "reading": reading_json(event_type, data)}


@dataclasses.dataclass(frozen=True)
class EventQuery:
    """Which events a listing or an export covers; times are Unix seconds, until is exclusive."""

    event_type: str | None = None
    device: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self, cursor: tuple[float, str] | None = None, direction: str = "<") -> tuple[str, list]:
        """A WHERE clause and its arguments; a cursor keeps rows strictly before (<) or after (>) it."""
        clauses, args = ["1 = 1"], []
        for clause, value in (("event_type = ?", self.event_type), ("device = ?", self.device),
                              ("event_time >= ?", self.since), ("event_time < ?", self.until)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        if cursor is not None:
            clauses.append(f"(event_time, event_id) {direction} (?, ?)")
            args.extend(cursor)
        return " AND ".join(clauses), args


WRITE_BATCH = 500  # writes in one transaction at most (a multi-row INSERT stays far below SQLite's 32 766 values)


class _Write:
    """A statement, or a delivery's row (sql None), waiting for the store's writer; done once committed."""

    __slots__ = ("_done", "args", "error", "result", "sql")

    def __init__(self, sql: str | None, args: tuple):
        self.sql, self.args = sql, args
        self.result: Any = None
        self.error: StoreError | None = None
        self._done = threading.Lock()  # held until the writer is through: lighter than an Event
        self._done.acquire()

    def finish(self) -> None:
        self._done.release()

    def wait(self) -> None:
        self._done.acquire()


class Store:
    """Runs and events in a SQLite file (WAL). Every call is one statement, committed when it returns.

    Writes and reads have a connection each, so a status page never waits behind a delivery's commit.
    PostgresStore below is the same store on PostgreSQL; only connecting and the dialect differ.
    """

    dialect = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, location: str):
        self.path = location  # where the data lives, as the status page and errors name it
        self.failure: str | None = None  # the last error, until a statement succeeds again
        self._locks = {"write": threading.Lock(), "read": threading.Lock()}
        self._connections: dict[str, Any] = {}
        # (monotonic time, answer) of event_summary: the status page asks on every GET; other processes'
        # deliveries show within SHARED_STATE_SECS, this one's at once.
        self._summary: tuple[float, tuple[int, float | None]] | None = None
        try:
            self._migrate(self._connection("write"))
        except self.errors as e:
            raise self._error(e) from None
        self.before_commit: Callable[[], None] = lambda: None  # the tests hold a commit here
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer_lock = threading.Lock()
        self._writer: threading.Thread | None = threading.Thread(target=self._write_loop, name="store-writer",
                                                                 daemon=True)
        self._writer.start()

    # connecting, per backend
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _connection(self, kind: str):
        if kind not in self._connections:
            self._connections[kind] = self._connect()
        return self._connections[kind]

    def _execute(self, kind: str, work: Callable, *args) -> Any:
        return work(self._connection(kind), *args)

    def _run(self, db, sql: str, args) -> tuple[list, int]:
        cursor = db.execute(sql, args)
        return cursor.fetchall(), cursor.rowcount  # fetchall() runs the statement to its end

    def _begin(self, db) -> None:
        db.execute("BEGIN IMMEDIATE")

    def _rollback(self, db) -> None:
        try:
            self._run(db, "ROLLBACK", ())
        except self.errors:
            pass  # nothing to roll back, or the connection is gone

    def _error(self, error: Exception) -> StoreError:
        return StoreError(str(error))

    def _migrate(self, db) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this program's")
        db.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                for statement in UPGRADE_FROM_1:
                    db.execute(statement)
                rows = db.execute("SELECT event_id, target, timestamp, received_at FROM events").fetchall()
                db.executemany("UPDATE events SET device = ?, event_time = ? WHERE event_id = ?",
                               [(device_of(target), event_time_of(timestamp, received_at), event_id)
                                for event_id, target, timestamp, received_at in rows])
            for statement in schema_statements(self.dialect):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def try_sync_lock(self) -> Callable[[], None] | None:
        """Take the lock that every process syncing into this store shares; its release function, or None
        if another process holds it. A lock file: the kernel drops it when its holder dies, even by kill -9."""
        fd = os.open(self.path + ".sync-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return lambda: os.close(fd)

    # one gateway for reads, one writer thread for writes
    def _query(self, sql: str, args=(), kind: str = "read") -> tuple[list, int]:
        """(rows, rowcount) of one statement on the reading connection (or, before the writer runs, the other)."""
        with self._locks[kind]:
            try:
                result = self._execute(kind, self._run, sql, args)
            except StoreError as e:  # no connection
                self.failure = str(e)
                raise
            except self.errors as e:
                error = self._error(e)
                self.failure = f"{type(e).__name__}: {error}"
                raise error from None
            self.failure = None
            return result

    def _write(self, sql: str | None, args: tuple) -> Any:
        """Hand a statement (sql None: a delivery's row) to the writer and wait until its transaction committed."""
        item = _Write(sql, args)
        with self._writer_lock:
            if self._writer is None:
                raise StoreError("the store is closed")
            self._writes.put(item)
        item.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def _write_loop(self) -> None:
        """Take everything queued, write it in one transaction, commit, then answer each waiting caller."""
        while (first := self._writes.get()) is not None:
            batch = [first]
            while len(batch) < WRITE_BATCH:
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._writes.put(None)  # stop after this batch
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Write]) -> None:
        try:
            self._execute("write", self._transaction, batch)
        except Exception as e:  # whatever it is, the writer lives on and every caller gets an answer
            if len(batch) > 1:  # one bad row must not fail the others: each alone, in its own transaction
                for item in batch:
                    self._commit([item])
                return
            error = e if isinstance(e, StoreError) else self._error(e)
            self.failure = str(e) if isinstance(e, StoreError) else f"{type(e).__name__}: {error}"
            batch[0].error = error
            batch[0].finish()
            return
        self.failure = None
        for item in batch:
            item.finish()

    def _transaction(self, db, batch: list[_Write]) -> None:
        """Every write of a batch, the deliveries in one statement, in one transaction. A batch of one is
        one statement, atomic by itself: no BEGIN and COMMIT around it (a third of the calls, or round trips)."""
        alone = len(batch) == 1
        if alone:
            self.before_commit()
        else:
            self._begin(db)
        try:
            deliveries = [item for item in batch if item.sql is None]
            if deliveries:
                self._insert_events(db, deliveries)
            for item in batch:
                if item.sql is not None:
                    item.result = self._run(db, item.sql, item.args)
            if not alone:
                self.before_commit()
                self._run(db, "COMMIT", ())
        except BaseException:
            if not alone:
                self._rollback(db)
            raise

    def _insert_events(self, db, deliveries: list[_Write]) -> None:
        """One INSERT for the batch's distinct eventIds; a repeat within the batch only counts up."""
        firsts: dict[str, _Write] = {}
        repeats: collections.Counter[str] = collections.Counter()
        for item in deliveries:
            event_id = item.args[0]
            if event_id in firsts:
                repeats[event_id] += 1
                item.result = True
            else:
                firsts[event_id] = item
        values = ", ".join(["(?, ?, ?, ?, ?, 0, ?, ?, ?)"] * len(firsts))
        rows, _ = self._run(db, f"INSERT INTO events ({EVENT_COLUMNS}) VALUES {values}"
                                " ON CONFLICT (event_id) DO UPDATE SET duplicates = events.duplicates + 1"
                                " RETURNING event_id, duplicates", [v for item in firsts.values() for v in item.args])
        for event_id, duplicates in rows:
            firsts[event_id].result = duplicates > 0
        for event_id, count in repeats.items():
            self._run(db, "UPDATE events SET duplicates = duplicates + ? WHERE event_id = ?", (count, event_id))

    def close(self) -> None:
        """Write what is queued, then close the connections."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._writes.put(None)
            writer.join()
        for kind, lock in self._locks.items():
            with lock:
                if kind in self._connections:
                    self._connections.pop(kind).close()

    # runs
    def start_run(self, trigger: str, started_at: float) -> int:
        """Record a run as running; returns its id. Keeps the newest KEEP_RUNS rows."""
        [(run_id,)], _ = self._write("INSERT INTO runs (trigger, started_at, outcome) VALUES (?, ?, 'running')"
                                     " RETURNING id", (trigger, started_at))
        self._write("DELETE FROM runs WHERE id <= ?", (run_id - KEEP_RUNS,))
        return run_id

    def finish_run(self, run: Run) -> None:
        """Write a run's outcome, unless shutdown already marked it interrupted."""
        self._write("UPDATE runs SET finished_at=?, outcome=?, uploaded=?, last_event_seq=?, error=?, log_tail=?"
                    " WHERE id=? AND outcome='running'",
                    (run.finished_at, run.outcome, run.uploaded, run.last_event_seq, run.error,
                     "".join(run.log)[-8000:], run.id))

    def interrupt_running(self, now: float, run_id: int | None = None) -> int:
        """Mark runs left running (by a killed process), or one run at shutdown, interrupted."""
        only, args = ("", ()) if run_id is None else (" AND id = ?", (run_id,))
        return self._write("UPDATE runs SET outcome='interrupted', finished_at=?, error=? WHERE outcome='running'"
                           + only, (now, "the service stopped before this run finished", *args))[1]

    def runs(self, limit: int) -> list[dict]:
        """Newest first."""
        rows, _ = self._query(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?", (limit,), kind="read")
        return [run_json(*row) for row in rows]

    def runs_since(self, since: float) -> list[dict]:
        """Runs started since a time, oldest first, with their times as Unix seconds (the status page draws them)."""
        rows, _ = self._query("SELECT id, trigger, started_at, finished_at, outcome, uploaded, error FROM runs"
                              " WHERE started_at >= ? ORDER BY started_at, id", (since,), kind="read")
        return [dict(zip(("id", "trigger", "started_at", "finished_at", "outcome", "uploaded", "error"), row,
                         strict=True)) for row in rows]

    def last_run(self) -> dict | None:
        """The newest run."""
        rows, _ = self._query(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT 1", kind="read")
        return run_json(*rows[0]) if rows else None

    def last_success_at(self) -> float | None:
        """When the newest successful sync finished (checks upload nothing: not counted)."""
        [(finished_at,)], _ = self._query(
            "SELECT MAX(finished_at) FROM runs WHERE outcome = 'ok' AND trigger != 'check'", kind="read")
        return finished_at

    # events
    def add_event(self, event: dict, received_at: float, body: bytes) -> bool:
        """Keep a delivery; True if this eventId was already kept (then only its counter moves)."""
        target, timestamp = event.get("targetName"), event.get("timestamp")
        duplicate = self._write(None, (event["eventId"], event["eventType"], target, timestamp, received_at, body,
                                       device_of(target), event_time_of(timestamp, received_at)))
        if not duplicate:
            self._summary = None
        return duplicate

    def prune_events(self, now: float) -> None:
        """Keep 30 days and at most KEEP_EVENTS events, the newest."""
        self._write("DELETE FROM events WHERE received_at < ?", (now - KEEP_EVENTS_SECS,))
        self._write("DELETE FROM events WHERE received_at < (SELECT received_at FROM events"
                    " ORDER BY received_at DESC LIMIT 1 OFFSET ?)", (KEEP_EVENTS - 1,))

    def events(self, limit: int, query: EventQuery = EventQuery(),
               before: tuple[float, str] | None = None) -> tuple[list[dict], tuple[float, str] | None]:
        """Newest first by the event's own time, and where to continue if more match (else None).

        The order is total (event_time, then event_id), so a listing continued with `before` returns
        every event once, also while deliveries arrive."""
        where, args = query.where(before, "<")
        rows, _ = self._query(f"SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
                              " ORDER BY event_time DESC, event_id DESC LIMIT ?", (*args, limit + 1), "read")
        more = (rows[limit - 1][8], rows[limit - 1][0]) if len(rows) > limit else None
        return [event_json(row) for row in rows[:limit]], more

    def export_rows(self, query: EventQuery) -> Iterator[tuple]:
        """Every matching event row, oldest first, read EXPORT_BATCH at a time (the lock is free between)."""
        cursor = None
        while True:
            where, args = query.where(cursor, ">")
            rows, _ = self._query(f"SELECT {EVENT_COLUMNS} FROM events WHERE {where}"
                                  " ORDER BY event_time, event_id LIMIT ?", (*args, EXPORT_BATCH), "read")
            yield from rows
            if len(rows) < EXPORT_BATCH:
                return
            cursor = (rows[-1][8], rows[-1][0])

    def sensors(self) -> list[dict]:
        """One entry per device: its names, when it was last heard, and its newest reading of each kind."""
        rows, _ = self._query(
            "SELECT e.device, e.event_type, e.target, e.body, e.event_time FROM events e JOIN"
            " (SELECT device, event_type, MAX(event_time) AS newest FROM events WHERE device IS NOT NULL"
            "  GROUP BY device, event_type) m"
            " ON e.device = m.device AND e.event_type = m.event_type AND e.event_time = m.newest"
            " ORDER BY e.device, e.event_time, e.event_id", kind="read")
        sensors: dict[str, dict] = {}
        for device, event_type, target, body, event_time in rows:  # oldest first: newer ones overwrite
            event, labels = _document(bytes(body))
            sensor = sensors.setdefault(device, {"device": device, "target": None, "name": None,
                                                 "last_event_at": None, "readings": {}})
            sensor.update(target=target, name=labels.get("name") if isinstance(labels.get("name"), str) else None,
                          last_event_at=event_time)
            for kind, value, unit in readings_of(event_type, event.get("data")):
                sensor["readings"][kind] = {"value": value, "unit": unit, "at": iso(event_time)}
        for sensor in sensors.values():
            sensor["last_event_at"] = iso(sensor["last_event_at"])
        return list(sensors.values())

    def series(self, device: str, kind: str, since: float) -> list[tuple[float, float]]:
        """(event time, value) of one numeric kind of one device since a time, oldest first."""
        types = SOURCES_OF_KIND[kind]
        rows, _ = self._query(
            f"SELECT event_type, event_time, body FROM events WHERE device = ? AND event_time >= ?"
            f" AND event_type IN ({', '.join('?' * len(types))}) ORDER BY event_time, event_id",
            (device, since, *types), "read")
        points = []
        for event_type, event_time, body in rows:
            event, _ = _document(bytes(body))
            points += [(event_time, value) for k, value, _ in readings_of(event_type, event.get("data")) if k == kind]
        return points

    def event_summary(self, since: float) -> tuple[int, float | None]:
        """Events kept that were received since a time, and the newest receive time (cached a moment)."""
        cached = self._summary
        if cached is None or time.monotonic() - cached[0] > SHARED_STATE_SECS:
            [(count,)], _ = self._query("SELECT COUNT(*) FROM events WHERE received_at >= ?", (since,))
            [(newest,)], _ = self._query("SELECT MAX(received_at) FROM events")
            cached = self._summary = (time.monotonic(), (count, newest))
        return cached[1]


def run_json(id, trigger, started_at, finished_at, outcome, uploaded, last_event_seq, error) -> dict:
    """One run as /runs shows it."""
    duration = None if finished_at is None else round((finished_at - started_at) * 1000)
    return {"id": id, "trigger": trigger, "started_at": iso(started_at), "finished_at": iso(finished_at),
            "outcome": outcome, "uploaded": uploaded, "last_event_seq": last_event_seq, "error": error,
            "duration_ms": duration}


class PostgresStore(Store):
    """The same store in PostgreSQL (DATABASE_URL): shared by every process, survives a dyno's restart.

    A connection that breaks (a restart, maintenance, a dropped link) is replaced at the next statement,
    which is tried once more on the new connection; while the server is away, statements fail at once.
    """

    dialect = "postgres"

    def __init__(self, url: str):
        import psycopg  # only here: SQLite users pay nothing for it
        from psycopg.conninfo import conninfo_to_dict

        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        info = conninfo_to_dict(url)
        self._password = info.get("password") or ""
        host = info.get("host") or ""
        self._options = tls_options(info)
        self._url = url
        port, name = info.get("port", "5432"), info.get("dbname", "")
        super().__init__(f"postgresql://{info.get('user', '')}@{host}:{port}/{name}")  # no password

    def _connect(self):
        try:
            return self._psycopg.connect(self._url, autocommit=True, connect_timeout=5, **self._options)
        except self._psycopg.OperationalError as e:
            raise StoreUnreachable(self._error(e)) from None

    def _execute(self, kind: str, work: Callable, *args) -> Any:
        for attempt in (1, 2):
            fresh = kind not in self._connections
            try:
                return work(self._connection(kind), *args)
            except self._psycopg.OperationalError:
                broken = self._connections.pop(kind, None)
                if broken is not None:
                    broken.close()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _run(self, db, sql: str, args) -> tuple[list, int]:
        cursor = db.execute(sql.replace("?", "%s"), args)
        return (cursor.fetchall() if cursor.description else []), cursor.rowcount

    def _begin(self, db) -> None:
        db.execute("BEGIN")

    def _error(self, error: Exception) -> StoreError:
        text = " ".join(str(error).split())
        return StoreError(text.replace(self._password, "[redacted]") if self._password else text)

    def _migrate(self, db) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))  # two dynos starting at once
            db.execute("CREATE TABLE IF NOT EXISTS tcsync_schema (version INTEGER NOT NULL)")
            version = db.execute("SELECT MAX(version) FROM tcsync_schema").fetchone()[0] or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"schema version {version} is newer than this program's")
            for statement in schema_statements(self.dialect):
                db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute("DELETE FROM tcsync_schema")
                db.execute("INSERT INTO tcsync_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def try_sync_lock(self) -> Callable[[], None] | None:
        """A session advisory lock on a connection of its own, held for the whole run; closing it releases
        it, and so does the server when the holder's connection dies."""
        db = self._connect()
        try:
            if db.execute("SELECT pg_try_advisory_lock(%s)", (SYNC_LOCK_KEY,)).fetchone()[0]:
                return db.close
        except self._psycopg.Error as e:
            db.close()
            raise self._error(e) from None
        db.close()
        return None


def tls_options(conninfo: dict) -> dict:
    """sslmode=require to any other machine unless the URL chose a mode: Heroku's URLs name none."""
    host = conninfo.get("host") or ""
    if "sslmode" in conninfo or host in LOCAL_HOSTS or host.startswith("/"):
        return {}
    return {"sslmode": "require"}


def open_store(settings: Settings) -> Store:
    """PostgreSQL when DATABASE_URL is set, else the SQLite file."""
    return PostgresStore(settings.database_url) if settings.database_url else Store(settings.db_path)


# ---------------------------------------------------------------------------------------------
# Sync: one lock, one pair of tconnectsync clients for the life of the process, redaction.
# ---------------------------------------------------------------------------------------------

_NEEDS_QUOTES = re.compile(r'[\s="\\]|^$')
MAX_FIELD_CHARS = 300  # of one logged value (a path, an error): a stranger's 100 KB path is not 100 KB of log
MAX_LINE_BYTES = 4096  # PIPE_BUF: a write up to this size reaches a pipe's reader whole, never mixed with another's


def cut(text: str, limit: int) -> str:
    """text, or its first limit characters and how many more there were."""
    return text if len(text) <= limit else f"{text[:limit]}...[cut {len(text) - limit} chars]"


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: cut to MAX_FIELD_CHARS, quoted (JSON-style) if it has spaces, quotes or odd
    characters; those (controls, bidi overrides) as \\u escapes, printable text such as é or °C as it is."""
    text = cut(str(value), MAX_FIELD_CHARS)
    printable = text.isprintable()
    if _NEEDS_QUOTES.search(text) or not printable:
        return json.dumps(text, ensure_ascii=not printable)
    return text


def bounded_line(text: str) -> str:
    """text and a newline in at most MAX_LINE_BYTES of UTF-8; a longer line is cut, saying how much."""
    if len(text) < MAX_LINE_BYTES // 4:  # at most 4 bytes a character: short enough without encoding it
        return text + "\n"
    data = text.encode("utf-8", "replace")
    if len(data) < MAX_LINE_BYTES:
        return text + "\n"
    kept = data[:MAX_LINE_BYTES - 40].decode("utf-8", "ignore")  # 40: the marker's room; ignore: no half character
    return f"{kept}...[cut {len(text) - len(kept)} chars]\n"


class Log:
    """Whole lines to stdout, written by one thread in os.write calls of up to MAX_LINE_BYTES.

    A request thread only queues its line: a write system call releases the GIL, and taking it
    back from busy threads stalled every request (measured in bench/). Lines stay whole and in
    order; close() (also run at exit) writes what is queued. Tests pass their own write callable.
    """

    def __init__(self, write: Callable[[str], Any] | None = None, redact: Callable[[str], str] = str):
        self.redact = redact
        self._write = write
        if write is None:
            self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._write_queued, name="log-writer", daemon=True)
            self._writer.start()
            atexit.register(self.close)

    def value(self, value: Any) -> str:
        """One value for a line: redacted before logfmt_value cuts it, so a cut never leaves half a secret behind."""
        return logfmt_value(self.redact(str(value)))

    def fields(self, **fields: Any) -> str:
        """key=value pairs on one line, each through value(); None values are left out."""
        return " ".join(f"{key}={self.value(value)}" for key, value in fields.items() if value is not None)

    def write_redacted(self, text: str) -> None:
        """A line that has been through self.redact already; cut to MAX_LINE_BYTES."""
        text = bounded_line(text)
        if self._write is None:
            self._queue.put(text.encode("utf-8", "replace"))
        else:
            self._write(text)

    def __call__(self, at: str = "info", **fields: Any) -> None:
        self.write_redacted(self.fields(at=at, **fields))

    def _write_queued(self) -> None:
        line = self._queue.get()
        while line is not None:
            batch, size = [line], len(line)
            line = self._queued_now()
            while line and size + len(line) <= MAX_LINE_BYTES:  # more queued lines join this write
                batch.append(line)
                size += len(line)
                line = self._queued_now()
            try:
                os.write(1, b"".join(batch))
            except OSError:
                pass  # stdout gone (a closed pipe): nothing else to tell it to
            if line == b"":  # nothing was queued: wait for the next line (else it starts the next write, or stops)
                line = self._queue.get()

    def _queued_now(self) -> bytes | None:
        """The next queued line without waiting: None is the stop, b"" means nothing is queued."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return b""

    def close(self) -> None:
        """Write everything queued, then stop the writer."""
        if self._write is None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(5)


class Redactor:
    """Replaces every secret value, and any api_secret= query value, with [redacted]."""

    def __init__(self, secrets: list[str]):
        alternatives = [re.escape(s) for s in sorted(set(secrets), key=len, reverse=True)]
        alternatives.append(r"(?<=api_secret=)[^&\s'\"]+")
        self._pattern = re.compile("|".join(alternatives))

    def __call__(self, text: str) -> str:
        return self._pattern.sub("[redacted]", text)


@dataclasses.dataclass(eq=False)
class Run:
    """One sync or check: what /runs shows, plus the captured tconnectsync log."""

    id: int | None  # None when the database could not record it
    trigger: str
    started_at: float
    finished_at: float | None = None
    outcome: str = "running"
    uploaded: int = 0
    last_event_seq: int | None = None
    error: str | None = None
    log: list[str] = dataclasses.field(default_factory=list)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    release: Callable[[], None] = lambda: None  # frees the cross-process sync lock

    def as_json(self) -> dict:
        return run_json(self.id, self.trigger, self.started_at, self.finished_at, self.outcome,
                        self.uploaded, self.last_event_seq, self.error)


class _Captures:
    """Routes tconnectsync's log records and prints to the run that caused them, by thread."""

    def __init__(self, log: Log):
        self.log = log
        self.by_thread: dict[int, list[str]] = {}

    def add(self, thread_id: int | None, text: str) -> bool:
        """Keep already redacted text for the run on that thread; False if no run is listening there."""
        lines = self.by_thread.get(thread_id)
        if lines is not None and len(lines) < 5000:
            lines.append(text)
        return lines is not None


class _TconnectsyncLogHandler(logging.Handler):
    """tconnectsync's INFO lines: redacted, to our stdout, and into the running run's log."""

    def __init__(self, log: Log, captures: _Captures):
        super().__init__(logging.INFO)
        self.log, self.captures = log, captures

    def emit(self, record: logging.LogRecord) -> None:
        text = self.log.redact(f"{record.levelname} {record.name}: {record.getMessage()}")
        self.captures.add(record.thread, text + "\n")
        self.log.write_redacted(text)


class _ThreadStdout:
    """Stands in for sys.stdout during a check: the check thread's prints are captured, others pass."""

    def __init__(self, real, captures: _Captures):
        self.real, self.captures = real, captures

    def write(self, text: str) -> int:
        if not self.captures.add(threading.get_ident(), self.captures.log.redact(text)):
            self.real.write(text)
        return len(text)

    def __getattr__(self, name):
        return getattr(self.real, name)


_io_deadline = threading.local()  # .at: monotonic time by which this thread's HTTP calls must end


def _bound_requests_io(requests) -> None:
    """Give every HTTP call made by a sync thread the time left before the run's deadline.

    requests has no default timeout and tconnectsync passes none; all its calls (plain
    requests.get, Sessions, OAuth sessions) end in HTTPAdapter.send, so the bound goes there,
    and only for threads that set a deadline.
    """
    original = requests.adapters.HTTPAdapter.send
    if getattr(original, "bounded_by_tcsync", False):
        return

    def send(self, request, **kwargs):
        deadline = getattr(_io_deadline, "at", None)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise requests.exceptions.Timeout("the sync's time ran out", request=request)
            kwargs["timeout"] = left
        return original(self, request, **kwargs)

    send.bounded_by_tcsync = True
    requests.adapters.HTTPAdapter.send = send


BUSY = "a sync is already running"
SHARED_STATE_SECS = 2.0  # how old another process's runs may look on /healthz and the status page
CREDENTIALS_REFUSED = "Tandem Source refused the credentials (HTTP 401): check TCONNECT_EMAIL and TCONNECT_PASSWORD"
CREDENTIALS_PAUSE_SECS = 6 * 3600  # every login attempt counts toward Tandem's account lockout


def host_of(url: str) -> str:
    """host[:port] of a URL, without the user:password@ it may carry."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]


class Syncer:
    """Runs syncs and checks one at a time, in background threads, recording each as a Run."""

    def __init__(self, settings: Settings, store: Store, log: Log, clock: Callable[[], float] = time.time):
        self.settings, self.store, self.log, self.clock = settings, store, log, clock
        self._lock = threading.Lock()  # guards current: at most one run at a time, whoever asks
        self.current: Run | None = None
        self.closed = False
        self.started_at = clock()
        self.consecutive_failures = 0
        self.paused_until: float | None = None  # timed syncs wait after Tandem refused the credentials
        release = store.try_sync_lock()
        if release:  # nobody syncs: a run still marked running was left by a process that died
            try:
                store.interrupt_running(self.started_at)
            finally:
                release()
        self.last_success_at = store.last_success_at()
        self.last_run: dict | None = store.last_run()
        self._refreshed_at = time.monotonic()
        self._captures = _Captures(log)
        self._tc = None  # the tconnectsync namespace, once imported
        self._clients = None  # (TConnectApi, NightscoutApi), created once

    # starting and waiting
    def start(self, trigger: str, kind: str = "sync", days: int = 1, pretend: bool = False,
              features: tuple[str, ...] | None = None) -> tuple[Run | None, str | None]:
        """Start a run in the background: (new run, None); (running run, BUSY), its run None if another
        process runs it; or (None, why not)."""
        with self._lock:
            if self.closed:
                return None, "the service is shutting down"
            if self.settings.missing:
                return None, "missing settings: " + ", ".join(self.settings.missing)
            if self.current:
                return self.current, BUSY
            now = self.clock()
            if trigger == "timer" and self.paused_until and now < self.paused_until:
                return None, f"paused until {iso(self.paused_until)}: {CREDENTIALS_REFUSED}"
            release = self._take_sync_lock()
            if release is None:
                return None, BUSY
            try:
                run_id = self.store.start_run(trigger, now)
            except StoreError as e:  # a failing database must not stop syncs: run unrecorded
                self.log("error", event="store.failed", error=str(e)[:200])
                run_id = None
            run = Run(run_id, trigger, now, release=release)
            self.current = run
        work = self._check if kind == "check" else self._sync
        args = (run, days) if kind == "check" else (run, days, pretend, features or self.settings.features)
        threading.Thread(target=self._execute, args=(run, work, args), name=f"run-{run.id}", daemon=True).start()
        return run, None

    def refresh(self) -> None:
        """Take in the runs other processes recorded (another dyno, a cron sync), at most every few seconds."""
        now = time.monotonic()
        if now < self._refreshed_at + SHARED_STATE_SECS:
            return
        self._refreshed_at = now
        try:
            last_ok, last_run = self.store.last_success_at(), self.store.last_run()
        except StoreError:
            return  # what this process knows stays
        if last_ok is not None and last_ok > (self.last_success_at or 0):
            self.last_success_at = last_ok
        if last_run and (self.last_run is None or last_run["started_at"] >= self.last_run["started_at"]):
            self.last_run = last_run

    def _take_sync_lock(self) -> Callable[[], None] | None:
        """The lock every process syncing into this store shares: its release, or None if another holds it."""
        try:
            return self.store.try_sync_lock()
        except StoreError as e:  # a failing database must not stop syncs: run without it
            self.log("error", event="store.failed", error=str(e)[:200])
            return lambda: None

    def _execute(self, run: Run, work: Callable, args: tuple) -> None:
        thread_id = threading.get_ident()
        self._captures.by_thread[thread_id] = run.log
        _io_deadline.at = time.monotonic() + self.settings.sync_timeout_secs
        t0 = time.perf_counter()
        try:
            work(*args)
            run.outcome = run.outcome if run.outcome != "running" else "ok"
        except BaseException as e:  # a run ends as failed, whatever tconnectsync raised
            run.outcome, run.error = "failed", self.describe(e)
            if run.error == CREDENTIALS_REFUSED:
                self.paused_until = self.clock() + CREDENTIALS_PAUSE_SECS
                self.log("warn", event="timer.paused", until=iso(self.paused_until), reason=run.error)
        finally:
            _io_deadline.at = None
            self._captures.by_thread.pop(thread_id, None)
            run.finished_at = self.clock()
            self.consecutive_failures = 0 if run.outcome == "ok" else self.consecutive_failures + 1
            if run.outcome == "ok" and run.trigger != "check":
                self.last_success_at, self.paused_until = run.finished_at, None
            self.last_run = run.as_json()
            try:
                if run.id is not None:
                    self.store.finish_run(run)
            except StoreError as e:
                self.log("error", event="store.failed", run_id=run.id, error=str(e)[:200])
            run.release()  # after the row is written: the next process sees this run finished
            with self._lock:
                self.current = None
            self.log(event="run.finished", run_id=run.id, trigger=run.trigger, outcome=run.outcome,
                     uploaded=run.uploaded, ms=round((time.perf_counter() - t0) * 1000), error=run.error)
            run.done.set()

    # the work, in a run's thread
    def _time_range(self, days: int) -> tuple[dt.datetime, dt.datetime]:
        # Both ends, timezone-aware: tconnectsync mishandles one-sided or naive ranges.
        end = dt.datetime.fromtimestamp(self.clock(), zoneinfo.ZoneInfo(self.settings.timezone_name))
        return end - dt.timedelta(days=days), end

    def _sync(self, run: Run, days: int, pretend: bool, features: tuple[str, ...]) -> None:
        tc = self._tconnectsync()
        tconnect, nightscout = self._get_clients()
        start, end = self._time_range(days)
        uploaded, last_seq = tc.run_oneshot(tconnect, nightscout, pretend, list(features), tc.secret,
                                            time_start=start, time_end=end)
        run.uploaded, run.last_event_seq = uploaded or 0, last_seq  # 0 uploaded is a success

    def _check(self, run: Run, days: int) -> None:
        tc = self._tconnectsync()
        tconnect, _ = self._get_clients()
        start, end = self._time_range(days)
        real_stdout = sys.stdout
        sys.stdout = _ThreadStdout(real_stdout, self._captures)
        log_file = os.path.abspath("tconnectsync-check-output.log")
        existed = os.path.exists(log_file)
        try:
            tc.check_login(tconnect, start, end)
        except OSError:
            pass  # it could not write its debug file; the verdict is already printed
        finally:
            sys.stdout = real_stdout
            if not existed:  # keep its debug file (names, pump serials) out of the app's folder
                try:
                    os.remove(log_file)
                except OSError:
                    pass
        output = "".join(run.log)
        if "No API errors returned!" not in output:
            run.outcome, run.error = "failed", "the login check found errors (see its output)"

    def _tconnectsync(self):
        """Import tconnectsync once, after our own checks, and bound its HTTP calls."""
        if self._tc is None:
            os.environ.setdefault("CACHE_CREDENTIALS", "false")
            try:
                import requests
                from tconnectsync import secret
                from tconnectsync.api import TConnectApi
                from tconnectsync.check import check_login
                from tconnectsync.nightscout import NightscoutApi
                from tconnectsync.sync.tandemsource.heroku_helpers import run_oneshot
            except SystemExit as e:
                raise RuntimeError(f"tconnectsync refused its settings at import (exit {e.code})") from None
            # check_login reads these from tconnectsync.secret; make them ours.
            s = self.settings
            secret.TCONNECT_EMAIL, secret.TCONNECT_PASSWORD = s.tconnect_email, s.tconnect_password
            secret.NS_URL, secret.NS_SECRET = s.ns_url, s.ns_secret
            _bound_requests_io(requests)
            logger = logging.getLogger("tconnectsync")
            logger.setLevel(logging.INFO)  # DEBUG would log tokens
            logger.propagate = False
            for old in [h for h in logger.handlers if isinstance(h, _TconnectsyncLogHandler)]:
                logger.removeHandler(old)  # one service per process; in tests, the newest one
            logger.addHandler(_TconnectsyncLogHandler(self.log, self._captures))
            self._tc = argparse.Namespace(requests=requests, secret=secret, TConnectApi=TConnectApi,
                                          NightscoutApi=NightscoutApi, check_login=check_login,
                                          run_oneshot=run_oneshot)
        return self._tc

    def _get_clients(self):
        # One pair for the life of the process: Tandem sees one login per token lifetime.
        if self._clients is None:
            s, tc = self.settings, self._tc
            self._clients = (tc.TConnectApi(s.tconnect_email, s.tconnect_password, s.tconnect_region),
                             tc.NightscoutApi(s.ns_url, s.ns_secret))
        return self._clients

    def describe(self, error: BaseException) -> str:
        """One redacted line saying what failed and where."""
        requests = self._tc.requests if self._tc else None
        text = f"{type(error).__name__}: {error}"
        if requests and isinstance(error, requests.RequestException) and error.request is not None:
            host = host_of(error.request.url)
            side = "Nightscout" if host == host_of(self.settings.ns_url) else "Tandem Source"
            if isinstance(error, requests.Timeout):
                text = (f"{side} ({host}) did not answer within the sync's time limit "
                        f"(TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS={self.settings.sync_timeout_secs:g})")
            else:
                text = f"could not reach {side} ({host}): {type(error).__name__}"
        elif getattr(error, "status_code", None) == 401 and "login" in str(error).lower():
            text = CREDENTIALS_REFUSED
        return self.log.redact(" ".join(text.split()))[:500]

    # shutdown
    def close(self, deadline: float) -> Run | None:
        """Refuse new runs, wait for the current one until deadline (monotonic); return it if unfinished."""
        with self._lock:
            self.closed, run = True, self.current
        if run and not run.done.wait(max(0.0, deadline - time.monotonic())):
            if run.id is not None:
                self.store.interrupt_running(self.clock(), run.id)
            return run
        return None


# ---------------------------------------------------------------------------------------------
# Timer: a threading.Timer chain; the next sync is an interval after the previous one finished.
# ---------------------------------------------------------------------------------------------

MAX_BACKOFF_SECS = 3600


class SyncTimer:
    """Periodic syncs without pile-up; waits longer after consecutive failures."""

    def __init__(self, syncer: Syncer, interval_secs: float, log: Log):
        self.syncer, self.interval, self.log = syncer, interval_secs, log
        self.next_at: float | None = None  # wall clock, for the status page
        self._timer: threading.Timer | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self._schedule(min(5.0, self.interval))

    def _schedule(self, delay: float) -> None:
        with self._lock:
            if self._stopped:
                return
            self.next_at = time.time() + delay
            self._timer = threading.Timer(delay, self._tick)
            self._timer.name, self._timer.daemon = "sync-timer", True
            self._timer.start()

    def _tick(self) -> None:
        run, why_not = self.syncer.start("timer")
        if not why_not:
            run.done.wait()
        elif not self._stopped:
            self.log(event="timer.skipped", reason=why_not)
        self._schedule(self.next_delay())

    def next_delay(self) -> float:
        """interval x 2^(failures-1) after consecutive failures, capped at an hour; longer while paused."""
        failures, paused_until = self.syncer.consecutive_failures, self.syncer.paused_until
        if paused_until:  # look again when the pause ends, or within the hour if a manual /run lifted it
            return max(self.interval, min(MAX_BACKOFF_SECS, paused_until - self.syncer.clock()))
        if not failures:
            return self.interval
        return max(self.interval, min(MAX_BACKOFF_SECS, self.interval * 2 ** min(failures - 1, 20)))

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self.next_at = None
            if self._timer:
                self._timer.cancel()


# ---------------------------------------------------------------------------------------------
# Auth and signatures: pure functions, no WSGI in them.
# ---------------------------------------------------------------------------------------------

def secret_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset expected secret matches nothing."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                  expected.encode("utf-8", "surrogateescape"))


class Rejected(Exception):
    """A request refused with a 4xx and a short stable reason."""

    def __init__(self, status: int, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.status, self.reason, self.message = status, reason, message or reason


_jwt_decoders: dict = {}
TIME_CLAIMS = ("exp", "iat", "nbf")


def _jwt_decoder(clock: Callable[[], float] | None):
    """PyJWT's decode, with exp, iat and nbf required to be JSON numbers (PyJWT takes int() of any claim:
    "9999999999" and true too); with a clock, checked against it (PyJWT reads the wall clock)."""
    if clock in _jwt_decoders:
        return _jwt_decoders[clock]
    import jwt  # 0.17 s with cryptography: paid at the first delivery, not at boot

    class DeliveryJWT(jwt.PyJWT):
        def _validate_claims(self, payload, options, *args, **kwargs):
            for claim in TIME_CLAIMS:
                value = payload.get(claim)  # null is left to PyJWT: a missing claim where one is required
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise jwt.DecodeError(f"{claim} must be a number")
            super()._validate_claims(payload, options, *args, **kwargs)

        def _validate_iat(self, payload, now, leeway):
            super()._validate_iat(payload, clock() if clock else now, leeway)

        def _validate_nbf(self, payload, now, leeway):
            super()._validate_nbf(payload, clock() if clock else now, leeway)

        def _validate_exp(self, payload, now, leeway):
            super()._validate_exp(payload, clock() if clock else now, leeway)

    decoder = _jwt_decoders[clock] = DeliveryJWT().decode
    return decoder


MAX_EXP_AHEAD_SECS = 86400  # a day: the Data Connector's tokens expire an hour after they are made

JWT_REASONS = (  # PyJWT exception class name -> our stable reason (first match in the MRO wins)
    ("InvalidAlgorithmError", "bad_algorithm"),
    ("InvalidSignatureError", "bad_signature"),
    ("ExpiredSignatureError", "expired"),
    ("ImmatureSignatureError", "not_yet_valid"),
    ("MissingRequiredClaimError", "missing_claim"),
    ("DecodeError", "malformed_token"),
)


def _jwt_reason(error: Exception) -> str:
    names = {cls.__name__ for cls in type(error).__mro__}
    return next((reason for name, reason in JWT_REASONS if name in names), "bad_claims")


def verify_delivery(body: bytes, token: str, secrets: tuple[str, ...],
                    clock: Callable[[], float] | None = None) -> dict:
    """Claims of a valid X-Dt-Signature for these exact body bytes; raises Rejected otherwise."""
    decode = _jwt_decoder(clock)
    claims = None
    for secret in secrets:
        try:
            claims = decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "iat"]}, leeway=60)
            break
        except Exception as e:  # PyJWT 2.8 also leaks TypeError/ValueError/OverflowError on odd claims
            reason = _jwt_reason(e)
            if reason != "bad_signature":  # only a wrong secret is worth trying the previous one
                raise Rejected(400, reason, f"signature token rejected: {reason}") from None
    if claims is None:
        raise Rejected(400, "bad_signature", "signature token rejected: bad_signature")
    if claims["exp"] > (clock or time.time)() + MAX_EXP_AHEAD_SECS:
        raise Rejected(400, "expires_too_late", "signature token rejected: exp is more than a day ahead")
    present = 0
    for claim, digest in (("checksum", hashlib.sha1), ("checksum_sha256", hashlib.sha256)):
        if claim not in claims:
            continue
        if not isinstance(claims[claim], str):
            raise Rejected(400, "bad_checksum_claim", f"{claim} must be a hex string")
        if not hmac.compare_digest(claims[claim].lower().encode("ascii", "replace"),
                                   digest(body).hexdigest().encode()):
            raise Rejected(400, "checksum_mismatch", f"{claim} does not match the body")
        present += 1
    if not present:
        raise Rejected(400, "checksum_missing", "the token carries no checksum of the body")
    return claims


MAX_JSON_DEPTH = 100  # the vendor's events nest 5 deep; json's own limit depends on the Python and the stack
TOO_DEEP = f"the body nests deeper than {MAX_JSON_DEPTH} levels"
# A lone UTF-16 surrogate (from a \ud800 escape, or CESU-8 bytes) has no UTF-8 form: neither store can take it,
# nor can an answer or the CSV send it. PostgreSQL's text refuses NUL, and no field of the vendor's holds one.
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _check_depth_and_text(document: Any) -> None:
    """Refuse a body nested deeper than MAX_JSON_DEPTH, or one with a string (a value or a name) holding a
    character that no store or answer can hold. Level by level, with one search over all its text: a third of
    the cost of a search per string."""
    strings: list[str] = []
    level, depth = [document], 1
    while level:
        below: list = []
        for value in level:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, (dict, list)):
                if depth > MAX_JSON_DEPTH:
                    raise Rejected(400, "bad_json", TOO_DEEP)
                if isinstance(value, dict):
                    strings += value
                    below += value.values()
                else:
                    below += value
        level, depth = below, depth + 1
    found = UNSTORABLE_CHARACTER.search("".join(strings))
    if found and found.group() == "\x00":
        raise Rejected(400, "bad_event", "a text value in the body holds a NUL character (\\u0000),"
                                         " which cannot be stored")
    if found:
        raise Rejected(400, "bad_event", "a text value in the body holds a lone UTF-16 surrogate (\\ud800 to \\udfff),"
                                         " which cannot be stored: send whole characters")


def parse_event(body: bytes) -> dict:
    """The delivery's event object, checked for the fields we keep; raises Rejected."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise Rejected(400, "bad_json", TOO_DEEP) from None
    except ValueError:
        raise Rejected(400, "bad_json", "the body is not JSON") from None
    _check_depth_and_text(document)
    event = document.get("event") if isinstance(document, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("eventId"), str) or not event["eventId"] \
            or not isinstance(event.get("eventType"), str):
        raise Rejected(400, "bad_event", "the body needs event.eventId and event.eventType strings")
    for key in ("targetName", "timestamp"):
        if not isinstance(event.get(key), (str, type(None))):
            event[key] = json.dumps(event[key])
    return event


# ---------------------------------------------------------------------------------------------
# HTTP: request, route table, handlers, HEAD once for all, the error boundary, the access log.
# ---------------------------------------------------------------------------------------------

STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
MAX_FORM_BYTES = 64 * 1024
MAX_DELIVERY_BYTES = 64 * 1024
MAX_SIGNATURE_CHARS = 4096
TRUE_WORDS = ("", "1", "true", "yes")  # a bare ?pretend means true
FALSE_WORDS = ("0", "false", "no")
# On every answer: nothing is cached, and no browser guesses a type other than the Content-Type we send.
COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple = ()
    log_fields: str = ""  # appended to the request's log line (one write per request)
    stream: Iterable[bytes] | None = None  # a large answer, sent as it is produced instead of body


def json_response(status: int, document: Any, headers: tuple = ()) -> Response:
    return Response(status, json.dumps(document).encode(), "application/json", headers)


def text_response(status: int, text: str, headers: tuple = ()) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)


class HTTPError(Exception):
    """Raised by handlers for a 4xx; becomes a JSON answer with a message."""

    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.response = json_response(status, {"error": message}, headers)


class Request:
    """The bits of a WSGI environ our handlers use; the body is read at most once, bounded."""

    def __init__(self, environ: dict):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "") or "/"
        self._params: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        return self.environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)

    def read_body(self, limit: int) -> bytes:
        """Exactly Content-Length bytes; 411 without it, 413 over limit, 400 if the body is short."""
        raw = (self.header("Content-Length") or "").strip()
        if not raw:
            raise Rejected(411, "length_required", "Content-Length is required")
        if not is_digits(raw):
            raise Rejected(400, "bad_content_length", "Content-Length must be a number")
        length = int(raw)
        if length > limit:
            raise Rejected(413, "too_large", f"the body must be at most {limit} bytes")
        body = self.environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise Rejected(400, "short_body", "the body is shorter than Content-Length")
        return body

    def params(self) -> dict[str, str]:
        """Query string plus a urlencoded form body, UTF-8; a repeated name is a 400."""
        if self._params is None and not self.environ.get("QUERY_STRING") and self.method != "POST":
            self._params = {}  # the common case, skipped cheaply: the status page is the hot path
        if self._params is None:
            pairs = _parse_pairs(self.environ.get("QUERY_STRING", "").encode("latin-1"), "query string")
            content_type = (self.header("Content-Type") or "").split(";")[0].strip().lower()
            if self.method == "POST" and content_type == "application/x-www-form-urlencoded":
                try:
                    pairs += _parse_pairs(self.read_body(MAX_FORM_BYTES), "form body")
                except Rejected as e:
                    raise HTTPError(e.status, e.message) from None
            params: dict[str, str] = {}
            for name, value in pairs:
                if name in params:
                    raise HTTPError(400, f"parameter {name!r} was given more than once")
                params[name] = value
            self._params = params
        return self._params


def _parse_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    try:
        return urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50,
                                      encoding="utf-8", errors="strict")
    except UnicodeError:
        raise HTTPError(400, f"the {where} is not valid UTF-8") from None
    except ValueError:
        raise HTTPError(400, f"the {where} has too many parameters") from None


def sync_options(params: dict[str, str], allowed: tuple[str, ...]) -> dict:
    """days, pretend and features from request parameters; 400 naming the bad one."""
    options: dict[str, Any] = {}
    if "days" in params:
        days = params["days"].strip()
        if not (is_digits(days) and len(days) <= 2 and 1 <= int(days) <= 30):
            raise HTTPError(400, f"days must be a whole number from 1 to 30, got {days[:40]!r}")
        options["days"] = int(days)
    if "pretend" in params:
        word = params["pretend"].strip().lower()
        if word not in (*TRUE_WORDS, *FALSE_WORDS):
            raise HTTPError(400, f"pretend must be 1/true/yes or 0/false/no, got {word[:40]!r}")
        options["pretend"] = word in TRUE_WORDS
    if "features" in params:
        try:
            options["features"] = parse_features(params["features"], allowed)
        except ValueError as e:
            raise HTTPError(400, f"features: {str(e)[:300]}") from None
    return options


def check_params(params: dict[str, str], allowed: tuple[str, ...]) -> None:
    for name in params:
        if name not in (*allowed, "secret"):
            raise HTTPError(400, f"unknown parameter {name[:40]!r}; this route takes {', '.join(allowed) or 'none'}")


EVENT_FILTERS = ("type", "device", "since", "until")


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
    """The event filters of /events and the exports."""
    device = params.get("device")
    if device is not None and not re.fullmatch(r"[^/\s]{1,200}", device):
        raise HTTPError(400, f"device must be a device id (the last part of targetName), got {device[:40]!r}")
    return EventQuery(params.get("type"), device, time_param(params, "since"), time_param(params, "until"))


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
        if math.isfinite(float(event_time)) and event_id:
            return float(event_time), event_id
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        pass
    raise HTTPError(400, "before must be the \"next\" value of an earlier /events answer")


def ndjson_line(row: tuple) -> bytes:
    """The delivery exactly as received, one per line (line breaks, JSON whitespace, become spaces)."""
    body = bytes(row[6])
    return (body.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in body or b"\r" in body else body) + b"\n"


CSV_HEADER = ("event_time", "received_at", "device", "name", "event_type", "value", "unit", "event_id")


def csv_line(cells) -> bytes:
    out = io.StringIO()
    # A spreadsheet runs a cell starting with = + - @ as a formula: text cells get a leading '.
    csv.writer(out).writerow(["'" + c if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c
                              for c in cells])
    return out.getvalue().encode()


def csv_lines(row: tuple) -> bytes:
    """One row per reading (humidity: temperature, then relative humidity), one row if none."""
    event_id, event_type, _, _, received_at, _, body, device, event_time = row
    event, labels = _document(bytes(body))
    name = labels.get("name") if isinstance(labels.get("name"), str) else ""
    readings = [(value, unit or "") for _, value, unit in readings_of(event_type, event.get("data"))] or [("", "")]
    return b"".join(csv_line((iso(event_time, "milliseconds"), iso(received_at), device or "", name, event_type,
                              value, unit, event_id)) for value, unit in readings)


def limit_param(params: dict[str, str]) -> int:
    raw = params.get("limit", "50").strip()
    if not (is_digits(raw) and len(raw) <= 4 and 1 <= int(raw) <= 1000):
        raise HTTPError(400, f"limit must be a whole number from 1 to 1000, got {raw[:40]!r}")
    return int(raw)


class App:
    """The WSGI application: one route table, handlers returning Responses."""

    def __init__(self, settings: Settings, store: Store, syncer: Syncer, log: Log,
                 clock: Callable[[], float] = time.time, timer: SyncTimer | None = None,
                 verify_clock: Callable[[], float] | None = None):
        self.settings, self.store, self.syncer, self.log = settings, store, syncer, log
        self.clock, self.timer, self.verify_clock = clock, timer, verify_clock
        self.versions = _versions()
        self.tz = zoneinfo.ZoneInfo(settings.timezone_name)
        self._deliveries = 0
        self._page_data: PageData | None = None
        self._public_page: tuple[float, tuple, bytes] | None = None  # (monotonic time, what it shows, the page)
        self._page_data_lock = threading.Lock()
        self.routes: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/": {"GET": self.status_page, "HEAD": self.status_page, "POST": self.receive_delivery},
            "/healthz": {"GET": self.healthz, "HEAD": self.healthz},
            "/run": {"GET": self.run, "HEAD": self.run, "POST": self.run},
            "/update": {"GET": self.update, "POST": self.update},
            "/check_login": {"GET": self.check_login, "POST": self.check_login},
            "/runs": {"GET": self.runs, "HEAD": self.runs},
            "/events": {"GET": self.events, "HEAD": self.events},
            "/events.ndjson": {"GET": self.events_ndjson},
            "/events.csv": {"GET": self.events_csv},
            "/sensors": {"GET": self.sensors, "HEAD": self.sensors},
        }

    def __call__(self, environ, start_response):
        return self.wsgi_app(environ, start_response)

    def wsgi_app(self, environ, start_response):
        """Route, answer, and log one line; HEAD drops the body here, for every route."""
        t0 = time.perf_counter()
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except HTTPError as e:
            response = e.response
        except Rejected as e:
            response = json_response(e.status, {"error": e.reason, "message": e.message})
        except StoreError as e:
            self.log("error", event="store.failed", path=request.path, error=str(e)[:200])
            response = json_response(503, {"error": f"the database {self.store.path} is failing; see the status page"})
        except Exception as e:  # the error boundary: log once, leak nothing
            self.log("error", event="unhandled", method=request.method, path=request.path,
                     error=f"{type(e).__name__}: {e}"[:300])
            response = text_response(500, "Internal error; the service log has the details.\n")
        length = () if response.stream is not None else (("Content-Length", str(len(response.body))),)
        headers = [("Content-Type", response.content_type), *length, *COMMON_HEADERS, *response.headers]
        start_response(STATUS_LINES[response.status], headers)
        ms = round((time.perf_counter() - t0) * 1000, 1)  # formatted here, not by Log.fields: the hot path
        self.log.write_redacted(f"at=info event=request method={self.log.value(request.method)} "
                                f"path={self.log.value(request.path)} status={response.status} ms={ms}"
                                f"{response.log_fields}")
        if response.stream is not None:
            return response.stream
        return [b"" if request.method == "HEAD" else response.body]

    def dispatch(self, request: Request) -> Response:
        methods = self.routes.get(request.path)
        if methods is None:
            raise HTTPError(404, f"no such page: {request.path[:100]}")
        handler = methods.get(request.method)
        if handler is None:
            raise HTTPError(405, f"{request.method[:20]} is not allowed here",
                            (("Allow", ", ".join(methods)),))
        return handler(request)

    # auth
    def _given_secret(self, request: Request) -> str | None:
        auth = request.header("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return request.params().get("secret")

    def authorize(self, request: Request) -> None:
        if not self.settings.secret:
            raise HTTPError(403, "This route is disabled: set TCONNECTSYNC_HEROKU_SECRET to enable it.")
        given = self._given_secret(request)
        if given is None:
            raise HTTPError(401, "Send the secret as 'Authorization: Bearer <secret>' (or ?secret=).",
                            (("WWW-Authenticate", 'Bearer realm="tcsync"'),))
        if not secret_matches(given, self.settings.secret):
            raise HTTPError(403, "The secret is wrong.")

    def _is_authorized(self, request: Request) -> bool:
        """Whether the right secret came along (the status page then lists runs); never raises."""
        try:
            given = self._given_secret(request)
        except HTTPError:
            return False
        return given is not None and secret_matches(given, self.settings.secret)

    # sync routes
    def run(self, request: Request) -> Response:
        self.authorize(request)
        params = request.params()
        check_params(params, ("days", "pretend", "features", "then"))
        back = self._back_to_page(params)
        run, why_not = self.syncer.start("run", **sync_options(params, self.settings.allowed_features))
        if back:  # the status page's Sync now: back to the page, which shows the run (or why none started)
            return Response(303, b"See the status page.\n", headers=(("Location", back),))
        if not why_not:
            return json_response(202, {"started": True, "run_id": run.id})
        if why_not == BUSY:
            return json_response(202, {"started": False, "reason": why_not, "run_id": run and run.id})
        return json_response(503, {"started": False, "reason": why_not})

    def _back_to_page(self, params: dict[str, str]) -> str | None:
        """Where a browser's Sync now goes afterwards: then=/ is the page, then=/?secret the page with the secret
        in its address, which the page asks for only when it came with ?secret= itself. None: answer JSON."""
        then = params.get("then")
        if then is None:
            return None
        if then not in ("/", "/?secret"):
            raise HTTPError(400, f"then must be / or /?secret (the status page to go back to), got {then[:40]!r}")
        return "/?" + urllib.parse.urlencode({"secret": self.settings.secret}) if then == "/?secret" else "/"

    def _run_and_wait(self, request: Request, kind: str, allowed: tuple[str, ...]) -> Response:
        self.authorize(request)
        check_params(request.params(), allowed)
        options = sync_options(request.params(), self.settings.allowed_features)
        run, why_not = self.syncer.start(kind if kind == "check" else "update", kind, **options)
        if why_not:
            status = 409 if why_not == BUSY else 503
            return text_response(status, f"Not started: {why_not}.\n")
        run.done.wait()
        summary = f"\n{kind} {run.outcome}" + (f": {run.error}" if run.error else "") + "\n"
        return text_response(200 if run.outcome == "ok" else 502, "".join(run.log) + summary)

    def update(self, request: Request) -> Response:
        return self._run_and_wait(request, "sync", ("days", "pretend", "features"))

    def check_login(self, request: Request) -> Response:
        return self._run_and_wait(request, "check", ("days",))

    def runs(self, request: Request) -> Response:
        self.authorize(request)
        check_params(request.params(), ("limit",))
        return json_response(200, {"runs": self.store.runs(limit_param(request.params()))})

    def events(self, request: Request) -> Response:
        self.authorize(request)
        check_params(request.params(), ("limit", "before", *EVENT_FILTERS))
        params = request.params()
        before = cursor_param(params)
        items, more = self.store.events(limit_param(params), event_query(params), before)
        return json_response(200, {"events": items, **({"next": encode_cursor(more)} if more else {})})

    def _export(self, request: Request, content_type: str, lines: Callable[[tuple], bytes],
                header: bytes = b"") -> Response:
        """Every matching event, oldest first, streamed from the store in batches."""
        self.authorize(request)
        check_params(request.params(), EVENT_FILTERS)
        rows = self.store.export_rows(event_query(request.params()))
        first = next(rows, None)  # a failing database is a 503 now, not a cut-off 200 later
        return Response(200, content_type=content_type,
                        stream=self._stream(header, itertools.chain(() if first is None else (first,), rows), lines))

    def _stream(self, header: bytes, rows: Iterator[tuple], lines: Callable[[tuple], bytes]) -> Iterator[bytes]:
        chunk = [header]
        size = len(header)
        try:
            for row in rows:
                chunk.append(lines(row))
                size += len(chunk[-1])
                if size >= 65536:  # one write per 64 KiB, not per event
                    yield b"".join(chunk)
                    chunk, size = [], 0
        except StoreError as e:  # the status line is sent: the only signal left is a cut-off answer
            self.log("error", event="export.failed", error=str(e)[:200])
            raise
        yield b"".join(chunk)

    def events_ndjson(self, request: Request) -> Response:
        return self._export(request, "application/x-ndjson", ndjson_line)

    def events_csv(self, request: Request) -> Response:
        return self._export(request, "text/csv; charset=utf-8", csv_lines, csv_line(CSV_HEADER))

    def sensors(self, request: Request) -> Response:
        self.authorize(request)
        check_params(request.params(), ())
        return json_response(200, {"sensors": self.store.sensors()})

    # public routes
    def health(self) -> tuple[str, float | None]:
        """("ok" | "stale" | "idle", last success time), whichever process synced."""
        syncer, now = self.syncer, self.clock()
        syncer.refresh()
        last_ok = syncer.last_success_at
        expected = self.timer is not None or syncer.last_run is not None
        since = last_ok if last_ok is not None else syncer.started_at
        if expected and now - since > self.settings.stale_mins * 60:
            return "stale", last_ok
        return ("ok" if last_ok is not None else "idle"), last_ok

    def healthz(self, request: Request) -> Response:
        """Public: whether syncs work. The last run's error (hosts, upstream answers) only with the secret."""
        status, last_ok = self.health()
        last_run = self.syncer.last_run
        if last_run and not self._is_authorized(request):
            last_run = {"outcome": last_run["outcome"], "finished_at": last_run["finished_at"]}
        return json_response(503 if status == "stale" else 200,
                             {"status": status, "last_success_at": iso(last_ok), "last_run": last_run})

    def status_page(self, request: Request) -> Response:
        authorized = self._is_authorized(request)
        wrong = not authorized and self._secret_in_address(request)
        now, health = self.clock(), self.health()
        events = self.event_summary(now)
        if authorized or wrong:
            body = render_status(self, request, now, health, events, authorized, wrong).encode()
        else:  # the hot path (monitors, people): the same page while nothing it shows has changed, for a moment
            key = (health, events, self.syncer.current, self.syncer.last_run, self.syncer.paused_until,
                   self.timer and self.timer.next_at, self.store.failure)
            cached = self._public_page
            if cached is None or cached[1] != key or time.monotonic() - cached[0] >= PAGE_DATA_SECS:
                body = render_status(self, request, now, health, events, False, False).encode()
                cached = self._public_page = (time.monotonic(), key, body)
            body = cached[2]
        return Response(200, body, "text/html; charset=utf-8")

    @staticmethod
    def _secret_in_address(request: Request) -> bool:
        try:
            return "secret" in request.params()
        except HTTPError:  # a query string the page cannot read is no secret
            return False

    def event_summary(self, now: float) -> tuple[int, float | None] | str | None:
        """(events in the last 24 h, the newest one's arrival), None with the receiver off, "unknown" if the store
        fails."""
        if not self.settings.dt_secrets:
            return None
        try:
            return self.store.event_summary(now - DAY_SECS)
        except StoreError:
            return "unknown"

    def page_data(self, now: float) -> PageData:
        """What the status page reads from the store, drawn: read again after PAGE_DATA_SECS (or 20 times as long as
        the last reading and drawing took, so that it never costs more than a twentieth of a core), or at once when
        a run started or finished in this process. One request thread reads; the others meanwhile show the last."""
        data = self._page_data
        fresh = data is not None and time.monotonic() - data.built_at < data.fresh_for \
            and data.current is self.syncer.current and data.last_run == self.syncer.last_run
        if not fresh and self._page_data_lock.acquire(blocking=data is None):
            try:
                data = self._page_data = gather_page_data(self, now)
            finally:
                self._page_data_lock.release()
        return data

    # the Data Connector receiver
    def receive_delivery(self, request: Request) -> Response:
        if not self.settings.dt_secrets:
            raise Rejected(403, "not_configured", "Set DT_SIGNATURE_SECRET to receive Data Connector events.")
        body = request.read_body(MAX_DELIVERY_BYTES)
        token = request.header("X-Dt-Signature")
        if not token:
            raise Rejected(400, "missing_signature", "the X-Dt-Signature header is required")
        if "," in token:
            raise Rejected(400, "multiple_signatures", "X-Dt-Signature must be given once")
        if len(token) > MAX_SIGNATURE_CHARS:
            raise Rejected(400, "signature_too_long", "X-Dt-Signature is too long")
        verify_delivery(body, token, self.settings.dt_secrets, self.verify_clock)
        event = parse_event(body)
        now = self.clock()
        try:
            duplicate = self.store.add_event(event, now, body)
        except StoreError as e:
            self.log("error", event="delivery.store_failed", error=str(e)[:200])
            raise Rejected(503, "store_unavailable", "the event could not be stored; retry later") from None
        self._deliveries += 1
        if self._deliveries % 1000 == 1:
            try:
                self.store.prune_events(now)
            except StoreError as e:  # the delivery is kept: still a 200
                self.log("error", event="events.prune_failed", error=str(e)[:200])
        response = json_response(200, {"ok": True, "duplicate": duplicate, "event_id": event["eventId"]})
        readings = readings_of(event["eventType"], event.get("data"))
        response.log_fields = " " + self.log.fields(
            delivery=event["eventId"], type=event["eventType"], target=event.get("targetName"),
            device=device_of(event.get("targetName")), duplicate=duplicate,
            reading=",".join(str(value) for _, value, _ in readings) or None,
            unit=",".join(unit or "" for _, _, unit in readings) if any(u for _, _, u in readings) else None)
        return response


def _versions() -> str:
    found = []
    for name in ("tconnectsync", "waitress", "PyJWT"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found) + f", Python {sys.version.split()[0]}"


# The status page. The functions below gather what it shows; its words, markup and CSS are the templates
# after them (data). Every value goes into a template through fill(), which escapes it.

DAY_SECS = 86400
PAGE_DATA_SECS = SHARED_STATE_SECS  # how long the page reuses what it read from the store (see App.page_data)
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
    text = number_text(value, unit) if _is_number(value) else str(value).replace("_", " ").lower()
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

    def x(at: float) -> str:
        return f"{(at - start) / 60:.1f}"

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
    """What the status page read from the store and drew from it, reused for a moment (App.page_data)."""

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
    outside = _is_number(temperature) and out_of_range(temperature, band)
    return not outside, (sensor["name"] or sensor["device"]).lower()


def gather_page_data(app: App, now: float) -> PageData:
    """Read the last 24 h of runs and the sensors' readings, and draw the strip and up to MAX_CARDS cards."""
    syncer, tz, band, t0 = app.syncer, app.tz, app.settings.temperature_range, time.perf_counter()
    last_run, current = syncer.last_run, syncer.current
    try:
        runs = app.store.runs_since(now - DAY_SECS)
        sensors = sorted(app.store.sensors(), key=lambda s: card_order(s, band)) if app.settings.dt_secrets else []
        series = [{kind: app.store.series(sensor["device"], kind, now - DAY_SECS)
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

def page_state(app: App, health: str, last_ok: float | None, now: float, authorized: bool) -> tuple[str, Markup]:
    """The badge's word and the header's sentence: what is wrong and what to do."""
    s, syncer, tz = app.settings, app.syncer, app.tz
    last_run = syncer.last_run or {}
    why = fill(SENTENCES["why_quiet"])
    if last_run.get("outcome") == "failed":
        when = time_html(dt.datetime.fromisoformat(last_run["started_at"]).timestamp(), now, tz)
        error = last_run.get("error") or ""
        advice = failure_advice(error)
        why = fill(SENTENCES["why"], when=when, error=error, advice=f" {advice}." if advice else "") \
            if authorized else fill(SENTENCES["why_secret"], when=when)
    if s.missing:
        return "not configured", fill(SENTENCES["not configured"], missing=", ".join(s.missing))
    if app.store.failure:
        detail = f": {app.store.failure} ({app.store.path})" if authorized else ""
        return "database failing", fill(SENTENCES["database failing"], detail=detail,
                                        advice=DATABASE_ADVICE[app.store.dialect])
    if syncer.paused_until and now < syncer.paused_until:  # once it is over, the timer tries again
        return "paused", fill(SENTENCES["paused"], until=time_html(syncer.paused_until, now, tz),
                              manual="pressing Sync now" if authorized else "a manual /run")
    if health == "stale":
        since = fill(SENTENCES["since_ok" if last_ok else "since_start"],
                     when=time_html(last_ok or syncer.started_at, now, tz))
        return "stale", fill(SENTENCES["stale"], since=since, limit=f"{s.stale_mins:g}", why=why)
    if last_run.get("outcome") == "failed":
        return "failing", why
    if last_ok is None:
        first = "first_timer" if app.timer else "first_no_timer"
        return "ok", fill(SENTENCES["idle"], first=fill(SENTENCES[first]))
    return "ok", fill(SENTENCES["ok"], when=time_html(last_ok, now, tz))


def facts_html(app: App, last_ok: float | None, now: float) -> Markup:
    s, syncer, tz = app.settings, app.syncer, app.tz
    if syncer.paused_until and now < syncer.paused_until:
        next_sync = fill(SENTENCES["next_paused"], until=time_html(syncer.paused_until, now, tz),
                         reason=CREDENTIALS_REFUSED)
    elif app.timer and app.timer.next_at:
        next_sync = time_html(app.timer.next_at, now, tz)
    elif app.timer:
        next_sync = fill(SENTENCES["next_after_current"])
    else:
        next_sync = fill(SENTENCES["next_no_timer" if not s.interval_mins else "next_waits"])
    rows = [("Last successful sync", time_html(last_ok, now, tz) if last_ok else "none yet"),
            ("Next scheduled sync", next_sync)]
    if syncer.current:
        rows.append(("Running now", fill(SENTENCES["running"], id=syncer.current.id or "",
                                         trigger=syncer.current.trigger,
                                         when=time_html(syncer.current.started_at, now, tz))))
    if s.missing:
        rows.append(("Missing settings", ", ".join(s.missing)))
    return join(fill(PARTS["fact"], label=label, value=value) for label, value in rows)


def runs_html(app: App, bearer: bool, now: float) -> Markup:
    """The secret's part: recent runs and the CSV export (with the secret in the link if the page has it in its
    address)."""
    in_url, secret = not bearer, app.settings.secret
    rows = join(fill(PARTS["run_row"], outcome=run["outcome"], trigger=run["trigger"], uploaded=run["uploaded"],
                     when=time_html(dt.datetime.fromisoformat(run["started_at"]).timestamp(), now, app.tz),
                     error=run["error"] or "") for run in app.store.runs(20))
    query = "?" + urllib.parse.urlencode({"secret": secret}) if in_url else ""
    return fill(PARTS["runs"], rows=rows, csv=f"/events.csv{query}",
                csv_note="" if in_url else SENTENCES["csv_bearer"].template)


def render_status(app: App, request: Request, now: float, health: tuple[str, float | None],
                  events: tuple[int, float | None] | str | None, authorized: bool, wrong_secret: bool) -> str:
    """The status page: state and what to do, times, the sync strip, sensor cards; runs only with the secret.
    events: App.event_summary()'s answer."""
    health, last_ok = health
    state, sentence = page_state(app, health, last_ok, now, authorized)
    data = app.page_data(now)
    if events is None:
        receiver = fill(SENTENCES["receiver_off"])
    elif isinstance(events, str):
        receiver = fill(SENTENCES["receiver_unknown"])
    else:
        receiver = fill(SENTENCES["receiver_on"], count=events[0],
                        last=time_html(events[1], now, app.tz) if events[1] else "never")
    bearer = request.header("Authorization") is not None  # else the secret came in the address: links keep it
    try:
        runs = runs_html(app, bearer, now) if authorized else Markup()
    except StoreError:
        runs = fill(PARTS["unavailable"])
    versions = f"tcsync_wsgi {__version__}" + (f"; {app.versions}; database {app.store.path}" if authorized else "")
    return fill(STATUS_PAGE, state=state, state_class=state.replace(" ", "-"), sentence=sentence,
                icon=ICON.substitute(colour=ICON_COLOURS.get(state, "cf222e")),
                alerts=data.alerts, facts=facts_html(app, last_ok, now), strip=data.strip,
                summary=data.summary_with_errors if authorized else data.summary,
                sensors=fill(PARTS["sensors"], cards=data.cards) if app.settings.dt_secrets else Markup(),
                runs=runs, receiver=receiver, versions=versions, zone=app.settings.timezone_name,
                wrong_secret=fill(PARTS["wrong_secret"]) if wrong_secret else Markup(),
                sync_now=fill(PARTS["sync_now"], secret=app.settings.secret, then="/" if bearer else "/?secret")
                if authorized else Markup())


# The words, markup and CSS of the status page. $name is a value, escaped unless it is markup made by fill().
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
PARTS = {name: string.Template(text) for name, text in {
    "time": '<time datetime="$iso" title="$title">$text</time>',
    "fact": "<dt>$label</dt><dd>$value</dd>",
    "wrong_secret": '<p class="note">The secret in the address is wrong: this is the page without it.</p>',
    "strip": '<svg class="strip" viewBox="0 0 1440 24" preserveAspectRatio="none" role="img" aria-label="$label">'
             '$ticks$marks<path class="now" d="M1439.5 0V24"/></svg>'
             '<div class="axis">$axis<span class="now">now</span></div>',
    "marks": '<path class="run $outcome" d="$d"/>',
    "ticks": '<path class="tick" d="$d"/>',
    "tick_label": '<span style="left:$left%">$text</span>',
    "count": '<i class="key $outcome"></i>$count $outcome',
    "last_failure": "last failure $when$reason",
    "sensors": '<section><h2>Sensors</h2><div class="cards">$cards</div></section>',
    "more_sensors": '<p class="muted">And $count more devices: /sensors lists them all (with the secret).</p>',
    "no_sensors": '<p class="muted">No Data Connector events yet. Once your sensors report, each gets a card here.</p>',
    "unavailable": '<p class="muted">Not shown while the database is failing.</p>',
    "card": '<article class="card$out"><h3>$name</h3>$device$note<ul class="readings">$readings</ul>$health$charts'
            '</article>',
    "device": '<p class="muted device">$device</p>',
    "reading": '<li><span class="kind">$kind</span> <strong>$value</strong> <span class="muted">$when</span></li>',
    "health": '<p class="muted">$text</p>',
    "alert": '<p class="alert"><span class="badge s-out">out of range</span> <strong>$name</strong> is outside '
             '$range since $since: $value now.</p>',
    "card_alert": '<p class="alert"><span class="badge s-out">out of range</span> outside $range since $since</p>',
    "card_note": '<p class="note">Back inside $range; outside it earlier in the last 24 hours (red dots).</p>',
    "chart": '<figure class="chart"><figcaption>$title</figcaption><div class="plot">'
             '<svg viewBox="0 0 1440 100" preserveAspectRatio="none" role="img" aria-label="$label">'
             '$band$ticks$guides$lines$dots</svg>'
             '<span class="max$max_in" style="top:$max_top%">$max</span>'
             '<span class="min$min_in" style="top:$min_top%">$min</span>'
             '</div><div class="axis">$axis<span class="now">now</span></div></figure>',
    "band": '<rect class="band" x="0" y="$y" width="1440" height="$height"/>',
    "guides": '<path class="guide" d="$d"/>',
    "line": '<polyline class="line" points="$points"/>',
    "dots": '<path class="$cls" d="$d"/>',
    "sync_now": '<form method="post" action="/run"><input type="hidden" name="secret" value="$secret">'
                '<input type="hidden" name="then" value="$then"><button type="submit">Sync now</button></form>',
    "runs": '<section><h2>Recent runs</h2><table class="runs"><thead><tr><th>Started</th><th>Trigger</th>'
            '<th>Outcome</th><th>Uploaded</th><th>Error</th></tr></thead><tbody>$rows</tbody></table>'
            '<p><a href="$csv">Download every Data Connector event (CSV)</a>$csv_note</p></section>',
    "run_row": '<tr><td>$when</td><td>$trigger</td><td><span class="o $outcome">$outcome</span></td>'
               '<td class="up">$uploaded</td><td class="error">$error</td></tr>',
}.items()}
STATUS_PAGE = string.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="60">
<meta name="color-scheme" content="light dark">
<link rel="icon" href="$icon">
<title>$state · tconnectsync service</title>
<style>
:root{--bg:#fff;--fg:#1d2329;--muted:#59636e;--card:#f3f5f7;--line:#d3d9df;--ok:#1a7f37;--fail:#cf222e;
--warn:#9a5b00;--info:#0969da;--band:rgba(26,127,55,.14);--on:#fff}
@media (prefers-color-scheme:dark){:root{--bg:#0f1318;--fg:#e6e9ec;--muted:#9aa5b1;--card:#1a2027;--line:#343d47;
--ok:#3fb950;--fail:#ff6a69;--warn:#e3a43b;--info:#58a6ff;--band:rgba(63,185,80,.16);--on:#0f1318}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:64rem;padding:1rem;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
background:var(--bg);color:var(--fg);overflow-wrap:anywhere}
h1{font-size:1.3rem;margin:0 0 .4rem;display:flex;flex-wrap:wrap;align-items:center;gap:.5rem}
h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
h3{font-size:1rem;margin:0}
p{margin:.4rem 0}
.muted,footer{color:var(--muted)}
.badge{display:inline-block;padding:.1rem .65rem;border-radius:1rem;font-weight:700;color:var(--on);
background:var(--muted);white-space:nowrap}
.s-ok{background:var(--ok)}.s-failing,.s-stale,.s-database-failing,.s-out{background:var(--fail)}
.s-paused{background:var(--warn)}
.sentence{font-size:1.05rem}
.alert{border-left:4px solid var(--fail);padding:.3rem .6rem;background:var(--card)}
.note{border-left:4px solid var(--warn);padding:.3rem .6rem;background:var(--card)}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:1rem 0}
dt{color:var(--muted)}dd{margin:0}
@media (max-width:34rem){dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.5rem}}
time{white-space:nowrap}
svg{display:block;width:100%;overflow:hidden}
.strip{height:2rem;background:var(--card);border-radius:3px}
.run.ok,.key.ok{fill:var(--ok);background:var(--ok)}.run.failed,.key.failed{fill:var(--fail);background:var(--fail)}
.run.running,.key.running{fill:var(--info);background:var(--info)}
.run.interrupted,.key.interrupted{fill:var(--warn);background:var(--warn)}
.key{display:inline-block;width:.7em;height:.7em;margin-right:.25em;border-radius:2px}
.tick{stroke:var(--line);stroke-width:1;vector-effect:non-scaling-stroke}
.now{stroke:var(--fg);stroke-width:2;vector-effect:non-scaling-stroke}
.axis{position:relative;height:1.3rem;font-size:.75rem;color:var(--muted)}
.axis span{position:absolute;top:.1rem;transform:translateX(-50%)}.axis .now{right:0;transform:none}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,19rem),1fr));gap:.8rem}
.card{background:var(--card);border-radius:8px;padding:.8rem;border:2px solid transparent}
.card.out{border-color:var(--fail)}
.device{font-size:.8rem;margin:0}
.readings{list-style:none;padding:0;margin:.4rem 0}.readings strong{font-size:1.25rem}
.kind{display:inline-block;min-width:6.5em;color:var(--muted)}
.chart{margin:.6rem 0 0}figcaption{font-size:.85rem;color:var(--muted)}
.plot{position:relative;height:7.5rem;margin-top:.2rem;background:var(--bg);border-radius:3px}
.plot svg{height:100%}
.plot span{position:absolute;left:.3rem;font-size:.75rem;line-height:1;padding:.1rem .25rem;border-radius:3px;
background:var(--bg);color:var(--fg)}
.plot .max,.plot .min.in{transform:translateY(-115%)}.plot .min,.plot .max.in{transform:translateY(15%)}
.plot span:empty{display:none}
.line{fill:none;stroke:var(--info);stroke-width:2;vector-effect:non-scaling-stroke;stroke-linejoin:round}
.guide{stroke:var(--muted);stroke-width:1;stroke-dasharray:4 4;vector-effect:non-scaling-stroke}
.band{fill:var(--band)}
.dot{stroke:var(--info);stroke-width:6;stroke-linecap:round;vector-effect:non-scaling-stroke}
.dot.out{stroke:var(--fail);stroke-width:8}
form{margin:.6rem 0}
button{font:inherit;font-weight:600;padding:.55rem 1.2rem;border-radius:6px;border:0;background:var(--info);
color:var(--on);cursor:pointer}
table{border-collapse:collapse;width:100%;margin:.8rem 0;font-size:.9rem}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
.o.ok{color:var(--ok)}.o.failed{color:var(--fail)}.o.interrupted{color:var(--warn)}.o.running{color:var(--info)}
.o{font-weight:700}
@media (max-width:40rem){.runs thead{display:none}.runs tr{display:block;padding:.4rem 0;
border-bottom:1px solid var(--line)}.runs td{display:inline;border:0;padding:0 .5rem 0 0}.runs td.error{display:block}
.runs td.up::before{content:"uploaded "}}
a{color:var(--info)}
footer{margin-top:2rem;font-size:.85rem;border-top:1px solid var(--line);padding-top:.5rem}
</style></head>
<body>
<header>
<h1><span class="badge s-$state_class" id="state">$state</span> tconnectsync service</h1>
<p class="sentence">$sentence</p>
$alerts$wrong_secret$sync_now
</header>
<dl>$facts</dl>
<section><h2>Syncs in the last 24 hours</h2>$strip<p class="summary">$summary</p></section>
$sensors
$runs
<footer><p>Data Connector receiver: $receiver</p><p>$versions</p>
<p>Times are in $zone. This page refreshes every minute.</p></footer>
</body></html>
""")


# ---------------------------------------------------------------------------------------------
# Main: the app factory, the CLI, waitress and signals.
# ---------------------------------------------------------------------------------------------

SHUTDOWN_GRACE_SECS = 25
FD_RESERVE = 100  # open files kept for the store, the sync lock, outgoing HTTPS calls, the log and Python itself
FDS_PER_CONNECTION = 3  # waitress: a socket, and a temporary file each for a large request body and answer
# Each open connection may hold the request headers it has sent so far, up to MAX_HEADER_BYTES (waitress's default is
# 256 KiB; ours are far below 32 KiB: the longest is X-Dt-Signature's token, at most 4 KiB).
MAX_HEADER_BYTES = 32 * 1024
# select() watches descriptors below 1024 only; past that it fails and takes waitress's loop down. poll() has no such
# limit but cost 45 % of POST / throughput under wrk (527 vs 905 deliveries/s, medians of 3 alternating rounds), so
# it is used only for a WAITRESS_CONNECTION_LIMIT that select() cannot hold.
SELECT_FDS = 1024


def create_app(settings: Settings, store: Store | None = None, syncer: Syncer | None = None,
               clock: Callable[[], float] | None = None, log: Log | None = None,
               timer: bool = False, verify_clock: Callable[[], float] | None = None) -> App:
    """Build the service from its parts; tests pass their own store, clock or log writer."""
    clock = clock or time.time
    log = log or Log()
    log.redact = Redactor(settings.secret_values())
    store = store or open_store(settings)
    syncer = syncer or Syncer(settings, store, log, clock)
    sync_timer = None
    if timer and settings.interval_mins > 0 and not settings.missing:
        sync_timer = SyncTimer(syncer, settings.interval_mins * 60, log)
    return App(settings, store, syncer, log, clock, sync_timer, verify_clock)


def _cli_run(app: App, kind: str, args) -> int:
    options = {}
    if kind == "sync":
        options["pretend"] = args.pretend
        if args.features:
            try:
                options["features"] = parse_features(args.features, app.settings.allowed_features)
            except ValueError as e:
                print(f"tcsync_wsgi: --features: {e}", file=sys.stderr)
                return 2
    run, why_not = app.syncer.start("check" if kind == "check" else "cli", kind, days=args.days, **options)
    if why_not:
        print(f"tcsync_wsgi: not started: {why_not}", file=sys.stderr)
        return 2 if app.settings.missing else 1
    run.done.wait()
    if kind == "check":
        sys.stdout.write("".join(run.log))
    print(f"{kind} {run.outcome}: uploaded {run.uploaded}" + (f"; {run.error}" if run.error else ""))
    return 0 if run.outcome == "ok" else 1


def open_files_limit() -> int:
    """The process's limit on open files, first raised to its hard limit where the system allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # over the kernel's own ceiling (an unlimited hard limit): keep the soft one
            pass
    return soft


def connection_limit(settings: Settings) -> int:
    """How many connections waitress may hold open: WAITRESS_CONNECTION_LIMIT, or as many as the open-files limit
    and select()'s 1024 descriptors leave room for (308), never fewer than waitress's own default of 100. Slow
    clients each hold one; at waitress's 100, a hundred of them kept everyone else out."""
    files = open_files_limit()  # raised to the hard limit either way: a configured limit needs the files too
    if settings.connection_limit:
        return settings.connection_limit
    return max(100, (min(files, SELECT_FDS) - FD_RESERVE) // FDS_PER_CONNECTION)


def needs_poll(connections: int) -> bool:
    """Whether that many connections could take descriptors past select()'s reach."""
    return FD_RESERVE + connections * FDS_PER_CONNECTION > SELECT_FDS


def serve(app: App) -> int:
    """Serve until SIGTERM/SIGINT, then stop cleanly within Heroku's 30 s."""
    import waitress

    try:
        # Measured with bench/ (README, Performance), not guessed:
        # channel_request_lookahead=1 keeps a keep-alive connection readable while its request runs, so the
        # next request is read as it arrives instead of after a wake-up of the main thread: POST / x4, GET / +20 %.
        # threads=8: more deliveries in flight share one commit of the store's writer (+20 % over 4).
        # outbuf_high_watermark: a streamed export waits for the client past 1 MiB buffered instead of
        # waitress's 16 MiB (bench/export.py: +20 MB -> +5 MB for 100 000 events).
        # Against slow clients: three times waitress's connections (connection_limit(); poll() only past select()'s
        # reach, see SELECT_FDS), and one idle for channel_timeout closed, looked for every half of it (waitress
        # looks every 30 s, so a 2 s timeout would take up to 32 s).
        timeout, connections = app.settings.channel_timeout_secs, connection_limit(app.settings)
        server = waitress.create_server(app, host=app.settings.host, port=app.settings.port, ident="tcsync_wsgi",
                                        max_request_body_size=1024 * 1024, max_request_header_size=MAX_HEADER_BYTES,
                                        clear_untrusted_proxy_headers=True,
                                        threads=8, channel_request_lookahead=1, outbuf_high_watermark=1024 * 1024,
                                        connection_limit=connections, asyncore_use_poll=needs_poll(connections),
                                        channel_timeout=timeout, cleanup_interval=max(1, timeout // 2))
    except OSError as e:  # the port is taken, or the address is not this machine's
        print(f"tcsync_wsgi: cannot listen on {app.settings.host}:{app.settings.port}: {e.strerror or e}"
              " (set PORT or LISTEN_PORT, LISTEN_HOST)", file=sys.stderr)
        return 2
    stopping_at: list[float] = []

    def on_signal(signum, frame):
        if stopping_at:
            return
        stopping_at.append(time.monotonic())
        if app.timer:
            app.timer.stop()
        app.syncer.closed = True
        raise SystemExit(0)  # waitress.run() catches it and stops its workers

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.log(event="start", version=__version__, host=app.settings.host, port=server.effective_port,
            connection_limit=server.adj.connection_limit, channel_timeout=server.adj.channel_timeout,
            io="poll" if server.adj.asyncore_use_poll else "select",
            timer_mins=app.settings.interval_mins if app.timer else 0,
            missing=",".join(app.settings.missing) or None)
    if app.timer:
        app.timer.start()
    server.run()
    unfinished = app.syncer.close(stopping_at[0] + SHUTDOWN_GRACE_SECS if stopping_at else time.monotonic())
    if unfinished:
        app.log("warn", event="run.interrupted", run_id=unfinished.id)
    server.close()
    app.store.close()
    app.log(event="stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`serve` (default), `sync [--days N] [--pretend] [--features A,B]`, or `check`."""
    parser = argparse.ArgumentParser(prog="tcsync_wsgi.py", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb")
    verbs.add_parser("serve", help="serve the web app (the default)")
    sync = verbs.add_parser("sync", help="one sync, for cron: exit 0 ok, 1 failed, 2 bad configuration")
    check = verbs.add_parser("check", help="tconnectsync's login check: exit 0 ok, 1 errors, 2 bad configuration")
    for sub in (sync, check):
        sub.add_argument("--days", type=int, default=1, choices=range(1, 31), metavar="N (1-30)")
    sync.add_argument("--pretend", action="store_true", help="read from Tandem, upload nothing")
    sync.add_argument("--features", help="comma list of tconnectsync features")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"tcsync_wsgi: cannot start: {e}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, timer=args.verb in (None, "serve"))
    except StoreUnreachable as e:  # it may come back: exit 1, so Heroku or systemd start us again
        print(f"tcsync_wsgi: cannot reach the database: {e}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as e:
        where, hint = ("DATABASE_URL", "check DATABASE_URL") if settings.database_url else \
            (settings.db_path, "set TCONNECTSYNC_HEROKU_DB")
        print(f"tcsync_wsgi: cannot use the database {where}: {e} ({hint})", file=sys.stderr)
        return 2
    if args.verb in ("sync", "check"):
        if settings.missing:
            print(f"tcsync_wsgi: missing settings: {', '.join(settings.missing)}", file=sys.stderr)
            return 2
        return _cli_run(app, args.verb, args)
    return serve(app)


if __name__ == "__main__":
    sys.exit(main())
