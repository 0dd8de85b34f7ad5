"""tcsync: the parts of tcsync_wsgi, one module each, in the order data flows through them.

    settings, log     the bottom: the frozen Settings read once from the environment; logfmt lines, caps, redaction
    homescreen        the icons: the tab's, and the manifest and PNG icon "Add to Home Screen" shows
    readings          what each Data Connector event type measures, its device and its own time (pure functions)
    store, postgres   runs and events; the writer thread (group commit); SQLite, or PostgreSQL with DATABASE_URL
    sync, receiver    syncs (one at a time, tconnectsync, the timer); a delivery's signature and event checks
    request           Request, Response and reading parameters: the HTTP vocabulary of the handlers
    page, exports     the status page, from a plain read model (PageView) and templates/; /events and the exports
    web               the route table and handlers (App, the WSGI callable), the error boundary, the access log
    server            waitress and its limits

tcsync_wsgi.py, at the top of the repository, builds the App from these parts (create_app) and runs it (main).

Why this cut: each module is one thing a person comes to change (a setting, the page, the receiver's checks, the
SQL) and can change without reading the others, and every import points down this list: a lower part never imports
a higher one. `lint-imports` checks that (the layers contract in .importlinter), so the receiver cannot come to
depend on the page, and the page renders from plain values, never from a request or the App.
"""

__version__ = "1.0.0"
