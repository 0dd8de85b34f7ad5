"""The seed stack made durable, as a user would build it from the seed: the same Flask receiver (seed_app.py), run as
`gunicorn seed_durable_app:app`, that also keeps each delivery: one INSERT and COMMIT per delivery into SQLite (WAL,
synchronous=NORMAL, as the service's store), each eventId once. bench/deliveries.py compares the service with it."""

import hashlib
import json
import os
import sqlite3

import jwt
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ["DT_SIGNATURE_SECRET"]
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


@app.get("/")
def index():
    return "<h1>Data Connector endpoint</h1><p>POST events here.</p>"


@app.post("/")
def receive():
    token = request.headers.get("X-Dt-Signature", "")
    body = request.get_data()
    try:
        payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return "bad signature", 400
    if payload.get("checksum") != hashlib.sha1(body).hexdigest():
        return "checksum mismatch", 400
    event = json.loads(body)["event"]
    db().execute("INSERT INTO events (event_id, event_type, target, timestamp, body) VALUES (?, ?, ?, ?, ?)"
                 " ON CONFLICT (event_id) DO NOTHING",
                 (event["eventId"], event.get("eventType"), event.get("targetName"), event.get("timestamp"), body))
    return "OK"  # autocommit (isolation_level=None): the INSERT committed before the answer
