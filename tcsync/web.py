"""HTTP: the route table, the handlers, HEAD once for all, the error boundary, the access log.

App is the WSGI application (hand-written: no framework). Its handlers take a Request and return a Response;
they call the receiver, the store, the syncer and the page, which know nothing of HTTP.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import urllib.parse
import zoneinfo
from http import HTTPStatus
from importlib import metadata
from collections.abc import Callable, Iterator

from tcsync.exports import (
    CSV_HEADER, EVENT_FILTERS, csv_line, csv_lines, cursor_param, encode_cursor, event_query, ndjson_line,
)
from tcsync.log import Log
from tcsync.page import DAY_SECS, PAGE_DATA_SECS, PageData, PageView, gather_page_data, render_status
from tcsync.readings import device_of, iso, readings_of
from tcsync.receiver import Rejected, parse_event, secret_matches, verify_delivery
from tcsync.request import (
    HTTPError, Request, Response, check_params, json_response, limit_param, sync_options, text_response,
)
from tcsync.settings import Settings
from tcsync.store import Store, StoreError
from tcsync.sync import BUSY, Syncer, SyncTimer

STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}
MAX_DELIVERY_BYTES = 64 * 1024
MAX_SIGNATURE_CHARS = 4096
# On every answer: nothing is cached, and no browser guesses a type other than the Content-Type we send.
COMMON_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


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
        return json_response(200, {"sensors": self.store.sensors(self.clock())})

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
            body = render_status(self.page_view(request, now, health, events, authorized, wrong)).encode()
        else:  # the hot path (monitors, people): the same page while nothing it shows has changed, for a moment
            key = (health, events, self.syncer.current, self.syncer.last_run, self.syncer.paused_until,
                   self.timer and self.timer.next_at, self.store.failure)
            cached = self._public_page
            if cached is None or cached[1] != key or time.monotonic() - cached[0] >= PAGE_DATA_SECS:
                body = render_status(self.page_view(request, now, health, events, False, False)).encode()
                cached = self._public_page = (time.monotonic(), key, body)
            body = cached[2]
        return Response(200, body, "text/html; charset=utf-8")

    def page_view(self, request: Request, now: float, health: tuple[str, float | None],
                  events: tuple[int, float | None] | str | None, authorized: bool, wrong_secret: bool) -> PageView:
        """What the status page shows, read from the parts: the store's failure first, before this page reads."""
        syncer, timer, store_failure = self.syncer, self.timer, self.store.failure
        last_run, current, paused_until = syncer.last_run, syncer.current, syncer.paused_until
        drawn = self.page_data(now)
        recent_runs = None
        if authorized:
            try:
                recent_runs = self.store.runs(20)
            except StoreError:
                pass  # the page says the runs are not shown while the database fails
        s = self.settings
        return PageView(
            now=now, tz=self.tz, zone=s.timezone_name, health=health[0], last_ok=health[1], authorized=authorized,
            wrong_secret=wrong_secret, bearer=request.header("Authorization") is not None, secret=s.secret,
            missing=s.missing, stale_mins=s.stale_mins, interval_mins=s.interval_mins, receiver_on=bool(s.dt_secrets),
            events=events, store_failure=store_failure, store_where=self.store.path, store_dialect=self.store.dialect,
            last_run=last_run, current=current, paused_until=paused_until, started_at=syncer.started_at,
            has_timer=timer is not None, next_at=timer.next_at if timer else None, recent_runs=recent_runs,
            drawn=drawn, versions=self.versions)

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
                data = self._page_data = gather_page_data(
                    self.store, now, self.tz, self.settings.temperature_range, bool(self.settings.dt_secrets),
                    self.syncer.last_run, self.syncer.current)
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
