"""HTTP: the route table, the handlers, HEAD once for all, the error boundary, the access log.

App is the WSGI application (hand-written: no framework). Its handlers take a Request and return a Response;
they call the receiver, the store, the syncer and the page, which know nothing of HTTP.
"""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import threading
import time
import urllib.parse
import zoneinfo
from http import HTTPStatus
from importlib import metadata
from collections.abc import Callable, Iterator

from tcsync.alerts import AlertWatch
from tcsync.exports import (
    CSV_HEADER, EVENT_FILTERS, Releasing, csv_line, csv_lines, cursor_param, encode_cursor, event_query, ndjson_line,
)
from tcsync.homescreen import MANIFEST, icon_png
from tcsync.log import Log
from tcsync.pushes import TooSoon
from tcsync.page import PAGE_DATA_SECS, STALE_NOTE_SECS, PageView, ProblemsView, render_problems, render_status
from tcsync.readings import Delivery, iso
from tcsync.receiver import Rejected, parse_delivery, secret_matches, verify_delivery
from tcsync.request import (
    HTTPError, Request, Response, check_params, json_response, limit_param, offset_param, sync_options, text_response,
)
from tcsync.settings import Settings
from tcsync.store import QueryRefused, Store, StoreError
from tcsync.sync import BUSY, PAUSED, Syncer, SyncTimer
from tcsync.throttle import WINDOW_SECS, GuessThrottle
from tcsync.view import ALERT_HISTORY_SECS, BuiltView, ViewBuilder

STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
MAX_DELIVERY_BYTES = 64 * 1024
MAX_SIGNATURE_CHARS = 4096
ALERTS_PUBLIC = 50  # open alerts /alerts lists without the secret (then how many more)
ALERTS_PAGE = 500  # and with it, a page at a time (offset)
PAGE_ALERTS = 5  # open alerts the status page's sentence names (then how many more)
# Exports at once: each may hold a worker thread for as long as its reader takes (waitress has 8); more wait
# EXPORT_RETRY_SECS (503 with Retry-After).
EXPORTS_AT_ONCE = 2
EXPORT_RETRY_SECS = 10
# On every answer: nothing is cached, no browser guesses a type other than the Content-Type we send, and no link
# followed from a page opened with ?secret= sends that address on as a Referer.
COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                  ("Referrer-Policy", "no-referrer"))
# The status page needs no script, only its inline styles, data: images (the tab's icon) and its own home-screen
# manifest and icon, posts its forms to itself, and is never framed by another site (clickjacking Sync now).
PAGE_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; manifest-src 'self'; "
               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class App:
    """The WSGI application: one route table, handlers returning Responses."""

    def __init__(self, settings: Settings, store: Store, syncer: Syncer, log: Log,
                 clock: Callable[[], float] = time.time, timer: SyncTimer | None = None,
                 verify_clock: Callable[[], float] | None = None, alerts: AlertWatch | None = None):
        self.settings, self.store, self.syncer, self.log = settings, store, syncer, log
        self.clock, self.timer, self.verify_clock = clock, timer, verify_clock
        self.alerts = alerts or AlertWatch(settings, store, syncer, log, clock, timer_on=timer is not None)
        self.versions = _versions()
        # The pump's zone; UTC while none is named (syncs wait for it; the page says its times are in UTC).
        self.tz = zoneinfo.ZoneInfo(settings.timezone_name) if settings.timezone_name else dt.UTC
        self._deliveries = 0
        self.view = ViewBuilder(settings, store, syncer, self.alerts, self.tz, clock)  # what GET / shows, built
        # without the secret, and with a wrong one: {wrong: (monotonic time, what it shows, the page)}
        self._public_pages: dict[bool, tuple[float, tuple, bytes]] = {}
        self._export_places = threading.BoundedSemaphore(EXPORTS_AT_ONCE)
        self.guesses = GuessThrottle()
        self.last_test: tuple[float, tuple[str, ...]] | None = None  # the page's last test alert, its lines
        self.routes = self.route_table()

    def route_table(self) -> dict[str, dict[str, Callable[[Request], Response]]]:
        """Every path and method the service answers, in one place (SettingsProblemsApp answers the same ones)."""
        return {
            "/": {"GET": self.status_page, "HEAD": self.status_page, "POST": self.post_to_page},
            "/healthz": {"GET": self.healthz, "HEAD": self.healthz},
            "/alerts": {"GET": self.alerts_route, "HEAD": self.alerts_route},
            "/run": {"GET": self.run, "HEAD": self.run, "POST": self.run},
            "/update": {"GET": self.update, "POST": self.update},
            "/check_login": {"GET": self.check_login, "POST": self.check_login},
            "/test_alert": {"POST": self.test_alert},
            "/runs": {"GET": self.runs, "HEAD": self.runs},
            "/events": {"GET": self.events, "HEAD": self.events},
            "/events.ndjson": {"GET": self.events_ndjson, "HEAD": self.events_ndjson},
            "/events.csv": {"GET": self.events_csv, "HEAD": self.events_csv},
            "/sensors": {"GET": self.sensors, "HEAD": self.sensors},
            "/manifest.webmanifest": {"GET": self.manifest, "HEAD": self.manifest},
            "/icon.png": {"GET": self.icon, "HEAD": self.icon},
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
        except QueryRefused:  # the request's values, not the database: checks before the query should catch them
            response = json_response(400, {"error": "the database refused a value of this request"})
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
        if response.stream is not None:  # no length: HEAD gets none either (waitress would say 0 for [b""])
            return iter(()) if request.method == "HEAD" else response.stream
        return [b"" if request.method == "HEAD" else response.body]

    def dispatch(self, request: Request) -> Response:
        return self.handler_for(request)(request)

    def handler_for(self, request: Request) -> Callable[[Request], Response]:
        """The route table's handler; 404 for an unknown path, 405 for a method the path does not take."""
        methods = self.routes.get(request.path)
        if methods is None:
            raise HTTPError(404, f"no such page: {request.path[:100]}")
        handler = methods.get(request.method)
        if handler is None:
            raise HTTPError(405, f"{request.method[:20]} is not allowed here",
                            (("Allow", ", ".join(methods)),))
        return handler

    def start(self) -> None:
        """The timer's syncs, if on, and the alert watch's minute checks (serve() calls it once it listens)."""
        if self.timer:
            self.timer.start()
        self.alerts.start()
        self.view.start()

    def stop(self) -> None:
        """No new syncs from now on (SIGTERM): the timer and the alert watch stop, a sync asked for is refused."""
        if self.timer:
            self.timer.stop()
        self.alerts.stop()
        self.view.stop()
        self.syncer.closed = True

    def close(self, deadline: float) -> None:
        """Let a running sync and the alerts' sending finish until deadline (monotonic; else the run is marked
        interrupted), then close the store."""
        unfinished = self.syncer.close(deadline)
        if unfinished:
            self.log("warn", event="run.interrupted", run_id=unfinished.id)
        self.alerts.finish(deadline)
        self.store.close()

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
        if not self._secret_right(request, given):
            raise HTTPError(403, "The secret is wrong.")

    def _is_authorized(self, request: Request) -> bool:
        """Whether the right secret came along (the status page then lists runs); raises only the throttle's 429."""
        try:
            given = self._given_secret(request)
        except HTTPError:
            return False
        return given is not None and self._secret_right(request, given)

    def _secret_right(self, request: Request, given: str) -> bool:
        """Whether given is the secret; a client past its free wrong guesses gets 429 before it is compared."""
        client = request.environ.get("REMOTE_ADDR", "")  # behind TRUSTED_PROXY: the client it names (waitress)
        wait = self.guesses.retry_after(client)
        if wait:
            raise HTTPError(429, f"Too many wrong secrets from this address; try again in {wait} seconds.",
                            (("Retry-After", str(wait)),))
        if secret_matches(given, self.settings.secret):
            return True
        count = self.guesses.wrong(client)
        if count:  # once a burst: the guesses after it are refused unlogged (the access line has each)
            self.log("warn", event="auth.throttled", client=client, count=count, secs=int(WINDOW_SECS))
        return False

    # sync routes
    def run(self, request: Request) -> Response:
        self.authorize(request)
        params = request.params()
        check_params(params, ("days", "pretend", "features", "then"))
        then = self._then(params)
        # Only the page's Sync now (a person: a POST with then=) gets past a credential pause; a monitor's ping, by
        # GET, HEAD or POST, does not.
        run, why_not = self.syncer.start("run", by_person=then is not None and request.method == "POST",
                                         **sync_options(params, self.settings.allowed_features))
        if then:  # the status page's Sync now: back to the page, which shows the run (or why none started)
            return self._back_to_page(request, then)
        if not why_not:
            return json_response(202, {"started": True, "run_id": run.id})
        if why_not == BUSY:
            return json_response(202, {"started": False, "reason": why_not, "run_id": run and run.id})
        if why_not.startswith(PAUSED):  # nothing is broken here: the monitor has nothing to report
            return json_response(202, {"started": False, "reason": why_not})
        return json_response(503, {"started": False, "reason": why_not})

    @staticmethod
    def _then(params: dict[str, str]) -> str | None:
        """Where the page's buttons go afterwards (None: answer JSON or text, for scripts): then=/ is the page,
        then=/?secret the page with the secret in its address (asked for only by a page that came with ?secret=
        itself), then=page the page itself in the secret's view, as the answer (asked for by a page opened with the
        secret form, whose secret is in no address)."""
        then = params.get("then")
        if then not in (None, "/", "/?secret", "page"):
            raise HTTPError(400, f"then must be /, /?secret or page (the status page to go back to), got {then[:40]!r}")
        return then

    def _back_to_page(self, request: Request, then: str) -> Response:
        if then == "page":  # what the button did shows: a view built after it
            return self.status_page(request, self.view.fresh())
        location = "/?" + urllib.parse.urlencode({"secret": self.settings.secret}) if then == "/?secret" else "/"
        return Response(303, b"See the status page.\n", headers=(("Location", location),))

    def _run_and_wait(self, request: Request, kind: str, allowed: tuple[str, ...]) -> Response:
        self.authorize(request)
        check_params(request.params(), allowed)
        options = sync_options(request.params(), self.settings.allowed_features)
        then = self._then(request.params()) if "then" in allowed else None
        run, why_not = self.syncer.start(kind if kind == "check" else "update", kind, **options)
        if run and not why_not:
            run.done.wait()
        if then:  # the page's Check login: the page shows the check's verdict (or why none ran)
            return self._back_to_page(request, then)
        if why_not:
            status = 409 if why_not == BUSY else 503
            return text_response(status, f"Not started: {why_not}.\n")
        summary = f"\n{kind} {run.outcome}" + (f": {run.error}" if run.error else "") + "\n"
        return text_response(200 if run.outcome == "ok" else 502, "".join(run.log) + summary)

    def update(self, request: Request) -> Response:
        return self._run_and_wait(request, "sync", ("days", "pretend", "features"))

    def check_login(self, request: Request) -> Response:
        return self._run_and_wait(request, "check", ("days", "then"))

    def test_alert(self, request: Request) -> Response:
        """The page's Send a test alert (or a script's POST): a line per channel; one a minute (429, Retry-After)."""
        self.authorize(request)
        check_params(request.params(), ("then",))
        then = self._then(request.params())
        try:
            lines, status, headers = self.alerts.send_test(), 200, ()
        except TooSoon as e:
            lines, status, headers = [f"Not sent: {e}"], 429, (("Retry-After", str(e.retry_after)),)
        self.last_test = (self.clock(), tuple(lines))
        if then and status == 200:  # back to the page, which shows the lines
            return self._back_to_page(request, then)
        if then:  # the page itself, saying why nothing went (a redirect cannot say 429)
            page = self.status_page(request)
            return Response(status, page.body, page.content_type, (*page.headers, *headers))
        return text_response(status, "\n".join(lines) + "\n", headers)

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
        """Every matching event, oldest first, streamed from the store in batches; EXPORTS_AT_ONCE at most, since a
        slow reader holds a worker thread until it has read the last batch."""
        self.authorize(request)
        check_params(request.params(), EVENT_FILTERS)
        query = event_query(request.params())
        if request.method == "HEAD":  # the headers GET would send, without reading a row or taking a place
            return Response(200, content_type=content_type, stream=iter(()))
        if not self._export_places.acquire(blocking=False):
            raise HTTPError(503, f"{EXPORTS_AT_ONCE} exports are being downloaded already; try again in a few seconds.",
                            (("Retry-After", str(EXPORT_RETRY_SECS)),))
        try:
            rows = self.store.export_rows(query)
            first = next(rows, None)  # a failing database is a 503 now, not a cut-off 200 later
        except BaseException:
            self._export_places.release()
            raise
        chunks = self._stream(header, itertools.chain(() if first is None else (first,), rows), lines)
        return Response(200, content_type=content_type, stream=Releasing(chunks, self._export_places.release))

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
        return json_response(200, {"sensors": self.store.sensors(self.clock())})

    # public routes
    def health(self, refresh: bool = True) -> tuple[str, float | None]:
        """("ok" | "stale" | "idle", last success time), whichever process synced (refresh: read other processes'
        runs first, at most every few seconds; the page's builder does that for the page)."""
        if refresh:
            self.syncer.refresh()
        status, last_ok, _ = self.syncer.health(self.clock(), self.timer is not None)
        return status, last_ok

    def healthz(self, request: Request) -> Response:
        """Public: whether syncs work. The last run's error (hosts, upstream answers) only with the secret."""
        status, last_ok = self.health()
        last_run = self.syncer.last_run
        if last_run and not self._is_authorized(request):
            last_run = {"outcome": last_run["outcome"], "finished_at": last_run["finished_at"]}
        return json_response(503 if status == "stale" else 200,
                             {"status": status, "last_success_at": iso(last_ok), "last_run": last_run})

    def status_page(self, request: Request, built: BuiltView | None = None) -> Response:
        """The page, from the newest built view (view.ViewBuilder): no request reads the store for it."""
        authorized = self._is_authorized(request)
        wrong = not authorized and self._secret_given(request)
        if built is None:  # the secret form (a person): what changed until they pressed it shows
            built = self.view.fresh() if authorized and request.method == "POST" else self.view.newest()
        now = self.clock()
        health = self.health(refresh=False)  # no request reads the store for the page
        if authorized:
            body = render_status(self.page_view(request, now, health, built, authorized, wrong)).encode()
        else:  # the hot path (monitors, people, wrong secrets): the same page while nothing it shows has changed
            key = (health, built, self.view.events, self._drawn_as_of(built, now) < now - STALE_NOTE_SECS,
                   self.syncer.current, self.syncer.last_run, self.syncer.paused_until,
                   self.timer and self.timer.next_at, self.store.failure, tuple(self.alerts.open_alerts()),
                   wrong and (request.method, self._secret_in_address(request)))  # what the wrong-secret page says
            cached = self._public_pages.get(bool(wrong))
            if cached is None or cached[1] != key or time.monotonic() - cached[0] >= PAGE_DATA_SECS:
                body = render_status(self.page_view(request, now, health, built, False, wrong)).encode()
                cached = self._public_pages[bool(wrong)] = (time.monotonic(), key, body)
            body = cached[2]
        return Response(200, body, "text/html; charset=utf-8", (("Content-Security-Policy", PAGE_POLICY),))

    def page_view(self, request: Request, now: float, health: tuple[str, float | None], built: BuiltView,
                  authorized: bool, wrong_secret: bool) -> PageView:
        """What the status page shows: the syncer's and the alerts' state now, the store's from the built view."""
        syncer, timer, store_failure = self.syncer, self.timer, self.store.failure
        open_alerts = self.alerts.open_alerts()  # the most urgent kind first
        s = self.settings
        return PageView(
            now=now, tz=self.tz, zone=s.timezone_name, health=health[0], last_ok=health[1], authorized=authorized,
            wrong_secret=wrong_secret, secret=s.secret, secret_in_address=self._secret_in_address(request),
            answers_post=request.method == "POST", on_heroku=s.on_heroku, missing=s.missing, stale_mins=s.stale_mins,
            interval_mins=s.interval_mins, receiver_on=bool(s.dt_secrets),
            events=self.view.events, store_failure=store_failure, store_where=self.store.path,
            store_dialect=self.store.dialect, last_run=syncer.last_run, current=syncer.current,
            paused_until=syncer.paused_until, started_at=syncer.started_at, has_timer=timer is not None,
            next_at=timer.next_at if timer else None, recent_runs=built.recent_runs if authorized else None,
            open_alerts=tuple(open_alerts[:PAGE_ALERTS]), more_alerts=max(0, len(open_alerts) - PAGE_ALERTS),
            alert_history=built.alert_history if authorized else None, drawn=built.drawn,
            drawn_as_of=self._drawn_as_of(built, now),
            versions=self.versions, nightscout=dict(syncer.nightscout),
            channels=tuple(c.label for c in self.alerts.channels), last_test=self.last_test)

    def _drawn_as_of(self, built: BuiltView, now: float) -> float:
        """When what the page shows from the store was last known to be current: the builder confirms it every tick
        while nothing changes."""
        return max(built.built_at, min(self.view.confirmed_at, now))

    @staticmethod
    def _secret_given(request: Request) -> bool:
        """A secret came in the address or the page's form (right or wrong)."""
        try:
            return "secret" in request.params()
        except HTTPError:  # a query string the page cannot read is no secret
            return False

    @staticmethod
    def _secret_in_address(request: Request) -> bool:
        """The secret is in the page's own address: only then may the page write it into a link or a redirect."""
        return "secret" in urllib.parse.parse_qs(request.environ.get("QUERY_STRING", ""), keep_blank_values=True)

    def post_to_page(self, request: Request) -> Response:
        """POST /: the page's secret form (the page, in the secret's view if it is right), else a Data Connector
        delivery."""
        if is_secret_form(request):
            return self.status_page(request)
        return self.receive_delivery(request)

    def manifest(self, request: Request) -> Response:
        """The web app manifest: the name and icon "Add to Home Screen" shows."""
        return Response(200, MANIFEST, "application/manifest+json")

    def icon(self, request: Request) -> Response:
        return Response(200, icon_png(), "image/png")

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
        now = self.clock()
        delivery = parse_delivery(body, now)
        event = delivery.event
        try:
            duplicate = self.store.add_delivery(delivery, now, body)
        except QueryRefused as e:  # a retry would be refused again: parse_event's checks should have caught it
            self.log("error", event="delivery.refused", error=str(e)[:200])
            raise Rejected(400, "unstorable", "the database refused this event's values") from None
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
        readings = delivery.readings
        self._judge_delivery(delivery)
        response.log_fields = " " + self.log.fields(
            delivery=event["eventId"], type=event["eventType"], target=event.get("targetName"),
            device=delivery.device, duplicate=duplicate,
            reading=",".join(str(value) for _, value, _ in readings) or None,
            unit=",".join(unit or "" for _, _, unit in readings) if any(u for _, _, u in readings) else None)
        return response


    def _judge_delivery(self, delivery: Delivery) -> None:
        """Let the alerts judge the delivery's device; it is stored already, so a failing check is only logged."""
        try:
            self.alerts.after_delivery(delivery.device, delivery.labels, delivery.readings,
                                       delivery.event["eventType"])
        except StoreError as e:
            self.log("error", event="alert.check_failed", error=str(e)[:200])

    def alerts_route(self, request: Request) -> Response:
        """Public, for a monitor: 200 while nothing is wrong, 503 while an alert is open; with the secret, also
        those that ended in the last 7 days."""
        params = request.params()
        authorized = self._is_authorized(request)
        check_params(params, ("offset",) if authorized else ())
        open_alerts = self.alerts.open_alerts()  # the most urgent kind first
        first = offset_param(params) if authorized else 0
        shown = open_alerts[first:first + (ALERTS_PAGE if authorized else ALERTS_PUBLIC)]
        document: dict = {"alerts": [alert.as_json() for alert in shown]}
        if first + len(shown) < len(open_alerts):  # bounded whatever the number of devices
            document["more"] = len(open_alerts) - first - len(shown)
            if authorized:
                document["next_offset"] = first + len(shown)
        if authorized:
            recent = self.alerts.book.recent(self.clock() - ALERT_HISTORY_SECS)
            document["ended"] = [alert.as_json() for alert, _, _ in recent if alert.ended_at is not None]
        return json_response(503 if open_alerts else 200, document)


def is_secret_form(request: Request) -> bool:
    """A browser's form, not a delivery: the Data Connector sends JSON, always signed. A signed form is a delivery
    (refused as one), never a 200 page that the sender would take for a stored event."""
    return request.is_form() and request.header("X-Dt-Signature") is None


def _versions() -> str:
    found = []
    for name in ("tconnectsync", "waitress", "PyJWT"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found) + f", Python {sys.version.split()[0]}"


class SettingsProblemsApp(App):
    """The service while settings are unusable (Settings.problems): the status page names them and how to fix them;
    /healthz, syncs, deliveries and data answer 503. It opens no store and runs nothing, so a wrong setting can do no
    harm; on Heroku the app stays up instead of crashing in a loop behind an "Application error" page."""

    timer = None  # serve() starts none

    def __init__(self, settings: Settings, log: Log):
        self.settings, self.log, self.versions = settings, log, _versions()
        self.guesses = GuessThrottle()
        self.routes = self.route_table()  # the same paths and methods: a 404 or 405 stays one

    def dispatch(self, request: Request) -> Response:
        handler = self.handler_for(request)
        if handler in (self.manifest, self.icon):  # what "Add to Home Screen" fetches
            return handler(request)
        if handler == self.status_page or (handler == self.post_to_page and is_secret_form(request)):
            return self.status_page(request)
        if handler == self.healthz:
            problems = {"problems": list(self.settings.problems)} if self._is_authorized(request) else {}
            return json_response(503, {"status": "settings", "message": PROBLEMS_MESSAGE, **problems})
        return json_response(503, {"error": "settings", "message": PROBLEMS_MESSAGE})

    def status_page(self, request: Request) -> Response:
        authorized = self._is_authorized(request)
        return Response(200, render_problems(ProblemsView(
            problems=self.settings.problems, authorized=authorized, secret=self.settings.secret,
            wrong_secret=not authorized and self._secret_given(request), answers_post=request.method == "POST",
            on_heroku=self.settings.on_heroku, versions=self.versions)).encode(), "text/html; charset=utf-8",
            (("Content-Security-Policy", PAGE_POLICY),))

    def start(self) -> None:
        """Nothing runs."""

    def stop(self) -> None:
        """Nothing runs."""

    def close(self, deadline: float) -> None:
        """Nothing to close."""


PROBLEMS_MESSAGE = ("The service's settings have problems: the status page names them. Nothing syncs until they are "
                    "fixed.")
