"""The seed stack made durable, as a user would build it from the seed: the seed's own Flask receiver (seed_app.py,
imported, unchanged), run as `gunicorn seed_durable_app:app`, that also keeps each delivery it accepted: one INSERT
and COMMIT per delivery into SQLite (WAL, synchronous=NORMAL, as the service's store), each eventId once, before the
answer leaves. bench/deliveries.py compares the service with it."""

import json
import os
import sqlite3

from flask import request
from seed_app import app

DB = os.environ["SEED_DB"]
_db = None  # one connection per worker process, opened at its first delivery (after gunicorn forked it)


def db() -> sqlite3.Connection:
    global _db
    if _db is None:
        _db = sqlite3.connect(DB, timeout=5, isolation_level=None)
        _db.execute("PRAGMA journal_mode=WAL")
        _db.execute("PRAGMA synchronous=NORMAL")
        _db.execute("CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, event_type TEXT, target TEXT,"
                    " timestamp TEXT, received_at REAL DEFAULT (unixepoch('subsec')), body BLOB NOT NULL)")
    return _db


@app.after_request
def keep(response):
    """A delivery the seed accepted (200 to a POST), kept before Flask sends the answer."""
    if request.method == "POST" and response.status_code == 200:
        body = request.get_data()  # Flask keeps the body it read for the seed's check
        event = json.loads(body)["event"]
        db().execute("INSERT INTO events (event_id, event_type, target, timestamp, body) VALUES (?, ?, ?, ?, ?)"
                     " ON CONFLICT (event_id) DO NOTHING",
                     (event["eventId"], event.get("eventType"), event.get("targetName"), event.get("timestamp"), body))
    return response  # autocommit (isolation_level=None): the INSERT committed before the answer
