"""tcsync: the parts of tcsync_wsgi, one module each, in the order data flows through them.

    settings, log, homescreen, plain, throttle
                      the frozen Settings read once from the environment (with the problems of any unusable one);
                      logfmt lines, caps, redaction; the tab's and the home screen's icons; outside text (a
                      device's name) made plain before it is shown elsewhere; wrong secrets counted per client, a
                      burst of them answered 429
    channels          ALERT_URLS' Apprise channels (Apprise imported only when set): ids, labels, one bounded send
    outbound          the bottom: calls out to Tandem and Nightscout bounded by one deadline each, no redirect
                      followed with a secret, and our own two calls to Nightscout (an announcement, its version)
    readings          what each Data Connector event type measures, its device and its own time (pure functions)
    schema            the tables, the same for both databases, and the steps that upgrade an older one in place
    store, postgres   runs, events and their readings as numbers; the writer thread (group commit); SQLite, or
                      PostgreSQL with DATABASE_URL
    sync, receiver    syncs (one at a time, tconnectsync, the timer); a delivery's signature and event checks
    alertbook         the alert rows (what each family was told when) and the outbox of announcements
    notes, pushes     the announcements' words: names made plain, every note bounded, days named; the pushes to
                      the channels (their sender) and the test alert
    alerts            a fridge out of range, a silent sensor, a low battery, failing syncs: judged once a minute
                      and after deliveries, episodes told at most once per ALERT_REPEAT_MINS, sent by priority
    request           Request, Response and reading parameters: the HTTP vocabulary of the handlers
    markup, charts    the page's templates (templates/) and words for times and numbers; its SVG strip and charts
    page, exports     the status page, from a plain read model (PageView); /events and the exports
    view              what the status page shows from the store, built by a thread of its own when something changed
                      (a GET / reads nothing from the store)
    web               the route table and handlers (App, the WSGI callable), the error boundary, the access log
    server            waitress, its limits and its deadlines for slow clients
    standins, demo    not the service: loopback stand-ins of Tandem Source and Nightscout (the tests' and the demo's),
                      and `python tcsync_wsgi.py demo` around them (a made-up pump, a simulated fridge); above every
                      part, so no part can import them

tcsync_wsgi.py, at the top of the repository, builds the App from these parts (create_app) and runs it (main).

Why this cut: each module is one thing a person comes to change (a setting, the page, the receiver's checks, the
SQL) and can change without reading the others, and every import points down this list: a lower part never imports
a higher one. `lint-imports` checks that (the layers contract in .importlinter), so the receiver cannot come to
depend on the page, and the page renders from plain values, never from a request or the App.
"""

__version__ = "1.1.0"
