"""The HTTP vocabulary the handlers speak: Request, Response, errors, and reading parameters.

Plain WSGI: a Request wraps the environ (the body read at most once, bounded); a handler answers with a
Response. Parameters are UTF-8, each given at most once; a bad one is a 400 naming it.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Iterable
from typing import Any

from tcsync.receiver import Rejected
from tcsync.settings import is_digits, parse_features

MAX_FORM_BYTES = 64 * 1024
TRUE_WORDS = ("", "1", "true", "yes")  # a bare ?pretend means true
FALSE_WORDS = ("0", "false", "no")


@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple = ()
    log_fields: str = ""  # appended to the request's log line (one write per request)
    stream: Iterable[bytes] | None = None  # a large answer, sent as it is produced instead of body


def json_response(status: int, document: Any, headers: tuple = ()) -> Response:
    return Response(status, json.dumps(document).encode(), "application/json", headers)


def text_response(status: int, text: str, headers: tuple = ()) -> Response:
    return Response(status, text.encode("utf-8"), "text/plain; charset=utf-8", headers)


class HTTPError(Exception):
    """Raised by handlers for a 4xx; becomes a JSON answer with a message."""

    def __init__(self, status: int, message: str, headers: tuple = ()):
        super().__init__(message)
        self.response = json_response(status, {"error": message}, headers)


class Request:
    """The bits of a WSGI environ our handlers use; the body is read at most once, bounded."""

    def __init__(self, environ: dict):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET")
        self.path = environ.get("PATH_INFO", "") or "/"
        self._params: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        key = name.upper().replace("-", "_")
        return self.environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key)

    def read_body(self, limit: int) -> bytes:
        """Exactly Content-Length bytes; 411 without it, 413 over limit, 400 if the body is short."""
        raw = (self.header("Content-Length") or "").strip()
        if not raw:
            raise Rejected(411, "length_required", "Content-Length is required")
        if not is_digits(raw):
            raise Rejected(400, "bad_content_length", "Content-Length must be a number")
        length = int(raw)
        if length > limit:
            raise Rejected(413, "too_large", f"the body must be at most {limit} bytes")
        body = self.environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise Rejected(400, "short_body", "the body is shorter than Content-Length")
        return body

    def is_form(self) -> bool:
        """A POST of a urlencoded form, as a browser sends one: its fields are parameters."""
        content_type = (self.header("Content-Type") or "").split(";")[0].strip().lower()
        return self.method == "POST" and content_type == "application/x-www-form-urlencoded"

    def params(self) -> dict[str, str]:
        """Query string plus a urlencoded form body, UTF-8; a repeated name is a 400."""
        if self._params is None and not self.environ.get("QUERY_STRING") and self.method != "POST":
            self._params = {}  # the common case, skipped cheaply: the status page is the hot path
        if self._params is None:
            pairs = _parse_pairs(self.environ.get("QUERY_STRING", "").encode("latin-1"), "query string")
            if self.is_form():
                try:
                    pairs += _parse_pairs(self.read_body(MAX_FORM_BYTES), "form body")
                except Rejected as e:
                    raise HTTPError(e.status, e.message) from None
            params: dict[str, str] = {}
            for name, value in pairs:
                if name in params:
                    raise HTTPError(400, f"parameter {name!r} was given more than once")
                params[name] = value
            self._params = params
        return self._params


def _parse_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    try:
        return urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50,
                                      encoding="utf-8", errors="strict")
    except UnicodeError:
        raise HTTPError(400, f"the {where} is not valid UTF-8") from None
    except ValueError:
        raise HTTPError(400, f"the {where} has too many parameters") from None


def sync_options(params: dict[str, str], allowed: tuple[str, ...]) -> dict:
    """days, pretend and features from request parameters; 400 naming the bad one."""
    options: dict[str, Any] = {}
    if "days" in params:
        days = params["days"].strip()
        if not (is_digits(days) and len(days) <= 2 and 1 <= int(days) <= 30):
            raise HTTPError(400, f"days must be a whole number from 1 to 30, got {days[:40]!r}")
        options["days"] = int(days)
    if "pretend" in params:
        word = params["pretend"].strip().lower()
        if word not in (*TRUE_WORDS, *FALSE_WORDS):
            raise HTTPError(400, f"pretend must be 1/true/yes or 0/false/no, got {word[:40]!r}")
        options["pretend"] = word in TRUE_WORDS
    if "features" in params:
        try:
            options["features"] = parse_features(params["features"], allowed)
        except ValueError as e:
            raise HTTPError(400, f"features: {str(e)[:300]}") from None
    return options


def check_params(params: dict[str, str], allowed: tuple[str, ...]) -> None:
    for name in params:
        if name not in (*allowed, "secret"):
            raise HTTPError(400, f"unknown parameter {name[:40]!r}; this route takes {', '.join(allowed) or 'none'}")


def offset_param(params: dict[str, str]) -> int:
    raw = params.get("offset", "0").strip()
    if not (is_digits(raw) and len(raw) <= 9):
        raise HTTPError(400, f"offset must be a whole number from 0, got {raw[:40]!r}")
    return int(raw)


def limit_param(params: dict[str, str]) -> int:
    raw = params.get("limit", "50").strip()
    if not (is_digits(raw) and len(raw) <= 4 and 1 <= int(raw) <= 1000):
        raise HTTPError(400, f"limit must be a whole number from 1 to 1000, got {raw[:40]!r}")
    return int(raw)
