"""The same store on PostgreSQL (DATABASE_URL): connecting, the dialect, the advisory locks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tcsync.schema import SCHEMA_VERSION
from tcsync.store import Store, StoreError, StoreUnreachable

LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")
SYNC_LOCK_KEY = 0x7463_7379_6E63  # "tcsync": PostgreSQL advisory lock ids, one for syncs, one for migrations
MIGRATE_LOCK_KEY = SYNC_LOCK_KEY + 1


class PostgresStore(Store):
    """The same store in PostgreSQL (DATABASE_URL): shared by every process, survives a dyno's restart.

    A connection that breaks (a restart, maintenance, a dropped link) is replaced at the next statement,
    which is tried once more on the new connection; while the server is away, statements fail at once.
    """

    dialect = "postgres"

    def __init__(self, url: str):
        import psycopg  # only here: SQLite users pay nothing for it
        from psycopg.conninfo import conninfo_to_dict

        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        # a value the server or psycopg refuses (a NUL in text, an integer past 64 bits, an index entry too large):
        # that statement's fault, not the database's
        self.refusals = (psycopg.DataError, psycopg.errors.ProgramLimitExceeded)
        info = conninfo_to_dict(url)
        self._password = info.get("password") or ""
        host = info.get("host") or ""
        self._options = tls_options(info)
        self._url = url
        port, name = info.get("port", "5432"), info.get("dbname", "")
        super().__init__(f"postgresql://{info.get('user', '')}@{host}:{port}/{name}")  # no password

    def _connect(self):
        try:
            return self._psycopg.connect(self._url, autocommit=True, connect_timeout=5, **self._options)
        except self._psycopg.OperationalError as e:
            error = self._error(e)
            if str(error).startswith("connection is bad: invalid "):  # libpq refused a value in DATABASE_URL
                raise error from None  # (sslmode, target_session_attrs, ...): a setting to fix, not an outage
            raise StoreUnreachable(error) from None

    def _execute(self, kind: str, work: Callable, *args) -> Any:
        for attempt in (1, 2):
            fresh = kind not in self._connections
            try:
                return work(self._connection(kind), *args)
            except self.refusals:  # ProgramLimitExceeded is an OperationalError, but the connection is fine
                raise
            except self._psycopg.OperationalError:
                broken = self._connections.pop(kind, None)
                if broken is not None:
                    broken.close()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _run(self, db, sql: str, args) -> tuple[list, int]:
        cursor = db.execute(sql.replace("?", "%s"), args)
        return (cursor.fetchall() if cursor.description else []), cursor.rowcount

    def _run_many(self, db, sql: str, rows: list[tuple]) -> None:
        with db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def _begin(self, db) -> None:
        db.execute("BEGIN")

    def _error(self, error: Exception) -> StoreError:
        text = " ".join(str(error).split())
        return StoreError(text.replace(self._password, "[redacted]") if self._password else text)

    def _migrate(self, db) -> None:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK_KEY,))  # two dynos starting at once
            db.execute("CREATE TABLE IF NOT EXISTS tcsync_schema (version INTEGER NOT NULL)")
            version = db.execute("SELECT MAX(version) FROM tcsync_schema").fetchone()[0] or 0
            if version > SCHEMA_VERSION:
                raise StoreError(f"schema version {version} is newer than this program's")
            self._upgrade(db, version)
            if version < SCHEMA_VERSION:
                db.execute("DELETE FROM tcsync_schema")
                db.execute("INSERT INTO tcsync_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def try_sync_lock(self) -> Callable[[], None] | None:
        """A session advisory lock on a connection of its own, held for the whole run; closing it releases
        it, and so does the server when the holder's connection dies."""
        db = self._connect()
        try:
            if db.execute("SELECT pg_try_advisory_lock(%s)", (SYNC_LOCK_KEY,)).fetchone()[0]:
                return db.close
        except self._psycopg.Error as e:
            db.close()
            raise self._error(e) from None
        db.close()
        return None


def tls_options(conninfo: dict) -> dict:
    """sslmode=require to any other machine unless the URL chose a mode: Heroku's URLs name none."""
    host = conninfo.get("host") or ""
    if "sslmode" in conninfo or host in LOCAL_HOSTS or host.startswith("/"):
        return {}
    return {"sslmode": "require"}
