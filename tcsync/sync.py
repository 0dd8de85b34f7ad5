"""Sync: one run at a time, one pair of tconnectsync clients for the life of the process, and the timer.

tconnectsync is imported at the first run, after our own settings checks (it exits the process on bad ones); its
HTTP calls are bounded by the run's deadline, and its log lines are redacted and kept with the run that made them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import os
import re
import sys
import threading
import time
import zoneinfo
from collections.abc import Callable

from tcsync.log import Log
from tcsync import outbound
from tcsync.outbound import NightscoutProblem, Redirected, host_of
from tcsync.readings import iso
from tcsync.settings import Settings
from tcsync.store import SHARED_STATE_SECS, Store, StoreError, run_json


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


BUSY = "a sync is already running"
CREDENTIALS_REFUSED = ("Tandem Source refused the credentials (HTTP 401): check TCONNECT_EMAIL, TCONNECT_PASSWORD and "
                       "TCONNECT_REGION")  # a wrong region gets the same 401
CREDENTIALS_PAUSE_SECS = 6 * 3600  # every login attempt counts toward Tandem's account lockout
PAUSED = "paused until"  # how the reason a paused sync did not start begins
# What the pause holds: what starts unasked, the timer and a monitor's /run ping (every 5 minutes: 288 failed logins a
# day, the road to a locked account). A person's Sync now, /update, a login check or the CLI still try at once.
PAUSE_HOLDS = ("timer", "run")


SIDES = ("Tandem Source", "Nightscout")
REASON_CHARS = 500  # a reason kept with a run: cut, if it must be, between words

# What the network lacks, in words, from what the socket layer said (as requests and urllib3 quote it); the first that
# matches (urllib3's "Failed to resolve" quotes the socket's reason, which says more)
NO_DNS = "its name does not resolve: this machine has no working DNS"
NETWORK_REASONS = (
    (("Temporary failure in name resolution", "[Errno -3]"), NO_DNS),
    (("Name or service not known", "nodename nor servname", "[Errno -2]", "[Errno -5]"),
     "no DNS server knows its name: check the spelling"),
    (("Failed to resolve", "NameResolutionError", "getaddrinfo failed"), "its name does not resolve"),
    (("Connection refused", "[Errno 111]"), "it refused the connection: nothing answers on that port"),
    (("Network is unreachable", "[Errno 101]", "No route to host", "[Errno 113]"),
     "no route to it: this machine's network is down"),
)


def network_reason(text: str) -> str | None:
    """What the network is missing when text (an exception, as printed) says a name did not resolve or a connection
    was refused, named plainly; None otherwise."""
    return next((reason for signs, reason in NETWORK_REASONS if any(sign in text for sign in signs)), None)


def clip(text: str, limit: int = REASON_CHARS) -> str:
    """text, or its words that fit within limit with "…" after them: never a word cut in two."""
    if len(text) <= limit:
        return text
    return text[:limit].rpartition(" ")[0].rstrip(" ,;:") + " …"


def check_verdict(output: str, sides: tuple[str, ...] = SIDES) -> str:
    """What tconnectsync's login check found wrong on these sides, in one line ("" if nothing): each side's
    exception, as its output ends it ('Tandem Source: ApiException: Error sending POST to login_api_url: ...')."""
    found = []
    for side, marker in (("Tandem Source", "Error occurred querying Tandem Source:"),
                         ("Nightscout", "Error occurred querying Nightscout API:")):
        if side not in sides or marker not in output:
            continue
        traceback = output.partition(marker)[2].partition("\n-----")[0]  # its last unindented line: the exception
        lines = [line for line in traceback.splitlines() if line.strip() and not line.startswith(" ")]
        name, colon, message = (lines[-1] if lines else "an error").partition(": ")
        host, plain = re.search(r"host='([^']+)'", message), network_reason(message)
        if plain:  # the words the network's problem deserves, not urllib3's nested reprs
            found.append(f"{side}: could not reach {host.group(1) if host else side}: {plain}")
        else:
            found.append(f"{side}: {name.rpartition('.')[2]}{colon}{message}")
    return "; ".join(found)


CHECK_FILE_NOTE = "Created file tconnectsync-check-output.log"  # where tconnectsync's closing advice starts
CHECK_HELP = ("What each problem means and what to do: Troubleshooting, docs/troubleshooting.md in tcsync_wsgi "
              "(this service deletes tconnectsync-check-output.log: it holds names and pump serials).\n")


def drop_upload_advice(log: list[str]) -> None:
    """Replace check_login's closing advice (upload its debug file to tconnectsync's tracker: the service deletes that
    file, and problems with this service belong to its own Troubleshooting) with a pointer to our Troubleshooting."""
    cut = next((i for i, text in enumerate(log) if CHECK_FILE_NOTE in text), None)
    if cut is not None:
        del log[cut:]
        log.append(CHECK_HELP)


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
        self._clients_lock = threading.Lock()  # tconnectsync's import and the clients: set up once, by one thread
        self.nightscout: dict = {"version": None, "problem": None}  # what the site last said (probe_nightscout)

    # starting and waiting
    def start(self, trigger: str, kind: str = "sync", days: int = 1, pretend: bool = False,
              features: tuple[str, ...] | None = None, by_person: bool = False) -> tuple[Run | None, str | None]:
        """Start a run in the background: (new run, None); (running run, BUSY), its run None if another
        process runs it; or (None, why not). by_person: the page's Sync now, which a credential pause lets through."""
        with self._lock:
            if self.closed:
                return None, "the service is shutting down"
            if self.settings.missing:
                return None, "missing settings: " + ", ".join(self.settings.missing)
            if self.current:
                return self.current, BUSY
            now = self.clock()
            if trigger in PAUSE_HOLDS and not by_person and self.paused_until and now < self.paused_until:
                return None, (f"{PAUSED} {iso(self.paused_until)}: {CREDENTIALS_REFUSED}. Timed syncs and /run wait "
                              "until then; once the credentials are right, press Sync now on the status page opened "
                              "with the secret, call /update, or restart the service")
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

    def health(self, now: float, timer_on: bool) -> tuple[str, float | None, float]:
        """("ok" | "stale" | "idle", last success, since when syncs have not worked): stale once no sync succeeded
        for stale_mins while syncs are expected (a timer, or runs that happened). /healthz's 503, and an alert."""
        last_ok = self.last_success_at
        expected = timer_on or self.last_run is not None
        since = last_ok if last_ok is not None else self.started_at
        if expected and now - since > self.settings.stale_mins * 60:
            return "stale", last_ok, since
        return ("ok" if last_ok is not None else "idle"), last_ok, since

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
        t0 = time.perf_counter()
        try:
            with outbound.deadline(self.settings.sync_timeout_secs):  # every call to Tandem and Nightscout, together
                work(*args)
            run.outcome = run.outcome if run.outcome != "running" else "ok"
        except BaseException as e:  # a run ends as failed, whatever tconnectsync raised
            run.outcome, run.error = "failed", self.describe(e)
            if run.error == CREDENTIALS_REFUSED and run.trigger != "check":
                self.paused_until = self.clock() + CREDENTIALS_PAUSE_SECS
                self.log("warn", event="timer.paused", until=iso(self.paused_until), reason=run.error)
        finally:
            self._captures.by_thread.pop(thread_id, None)
            run.finished_at = self.clock()
            if run.trigger != "check":  # a login check is no sync: its verdict shows beside its button, nothing more
                self._count_sync(run)
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

    def _count_sync(self, run: Run) -> None:
        """What a finished sync changes: the back-off's count, the last success, the badge's last run."""
        self.consecutive_failures = 0 if run.outcome == "ok" else self.consecutive_failures + 1
        if run.outcome == "ok":
            self.last_success_at, self.paused_until = run.finished_at, None
        self.last_run = run.as_json()

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
        drop_upload_advice(run.log)
        output = "".join(run.log)
        run.log.append(self.probe_nightscout() + "\n")  # its version, or the problem, in our own words
        ns_problem = self.nightscout["problem"]
        if "No API errors returned!" not in output or ns_problem:
            found = [check_verdict(output, ("Tandem Source",) if ns_problem else SIDES),
                     f"Nightscout: {ns_problem}" if ns_problem else ""]
            verdict = "; ".join(part for part in found if part) or "see its output"
            run.outcome, run.error = "failed", clip(f"the login check found errors: {verdict}")

    def _tconnectsync(self):
        """Import tconnectsync once, after our own checks, and bound its HTTP calls (a run and the alert watch may
        both ask first: one imports, the other waits for it)."""
        with self._clients_lock:
            return self._tc or self._set_up_tconnectsync()

    def _set_up_tconnectsync(self):
        os.environ.setdefault("CACHE_CREDENTIALS", "false")
        tc = self._import_tconnectsync()
        # check_login reads these from tconnectsync.secret; make them ours.
        s = self.settings
        tc.secret.TCONNECT_EMAIL, tc.secret.TCONNECT_PASSWORD = s.tconnect_email, s.tconnect_password
        tc.secret.NS_URL, tc.secret.NS_SECRET = s.ns_url, s.ns_secret
        import urllib3.connection  # what requests sends through (tconnectsync's dependency, as requests is)

        outbound.guard_requests(tc.requests, urllib3.connection)
        logger = logging.getLogger("tconnectsync")
        logger.setLevel(logging.INFO)  # DEBUG would log tokens
        logger.propagate = False
        for old in [h for h in logger.handlers if isinstance(h, _TconnectsyncLogHandler)]:
            logger.removeHandler(old)  # one service per process; in tests, the newest one
        logger.addHandler(_TconnectsyncLogHandler(self.log, self._captures))
        self._tc = tc
        return tc

    def _import_tconnectsync(self) -> argparse.Namespace:
        """tconnectsync's parts. It reads its own settings as it is imported (also from a .env file, which we do not
        check) and prints and exits on a bad one: what it prints goes to this run's log and, as one line, to ours,
        before the run's line; a refusal becomes the run's error, in its words."""
        lines = self._captures.by_thread.get(threading.get_ident(), [])
        start, refused = len(lines), None
        real_stdout, sys.stdout = sys.stdout, _ThreadStdout(sys.stdout, self._captures)
        try:
            import requests
            from tconnectsync import secret
            from tconnectsync.api import TConnectApi
            from tconnectsync.check import check_login
            from tconnectsync.nightscout import NightscoutApi
            from tconnectsync.sync.tandemsource.heroku_helpers import run_oneshot

            tc = argparse.Namespace(requests=requests, secret=secret, TConnectApi=TConnectApi,
                                    NightscoutApi=NightscoutApi, check_login=check_login, run_oneshot=run_oneshot)
        except SystemExit as e:
            refused = e
        finally:
            sys.stdout = real_stdout
        said = "; ".join(line.strip().removeprefix("Error: ") for line in "".join(lines[start:]).splitlines()
                         if line.strip())
        if said:
            self.log("error" if refused else "info", event="tconnectsync.import", said=said)
        if refused:
            raise RuntimeError(f"tconnectsync refused its settings at import: {said or f'exit {refused.code}'}")
        return tc

    def _get_clients(self):
        # One pair for the life of the process: Tandem sees one login per token lifetime.
        with self._clients_lock:  # the alert watch asks too, from its own thread
            if self._clients is None:
                s, tc = self.settings, self._tc
                self._clients = (tc.TConnectApi(s.tconnect_email, s.tconnect_password, s.tconnect_region),
                                 tc.NightscoutApi(s.ns_url, s.ns_secret))
        return self._clients

    ANNOUNCE_SECS = 20.0  # an announcement's call, all of it: the alert watch's sender waits no longer
    VERSION_SECS = 10.0

    def upload_treatment(self, treatment: dict) -> None:
        """POST one treatment to Nightscout (NS_URL, NS_SECRET) within ANNOUNCE_SECS; returns once Nightscout answered
        with it stored, else raises (outbound.post_treatment)."""
        requests = self._tconnectsync().requests  # guarded: no redirect followed, one deadline for the whole call
        outbound.post_treatment(requests, self.settings.ns_url, self.settings.ns_secret, treatment, self.ANNOUNCE_SECS)

    def probe_nightscout(self) -> str:
        """Ask the site its version (status.json) and keep the answer, or the problem, for the page; one line."""
        try:
            version = outbound.nightscout_version(self._tconnectsync().requests, self.settings.ns_url,
                                                  self.settings.ns_secret, self.VERSION_SECS)
        except Exception as e:  # whatever stopped it: the page and Check login say it
            self.nightscout_said(problem=self.describe(e, f"{self.VERSION_SECS:g} s"))
            return f"Nightscout: {self.nightscout['problem']}"
        self.nightscout_said(version=version, problem=None)
        return (f"Nightscout {version} at {host_of(self.settings.ns_url)}: it replaces a treatment sent again by "
                f"its {outbound.upserts_on(version)}")

    def nightscout_said(self, **what: str | None) -> None:
        """Keep what the site last told (its version; a problem, None once it stored something) for the page."""
        self.nightscout = {**self.nightscout, **what}

    def describe(self, error: BaseException, limit: str | None = None) -> str:
        """One redacted line saying what failed and where (limit: the call's time limit, in words; else the sync's)."""
        requests = self._tc.requests if self._tc else None
        text = f"{type(error).__name__}: {error}"
        ns_host = host_of(self.settings.ns_url)
        if isinstance(error, Redirected):
            text = (f"NS_URL redirects to {error.target} ({error.status_code}): set NS_URL to that address"
                    if error.host == ns_host else f"Tandem Source ({error.host}) redirects to {error.target} "
                    f"({error.status_code}): not followed, it would carry a secret there")
        elif isinstance(error, NightscoutProblem):
            text = str(error)
        elif requests and isinstance(error, requests.RequestException) and error.request is not None:
            host = host_of(error.request.url)
            side = "Nightscout" if host == ns_host else "Tandem Source"
            if isinstance(error, requests.Timeout):
                limit = limit or ("the sync's time limit (TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS="
                                  f"{self.settings.sync_timeout_secs:g})")
                text = f"{side} ({host}) did not answer within {limit}"
            else:
                plain = network_reason(str(error))
                text = f"could not reach {side} ({host}): {plain or type(error).__name__}"
        elif getattr(error, "status_code", None) == 401 and "login" in str(error).lower():
            text = CREDENTIALS_REFUSED
        return clip(self.log.redact(" ".join(text.split())))

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
        if paused_until:  # look again when the pause ends, or within the hour if a person's sync lifted it
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
