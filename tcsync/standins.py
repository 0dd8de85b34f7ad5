"""Loopback stand-ins for Tandem Source and Nightscout, as tconnectsync 3.0.3 uses them: one set of code for the
tests (tests/fakes.py re-exports it) and for `python tcsync_wsgi.py demo` (tcsync/demo.py).

The service never imports this module (.importlinter: it sits above every part); only the demo and the tests do.
"""

import base64
import functools
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TOKEN_LIFETIME = 28800
CLIENT_ID = "fake-tandem-client"
KID = "fake-tandem-key-1"
_EPOCH = datetime.min.replace(tzinfo=UTC)


@functools.cache
def _rsa_key():
    """Return the process-wide RSA signing key, generating it on first use."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _when(value):
    """Parse an ISO-8601 timestamp (naive means UTC), or return None."""
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _matches(doc, field, op, value):
    """Apply one Nightscout find[field] (op None) or find[field][$gte/$lte] filter to doc."""
    if op is None:
        return str(doc.get(field)) == value
    have, bound = _when(doc.get(field)), _when(value)
    if have is None or bound is None:
        return False
    return have >= bound if op == "gte" else have <= bound


class _Handler(BaseHTTPRequestHandler):
    """Reads one request and hands it to the fake that owns the server."""

    timeout = 30

    def log_message(self, format, *args):
        """Keep the access log quiet."""

    def _serve(self):
        """Read the body and let the fake answer."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.fake._dispatch(self, body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _FakeServer:
    """A ThreadingHTTPServer on 127.0.0.1 with ok / stall / 503 modes."""

    def __init__(self):
        self.mode = "ok"
        self.delay_secs = 0.0  # answer this much later (a slow upstream)
        self.requests_seen = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def _dispatch(self, handler, body):
        """Apply the mode, route the request and write the answer."""
        split = urlsplit(handler.path)
        with self._lock:
            self.requests_seen.append((handler.command, handler.path))
        if self.delay_secs:
            self._released.wait(self.delay_secs)
        if self.mode == "stall":
            self._released.wait()
            handler.close_connection = True
            return
        if self.mode == "503":
            status, payload, headers = 503, {"error": "Service Unavailable"}, {}
        else:
            query = parse_qs(split.query, keep_blank_values=True)
            status, payload, headers = self._route(handler.command, split.path, query, handler.headers, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        headers.setdefault("Content-Type", "text/html" if isinstance(payload, bytes) else "application/json")
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client is gone (a killed service process)

    def _route(self, method, path, query, headers, body):
        """Answer one request as (status, JSON-able or bytes payload, headers)."""
        raise NotImplementedError

    def release(self):
        """Let every held or stalled answer go, now and from now on."""
        self._released.set()

    def close(self):
        """Release stalled handlers, stop serving and close the socket."""
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        """Use the fake as a context manager."""
        return self

    def __exit__(self, *exc):
        """Close on leaving the with block."""
        self.close()


class FakeTandem(_FakeServer):
    """Tandem Source (login page, login API, OIDC authorize/token/jwks, BFF pumper + pump-logs) on 127.0.0.1."""

    def __init__(self, fixture: dict, email: str = "pumper@example.com", password: str = "right-password"):
        self.email = email
        self.password = password
        self.pumper = fixture["pumper"]
        self.events = list(fixture["pump_logs"]["events"])
        self.pumper_id = str(uuid.uuid4())
        self.account_id = str(uuid.uuid4())
        self.login_attempts = 0
        self.logins = 0
        self.data_requests = 0
        self.pump_log_secs = 0.0  # hold each pump-log answer this long (to see syncs overlap)
        self.pump_logs_in_flight = 0
        self.most_pump_logs_in_flight = 0  # more than 1: two syncs fetched at the same moment
        self._challenges = {}
        self._tokens = set()
        super().__init__()

    def urls(self) -> dict:
        """Every TandemSourceApi._US_URLS key, plus LOGIN_PAGE_URL, pointing at this fake."""
        api = self.url + "accounts/api"
        return {
            "LOGIN_PAGE_URL": self.url + "sso/",
            "LOGIN_API_URL": api + "/login",
            "TDC_OAUTH_AUTHORIZE_URL": api + "/oauth2/v1/authorize",
            "TDC_OIDC_JWKS_URL": api + "/.well-known/openid-configuration/jwks",
            "TDC_OIDC_ISSUER": api,
            "TDC_OIDC_CLIENT_ID": CLIENT_ID,
            "SOURCE_URL": self.url,
            "REDIRECT_URI": self.url + "sso/auth/callback",
            "TOKEN_ENDPOINT": api + "/connect/token",
            "AUTHORIZATION_ENDPOINT": api + "/connect/authorize",
        }

    def point_tconnectsync_here(self) -> None:
        """Point tconnectsync's TandemSourceApi (both regions) at this fake."""
        point_tconnectsync_at(self.urls())

    def _route(self, method, path, query, headers, body):
        """Serve the login flow and the BFF data endpoints."""
        route = (method, path)
        if route in {("GET", "/sso/"), ("GET", "/sso/auth/callback")}:
            return 200, b"<html>Tandem Source</html>", {}
        if route == ("POST", "/accounts/api/login"):
            return self._login(body)
        if route == ("GET", "/accounts/api/connect/authorize"):
            return self._authorize(query)
        if route == ("POST", "/accounts/api/connect/token"):
            return self._token(parse_qs(body.decode()))
        if route == ("GET", "/accounts/api/.well-known/openid-configuration/jwks"):
            jwk = RSAAlgorithm.to_jwk(_rsa_key().public_key(), as_dict=True)
            return 200, {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}, {}
        match = re.fullmatch(r"/api/reports/bff/(pumper|pump-logs)/([^/]+)", path)
        if method == "GET" and match:
            return self._data(*match.groups(), headers.get("Authorization", ""))
        return 404, {"error": "not found"}, {}

    def _login(self, body):
        """Check the credentials posted to the login API."""
        with self._lock:
            self.login_attempts += 1
        try:
            creds = json.loads(body)
        except ValueError:
            return 400, {"status": "FAILED", "error": "bad request"}, {}
        if creds.get("username") != self.email or creds.get("password") != self.password:
            return 401, {"status": "FAILED", "error": "account/invalid_credentials"}, {}
        cookie = f"tdc_session={secrets.token_urlsafe(16)}; Path=/; HttpOnly"
        return 200, {"redirectUrl": "/", "status": "SUCCESS"}, {"Set-Cookie": cookie}

    def _authorize(self, query):
        """Store the PKCE challenge under a fresh code and redirect to REDIRECT_URI."""
        arg = {key: values[0] for key, values in query.items()}
        redirect_uri = self.urls()["REDIRECT_URI"]
        if (
            arg.get("client_id") != CLIENT_ID
            or arg.get("response_type") != "code"
            or arg.get("redirect_uri") != redirect_uri
            or arg.get("code_challenge_method") != "S256"
            or not arg.get("code_challenge")
        ):
            return 400, {"error": "invalid_request"}, {}
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._challenges[code] = arg["code_challenge"]
        return 302, b"", {"Location": redirect_uri + "?" + urlencode({"code": code})}

    def _token(self, form):
        """Exchange a code plus PKCE verifier for access and id tokens."""
        arg = {key: values[0] for key, values in form.items()}
        with self._lock:
            challenge = self._challenges.pop(arg.get("code"), None)
        verifier = arg.get("code_verifier", "").encode()
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).decode().rstrip("=")
        if (
            arg.get("grant_type") != "authorization_code"
            or arg.get("client_id") != CLIENT_ID
            or arg.get("redirect_uri") != self.urls()["REDIRECT_URI"]
            or challenge is None
            or computed != challenge
        ):
            return 400, {"error": "invalid_grant"}, {}
        now = int(time.time())
        claims = {
            "iss": self.urls()["TDC_OIDC_ISSUER"],
            "aud": CLIENT_ID,
            "sub": self.account_id,
            "iat": now - 5,
            "exp": now + TOKEN_LIFETIME,
            "email": self.email,
            "pumperId": self.pumper_id,
            "accountId": self.account_id,
        }
        id_token = jwt.encode(claims, _rsa_key(), algorithm="RS256", headers={"kid": KID})
        access_token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens.add(access_token)
            self.logins += 1
        return 200, {
            "access_token": access_token,
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
            "scope": "openid profile email",
        }, {}

    def _data(self, kind, ident, authorization):
        """Serve the pumper or its pump-logs to a holder of an issued access token."""
        with self._lock:
            self.data_requests += 1
            authorized = authorization.removeprefix("Bearer ") in self._tokens
            events = list(self.events)
        if not authorized:
            return 401, {"error": "unauthorized"}, {}
        if kind == "pumper" and ident == self.pumper_id:
            return 200, self.pumper, {}
        if kind == "pump-logs" and any(p["assignmentId"] == ident for p in self.pumper["pumps"]):
            with self._lock:
                self.pump_logs_in_flight += 1
                self.most_pump_logs_in_flight = max(self.most_pump_logs_in_flight, self.pump_logs_in_flight)
            self._released.wait(self.pump_log_secs)
            with self._lock:
                self.pump_logs_in_flight -= 1
            return 200, {"events": events, "clockChanges": []}, {}
        return 404, {"error": "not found"}, {}


def point_tconnectsync_at(urls: dict) -> None:
    """Point tconnectsync's TandemSourceApi (both regions) at these URLs (FakeTandem.urls()); imports tconnectsync."""
    from tconnectsync.api.tandemsource import TandemSourceApi

    urls = dict(urls)
    TandemSourceApi.LOGIN_PAGE_URL = urls.pop("LOGIN_PAGE_URL")
    TandemSourceApi._US_URLS.update(urls)
    TandemSourceApi._EU_URLS.update(urls)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _nightscout_time(created_at):
    """created_at as Nightscout keys it (new Date(created_at).toISOString(): UTC, milliseconds, Z), else as given."""
    when = _when(created_at)
    if when is None:
        return created_at  # Nightscout would take "now" for an unreadable date; a fake must stay deterministic
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time_and_type(doc) -> tuple:
    """The key Nightscout upserts a treatment on when it has no identifier (or before 15.0.7, always)."""
    return _nightscout_time(doc.get("created_at")), doc.get("eventType")


class FakeNightscout(_FakeServer):
    """Nightscout's v1 API as tconnectsync uses it, on 127.0.0.1; checks the api-secret header.

    Treatments are upserted as the given version does (lib/server/treatments.js): before 15.0.7 on {created_at,
    eventType}, identifier ignored; from 15.0.7 on identifier if present, else on an ObjectId-like _id, else on
    {created_at, eventType}. A replaced treatment keeps its place and its _id. self.treatments holds the documents as
    posted (without _id; Nightscout itself would also store created_at in UTC and add utcOffset);
    tests/test_nightscout_real.py compares this with the real servers.
    """

    COLLECTIONS = ("treatments", "devicestatus", "entries", "profile", "activity")

    def __init__(self, api_secret: str = "ns-secret-value-1234", version: str = "15.0.6"):
        self.api_secret = api_secret
        self.version = version  # what status.json reports; 15.0.6: the release most sites run
        self.uploads = 0
        self.posted: list[tuple[str, dict]] = []
        for name in self.COLLECTIONS:
            setattr(self, name, [])
        self._treatment_ids: list[str] = []  # the _id of each of self.treatments, in the same order
        super().__init__()

    def _route(self, method, path, query, headers, body):
        """Check the api-secret header, then store uploads or answer queries."""
        if headers.get("api-secret") != hashlib.sha1(self.api_secret.encode()).hexdigest():
            return 401, {"status": 401, "message": "Unauthorized"}, {}
        name = path.removeprefix("/api/v1/").removesuffix("/").removesuffix(".json")
        if method in ("POST", "PUT") and name in self.COLLECTIONS:
            try:
                docs = json.loads(body)
            except ValueError:
                return 400, {"status": 400, "message": "invalid JSON"}, {}
            docs = docs if isinstance(docs, list) else [docs]
            with self._lock:
                self.uploads += 1
                self.posted += [(name, doc) for doc in docs]  # every document sent, re-sends included
                if name == "treatments":
                    return 200, [self._upsert_treatment(dict(doc)) for doc in docs], {}
                self._store_other(getattr(self, name), docs)
            return 200, [{**doc, "_id": _object_id()} for doc in docs], {}
        if method != "GET":
            return 404, {"error": "not found"}, {}
        if name == "status":
            return 200, {"status": "ok", "name": "nightscout", "version": self.version, "apiEnabled": True}, {}
        if name == "profile/current":
            with self._lock:
                current = self.profile[-1] if self.profile else {"defaultProfile": "Default", "store": {}}
            return 200, current, {}
        if name == "treatments":
            return 200, self._find(query), {}
        if name in ("devicestatus", "entries", "activity"):
            return 200, [], {}
        return 404, {"error": "not found"}, {}

    @staticmethod
    def _store_other(stored, docs):
        """Collections other than treatments: a document with a known identifier replaces that one, else appends."""
        for doc in docs:
            same = [i for i, old in enumerate(stored) if doc.get("identifier") and
                    old.get("identifier") == doc["identifier"]]
            if same:
                stored[same[0]] = doc
            else:
                stored.append(doc)

    def _upsert_treatment(self, doc):
        """Store one treatment as this version does (under self._lock); return what Nightscout answers for it: the
        document with an _id if it was inserted, or (15.0.7) replaced by identifier; without one if replaced by
        created_at and eventType (neither version looks up the _id it kept)."""
        index, by_identifier = self._treatment_to_replace(doc)
        stored = {key: value for key, value in doc.items() if key != "_id"}
        if index is None:
            self.treatments.append(stored)
            self._treatment_ids.append(doc.get("_id") or _object_id())
            return {**doc, "_id": self._treatment_ids[-1]}
        self.treatments[index] = stored
        if by_identifier:
            return {**doc, "_id": self._treatment_ids[index]}
        return doc

    def _treatment_to_replace(self, doc) -> tuple[int | None, bool]:
        """(index of the stored treatment this one replaces or None, whether it was found by identifier)."""
        if _version_key(self.version) >= (15, 0, 7):
            if doc.get("identifier"):
                doc.pop("_id", None)  # 15.0.7 drops a posted _id when it upserts on identifier
                return self._index_of(lambda i, old: old.get("identifier") == doc["identifier"]), True
            if not re.fullmatch(r"[0-9a-fA-F]{24}", str(doc.get("_id", ""))):
                doc.pop("_id", None)  # not an ObjectId (a UUID, say): 15.0.7 drops it
            elif doc["_id"]:
                return self._index_of(lambda i, old: self._treatment_ids[i] == doc["_id"]), False
        return self._index_of(lambda i, old: _time_and_type(old) == _time_and_type(doc)), False

    def _index_of(self, matches) -> int | None:
        return next((i for i, old in enumerate(self.treatments) if matches(i, old)), None)

    def _find(self, query):
        """Return stored treatments matching the find[...] filters, newest created_at first."""
        with self._lock:
            found = list(enumerate(self.treatments))
            ids = list(self._treatment_ids)
        for key, values in query.items():
            match = re.fullmatch(r"find\[(\w+)\](?:\[\$(gte|lte)\])?", key)
            if match:
                found = [(i, doc) for i, doc in found if _matches(doc, *match.groups(), values[0])]
        found.sort(key=lambda item: (_when(item[1].get("created_at")) or _EPOCH, item[0]), reverse=True)
        found = found[: int(query.get("count", ["10"])[0])]
        return [{"_id": ids[i] if i < len(ids) else f"{i:024x}", **doc} for i, doc in found]


def _object_id() -> str:
    """A new id shaped like MongoDB's ObjectId (24 hex digits)."""
    return uuid.uuid4().hex[:24]
