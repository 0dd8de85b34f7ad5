"""The alert rows and the outbox of announcements, in the store's tables (both databases): what is open, what each
family was told when, and what waits for Nightscout, the most urgent kind first."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json

from tcsync.plain import safe_name
from tcsync.readings import iso
from tcsync.store import Store, StoreError

ALERT_COLUMNS = "identifier, kind, device, name, since, started_at, value, unit, detail, ended_at, end_value"


@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert: what, which device, since when (the condition's first moment), when it became an alert."""

    identifier: str
    kind: str
    device: str | None
    name: str | None  # the device's name label, else its id; None for syncs
    since: float
    started_at: float
    value: float | None = None
    unit: str | None = None
    detail: str = ""  # out_of_range: "above 8 °C"; sync_failing: the last error
    ended_at: float | None = None
    end_value: float | None = None

    def as_json(self) -> dict:
        """As /alerts lists it: the name made safe (safe_name), as in the announcements; the database keeps it whole."""
        name = None if self.name is None else safe_name(self.name, self.device)
        shown = {"kind": self.kind, "device": self.device, "name": name, "since": iso(self.since),
                 "started_at": iso(self.started_at), "detail": self.detail or None}
        if self.value is not None:
            shown.update(value=self.value, unit=self.unit)
        if self.ended_at is not None:
            shown.update(ended_at=iso(self.ended_at), end_value=self.end_value)
        return shown


def identifier_of(kind: str, device: str | None, since: float | None) -> str:
    """The same for the same alert in every process: what it is and when it began."""
    key = json.dumps([kind, device, None if since is None else round(since * 1000)])
    return "tcsync-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _alert(row) -> Alert:
    return Alert(*row[:11])


PRIORITY = {"out_of_range": 0, "silent": 1, "battery_low": 2, "sync_failing": 3}  # sent in this order


@dataclasses.dataclass(frozen=True)
class Untold:
    """An alert whose family was last told something else than it is now (its start while it has ended, or
    nothing or its end while it is open), with what they were told when."""

    alert: Alert
    told: str | None  # None, "start" or "end"
    told_start_at: float | None
    told_end_at: float | None
    reopened_at: float | None


class AlertBook:
    """The alert rows and the announcements waiting for Nightscout, through the store (both backends)."""

    CLAIM_SECS = 120  # a sender has this long to send what it claimed before another process may
    MAX_SHIFTS = 1000  # announcements of one moment: each a millisecond after the one before
    KEEP_SECS = 30 * 86400
    MARK_BATCH = 500  # alerts marked as told in one statement

    def __init__(self, store: Store):
        self.store = store

    def open_alerts(self) -> list[Alert]:
        rows = self.store.read(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE ended_at IS NULL ORDER BY started_at")
        return [_alert(row) for row in rows]

    def recent(self, since: float, channels: dict[str, str] | None = None) -> list[tuple[Alert, str, str | None]]:
        """Open alerts and those ended since a time, newest first, each with what became of its start's and end's
        tells: its announcement, and with channels ({id: label}) each channel's push."""
        rows = self.store.read(
            f"SELECT {', '.join('a.' + c for c in ALERT_COLUMNS.split(', '))},"
            " s.sent_at, s.dropped, s.last_error, s.identifier, e.sent_at, e.dropped, e.last_error, e.identifier,"
            " a.told_start, a.told_end"
            " FROM alerts a"
            " LEFT JOIN announcements s ON s.identifier = a.told_start"
            " LEFT JOIN announcements e ON e.identifier = a.told_end"
            " WHERE a.ended_at IS NULL OR a.ended_at >= ? ORDER BY a.started_at DESC LIMIT 100", (since,))
        pushed = self.push_fates([told for row in rows for told in row[19:21] if told]) if channels else {}

        def fate(announcement: tuple, told: str | None) -> str:
            words = _fate(*announcement)
            if not channels or told is None:
                return words
            said = [f"{label}: {pushed.get(told, {}).get(channel, 'not sent')}" for channel, label in channels.items()]
            return "; ".join(([f"Nightscout: {words}"] if announcement[3] else []) + said)
        return [(_alert(row), fate(row[11:15], row[19]), fate(row[15:19], row[20]) if row[9] is not None else None)
                for row in rows]

    def open(self, alert: Alert) -> bool:
        """Record a new alert; False if it was there."""
        rows, _ = self.store.write(
            f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)"
            " ON CONFLICT (identifier) DO NOTHING RETURNING identifier", dataclasses.astuple(alert)[:9])
        return bool(rows)

    def close(self, alert: Alert) -> bool:
        """Record an alert's end; False if it had ended already."""
        _, changed = self.store.write("UPDATE alerts SET ended_at = ?, end_value = ? WHERE identifier = ?"
                                      " AND ended_at IS NULL", (alert.ended_at, alert.end_value, alert.identifier))
        return changed > 0

    def latest(self, kind: str, device: str | None) -> Alert | None:
        """The newest alert of a kind for a device (the episode a new start may belong to)."""
        rows = self.store.read(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE kind = ? AND COALESCE(device, '') = ?"
                               " ORDER BY started_at DESC LIMIT 1", (kind, device or ""))
        return _alert(rows[0]) if rows else None

    def reopen(self, identifier: str, at: float) -> bool:
        """The same episode again: open, from `at`; False if it was open already."""
        _, changed = self.store.write("UPDATE alerts SET ended_at = NULL, end_value = NULL, reopened_at = ?"
                                      " WHERE identifier = ? AND ended_at IS NOT NULL", (at, identifier))
        return changed > 0

    def untold(self, device: str | None = None) -> list[Untold]:
        """The alerts whose family should hear something new (see Untold), of one device or all."""
        mismatch = ("((ended_at IS NULL AND (told IS NULL OR told = 'end')) OR"
                    " (ended_at IS NOT NULL AND told = 'start'))")
        where, args = (f"{mismatch} AND device = ?", (device,)) if device else (mismatch, ())
        rows = self.store.read(f"SELECT {ALERT_COLUMNS}, told, told_start_at, told_end_at, reopened_at FROM alerts"
                               f" WHERE {where} ORDER BY started_at", args)
        return [Untold(_alert(row), *row[11:]) for row in rows]

    def mark_told(self, identifiers: list[str], phase: str, announcement: str, at: float, was: str | None
                  ) -> list[str]:
        """Record that these alerts' families were told `phase` by `announcement` at `at`, for those still as they
        were (`was`): another process may have told them meanwhile. The identifiers marked."""
        marked = []
        for first in range(0, len(identifiers), self.MARK_BATCH):
            batch = identifiers[first:first + self.MARK_BATCH]
            rows, _ = self.store.write(
                f"UPDATE alerts SET told = ?, told_{phase} = ?, told_{phase}_at = ? WHERE identifier IN"
                f" ({', '.join('?' * len(batch))}) AND COALESCE(told, '') = ? RETURNING identifier",
                (phase, announcement, at, *batch, was or ""))
            marked += [identifier for (identifier,) in rows]
        return marked

    def queue(self, identifier: str, created_at: float, notes: str, priority: int = 0,
              claimed_until: float | None = None) -> float:
        """Queue an announcement once, at the first whole millisecond from created_at that no other holds; the
        moment it holds (claimed_until: claimed already, by the caller, who sends it itself)."""
        at_ms = round(created_at * 1000)
        for _ in range(self.MAX_SHIFTS):
            held = self.store.read("SELECT created_at FROM announcements WHERE identifier = ?", (identifier,))
            if held:
                return held[0][0]  # queued before (by this process or another)
            taken = {round(at * 1000) for (at,) in self.store.read(
                "SELECT created_at FROM announcements WHERE created_at >= ? AND created_at < ?",
                (at_ms / 1000, (at_ms + self.MAX_SHIFTS) / 1000))}
            at_ms = next(ms for ms in itertools.count(at_ms) if ms not in taken)
            rows, _ = self.store.write(  # no target: a taken identifier or a taken moment, either way nothing
                "INSERT INTO announcements (identifier, created_at, notes, priority, claimed_until)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING identifier",
                (identifier, at_ms / 1000, notes, priority, claimed_until))
            if rows:
                return at_ms / 1000
        raise StoreError(f"no free moment for announcement {identifier}")  # other processes took each one

    def claim(self, now: float, limit: int = 20) -> list[tuple[str, float, str]]:
        """(identifier, created_at, notes) of announcements to send now, the most urgent kind first, then the
        oldest, claimed for CLAIM_SECS so that no other process sends them meanwhile (the condition is checked
        again on the claimed row itself)."""
        due = "sent_at IS NULL AND dropped IS NULL AND (claimed_until IS NULL OR claimed_until < ?)"
        rows, _ = self.store.write(
            f"UPDATE announcements SET claimed_until = ?, attempts = attempts + 1 WHERE identifier IN"
            f" (SELECT identifier FROM announcements WHERE {due} ORDER BY priority, created_at, identifier LIMIT ?)"
            f" AND {due} RETURNING identifier, created_at, notes, priority", (now + self.CLAIM_SECS, now, limit, now))
        return [row[:3] for row in sorted(rows, key=lambda row: (row[3], row[1], row[0]))]

    def sent(self, identifier: str, now: float) -> None:
        self.store.write("UPDATE announcements SET sent_at = ? WHERE identifier = ?", (now, identifier))

    def retry_after(self, identifier: str, at: float, error: str | None = None) -> None:
        self.store.write("UPDATE announcements SET claimed_until = ?, last_error = COALESCE(?, last_error)"
                         " WHERE identifier = ?", (at, error and error[:300], identifier))

    def drop(self, identifier: str, reason: str) -> None:
        self.store.write("UPDATE announcements SET dropped = ? WHERE identifier = ?", (reason[:300], identifier))

    def prune(self, now: float) -> None:
        self.store.write("DELETE FROM alerts WHERE ended_at < ?", (now - self.KEEP_SECS,))
        for table in ("announcements", "pushes"):
            self.store.write(f"DELETE FROM {table} WHERE created_at < ?", (now - self.KEEP_SECS,))
        self.store.write("DELETE FROM alert_tests WHERE at < ?", (now - self.KEEP_SECS,))

    # the pushes: one row per tell and channel (ALERT_URLS), the same tell's identifier as its announcement's
    def queue_pushes(self, identifier: str, channels: list[str], created_at: float, notes: str, level: str,
                     priority: int = 0) -> None:
        """Queue one push of a tell to each channel (by its id), once: a tell queued again adds nothing."""
        for channel in channels:
            self.store.write("INSERT INTO pushes (identifier, channel, created_at, notes, level, priority)"
                             " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             (identifier, channel, created_at, notes, level, priority))

    def claim_pushes(self, now: float, channels: list[str], limit: int = 20) -> list[tuple[str, str, str, str]]:
        """(identifier, channel, notes, level) of pushes to send now to these channels, the most urgent kind first,
        then the oldest, claimed for CLAIM_SECS as announcements are (a channel no longer in ALERT_URLS: never)."""
        if not channels:
            return []
        due = (f"sent_at IS NULL AND dropped IS NULL AND (claimed_until IS NULL OR claimed_until < ?)"
               f" AND channel IN ({', '.join('?' * len(channels))})")
        rows, _ = self.store.write(
            f"UPDATE pushes SET claimed_until = ?, attempts = attempts + 1 WHERE (identifier, channel) IN"
            f" (SELECT identifier, channel FROM pushes WHERE {due} ORDER BY priority, created_at, identifier LIMIT ?)"
            f" AND {due} RETURNING identifier, channel, notes, level, priority, created_at",
            (now + self.CLAIM_SECS, now, *channels, limit, now, *channels))
        return [row[:4] for row in sorted(rows, key=lambda row: (row[4], row[5], row[0], row[1]))]

    def push_done(self, identifier: str, channel: str, now: float, state: str, reason: str = "",
                  retry_at: float | None = None) -> None:
        """Record a push's outcome: "sent", "refused" (kept, never tried again) or "waiting" (tried at retry_at)."""
        columns = {"sent": "sent_at = ?", "refused": "dropped = ?", "waiting": "claimed_until = ?"}[state]
        value = {"sent": now, "refused": reason[:300] or "refused", "waiting": retry_at}[state]
        self.store.write(f"UPDATE pushes SET {columns}, last_error = ? WHERE identifier = ? AND channel = ?",
                         (value, reason[:300] or None, identifier, channel))

    def push_fates(self, identifiers: list[str]) -> dict[str, dict[str, str]]:
        """{tell identifier: {channel id: what became of its push, in words}}."""
        fates: dict[str, dict[str, str]] = {}
        for first in range(0, len(identifiers), self.MARK_BATCH):
            batch = identifiers[first:first + self.MARK_BATCH]
            for identifier, channel, sent_at, dropped, last_error in self.store.read(
                    "SELECT identifier, channel, sent_at, dropped, last_error FROM pushes WHERE identifier IN"
                    f" ({', '.join('?' * len(batch))})", tuple(batch)):
                fates.setdefault(identifier, {})[channel] = "sent" if sent_at is not None else \
                    f"refused: {dropped}" if dropped else f"waiting: {last_error}" if last_error else "waiting"
        return fates

    def take_test_minute(self, now: float) -> float | None:
        """Take this minute for a test alert, for every process on the database: None once taken (send it), else
        the seconds until the next minute starts (another test was sent in this one)."""
        rows, _ = self.store.write("INSERT INTO alert_tests (minute, at) VALUES (?, ?) ON CONFLICT DO NOTHING"
                                   " RETURNING minute", (int(now // 60), now))
        return None if rows else 60 - now % 60


def _fate(sent_at: float | None, dropped: str | None, last_error: str | None, identifier: str | None) -> str:
    """What became of one announcement, in words for the page."""
    if identifier is None:
        return "not announced"
    if sent_at is not None:
        return "announced"
    if dropped:
        return f"refused by Nightscout: {dropped}"
    return f"waiting for Nightscout: {last_error}" if last_error else "waiting for Nightscout"
