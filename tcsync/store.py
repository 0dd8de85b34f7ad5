"""The store: runs and events behind one small interface, in SQLite (WAL) by default.

One writer thread commits whatever has queued in one transaction (group commit) and then answers each waiting
caller; reads have their own connection, so a status page never waits behind a delivery's commit.
tcsync.postgres is the same store on PostgreSQL; open_store() picks one.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tcsync.readings import Delivery, delivery_of, device_of, document_of, event_json, event_time_of, iso, readings_of
from tcsync.schema import (
    BACKFILL_BATCH, SCHEMA_VERSION, UPGRADE_FROM_1, UPGRADE_FROM_2, UPGRADE_FROM_4, UPGRADE_FROM_5, data_and_name,
    reading_columns, readings_from_columns, schema_statements, sources_of, unique_milliseconds,
)
from tcsync.settings import Settings

KEEP_RUNS = 1000
KEEP_EVENTS = 100_000
KEEP_EVENTS_SECS = 30 * 86400
EXPORT_BATCH = 1000  # rows per query while streaming an export: bounded memory, short lock holds
# Stored bodies read for one /events page or one export batch at most (and at least one event): the memory a
# listing takes follows this, not what senders chose to send. A page of 1000 usual events (about 700 bytes) fits.
PAGE_BYTES = 1024 * 1024
# Events timed up to this far after now still count as the newest reading (the sender's clock may run ahead
# of ours); later ones are kept, listed and exported, but never shown as a sensor's newest reading or charted.
FUTURE_SLACK_SECS = 300
RUN_COLUMNS = "id, trigger, started_at, finished_at, outcome, uploaded, last_event_seq, error"
EVENT_COLUMNS = "event_id, event_type, target, timestamp, received_at, duplicates, body, device, event_time"
# A batch's deliveries, side by side, in one multi-row INSERT, their readings in their own columns; a repeat keeps
# the first copy's and counts up.
INSERT_EVENTS = (f"INSERT INTO events ({EVENT_COLUMNS}, name, value, value2, state) VALUES {{values}}"
                 " ON CONFLICT (event_id) DO UPDATE SET duplicates = events.duplicates + 1"
                 " RETURNING event_id, duplicates")
INSERT_VALUES = "(?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)"
SHARED_STATE_SECS = 2.0  # how old what other processes wrote may look (runs on /healthz, events on the page)


class StoreError(Exception):
    """The database failed; the message says how (never with a password)."""


class StoreUnreachable(StoreError):
    """The database server could not be reached: it may come back, unlike a wrong schema."""


class QueryRefused(StoreError):
    """The database refused one statement's values (a NUL in PostgreSQL's text, an integer past 64 bits): that
    statement is wrong, the database is not failing."""


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
    postgres.PostgresStore is the same store on PostgreSQL; only connecting and the dialect differ.
    """

    dialect = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    refusals: tuple[type[Exception], ...] = (sqlite3.DataError, OverflowError)  # QueryRefused, not a failure

    def __init__(self, location: str):
        self.path = location  # where the data lives, as the status page and errors name it
        self.failure: str | None = None  # the last error, until a statement succeeds again
        self._locks = {"write": threading.Lock(), "read": threading.Lock()}
        self._connections: dict[str, Any] = {}
        # (monotonic time, answer) of event_summary: the status page asks on every GET; other processes'
        # deliveries show within SHARED_STATE_SECS, this one's at once.
        self._summary: tuple[float, tuple[int, float | None]] | None = None
        self.writes = 0  # statements through write(): the alerts' own tables (view.ViewBuilder.changes)
        self.added = 0  # events kept by this process (view.ViewBuilder.changes: two may arrive in one clock tick)
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

    def _run_many(self, db, sql: str, rows: list[tuple]) -> None:
        db.executemany(sql, rows)

    def _begin(self, db) -> None:
        db.execute("BEGIN IMMEDIATE")

    def _rollback(self, db) -> None:
        try:
            self._run(db, "ROLLBACK", ())
        except self.errors:
            pass  # nothing to roll back, or the connection is gone

    def _error(self, error: Exception) -> StoreError:
        return StoreError(str(error))

    def _failed(self, error: Exception) -> StoreError:
        """The StoreError for what a statement raised; the store is failing unless the statement was refused."""
        if isinstance(error, StoreError):
            self.failure = str(error)
            return error
        if isinstance(error, self.refusals):
            return QueryRefused(str(self._error(error)))
        stored = self._error(error)
        self.failure = f"{type(error).__name__}: {stored}"
        return stored

    def _migrate(self, db) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"schema version {version} is newer than this program's")
        db.execute("BEGIN IMMEDIATE")
        try:
            self._upgrade(db, version)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _upgrade(self, db, version: int) -> None:
        """The steps from schema `version` (0: a new database) to SCHEMA_VERSION, in the caller's transaction; the
        same on both databases (PostgreSQL came with schema 2)."""
        if version == 1:
            for statement in UPGRADE_FROM_1:
                self._run(db, statement, ())
            rows, _ = self._run(db, "SELECT event_id, target, timestamp, received_at FROM events", ())
            self._run_many(db, "UPDATE events SET device = ?, event_time = ? WHERE event_id = ?",
                           [(device_of(target), event_time_of(timestamp, received_at), event_id)
                            for event_id, target, timestamp, received_at in rows])
        if version in (1, 2):
            self._run(db, UPGRADE_FROM_2[self.dialect], ())
        if 0 < version < 5:
            for statement in UPGRADE_FROM_4[self.dialect]:
                self._run(db, statement, ())
        if version in (4, 5):
            for statement in UPGRADE_FROM_5[self.dialect]:
                self._run(db, statement, ())
            rows, _ = self._run(db, "SELECT identifier, created_at FROM announcements ORDER BY created_at, identifier",
                                ())
            self._run_many(db, "UPDATE announcements SET created_at = ? WHERE identifier = ?",
                           list(zip(unique_milliseconds([at for _, at in rows]), [i for i, _ in rows], strict=True)))
        for statement in schema_statements(self.dialect):
            self._run(db, statement, ())
        if 0 < version < 5:
            self._fill_from_bodies(db)

    def _fill_from_bodies(self, db) -> None:
        """Upgrading from schema 4 or before: each kept event's name and readings, from its body, BACKFILL_BATCH at
        a time."""
        after = ""
        while rows := self._run(db, "SELECT event_id, event_type, body FROM events WHERE event_id > ?"
                                    " ORDER BY event_id LIMIT ?", (after, BACKFILL_BATCH))[0]:
            filled = []
            for event_id, event_type, body in rows:
                data, name = data_and_name(bytes(body))
                filled.append((name, *reading_columns(readings_of(event_type, data)), event_id))
            self._run_many(db, "UPDATE events SET name = ?, value = ?, value2 = ?, state = ? WHERE event_id = ?",
                           filled)
            after = rows[-1][0]

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
            except (StoreError, *self.errors, *self.refusals) as e:  # StoreError: no connection
                raise self._failed(e) from None
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
            batch[0].error = self._failed(e)
            batch[0].finish()
            return
        self.failure = None
        for item in batch:
            item.finish()

    def _transaction(self, db, batch: list[_Write]) -> None:
        """Every write of a batch, the deliveries in one statement, in one transaction. A batch of one statement is
        atomic by itself: no BEGIN and COMMIT around it (a third of the calls, or round trips)."""
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
        """The batch's distinct eventIds; a repeat within the batch only counts up. A delivery's args: its row."""
        firsts: dict[str, _Write] = {}
        repeats: collections.Counter[str] = collections.Counter()
        for item in deliveries:
            event_id = item.args[0]
            if event_id in firsts:
                repeats[event_id] += 1
                item.result = True
            else:
                firsts[event_id] = item
        insert = INSERT_EVENTS.format(values=", ".join([INSERT_VALUES] * len(firsts)))
        rows, _ = self._run(db, insert, [value for item in firsts.values() for value in item.args])
        for event_id, duplicates in rows:
            firsts[event_id].result = duplicates > 0
        for event_id, count in repeats.items():
            self._run(db, "UPDATE events SET duplicates = duplicates + ? WHERE event_id = ?", (count, event_id))

    @property
    def closed(self) -> bool:
        """close() was called (the page's builder stops then, rather than open the file again)."""
        return self._writer is None

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

    # for parts that keep tables of their own here (alerts): one statement each, as above
    def read(self, sql: str, args: tuple = ()) -> list:
        """The rows of one statement on the reading connection."""
        return self._query(sql, args)[0]

    def write(self, sql: str, args: tuple = ()) -> tuple[list, int]:
        """One statement through the writer, committed when it returns: (the rows it returned, rows changed)."""
        try:
            return self._write(sql, args)
        finally:
            self.writes += 1  # the alert rows and announcements changed (maybe): the page's builder looks

    # runs
    def start_run(self, trigger: str, started_at: float) -> int:
        """Record a run as running; returns its id. Keeps the newest KEEP_RUNS rows."""
        [(run_id,)], _ = self._write("INSERT INTO runs (trigger, started_at, outcome) VALUES (?, ?, 'running')"
                                     " RETURNING id", (trigger, started_at))
        self._write("DELETE FROM runs WHERE id <= ?", (run_id - KEEP_RUNS,))
        return run_id

    def finish_run(self, run: Any) -> None:
        """Write a finished sync.Run's outcome, unless shutdown already marked it interrupted."""
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
        """Syncs started since a time, oldest first, with their times as Unix seconds (the status page's strip: a
        login check is no sync)."""
        rows, _ = self._query("SELECT id, trigger, started_at, finished_at, outcome, uploaded, error FROM runs"
                              " WHERE started_at >= ? AND trigger != 'check' ORDER BY started_at, id", (since,),
                              kind="read")
        return [dict(zip(("id", "trigger", "started_at", "finished_at", "outcome", "uploaded", "error"), row,
                         strict=True)) for row in rows]

    def last_run(self) -> dict | None:
        """The newest sync (a login check is no sync: it never turns the badge)."""
        rows, _ = self._query(f"SELECT {RUN_COLUMNS} FROM runs WHERE trigger != 'check' ORDER BY id DESC LIMIT 1",
                              kind="read")
        return run_json(*rows[0]) if rows else None

    def last_success_at(self) -> float | None:
        """When the newest successful sync finished (checks upload nothing: not counted)."""
        [(finished_at,)], _ = self._query(
            "SELECT MAX(finished_at) FROM runs WHERE outcome = 'ok' AND trigger != 'check'", kind="read")
        return finished_at

    # events
    def add_event(self, event: dict, received_at: float, body: bytes) -> bool:
        """add_delivery for an event taken from body (tools and tests: the receiver has read its delivery)."""
        return self.add_delivery(delivery_of(event, {"name": data_and_name(body)[1]}, received_at), received_at, body)

    def add_delivery(self, delivery: Delivery, received_at: float, body: bytes) -> bool:
        """Keep a delivery and its readings; True if this eventId was already kept (then only its counter moves)."""
        event, name = delivery.event, delivery.labels.get("name")
        row = (event["eventId"], event["eventType"], event.get("targetName"), event.get("timestamp"), received_at,
               body, delivery.device, delivery.event_time, name if isinstance(name, str) else None,
               *reading_columns(delivery.readings))
        duplicate = self._write(None, row)
        if not duplicate:
            self._summary = None
            self.added += 1
        return duplicate

    def prune_events(self, now: float) -> None:
        """Keep 30 days and at most KEEP_EVENTS events, the newest (their readings with them)."""
        self._write("DELETE FROM events WHERE received_at < ?", (now - KEEP_EVENTS_SECS,))
        self._write("DELETE FROM events WHERE received_at < (SELECT received_at FROM events"
                    " ORDER BY received_at DESC LIMIT 1 OFFSET ?)", (KEEP_EVENTS - 1,))

    def events(self, limit: int, query: EventQuery = EventQuery(),
               before: tuple[float, str] | None = None) -> tuple[list[dict], tuple[float, str] | None]:
        """Newest first by the event's own time, and where to continue if more match (else None): at most limit
        events and PAGE_BYTES of bodies.

        The order is total (event_time, then event_id), so a listing continued with `before` returns
        every event once, also while deliveries arrive."""
        rows, more = self._event_rows(query, before, "<", limit)
        return [event_json(row) for row in rows], more

    def export_rows(self, query: EventQuery) -> Iterator[tuple]:
        """Every matching event row, oldest first, read EXPORT_BATCH (or PAGE_BYTES) at a time (the lock is free
        between)."""
        cursor = None
        while True:
            rows, cursor = self._event_rows(query, cursor, ">", EXPORT_BATCH)
            yield from rows
            if cursor is None:
                return

    def _event_rows(self, query: EventQuery, cursor: tuple[float, str] | None, direction: str,
                    limit: int) -> tuple[list[tuple], tuple[float, str] | None]:
        """The rows past a cursor (<: newest first, >: oldest first), at most limit and PAGE_BYTES of bodies (at
        least one), and the cursor to continue from if more match. The sizes first, then the bodies of those that
        fit, by id: a page never holds more bodies than it answers with."""
        where, args = query.where(cursor, direction)
        order = "DESC" if direction == "<" else "ASC"
        keys, _ = self._query(f"SELECT event_time, event_id, length(body) FROM events WHERE {where}"
                              f" ORDER BY event_time {order}, event_id {order} LIMIT ?", (*args, limit + 1), "read")
        taken, size = 0, 0
        while taken < min(limit, len(keys)) and (taken == 0 or size + keys[taken][2] <= PAGE_BYTES):
            size += keys[taken][2]
            taken += 1
        if not taken:
            return [], None
        chosen = [event_id for _, event_id, _ in keys[:taken]]
        rows, _ = self._query(f"SELECT {EVENT_COLUMNS} FROM events WHERE event_id IN ({', '.join('?' * taken)})",
                              chosen, "read")
        by_id = {row[0]: row for row in rows}  # in the keys' order: the database's collation, not Python's
        more = (keys[taken - 1][0], keys[taken - 1][1]) if len(keys) > taken else None
        return [by_id[event_id] for event_id in chosen if event_id in by_id], more  # a pruned one is gone

    def sensors(self, now: float, device: str | None = None) -> list[dict]:
        """One entry per device (or for the one device given): its names, when it was last heard, and its newest
        reading of each kind; events timed more than FUTURE_SLACK_SECS after now are not counted."""
        until, pairs = now + FUTURE_SLACK_SECS, self._device_types(device)  # found once for both reads
        sensors: dict[str, dict] = {}
        for device_id, _, target, name, *_, event_time in self._newest_of_each_type(until, pairs, False):
            sensors[device_id] = {"device": device_id, "target": target, "name": name,
                                  "last_event_at": iso(event_time), "readings": {}}  # oldest first: a newer one wins
        for device_id, event_type, _, _, value, value2, state, event_time in self._newest_of_each_type(
                until, pairs, True):  # oldest first: a newer one wins
            for kind, stored, unit in readings_from_columns(event_type, value, value2, state):
                if device_id in sensors:  # else it arrived between the two reads
                    sensors[device_id]["readings"][kind] = {"value": stored, "unit": unit, "at": iso(event_time)}
        return list(sensors.values())

    def _newest_of_each_type(self, until: float, pairs: list[tuple[str, str]], with_reading: bool) -> list[tuple]:
        """(device, event_type, target, name, value, value2, state, event_time) of the newest event of each
        (device, event type) of pairs (_device_types) up to a time (with_reading: of those that hold a reading),
        oldest first.

        One index seek per device and type, not a GROUP BY over every event: its cost follows the number of
        devices, not of events (a GROUP BY read all 72 000 of a day of 50 sensors, 56 ms, on every page build)."""
        reading = " AND (value IS NOT NULL OR state IS NOT NULL)" if with_reading else ""
        rows = []
        for device_id, event_type in pairs:
            found, _ = self._query(
                "SELECT device, event_type, target, name, value, value2, state, event_time, event_id FROM events"
                f" WHERE device = ? AND event_type = ? AND event_time <= ?{reading}"
                " ORDER BY event_time DESC, event_id DESC LIMIT 1", (device_id, event_type, until), "read")
            rows += found
        rows.sort(key=lambda row: (row[0], row[7], row[8]))
        return [row[:8] for row in rows]

    def _device_types(self, device: str | None = None) -> list[tuple[str, str]]:
        """Every (device, event type) stored (of one device, if given), each found by one seek in events_readings
        (a loose index scan: neither database skips through an index by itself)."""
        pairs, devices = [], [device] if device is not None else []
        if device is None:
            after = ""
            while (after := self._query("SELECT MIN(device) FROM events WHERE device > ?", (after,))[0][0][0]):
                devices.append(after)
        for device_id in devices:
            kind = ""
            while (kind := self._query("SELECT MIN(event_type) FROM events WHERE device = ? AND event_type > ?",
                                       (device_id, kind))[0][0][0]) is not None:
                pairs.append((device_id, kind))
        return pairs

    def series(self, device: str, kind: str, since: float, now: float) -> list[tuple[float, float]]:
        """(event time, value) of one numeric kind of one device from a time until now (and FUTURE_SLACK_SECS),
        oldest first."""
        event_types, column = sources_of(kind)
        rows, _ = self._query(
            f"SELECT event_time, {column} FROM events WHERE device = ? AND event_type IN"
            f" ({', '.join('?' * len(event_types))}) AND event_time >= ? AND event_time <= ? AND {column} IS NOT NULL"
            # ties by value, not event_id: the index holds the value, so no row is read (8 ms a day of readings)
            f" ORDER BY event_time, {column}", (device, *event_types, since, now + FUTURE_SLACK_SECS), "read")
        return [(event_time, value) for event_time, value in rows]

    def latest_labels(self, device: str) -> dict:
        """The labels of the device's newest event (its name, its temperature_range): the newest of each of its
        types by an index seek (ordering all of its events by time read every one of their rows: 6 ms a device)."""
        newest = []
        for _, event_type in self._device_types(device):
            newest += self._query("SELECT event_time, event_id, body FROM events WHERE device = ? AND event_type = ?"
                                  " ORDER BY event_time DESC, event_id DESC LIMIT 1", (device, event_type))[0]
        return document_of(bytes(max(newest)[2]))[1] if newest else {}

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


def open_store(settings: Settings) -> Store:
    """PostgreSQL when DATABASE_URL is set, else the SQLite file."""
    if settings.database_url:
        from tcsync.postgres import PostgresStore  # psycopg only then: SQLite users pay nothing for it

        return PostgresStore(settings.database_url)
    return Store(settings.db_path)
