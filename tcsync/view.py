"""The status page's built view: what GET / shows from the store, built by one background thread, never by a request.

A GET / takes the newest BuiltView and renders from it, reading nothing from the store. The builder looks every
TICK_SECS at what could change the page (an event received here or by another process, a run starting or
finishing, an alert, the store failing, the minute the page's ages count in) and builds a new view only when one of
them changed, at most every max(MIN_BUILD_SECS, COST_SHARE x its last build's time): a build never takes more than
a twentieth of a core, whatever the store holds. Why not a request: reading and drawing a day of 50 sensors took
0.1-0.45 s, and whichever request came after the old data expired paid for it (issue 28: p99 84 ms idle, 183 ms
in a POST storm, against a p50 of 4 ms).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable

from tcsync.alerts import AlertWatch
from tcsync.page import DAY_SECS, PageData, gather_page_data
from tcsync.settings import Settings
from tcsync.store import Store, StoreError
from tcsync.sync import Syncer

TICK_SECS = 0.5  # how often the builder looks for a change (cheap: in-memory values and two cached reads)
MIN_BUILD_SECS = 1.0  # builds at most this often while things keep changing (a storm of deliveries)
COST_SHARE = 20  # and at most every 20 x what the last build took: never more than a twentieth of a core
FRESH_WAIT_SECS = 5.0  # how long a page answering a button waits for a view that shows what the button did
ALERT_HISTORY_SECS = 7 * 86400  # ended alerts listed with the secret (/alerts, the status page)
RECENT_RUNS = 20  # runs the secret's view lists


@dataclasses.dataclass(frozen=True, eq=False)  # one view is equal only to itself: the page cache's key
class BuiltView:
    """What the status page shows from the store, read and drawn at one time by the builder."""

    built_at: float  # the App's clock when the build began: the page says how old it is once that is long
    tick: int  # the builder's look (ViewBuilder._loop) that built it: fresh() waits for a look begun after its call
    key: tuple  # what it was built from (ViewBuilder.changes): a different key means build again
    drawn: PageData
    recent_runs: list[dict] | None  # for the secret's view; None while the store fails
    alert_history: list | None  # the secret's 7 days of alerts with what each channel was told; None likewise


class ViewBuilder:
    """Builds BuiltViews in its own thread (started by the first GET / or by App.start) and hands out the newest."""

    def __init__(self, settings: Settings, store: Store, syncer: Syncer, alerts: AlertWatch, tz: dt.tzinfo,
                 clock: Callable[[], float]):
        self.settings, self.store, self.syncer, self.alerts, self.tz, self.clock = \
            settings, store, syncer, alerts, tz, clock
        self._view: BuiltView | None = None
        self.confirmed_at = 0.0  # the App's clock when the newest view was last found current (its key unchanged)
        # (events in the last 24 h, the newest's arrival) as last read, every tick: the count alone changes the page's
        # footer, not what the builder draws (events of a day ago leave the count every few seconds)
        self.events: tuple[int, float | None] | str | None = None
        self._built = threading.Condition()  # notified at every new view
        self._wake = threading.Event()
        self._failure: Exception | None = None  # the last build's error, until one succeeds
        # A page answering a button waits for a view of a look begun after the press (all it reads is read after it):
        # such a look builds at once, ignoring the pause between builds, and draws again.
        self._wanted_tick = 0
        self._next_at = 0.0  # time.monotonic() before which no build starts (unless hurried)
        self._ticks = 0  # the builder's looks begun
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the builder thread once (App.start, or the first GET /)."""
        with self._built:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._loop, name="page-view", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def newest(self) -> BuiltView:
        """The newest view, at once; only the first request after a start waits for the first view (and gets the
        error of a first build that failed: the error boundary answers 500 and logs it)."""
        view = self._view
        if view is not None:
            return view
        self.start()
        with self._built:
            self._built.wait_for(lambda: self._view is not None or self._failure is not None or self._stopped)
        if self._view is None and self._failure is not None:
            raise self._failure
        return self._view or self._build_now()

    def fresh(self) -> BuiltView:
        """A view whose build began after this call, for a page answering a button or the secret form (a person,
        not a monitor): what the button did shows. Waits at most FRESH_WAIT_SECS, then gives the newest."""
        self.start()
        with self._built:
            wanted = self._wanted_tick = self._ticks + 1
            self._wake.set()
            self._built.wait_for(lambda: (self._view is not None and self._view.tick >= wanted) or self._stopped,
                                 FRESH_WAIT_SECS)
        return self.newest()

    def changes(self) -> tuple:
        """What the page shows that can change, cheaply: runs of other processes (Syncer.refresh) and the events'
        count are read at most every SHARED_STATE_SECS (the store caches the count until a delivery here); the
        alerts' rows and what each channel was told change with the store's writes (another process's: within the
        minute)."""
        self.syncer.refresh()
        syncer = self.syncer
        try:  # the newest runs, checks too, of every process: a run of another one starting or ending (cheap: by id)
            recent_runs = self.store.runs(RECENT_RUNS)
        except StoreError:
            recent_runs = None
        self.events = self.event_summary(self.clock())
        newest = self.events[1] if isinstance(self.events, tuple) else self.events  # a delivery here or elsewhere
        # (what the drawing shows: readings, runs, open alerts, the minute), (what the secret's lists show): the
        # alerts' writes (an announcement claimed, sent) need no drawing again
        return (((newest, self.store.added), recent_runs, syncer.current, syncer.last_run,
                 tuple(self.alerts.open_alerts()), self.store.failure, int(self.clock() // 60)),
                (recent_runs, self.store.writes, self.store.failure))

    def event_summary(self, now: float) -> tuple[int, float | None] | str | None:
        """(events in the last 24 h, the newest one's arrival), None with the receiver off, "unknown" if the store
        fails."""
        if not self.settings.dt_secrets:
            return None
        try:
            return self.store.event_summary(now - DAY_SECS)
        except StoreError:
            return "unknown"

    def _loop(self) -> None:
        while not self._stopped and not self.store.closed:
            try:
                with self._built:
                    self._ticks += 1
                    tick, view = self._ticks, self._view
                    hurried = view is not None and self._wanted_tick > view.tick  # a page waits (fresh())
                key, now = self.changes(), self.clock()  # read after the tick: a waiting page's press is in it
                if view is None or hurried or (key != view.key and time.monotonic() >= self._next_at):
                    # hurried: all again (a check, which no key shows, may have finished); else what changed
                    drawn = view.drawn if view and not hurried and key[0] == view.key[0] else None
                    self._publish(self._build(key, tick, drawn))
                elif key == view.key:
                    self.confirmed_at = now
            except Exception as e:  # the page keeps the last view; the next tick tries again
                self._fail(e)
            self._wake.wait(TICK_SECS)
            self._wake.clear()
        with self._built:
            self._built.notify_all()

    def _build_now(self) -> BuiltView:
        """A view built in the caller's thread: only when the builder has stopped (the service is shutting down)."""
        return self._build(self.changes(), self._ticks)

    def _build(self, key: tuple, tick: int, drawn: PageData | None = None) -> BuiltView:
        """A view of key (changes() in look tick): the drawing given is kept (its part of the key is the same), else
        drawn."""
        t0, now = time.perf_counter(), self.clock()
        drawn = drawn or gather_page_data(self.store, now, self.tz, self.settings.temperature_range,
                                          bool(self.settings.dt_secrets), self.alerts.open_alerts())
        try:
            alert_history = self.alerts.book.recent(now - ALERT_HISTORY_SECS,
                                                    {c.id: c.label for c in self.alerts.channels})
        except StoreError:
            alert_history = None
        self._next_at = time.monotonic() + max(MIN_BUILD_SECS, COST_SHARE * (time.perf_counter() - t0))
        # the runs as changes() read them; None while the database fails (the page says they are not shown)
        return BuiltView(now, tick, key, drawn, key[0][1], alert_history)

    def _fail(self, error: Exception) -> None:
        """Logged once while it repeats (the builder tries again every tick); a request waiting for a first view
        gets it."""
        if repr(error) != repr(self._failure):
            self.alerts.log("error", event="page.build_failed", error=f"{type(error).__name__}: {error}"[:300])
        with self._built:
            self._failure = error
            self._built.notify_all()

    def _publish(self, view: BuiltView) -> None:
        with self._built:
            self._view, self.confirmed_at, self._failure = view, view.built_at, None
            self._built.notify_all()
