"""tcsync_wsgi: keep Tandem pump history flowing into Nightscout, and receive Data Connector events.

The entry the design names: create_app() builds the service from the parts in tcsync/ (tests pass their own),
main() is the command line (serve, sync, check, test-alert, demo), serve() runs waitress and stops cleanly on SIGTERM.
Run it as `python tcsync_wsgi.py` (the Procfile does). How the parts fit: tcsync/__init__.py.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable

from tcsync import __version__
from tcsync.alerts import AlertWatch
from tcsync.log import Log, Redactor
from tcsync.pushes import TooSoon
from tcsync.server import make_server
from tcsync.settings import Settings, parse_features, read_settings
from tcsync.store import Store, StoreError, StoreUnreachable, open_store
from tcsync.sync import Syncer, SyncTimer
from tcsync.web import App, SettingsProblemsApp

SHUTDOWN_GRACE_SECS = 25


def create_app(settings: Settings, store: Store | None = None, syncer: Syncer | None = None,
               clock: Callable[[], float] | None = None, log: Log | None = None,
               timer: bool = False, verify_clock: Callable[[], float] | None = None) -> App:
    """Build the service from its parts; tests pass their own store, clock or log writer. With settings problems:
    only the page naming them (no store is opened, nothing syncs)."""
    clock = clock or time.time
    log = log or Log()
    log.redact = Redactor(settings.secret_values())
    if settings.problems:
        return SettingsProblemsApp(settings, log)
    store = store or open_store(settings)
    syncer = syncer or Syncer(settings, store, log, clock)
    sync_timer = None
    if timer and settings.interval_mins > 0 and not settings.missing:
        sync_timer = SyncTimer(syncer, settings.interval_mins * 60, log)
    alerts = AlertWatch(settings, store, syncer, log, clock, timer_on=sync_timer is not None)
    return App(settings, store, syncer, log, clock, sync_timer, verify_clock, alerts)


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
    app.log.close()  # the run's log lines first, whole: a print from this thread must not land inside one
    summary = f"{kind} {run.outcome}: uploaded {run.uploaded}" + (f"; {run.error}" if run.error else "")
    sys.stdout.write(("".join(run.log) if kind == "check" else "") + summary + "\n")
    sys.stdout.flush()
    return 0 if run.outcome == "ok" else 1


def _cli_test_alert(app: App) -> int:
    """The page's Send a test alert from the command line: a line per channel; exit 0 if each was sent, 1 if not,
    3 if a test was sent less than a minute ago (by any process on the database)."""
    try:
        lines = app.alerts.send_test()
    except TooSoon as e:
        app.log.close()
        print(f"tcsync_wsgi: not sent: {e}", file=sys.stderr)
        return 3
    app.log.close()  # the test's log line first, whole
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    return 0 if all(line.endswith(": sent") for line in lines) else 1


def serve(app: App) -> int:
    """Serve until SIGTERM/SIGINT, then stop cleanly within Heroku's 30 s."""
    try:
        server = make_server(app, app.settings)
    except (OSError, ValueError) as e:  # the port is taken, the address is not this machine's (or waitress cannot
        # read it: its ValueError, a traceback otherwise)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"tcsync_wsgi: cannot listen on {app.settings.host}:{app.settings.port}: {reason[:200]}"
              " (set PORT or LISTEN_PORT, LISTEN_HOST)", file=sys.stderr)
        return 2
    stopping_at: list[float] = []

    def on_signal(signum, frame):
        if stopping_at:
            return
        stopping_at.append(time.monotonic())
        app.stop()
        raise SystemExit(0)  # waitress.run() catches it and stops its workers

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    app.log(event="start", version=__version__, host=app.settings.host, port=server.effective_port,
            connection_limit=server.adj.connection_limit, channel_timeout=server.adj.channel_timeout,
            io="poll" if server.adj.asyncore_use_poll else "select", header_timeout=server.header_secs,
            body_timeout=server.body_secs,
            timer_mins=app.settings.interval_mins if app.timer else 0,
            missing=",".join(app.settings.missing) or None)
    if app.settings.problems:  # once, here: the page names them to whoever opens it
        app.log("error", event="settings.problems", problems="; ".join(app.settings.problems),
                fix="correct them (Heroku: Settings, Reveal Config Vars); meanwhile the status page names them and "
                    "syncs and deliveries answer 503")
    app.start()
    server.run()
    app.close(stopping_at[0] + SHUTDOWN_GRACE_SECS if stopping_at else time.monotonic())
    server.close()
    app.log(event="stopped")
    return 0


def demo() -> int:
    """The service against stand-ins on this machine (tcsync/demo.py): no account, no settings, a temporary store.
    The only place outside the tests that imports the stand-ins, and only when asked for."""
    from tcsync.demo import Stage

    with Stage() as stage:
        settings = read_settings()
        if settings.problems:  # PORT not a port, say: the demo's other settings are its own
            print(f"tcsync_wsgi: cannot start the demo: {'; '.join(settings.problems)}", file=sys.stderr)
            return 2
        app = create_app(settings, timer=True)
        print(stage.banner(), flush=True)
        stage.start_fridge()  # it tries again until the service answers
        return serve(app)


def main(argv: list[str] | None = None) -> int:
    """`serve` (default), `sync [--days N] [--pretend] [--features A,B]`, `check`, `test-alert`, or `demo`."""
    parser = argparse.ArgumentParser(prog="tcsync_wsgi.py", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb")
    verbs.add_parser("serve", help="serve the web app (the default)")
    sync = verbs.add_parser("sync", help="one sync, for cron: exit 0 ok, 1 failed, 2 bad configuration")
    check = verbs.add_parser("check", help="tconnectsync's login check: exit 0 ok, 1 errors, 2 bad configuration")
    verbs.add_parser("test-alert", help="send a test alert to Nightscout and each of ALERT_URLS: a line each; exit 0 "
                     "all sent, 1 not, 2 bad configuration, 3 one was sent less than a minute ago")
    verbs.add_parser("demo", help="try it: the service on http://127.0.0.1:5000 (or PORT) against stand-ins of "
                     "Tandem Source, Nightscout and a fridge sensor on this machine; nothing real, nothing leaves it")
    for sub in (sync, check):
        sub.add_argument("--days", type=int, default=1, choices=range(1, 31), metavar="N (1-30)")
    sync.add_argument("--pretend", action="store_true", help="read from Tandem, upload nothing")
    sync.add_argument("--features", help="comma list of tconnectsync features")
    args = parser.parse_args(argv)
    if args.verb == "demo":
        return demo()
    settings = read_settings()
    web = args.verb in (None, "serve")
    # the web serves a page naming them, if it has a port and an address to listen on
    if settings.problems and (not web or settings.port is None or not settings.host):
        print(f"tcsync_wsgi: cannot start: {'; '.join(settings.problems)}", file=sys.stderr)
        return 2
    try:
        app = create_app(settings, timer=web)
    except StoreUnreachable as e:  # it may come back: exit 1, so Heroku or systemd start us again
        print(f"tcsync_wsgi: cannot reach the database: {e}", file=sys.stderr)
        return 1
    except (StoreError, OSError) as e:
        where, hint = ("DATABASE_URL", "check DATABASE_URL") if settings.database_url else \
            (settings.db_path, "set TCONNECTSYNC_HEROKU_DB")
        print(f"tcsync_wsgi: cannot use the database {where}: {e} ({hint})", file=sys.stderr)
        return 2
    if args.verb == "test-alert":
        return _cli_test_alert(app)
    if not web:
        if settings.missing:
            print(f"tcsync_wsgi: missing settings: {', '.join(settings.missing)}", file=sys.stderr)
            return 2
        return _cli_run(app, args.verb, args)
    return serve(app)


if __name__ == "__main__":
    sys.exit(main())
