"""Alerts: a fridge out of range, a silent sensor, a low battery or failing syncs, told where caregivers look.

Each condition is judged from what the store holds, by the events' own times in event-time order: the newest
readings decide, so a late redelivery of an old reading neither opens nor closes what newer readings contradict.
An alert is a row with a start and an end; each start and end queues one Nightscout announcement (a treatment with
eventType Announcement and isAnnouncement, which Nightscout pushes through its Pushover setting) in the store's
outbox, sent by the watch's sender thread, with the same identifier and created_at on every try. How Nightscout
replaces a treatment sent again depends on its version (lib/server/treatments.js): up to 15.0.6, by created_at
and eventType, whatever the identifier; from 15.0.7, by identifier first. So each announcement gets a created_at,
to the millisecond, that no other of ours holds (a unique index): on either rule a re-send after a lost answer
replaces only itself, and two announcements of one moment (two alerts ending at one reading) both stay.
Identifiers come from what the alert is (kind, device, when it began), so two processes on one database open,
close and announce each alert once between them. Judging and sending are separate threads: a Nightscout that
answers slowly holds only the sender, and each call ends by its deadline (outbound.py). Each tell also goes to each
channel of ALERT_URLS (pushes.py), by a third thread, with the same identifier and notes; telling happens whenever
there is somewhere to tell, Nightscout or a channel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import threading
import time
import zoneinfo
from collections.abc import Callable

from tcsync.alertbook import PRIORITY, Alert, AlertBook, Untold, identifier_of
from tcsync.channels import channels_of
from tcsync.log import Log
from tcsync.notes import end_notes, group_notes, start_notes
from tcsync.outbound import NightscoutProblem, Redirected
from tcsync.pushes import PushSender, send_test_alert
from tcsync.readings import iso
from tcsync.settings import Settings, parse_range
from tcsync.store import Store, StoreError
from tcsync.sync import Syncer

KINDS = ("out_of_range", "silent", "battery_low", "sync_failing")
BATTERY_LOW = 10  # % at or below which a sensor's battery is an alert
BATTERY_OK = 20  # % at or above which it ends (between the two nothing changes: no flapping)
LOOK_BACK_SECS = 2 * 86400  # readings judged when no alert is open: the last two days
ENTERED_BY = "tcsync_wsgi"
HANDFUL = 5  # more alerts of one kind than this told in one check become one announcement naming them
SERIES_OF = {"out_of_range": "temperature", "battery_low": "batteryStatus"}  # alerts judged from readings


# -- judging readings: points are (event time, value), oldest first

def trailing(points: list[tuple[float, float]], bad: Callable[[float], bool]) -> list[tuple[float, float]]:
    """The newest points that are all bad, oldest first ([] if the newest is fine)."""
    start = len(points)
    while start and bad(points[start - 1][1]):
        start -= 1
    return points[start:]


def onset(points: list[tuple[float, float]], bad: Callable[[float], bool],
          delay_secs: float) -> tuple[float, float, float] | None:
    """(since, started_at, newest value) when the newest points have been bad for delay_secs by their own times:
    since is the first bad point of the run, started_at the point at which the run became delay_secs long."""
    run = trailing(points, bad)
    if not run:
        return None
    since = run[0][0]
    started_at = next((at for at, _ in run if at - since >= delay_secs), None)
    return None if started_at is None else (since, started_at, run[-1][1])


def recovery(points: list[tuple[float, float]], still_bad: Callable[[float], bool],
             since: float) -> tuple[float, float] | None:
    """The first point after the last still-bad one since the alert began, if the newest point is fine; else None."""
    after = [point for point in points if point[0] >= since]
    if not after or still_bad(after[-1][1]):
        return None
    last_bad = max((at for at, value in after if still_bad(value)), default=-math.inf)
    return next(point for point in after if point[0] > last_bad)


def outside(band: tuple[float, float]) -> Callable[[float], bool]:
    return lambda value: not band[0] <= value <= band[1]


def range_of(labels: dict, is_humidity_sensor: bool, default: tuple[float, float] | None
             ) -> tuple[tuple[float, float] | None, str | None]:
    """(the device's temperature range, a problem with its label): its temperature_range label wins;
    DT_TEMPERATURE_RANGE applies to temperature sensors only (a humidity sensor's room is no fridge)."""
    label = labels.get("temperature_range")
    if label is not None:
        try:
            return parse_range(str(label)), None
        except ValueError:
            return (None if is_humidity_sensor else default), f"temperature_range {str(label)[:40]!r} is not LOW..HIGH"
    return (None if is_humidity_sensor else default), None


# -- the watch: judging, after each delivery and once a minute, and sending

class AlertWatch:
    """Keeps the alert rows true to the store's readings and runs, and sends their announcements."""

    CHECK_SECS = 60  # the minute check: silences, failing syncs, and what other processes received
    RETRY_SECS = 30  # an announcement that could not go is tried again this much later
    PROBE_SECS = 3600  # the site's version is asked again this often
    PRUNE_SECS = 3600

    def __init__(self, settings: Settings, store: Store, syncer: Syncer, log: Log,
                 clock: Callable[[], float] = time.time, timer_on: bool = False):
        self.settings, self.store, self.syncer, self.log, self.clock = settings, store, syncer, log, clock
        self.timer_on = timer_on  # syncs are expected (the sync timer runs): their failing is an alert
        self.book = AlertBook(store)
        # the pump's zone for the announcements' words; UTC while none is named (the page says so too)
        self.tz = zoneinfo.ZoneInfo(settings.timezone_name) if settings.timezone_name else dt.UTC
        self.announces = bool(settings.ns_alerts and settings.ns_url and settings.ns_secret)
        self.channels = channels_of(settings.alert_urls)  # Apprise is imported only if there are any
        self.pushes = PushSender(self.channels, self.book, log, clock)
        self.tells = self.announces or bool(self.channels)  # somewhere to tell: else alerts wait untold
        self._open: dict[tuple[str, str | None], Alert] = {}  # by (kind, device), as this process last read it
        self._judging = threading.Lock()  # one judge at a time in this process
        self._open_devices: set[str | None] = set()
        self.back_at = clock()  # silences count from here at the earliest: the service was away before
        self._store_was_away = False
        self._wake = threading.Event()
        self._wake_pushes = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pruned_at = 0.0
        try:
            self._reload()
        except StoreError:
            pass  # the minute check reads them again

    def open_alerts(self) -> list[Alert]:
        """The alerts open now, as this process last read or judged them (at most CHECK_SECS old), the most urgent
        kind first."""
        return sorted(self._open.values(), key=lambda alert: (PRIORITY[alert.kind], alert.started_at))

    def _reload(self) -> None:
        self._open = {(alert.kind, alert.device): alert for alert in self.book.open_alerts()}
        self._open_devices = {device for _, device in self._open}

    # judging
    def after_delivery(self, device: str | None, labels: dict, readings: list[tuple[str, object, str | None]],
                       event_type: str) -> None:
        """Judge the delivery's device if this reading could change an alert: it is outside its range or low, or
        an alert of the device is open. Most deliveries are fine readings of a fine device: they cost nothing."""
        if device is None:
            return
        values = dict((kind, value) for kind, value, _ in readings)
        band, _ = range_of(labels, event_type == "humidity", self.settings.temperature_range)
        worth_it = device in self._open_devices or (
            band is not None and "temperature" in values and outside(band)(values["temperature"])) or (
            "batteryStatus" in values and values["batteryStatus"] < BATTERY_OK)
        if worth_it:
            with self._judging:
                now = self.clock()
                self._judge_device(device, now)
                self._tell(now, device)
            self._wake_senders()

    def check(self) -> None:
        """Judge every device and the syncs, then send what waits (as the two threads do; tests call it directly)."""
        self.judge()
        self.send_pending()
        self.pushes.send_pending()

    def judge(self) -> None:
        """Judge every device and the syncs, and tell what changed (the minute check)."""
        with self._judging:
            now = self.clock()
            self._reload()
            if self._store_was_away:  # silences count from now: the sensors are not to blame for our absence
                self.back_at, self._store_was_away = now, False
            for sensor in self.store.sensors(now):
                self._judge_device(sensor["device"], now, sensor)
            self._judge_syncs(now)
            self._tell(now)
            if now - self._pruned_at > self.PRUNE_SECS:
                self.book.prune(now)
                self._pruned_at = now

    def _judge_device(self, device: str, now: float, sensor: dict | None = None) -> None:
        sensor = sensor or next(iter(self.store.sensors(now, device)), None)
        if sensor is None:
            return
        name = sensor["name"] or device
        labels = self.store.latest_labels(device)
        band, _ = range_of(labels, "humidity" in sensor["readings"], self.settings.temperature_range)
        if band is not None:
            self._judge_points("out_of_range", device, name, "temperature", now, outside(band), outside(band),
                               self.settings.alert_after_mins * 60, band)
        self._judge_points("battery_low", device, name, "batteryStatus", now, lambda v: v <= BATTERY_LOW,
                           lambda v: v < BATTERY_OK, 0, None)
        newest = sensor["last_event_at"]
        self._judge_silence(device, name, dt.datetime.fromisoformat(newest).timestamp() if newest else None, now)

    def _judge_points(self, kind: str, device: str, name: str, series_kind: str, now: float,
                      bad: Callable[[float], bool], still_bad: Callable[[float], bool], delay_secs: float,
                      band: tuple[float, float] | None) -> None:
        current = self._open.get((kind, device))
        since = current.since if current else now - LOOK_BACK_SECS
        points = self.store.series(device, series_kind, since, now)  # none from the future
        if current is not None:
            back = recovery(points, still_bad, current.since)
            if back is not None:
                self._close(dataclasses.replace(current, ended_at=back[0], end_value=back[1]))
            return
        found = onset(points, bad, delay_secs)
        if found is None:
            return
        first, started_at, value = found
        detail = "" if band is None else (f"above {band[1]:g} °C" if value > band[1] else f"below {band[0]:g} °C")
        self._start(Alert(identifier_of(kind, device, first), kind, device, name, first, started_at, value,
                          "°C" if band else "%", detail))

    def _judge_silence(self, device: str, name: str, newest: float | None, now: float) -> None:
        """Silent while the newest event is older than SENSOR_SILENT_MINS, counted from when this service was back if
        that is later; over only at an event newer than that: a backlog of old events, in any order, neither ends a
        silence nor starts a second one."""
        silent_secs = self.settings.sensor_silent_mins * 60
        current = self._open.get(("silent", device))
        if current is not None:
            if newest is not None and newest > now - silent_secs:
                self._close(dataclasses.replace(current, ended_at=newest))
            return
        if newest is not None and now - max(newest, self.back_at) >= silent_secs:
            self._start(Alert(identifier_of("silent", device, newest), "silent", device, name, newest,
                              max(newest, self.back_at) + silent_secs))

    def _judge_syncs(self, now: float) -> None:
        status, last_ok, since = self.syncer.health(now, self.timer_on)
        current = self._open.get(("sync_failing", None))
        if current is not None:
            if last_ok is not None and last_ok > current.since:
                self._close(dataclasses.replace(current, ended_at=last_ok))
            return
        if status == "stale":
            error = (self.syncer.last_run or {}).get("error") or ""
            # one identity across processes: the shared last success, not this process's start
            self._start(Alert(identifier_of("sync_failing", None, last_ok), "sync_failing", None, None, since,
                              since + self.settings.stale_mins * 60, detail=error[:200]))

    def _start(self, alert: Alert) -> None:
        """Open an alert, or, if the same kind ended for this device within ALERT_REPEAT_MINS, its episode again."""
        previous = self.book.latest(alert.kind, alert.device)
        if previous is not None and previous.ended_at is not None and \
                alert.started_at - previous.ended_at <= self.settings.alert_repeat_mins * 60:
            if self.book.reopen(previous.identifier, alert.started_at):
                self.log("warn", event="alert.reopened", kind=alert.kind, device=alert.device,
                         since=iso(previous.since))
            self._remember(dataclasses.replace(previous, ended_at=None, end_value=None))
        elif self.book.open(alert):
            self.log("warn", event="alert.started", kind=alert.kind, device=alert.device, since=iso(alert.since))
            self._remember(alert)
        else:  # another process recorded it first, and it may have ended since: read what is open
            self._reload()

    def _remember(self, alert: Alert) -> None:
        self._open[(alert.kind, alert.device)] = alert
        self._open_devices.add(alert.device)

    def _close(self, alert: Alert) -> None:
        if self.book.close(alert):
            self.log(event="alert.ended", kind=alert.kind, device=alert.device, ended_at=iso(alert.ended_at))
        self._open.pop((alert.kind, alert.device), None)
        self._open_devices = {device for _, device in self._open}

    # telling: at most one start and one end per device and kind in ALERT_REPEAT_MINS; many at once in one note
    def _tell(self, now: float, device: str | None = None) -> None:
        """Queue the announcements now due (of one device, or, in the minute check, all, grouped by kind)."""
        if not self.tells:
            return
        due: dict[tuple[str, str], list[tuple[Untold, float]]] = {}
        for untold in self.book.untold(device):
            phase, at = self._due(untold, now)
            if phase:
                due.setdefault((untold.alert.kind, phase), []).append((untold, at))
        for (kind, phase), members in sorted(due.items(), key=lambda item: PRIORITY[item[0][0]]):
            if len(members) > HANDFUL:
                self._tell_group(kind, phase, members, now)
            else:
                for untold, at in members:
                    self._tell_one(untold, phase, at, now)

    def _due(self, untold: Untold, now: float) -> tuple[str | None, float]:
        """("start" | "end", the moment it is told) if its family should hear it now; (None, 0) if not yet."""
        alert, repeat = untold.alert, self.settings.alert_repeat_mins * 60
        if alert.ended_at is None:
            phase, moment, last = "start", alert.started_at if untold.told is None else untold.reopened_at, \
                untold.told_start_at
        else:
            phase, moment, last = "end", self._settled(alert, now), untold.told_end_at
        if moment is None:
            return None, 0.0
        if last is None or moment >= last + repeat:  # (a sensor's clock may run a little ahead of ours)
            return phase, moment
        return (phase, last + repeat) if now >= last + repeat else (None, 0.0)  # told once in this time already

    def _settled(self, alert: Alert, now: float) -> float | None:
        """When an ended alert's end may be told: a reading's end once the readings have stayed fine for
        ALERT_AFTER_MINS (the moment of the first reading that long after), a silence's or the syncs' at once."""
        hold = self.settings.alert_after_mins * 60
        if alert.kind not in SERIES_OF or hold <= 0:
            return alert.ended_at
        later = self.store.series(alert.device, SERIES_OF[alert.kind], alert.ended_at + hold, now)
        return later[0][0] if later else None

    def _tell_one(self, untold: Untold, phase: str, at: float, now: float) -> None:
        alert = untold.alert
        notes = start_notes(alert, self.tz, now=now) if phase == "start" else end_notes(alert, self.tz, now=now)
        first_time = (untold.told_start_at if phase == "start" else untold.told_end_at) is None
        identifier = f"{alert.identifier}-{phase}" + ("" if first_time else f"-{round(at * 1000)}")
        self._queue(identifier, at, notes, alert.kind, phase)
        self.book.mark_told([alert.identifier], phase, identifier, at, untold.told)

    def _tell_group(self, kind: str, phase: str, members: list[tuple[Untold, float]], now: float) -> None:
        """One announcement for many alerts of one kind told in one check ("30 sensors silent since 14:05: ...")."""
        alerts = sorted((untold.alert for untold, _ in members), key=lambda a: ((a.name or "").lower(), a.device))
        at = max(at for _, at in members)
        key = json.dumps([kind, phase, sorted(a.identifier for a in alerts)])
        identifier = f"tcsync-group-{hashlib.sha256(key.encode()).hexdigest()[:24]}-{phase}"
        self._queue(identifier, at, group_notes(kind, phase, alerts, self.tz, now), kind, phase)
        for was in {untold.told for untold, _ in members}:
            self.book.mark_told([u.alert.identifier for u, _ in members if u.told == was], phase, identifier, at, was)

    def _queue(self, identifier: str, at: float, notes: str, kind: str, phase: str) -> None:
        """One tell: an announcement for Nightscout (if it is told) and a push for each channel, one identifier."""
        if self.announces:
            self.book.queue(identifier, at, notes, PRIORITY[kind])
        if self.channels:  # a start as a warning, an end as info, for the channels that have levels
            self.book.queue_pushes(identifier, [c.id for c in self.channels], at, notes,
                                   "warning" if phase == "start" else "info", PRIORITY[kind])

    def send_test(self) -> list[str]:
        """The test alert (pushes.send_test_alert): a line per channel; raises pushes.TooSoon within a minute."""
        return send_test_alert(self.settings, self.channels, self.book, self.syncer, self.log, self.clock())

    # sending
    def send_pending(self) -> int:
        """Send the announcements that wait, oldest first; how many Nightscout stored. After a failure that is not
        the announcement's own (Nightscout down, slow, or a setting wrong) the rest wait for the next round."""
        if not self.announces:
            return 0
        sent = 0
        claimed = self.book.claim(self.clock())
        for position, (identifier, created_at, notes) in enumerate(claimed):
            treatment = {"eventType": "Announcement", "isAnnouncement": True, "notes": notes,
                         "enteredBy": ENTERED_BY, "created_at": iso(created_at, "milliseconds"),
                         "identifier": identifier}
            try:
                self.syncer.upload_treatment(treatment)
            except Exception as e:  # whatever stopped it: drop it if refused for good, else keep it for later
                if not self._failed(identifier, e):
                    for later, _, _ in claimed[position + 1:]:
                        self.book.retry_after(later, self.clock() + self.RETRY_SECS)
                    break
                continue
            self.book.sent(identifier, self.clock())
            self.syncer.nightscout_said(problem=None)
            self.log(event="alert.announced", identifier=identifier)
            sent += 1
        return sent

    def _failed(self, identifier: str, error: Exception) -> bool:
        """Record a failed send; True if it was the announcement's own (dropped: the next one may go)."""
        reason = self.syncer.describe(error, f"{self.syncer.ANNOUNCE_SECS:g} s")
        if isinstance(error, NightscoutProblem) and error.final:
            self.book.drop(identifier, reason)
            self.log("error", event="alert.refused", identifier=identifier, error=reason)
            return True
        settings = isinstance(error, Redirected) or getattr(error, "settings", False)
        self.log("error" if settings else "warn", event="alert.not_sent", identifier=identifier, error=reason)
        self.book.retry_after(identifier, self.clock() + self.RETRY_SECS, reason)
        if settings:  # the page names the setting to fix, as Check login does
            self.syncer.nightscout_said(problem=reason)
        return False

    # the threads: one judges every minute, one sends to Nightscout, one to the channels (a slow Nightscout or a
    # stuck channel holds only its own sender)
    def start(self) -> None:
        loops = [(self._judge_loop, "alert-watch"), (self._send_loop, "alert-sender")]
        if self.channels:
            loops.append((self._push_loop, "alert-pusher"))
        self._threads = [threading.Thread(target=target, name=name, daemon=True) for target, name in loops]
        for thread in self._threads:
            thread.start()

    def _wake_senders(self) -> None:
        self._wake.set()
        self._wake_pushes.set()

    def _judge_loop(self) -> None:
        while not self._stopped.is_set():
            self._guarded(self.judge)
            self._wake_senders()  # what the check queued goes out now
            self._stopped.wait(self.CHECK_SECS)

    def _send_loop(self) -> None:
        next_probe = 0.0
        while not self._stopped.is_set():
            if self.announces and time.monotonic() >= next_probe:  # the site's version (or problem), for the page
                next_probe = time.monotonic() + self.PROBE_SECS
                self.syncer.probe_nightscout()
            self._guarded(self.send_pending)
            self._wake.wait(self.RETRY_SECS)  # woken by a delivery or a check that queued one
            self._wake.clear()

    def _push_loop(self) -> None:
        while not self._stopped.is_set():
            self._guarded(self.pushes.send_pending)
            self._wake_pushes.wait(self.pushes.RETRY_SECS)
            self._wake_pushes.clear()

    def _guarded(self, work: Callable[[], object]) -> None:
        try:
            work()
        except StoreError as e:  # the database is away: the next round tries again
            self._store_was_away = True
            self.log("error", event="alert.check_failed", error=str(e)[:200])

    def stop(self) -> None:
        self._stopped.set()
        self._wake_senders()

    def finish(self, deadline: float) -> None:
        """Stop, and wait until deadline (monotonic) for each thread to end what it was doing before the store
        closes: an announcement or push that went out is then marked sent (else it would be sent again after the
        next start) and logged."""
        self.stop()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
