"""The Data Connector receiver's checks: signatures and event parsing, pure functions, no WSGI."""

from __future__ import annotations

import codecs
import hashlib
import hmac
import json
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from tcsync.readings import Delivery, delivery_of


def secret_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset expected secret matches nothing."""
    return bool(expected) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                  expected.encode("utf-8", "surrogateescape"))


class Rejected(Exception):
    """A request refused with a 4xx and a short stable reason."""

    def __init__(self, status: int, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.status, self.reason, self.message = status, reason, message or reason


_jwt_decoders: dict = {}
TIME_CLAIMS = ("exp", "iat", "nbf")


def _jwt_decoder(clock: Callable[[], float] | None):
    """PyJWT's decode, with exp, iat and nbf required to be JSON numbers (PyJWT takes int() of any claim:
    "9999999999" and true too); with a clock, checked against it (PyJWT reads the wall clock)."""
    if clock in _jwt_decoders:
        return _jwt_decoders[clock]
    import jwt  # 0.17 s with cryptography: paid at the first delivery, not at boot

    class DeliveryJWT(jwt.PyJWT):
        def _validate_claims(self, payload, options, *args, **kwargs):
            for claim in TIME_CLAIMS:
                value = payload.get(claim)  # null is left to PyJWT: a missing claim where one is required
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise jwt.DecodeError(f"{claim} must be a number")
            super()._validate_claims(payload, options, *args, **kwargs)

        def _validate_iat(self, payload, now, leeway):
            super()._validate_iat(payload, clock() if clock else now, leeway)

        def _validate_nbf(self, payload, now, leeway):
            super()._validate_nbf(payload, clock() if clock else now, leeway)

        def _validate_exp(self, payload, now, leeway):
            super()._validate_exp(payload, clock() if clock else now, leeway)

    decoder = _jwt_decoders[clock] = DeliveryJWT().decode
    return decoder


MAX_EXP_AHEAD_SECS = 86400  # a day: the Data Connector's tokens expire an hour after they are made

JWT_REASONS = (  # PyJWT exception class name -> our stable reason (first match in the MRO wins)
    ("InvalidAlgorithmError", "bad_algorithm"),
    ("InvalidSignatureError", "bad_signature"),
    ("ExpiredSignatureError", "expired"),
    ("ImmatureSignatureError", "not_yet_valid"),
    ("MissingRequiredClaimError", "missing_claim"),
    ("DecodeError", "malformed_token"),
)


# PyJWT decodes each part with base64.urlsafe_b64decode, which skips characters outside the alphabet: a signature
# with "~~" or "==" after it would still verify. Only the alphabet, then, and nothing after the third part.
COMPACT_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # alg none: no signature


def _unverified_header(token: str) -> dict:
    import jwt  # imported already by the decode that verified the token

    return jwt.get_unverified_header(token)


def _jwt_reason(error: Exception) -> str:
    names = {cls.__name__ for cls in type(error).__mro__}
    return next((reason for name, reason in JWT_REASONS if name in names), "bad_claims")


def verify_delivery(body: bytes, token: str, secrets: tuple[str, ...],
                    clock: Callable[[], float] | None = None) -> dict:
    """Claims of a valid X-Dt-Signature for these exact body bytes; raises Rejected otherwise."""
    if not COMPACT_TOKEN.fullmatch(token):
        raise Rejected(400, "malformed_token", "signature token rejected: malformed_token (three base64url parts"
                                               " joined by dots, nothing after the signature)")
    decode = _jwt_decoder(clock)
    claims = None
    for secret in secrets:
        try:
            claims = decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "iat"]}, leeway=60)
            break
        except Exception as e:  # PyJWT 2.8 also leaks TypeError/ValueError/OverflowError on odd claims
            reason = _jwt_reason(e)
            if reason != "bad_signature":  # only a wrong secret is worth trying the previous one
                raise Rejected(400, reason, f"signature token rejected: {reason}") from None
    if claims is None:
        raise Rejected(400, "bad_signature", "signature token rejected: bad_signature")
    if "crit" in _unverified_header(token):  # RFC 7515 4.1.11: an extension we must understand, and we know none
        raise Rejected(400, "unsupported_crit", "signature token rejected: its crit header names extensions this"
                                                " service does not implement")
    if claims["exp"] > (clock or time.time)() + MAX_EXP_AHEAD_SECS:
        raise Rejected(400, "expires_too_late", "signature token rejected: exp is more than a day ahead")
    present = 0
    for claim, digest in (("checksum", hashlib.sha1), ("checksum_sha256", hashlib.sha256)):
        if claim not in claims:
            continue
        if not isinstance(claims[claim], str):
            raise Rejected(400, "bad_checksum_claim", f"{claim} must be a hex string")
        if not hmac.compare_digest(claims[claim].lower().encode("ascii", "replace"),
                                   digest(body).hexdigest().encode()):
            raise Rejected(400, "checksum_mismatch", f"{claim} does not match the body")
        present += 1
    if not present:
        raise Rejected(400, "checksum_missing", "the token carries no checksum of the body")
    return claims


MAX_JSON_DEPTH = 100  # the vendor's events nest 5 deep; json's own limit depends on the Python and the stack
TOO_DEEP = f"the body nests deeper than {MAX_JSON_DEPTH} levels"
# A lone UTF-16 surrogate (from a \ud800 escape, or CESU-8 bytes) has no UTF-8 form: neither store can take it,
# nor can an answer or the CSV send it. PostgreSQL's text refuses NUL, and no field of the vendor's holds one.
UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _check_depth_and_text(document: Any) -> None:
    """Refuse a body nested deeper than MAX_JSON_DEPTH, or one with a string (a value or a name) holding a
    character that no store or answer can hold. Level by level, with one search over all its text: a third of
    the cost of a search per string."""
    strings: list[str] = []
    level, depth = [document], 1
    while level:
        below: list = []
        for value in level:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, (dict, list)):
                if depth > MAX_JSON_DEPTH:
                    raise Rejected(400, "bad_json", TOO_DEEP)
                if isinstance(value, dict):
                    strings += value
                    below += value.values()
                else:
                    below += value
        level, depth = below, depth + 1
    found = UNSTORABLE_CHARACTER.search("".join(strings))
    if found and found.group() == "\x00":
        raise Rejected(400, "bad_event", "a text value in the body holds a NUL character (\\u0000),"
                                         " which cannot be stored")
    if found:
        raise Rejected(400, "bad_event", "a text value in the body holds a lone UTF-16 surrogate (\\ud800 to \\udfff),"
                                         " which cannot be stored: send whole characters")


MAX_ID_CHARS = 200  # eventId, eventType, targetName: PostgreSQL's index refuses entries over about 2 700 bytes
EARLIEST_EVENT_TIME = 946684800.0  # 2000-01-01T00:00:00Z
MAX_EVENT_AHEAD_SECS = 86400  # a day: clocks differ, but no sensor reports a reading from next week
MAX_INT_DIGITS = 309  # 1.8e308, float's largest, has 309 digits


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Rejected(400, "bad_number", f"the body holds {text[:40]}, which no float can hold")
    return value


def _float_sized_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits <= MAX_INT_DIGITS:  # the length first: int() refuses 4 300 digits, and slowly
        value = int(text)
        if abs(value) <= sys.float_info.max:
            return value
    raise Rejected(400, "bad_number", f"the body holds an integer of {digits} digits, which no float can hold")


def _not_a_number(name: str) -> None:
    raise Rejected(400, "bad_number", f"the body holds {name}, which is not a JSON number")


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict:
    document = dict(pairs)
    if len(document) < len(pairs):  # json.loads would keep the last value, the NDJSON export both
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise Rejected(400, "duplicate_key", f"the body names {name[:40]!r} twice in one object")
            seen.add(name)
    return document


def _read_json(body: bytes) -> Any:
    """The body as JSON, strictly: UTF-8 without a BOM, finite numbers a float can hold, each name once per object,
    nested at most MAX_JSON_DEPTH deep, no text that a store cannot hold."""
    if body.startswith(codecs.BOM_UTF8):
        raise Rejected(400, "not_utf8", "the body starts with a byte order mark: send UTF-8 without one")
    if b"\x00" in body:  # JSON text never holds a NUL byte; UTF-16 and UTF-32 text does
        raise Rejected(400, "not_utf8", "the body holds NUL bytes, as UTF-16 and UTF-32 do: send UTF-8")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # Latin-1, UTF-16 with its BOM, CESU-8's surrogates
        raise Rejected(400, "not_utf8", "the body is not UTF-8") from None
    try:
        document = json.loads(text, parse_float=_finite_float, parse_int=_float_sized_int, parse_constant=_not_a_number,
                              object_pairs_hook=_object_without_repeats)
    except RecursionError:
        raise Rejected(400, "bad_json", TOO_DEEP) from None
    except ValueError:
        raise Rejected(400, "bad_json", "the body is not JSON") from None
    # Text reaches a NUL or a lone surrogate only through a \u escape (raw ones are refused above, and so are raw
    # control characters by json), and a body nests no deeper than it has brackets: most deliveries need no walk.
    if "\\u" in text or text.count("{") + text.count("[") > MAX_JSON_DEPTH:
        _check_depth_and_text(document)
    return document


def parse_event(body: bytes, received_at: float) -> dict:
    """The delivery's event object, checked for the fields we keep; raises Rejected."""
    return parse_delivery(body, received_at).event


def parse_delivery(body: bytes, received_at: float) -> Delivery:
    """The delivery, its event checked for the fields we keep (its labels: {} unless an object); raises Rejected.
    Only what every page and answer can show again is admitted: see the checks table in docs/data-connector.md.
    The body is parsed and read here once: the store, the alerts and the log line take what they need."""
    document = _read_json(body)
    event = document.get("event") if isinstance(document, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get("eventId"), str) or not event["eventId"] \
            or not isinstance(event.get("eventType"), str):
        raise Rejected(400, "bad_event", "the body needs event.eventId and event.eventType strings")
    for key in ("targetName", "timestamp"):
        if not isinstance(event.get(key), (str, type(None))):
            event[key] = json.dumps(event[key])
    for key in ("eventId", "eventType", "targetName"):
        if len(event.get(key) or "") > MAX_ID_CHARS:
            raise Rejected(400, "too_long", f"event.{key} is longer than {MAX_ID_CHARS} characters")
    labels = document.get("labels")
    delivery = delivery_of(event, labels if isinstance(labels, dict) else {}, received_at)
    if not EARLIEST_EVENT_TIME <= delivery.event_time <= received_at + MAX_EVENT_AHEAD_SECS:
        raise Rejected(400, "bad_time", "event.timestamp must be from 2000-01-01 to a day after the event arrives,"
                                        f" got {str(event.get('timestamp'))[:40]!r}")
    return delivery
