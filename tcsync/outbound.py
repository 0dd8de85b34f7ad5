"""Calls out, to Tandem Source and Nightscout: each ends by its deadline, and none follows a redirect with a secret.

tconnectsync makes its calls with requests, which has no deadline for a whole call (its timeout restarts at every
byte received: a server that trickles one byte every few seconds holds a call for ever) and follows redirects (a
POST to Nightscout that is redirected carries `api-secret`, and the URL's `api_secret=`, to the other host; on 301
it becomes a GET that answers 200). guard_requests mends both where every call of requests passes, for every
thread that set a deadline (deadline()): a watchdog shuts the call's socket when its time is up, and a redirect is
an error that names where it leads. Our own calls to Nightscout (an announcement, status.json) are here too: an
announcement counts as sent only when Nightscout answered with the treatment it stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import time
import urllib.parse

_calls = threading.local()  # .deadline: monotonic time by which this thread's calls end; .watch: the call's _Watch


class Redirected(Exception):
    """A redirect not followed because the request carried a secret; names where it leads (no path or query)."""

    def __init__(self, status: int, url: str, location: str):
        self.status_code, self.host, self.target = status, host_of(url), base_of(urllib.parse.urljoin(url, location))
        super().__init__(f"{self.host} redirects to {self.target} ({status})")


class NightscoutProblem(Exception):
    """Nightscout did not store what was sent. final: it refused the treatment itself (sending it again cannot
    help); settings: a setting is wrong (NS_URL, NS_SECRET) and the page says which; neither: try again later."""

    def __init__(self, reason: str, final: bool = False, settings: bool = False):
        self.final, self.settings = final, settings
        super().__init__(reason)


def host_of(url: str) -> str:
    """host[:port] of a URL, without the user:password@ it may carry."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2]


def base_of(url: str) -> str:
    """The address to put in NS_URL from a redirect's target: no credentials, query, fragment or API path."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.partition("/api/")[0].rstrip("/") + "/"
    return urllib.parse.urlunsplit((parts.scheme, host_of(url), path, "", ""))


@contextlib.contextmanager
def deadline(seconds: float):
    """Every call this thread makes inside ends within `seconds` from now, all of them together (or by the
    deadline around it, if that is sooner)."""
    around = getattr(_calls, "deadline", None)
    ends = time.monotonic() + seconds
    _calls.deadline = ends if around is None else min(around, ends)
    try:
        yield
    finally:
        _calls.deadline = around


class _Watch:
    """The connection of the call under way, and the watchdog's cut: shutting its socket ends any read at once."""

    def __init__(self):
        self.connection, self.cut_off = None, False

    def cut(self) -> None:
        self.cut_off = True
        sock = getattr(self.connection, "sock", None)
        with contextlib.suppress(OSError, AttributeError):
            sock.shutdown(socket.SHUT_RDWR)


def carries_secret(request) -> bool:
    """A request whose redirect must not be followed: it holds a secret (a header, api_secret= in the address, a
    body) that would go to wherever the redirect leads. tconnectsync's Tandem login follows one redirect that holds
    none (the authorization step, a GET with its cookies, which the cookie jar keeps to their own host)."""
    headers = {name.lower() for name in request.headers}
    return bool(headers & {"api-secret", "authorization"} or "api_secret=" in (request.url or "")
                or request.method not in ("GET", "HEAD"))


def guard_requests(requests, urllib3_connection) -> None:
    """Bound every call of a thread inside deadline() as a whole, and refuse redirects of requests that carry a
    secret (for every thread). Once per process; requests' HTTPAdapter.send is where every call of tconnectsync
    ends (plain requests.post, Sessions, OAuth sessions), and urllib3's HTTPConnection.request where the socket
    that a watchdog may have to shut is known."""
    adapter = requests.adapters.HTTPAdapter
    if getattr(adapter.send, "guarded_by_tcsync", False):
        return
    send_unguarded, request_unguarded = adapter.send, urllib3_connection.HTTPConnection.request

    def request(self, *args, **kwargs):
        watch = getattr(_calls, "watch", None)
        if watch is not None:
            watch.connection = self
        return request_unguarded(self, *args, **kwargs)

    def send(self, prepared, **kwargs):
        if getattr(_calls, "deadline", None) is None:
            response = send_unguarded(self, prepared, **kwargs)
        else:
            response = _send_by_deadline(requests, send_unguarded, self, prepared, kwargs)
        if response.is_redirect and carries_secret(prepared):
            response.close()
            raise Redirected(response.status_code, prepared.url, response.headers["location"])
        return response

    send.guarded_by_tcsync = True
    adapter.send, urllib3_connection.HTTPConnection.request = send, request


def _send_by_deadline(requests, send_unguarded, adapter, prepared, kwargs):
    """One call, headers and body, within what is left of the thread's deadline."""
    left = _calls.deadline - time.monotonic()
    if left <= 0:
        raise requests.exceptions.Timeout("its time ran out", request=prepared)
    kwargs["timeout"] = left  # connect, and each read
    watch = _calls.watch = _Watch()
    watchdog = threading.Timer(left, watch.cut)  # and all the reads together
    watchdog.daemon = True
    watchdog.start()
    try:
        response = send_unguarded(adapter, prepared, **kwargs)
        if not kwargs.get("stream"):
            _ = response.content  # read here, inside the deadline (requests would read it after send returns)
    except Exception:
        if watch.cut_off:
            raise requests.exceptions.Timeout("no whole answer within its time", request=prepared) from None
        raise
    finally:
        watchdog.cancel()
        _calls.watch = None
    if watch.cut_off:  # cut in the headers, an answer may look whole (http.client takes the end for their end)
        response.close()
        raise requests.exceptions.Timeout("no whole answer within its time", request=prepared)
    return response


# -- our own calls to Nightscout

def secret_header(ns_secret: str) -> dict:
    return {"api-secret": hashlib.sha1(ns_secret.encode()).hexdigest(), "Accept": "application/json"}


def post_treatment(requests, ns_url: str, ns_secret: str, treatment: dict, seconds: float) -> None:
    """POST one treatment to Nightscout's API v1; returns only if Nightscout answered with it stored, else raises
    NightscoutProblem (or Redirected, or what requests raises when Nightscout cannot be reached in time)."""
    url = urllib.parse.urljoin(ns_url, "api/v1/treatments")
    with deadline(seconds):
        response = requests.post(url, json=treatment, headers=secret_header(ns_secret), allow_redirects=False)
    problem = status_problem(response.status_code, response.text)
    if problem:
        raise problem
    try:
        stored = response.json()
    except ValueError:
        stored = None
    stored = stored if isinstance(stored, list) else [stored]
    if not any(isinstance(doc, dict) and doc.get("identifier") == treatment["identifier"] for doc in stored):
        raise NightscoutProblem(f"NS_URL answered {response.status_code} without the stored treatment (is it "
                                "the address of a Nightscout site?): check NS_URL", settings=True)


def status_problem(status: int, text: str) -> NightscoutProblem | None:
    """What an HTTP status from Nightscout means for what was sent; None for a success."""
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return NightscoutProblem(f"Nightscout refused NS_SECRET ({status}): check NS_SECRET", settings=True)
    if status == 404:
        return NightscoutProblem(f"Nightscout has no API at NS_URL ({status}): check NS_URL", settings=True)
    if status in (400, 413, 422):
        return NightscoutProblem(f"Nightscout refused it ({status}): {' '.join(text.split())[:200]}", final=True)
    return NightscoutProblem(f"Nightscout answered {status}")


def nightscout_version(requests, ns_url: str, ns_secret: str, seconds: float) -> str:
    """The version the site reports in status.json ("15.0.6"); raises as post_treatment does."""
    with deadline(seconds):
        response = requests.get(urllib.parse.urljoin(ns_url, "api/v1/status.json"), headers=secret_header(ns_secret),
                                allow_redirects=False)
    problem = status_problem(response.status_code, response.text)
    if problem:
        raise problem
    try:
        version = response.json().get("version")
    except (ValueError, AttributeError):
        version = None
    if not isinstance(version, str):
        raise NightscoutProblem(f"NS_URL answered {response.status_code} without Nightscout's status: check NS_URL",
                                settings=True)
    return version[:40]


def upserts_on(version: str) -> str:
    """How a Nightscout version replaces a treatment sent again (lib/server/treatments.js)."""
    try:
        numbers = tuple(int(part) for part in version.split("-")[0].split(".")[:3])
    except ValueError:
        return "unknown"
    return "identifier" if numbers >= (15, 0, 7) else "created_at and eventType"
