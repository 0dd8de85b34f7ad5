"""Settings: built once from the environment; nothing else reads os.environ for our own settings."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import math
import os
import re
import socket
import urllib.parse
import zoneinfo

# tconnectsync.features.ALL_FEATURES, copied so that validating settings does not import
# tconnectsync (slow, and it exits the process on bad settings); a test checks they agree.
ALL_FEATURES = ("BASAL", "BOLUS", "IOB", "PUMP_EVENTS", "PUMP_EVENTS_BASAL_SUSPENSION",
                "PROFILES", "CGM", "CGM_ALERTS", "DEVICE_STATUS")
TESTING_FEATURES = ("BOLUS_BG",)  # tconnectsync adds these when ENABLE_TESTING_MODES is true
DEFAULT_FEATURES = ("BASAL", "BOLUS", "PUMP_EVENTS", "PROFILES")
MIN_SECRET_CHARS = 8
# Upper bounds: past them a setting is a typo (minutes for seconds, a digit too many), not a wish.
MAX_INTERVAL_MINS = 1440.0  # a day between timed syncs
MAX_SYNC_TIMEOUT_SECS = 3600.0  # an hour for one sync (a normal one takes seconds)
MAX_STALE_MINS = 10080.0  # a week without a successful sync before /healthz says stale
MAX_RANGE_DEGREES = 100.0  # DT_TEMPERATURE_RANGE within -100..100 °C: what the sensors measure, and then some


class SettingsError(Exception):
    """One or more settings are unusable; the message lists every problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the service reads from the environment, validated."""

    secret: str = dataclasses.field(default="", repr=False)
    interval_mins: float = 0.0
    features: tuple[str, ...] = DEFAULT_FEATURES
    allowed_features: tuple[str, ...] = ALL_FEATURES
    db_path: str = "tcsync.sqlite3"
    database_url: str = dataclasses.field(default="", repr=False)  # PostgreSQL instead of db_path when set
    sync_timeout_secs: float = 120.0
    stale_mins: float = 60.0
    host: str = "0.0.0.0"  # "": LISTEN_HOST is no address of this machine (a problem the web cannot serve past)
    port: int | None = 5000  # None: PORT or LISTEN_PORT is no port (a problem the web cannot serve past)
    connection_limit: int | None = None  # None: as many as the open-files limit allows (connection_limit())
    channel_timeout_secs: int = 30
    header_timeout_secs: int = 10  # a request's headers must arrive within this long (nginx: client_header_timeout)
    body_timeout_secs: int = 30  # and its body within this long of the headers (nginx: client_body_timeout)
    trusted_proxy: str = ""  # a proxy's address ("*": every peer) whose X-Forwarded-For's last entry is the client
    tconnect_email: str = ""
    tconnect_password: str = dataclasses.field(default="", repr=False)
    tconnect_region: str = "US"
    ns_url: str = dataclasses.field(default="", repr=False)  # may hold a password: https://user:pass@host/
    ns_secret: str = dataclasses.field(default="", repr=False)
    timezone_name: str = ""  # the pump's zone; "" while neither TIMEZONE_NAME nor TZ names one (a missing setting)
    dt_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    temperature_range: tuple[float, float] | None = None  # °C; the status page marks readings outside it
    alert_after_mins: float = 15.0  # a temperature outside its range this long (by event times) is an alert
    sensor_silent_mins: float = 60.0  # a device whose newest event is this old is silent
    alert_repeat_mins: float = 60.0  # at most one start and one end announcement per device and kind in this time
    ns_alerts: bool = True  # alerts become Nightscout announcements
    alert_urls: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # Apprise URLs: tokens, passwords
    on_heroku: bool = False  # DYNO is set: the dyno's disk, and a SQLite file on it, is wiped at every restart
    missing: tuple[str, ...] = ()  # sync settings not given: syncs are refused, the web stays up
    problems: tuple[str, ...] = ()  # unusable settings (read_settings): the web serves a page naming them, nothing else

    def secret_values(self) -> list[str]:
        """Every secret value that must never leave the process."""
        values = [self.secret, self.tconnect_password, self.ns_secret, *self.dt_secrets]
        for url in (self.ns_url, self.database_url):  # user:password@ (a Nightscout behind basic auth)
            password = url_password(url) or ""
            values += [password, urllib.parse.unquote(password)]
        if self.database_url:  # as libpq reads it, which is not always as urllib does (p]w, ?password=)
            info = database_url_info(self.database_url)
            values.append(info.get("password", "") if isinstance(info, dict) else "")
        if self.ns_secret:
            values.append(hashlib.sha1(self.ns_secret.encode()).hexdigest())
        for url in self.alert_urls:
            values += [url, *url_secret_parts(url)]
        return [v for v in values if v]


def _number(env, name: str, default: float, problems: list[str], most: float, positive: bool = True) -> float:
    """A decimal number from 0 (or above 0) to most: a larger one is a typo, and one past threading.TIMEOUT_MAX
    (292 years) would kill the timer thread later instead of stopping the start now."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (0 < value <= most if positive else 0 <= value <= most):  # NaN and infinities too
        problems.append(f"{name} must be a number {'above 0 and at most' if positive else 'from 0 to'} {most:g},"
                        f" got {raw[:40]!r}")
        return default
    return value


def _whole_number(env, name: str, default: int | None, problems: list[str]) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if is_digits(raw) and len(raw) <= 9 and int(raw) >= 1:
        return int(raw)
    problems.append(f"{name} must be a whole number of at least 1, got {raw[:40]!r}")
    return default


def without_value(problem: str) -> str:
    """A problem without the value it quotes, for the public page: every problem names its setting first, and one
    that quotes the value it got (a pump serial, a Nightscout host) ends in ", got ..."."""
    return problem.partition(", got ")[0]


def is_digits(text: str) -> bool:
    """ASCII digits only (str.isdigit() also says yes to '²', which int() refuses)."""
    return re.fullmatch(r"[0-9]+", text) is not None


def parse_features(raw: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """Comma list of tconnectsync features; raises ValueError naming the unknown ones."""
    names = tuple(dict.fromkeys(n.strip().upper() for n in raw.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise ValueError(f"unknown feature {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}")
    return names


def parse_range(raw: str) -> tuple[float, float]:
    """"A..B" with -100 <= A < B <= 100 (2..8, -20..-15, 2.5 .. 8); raises ValueError otherwise."""
    match = re.fullmatch(r"\s*(-?[0-9]+(?:\.[0-9]+)?)\s*\.\.\s*(-?[0-9]+(?:\.[0-9]+)?)\s*", raw)
    if not match:
        raise ValueError(raw)
    low, high = float(match[1]), float(match[2])
    if not -MAX_RANGE_DEGREES <= low < high <= MAX_RANGE_DEGREES:  # 400 digits are an infinite float
        raise ValueError(raw)
    return low, high


def load_settings(env=None) -> Settings:
    """Read and validate the environment; raises SettingsError listing every problem."""
    settings = read_settings(env)
    if settings.problems:
        raise SettingsError(list(settings.problems))
    return settings


def read_settings(env=None) -> Settings:
    """Read and validate the environment: every problem in .problems, each unusable value replaced by its default
    (an unusable secret by none), so that a web start can still serve a page naming them."""
    env = os.environ if env is None else env
    problems: list[str] = []
    interval = _number(env, "TCONNECTSYNC_HEROKU_INTERVAL_MINS", 0.0, problems, MAX_INTERVAL_MINS, positive=False)
    timeout = _number(env, "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS", 120.0, problems, MAX_SYNC_TIMEOUT_SECS)
    stale = _number(env, "TCONNECTSYNC_HEROKU_STALE_MINS", max(60.0, 3 * interval), problems, MAX_STALE_MINS)
    features, allowed = _features(env, problems)
    server = _server(env, problems)
    port = _port(env, problems)
    host = _listen_host(env, problems)
    trusted_proxy = _trusted_proxy(env, problems)
    region, tz_name = _tandem(env, problems)
    ns_url = _ns_url(env, problems)
    database_url = _database_url(env, problems)
    temperature_range = _temperature_range(env, problems)
    alerts = _alerts(env, problems)
    alert_urls = _alert_urls(env, problems)
    secret, *dt_secrets = (_secret(env, name, problems) for name in
                           ("TCONNECTSYNC_HEROKU_SECRET", "DT_SIGNATURE_SECRET", "DT_SIGNATURE_SECRET_PREVIOUS"))
    values = {
        "TCONNECT_EMAIL": env.get("TCONNECT_EMAIL", "").strip(),
        "TCONNECT_PASSWORD": env.get("TCONNECT_PASSWORD", ""),
        "NS_URL": ns_url,
        "NS_SECRET": env.get("NS_SECRET", "") or env.get("API_SECRET", ""),
        "TIMEZONE_NAME": tz_name,  # no default: a wrong zone shifts every treatment in Nightscout by hours
    }
    return Settings(
        secret=secret,
        interval_mins=interval,
        features=features,
        allowed_features=allowed,
        db_path=os.path.abspath(env.get("TCONNECTSYNC_HEROKU_DB", "").strip() or "tcsync.sqlite3"),
        database_url=database_url,
        sync_timeout_secs=timeout,
        stale_mins=stale,
        host=host,
        port=port,
        trusted_proxy=trusted_proxy,
        **server,
        tconnect_email=values["TCONNECT_EMAIL"],
        tconnect_password=values["TCONNECT_PASSWORD"],
        tconnect_region=region,
        ns_url=ns_url,
        ns_secret=values["NS_SECRET"],
        timezone_name=tz_name,
        dt_secrets=tuple(s for s in dt_secrets if s),
        temperature_range=temperature_range,
        **alerts,
        alert_urls=alert_urls,
        on_heroku=bool(env.get("DYNO", "").strip()),
        missing=tuple(name for name, value in values.items() if not value),
        problems=tuple(problems),
    )


def _server(env, problems: list[str]) -> dict[str, int | None]:
    """waitress's limits: connections, the idle timeout, and the deadlines for a request's headers and for its body
    after them, whole numbers all."""
    return {"connection_limit": _whole_number(env, "WAITRESS_CONNECTION_LIMIT", None, problems),
            "channel_timeout_secs": _whole_number(env, "WAITRESS_CHANNEL_TIMEOUT_SECS", 30, problems),
            "header_timeout_secs": _whole_number(env, "WAITRESS_HEADER_TIMEOUT_SECS", 10, problems),
            "body_timeout_secs": _whole_number(env, "WAITRESS_BODY_TIMEOUT_SECS", 30, problems)}


def _trusted_proxy(env, problems: list[str]) -> str:
    """TRUSTED_PROXY: the address of the proxy in front (nginx, Caddy), * for any peer; on Heroku, unset, *: its
    router is the only way to a dyno, and it adds the address it was reached from as X-Forwarded-For's last entry."""
    raw = env.get("TRUSTED_PROXY", "").strip()
    if not raw:
        return "*" if env.get("DYNO", "").strip() else ""
    try:
        return raw if raw == "*" else str(ipaddress.ip_address(raw))
    except ValueError:
        problems.append("TRUSTED_PROXY must be the address of the proxy in front of the service, like 127.0.0.1,"
                        f" or *, got {raw[:40]!r}")
        return ""


def _secret(env, name: str, problems: list[str]) -> str:
    value = env.get(name, "")
    if 0 < len(value) < MIN_SECRET_CHARS:  # guessable, and its redaction would garble the log: none instead
        problems.append(f"{name} must be at least {MIN_SECRET_CHARS} characters (or unset)")
        return ""
    return value


def _features(env, problems: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(features to sync, features allowed): ENABLE_TESTING_MODES allows tconnectsync's testing ones too."""
    allowed = ALL_FEATURES
    if env.get("ENABLE_TESTING_MODES", "").strip().lower() in ("true", "1"):
        allowed += TESTING_FEATURES
    features = DEFAULT_FEATURES
    if env.get("TCONNECTSYNC_HEROKU_FEATURES", "").strip():
        try:
            features = parse_features(env["TCONNECTSYNC_HEROKU_FEATURES"], allowed)
        except ValueError:  # the value quoted as given, after ", got ": the public page shows none of it
            problems.append(f"TCONNECTSYNC_HEROKU_FEATURES must be a comma list of {', '.join(allowed)}, got "
                            f"{env['TCONNECTSYNC_HEROKU_FEATURES'].strip()[:60]!r}")
    return features, allowed


def _port(env, problems: list[str]) -> int | None:
    port_name = "PORT" if env.get("PORT", "").strip() else "LISTEN_PORT"
    port_raw = env.get(port_name, "").strip() or "5000"
    if is_digits(port_raw) and len(port_raw) <= 5 and int(port_raw) <= 65535:  # int() refuses 4 300 digits
        return int(port_raw)
    problems.append(f"{port_name} must be a TCP port number, got {port_raw[:40]!r}")
    return None


HOST_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?\.?")  # RFC 1123; the last label not all digits: 999.1.1.1 is no name


def _listen_host(env, problems: list[str]) -> str:
    """An address waitress can listen on: *, an IP address ([::1] too), or a name of this machine (looked up here,
    as waitress would, so that a wrong one is a sentence, not waitress's traceback)."""
    host = env.get("LISTEN_HOST", "").strip() or "0.0.0.0"
    bare = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    if bare == "*" or (HOST_NAME.fullmatch(bare) and _resolves(bare)):
        return host
    problems.append("LISTEN_HOST must be an address of this machine, like 0.0.0.0 (all of them) or 127.0.0.1 "
                    f"(this machine only), got {host[:40]!r}")
    return ""  # nowhere to listen: like a bad port, a problem the web cannot serve past


def _resolves(name: str) -> bool:
    try:
        return bool(socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                                       socket.AI_PASSIVE))
    except (OSError, UnicodeError):
        return False


def _tandem(env, problems: list[str]) -> tuple[str, str]:
    """(region, time zone name or ""). tconnectsync calls sys.exit(1) at import on these, or silently misbehaves
    (it takes America/New_York when no zone is named): check first."""
    region = env.get("TCONNECT_REGION", "").strip() or "US"
    if region not in ("US", "EU"):
        problems.append(f"TCONNECT_REGION must be US or EU (capitals), got {region[:40]!r}")
    serial = env.get("PUMP_SERIAL_NUMBER", "").strip()
    if serial and not is_digits(serial):
        problems.append(f"PUMP_SERIAL_NUMBER must be the pump's serial number (digits), got {serial[:40]!r}")
    tz_source = "TIMEZONE_NAME" if env.get("TIMEZONE_NAME", "").strip() else "TZ"
    tz_name = env.get(tz_source, "").strip()
    if tz_name and not _is_zone(tz_name):
        problems.append(f"{tz_source} must be a time zone name like America/New_York"
                        f"{' (or set TIMEZONE_NAME)' if tz_source == 'TZ' else ''}, got {tz_name[:40]!r}")
        tz_name = ""
    cache = env.get("CACHE_CREDENTIALS", "").strip().lower()
    if cache in ("true", "1"):
        problems.append("CACHE_CREDENTIALS=true breaks tconnectsync 3.0.3's login; unset it or set it to false")
    return region, tz_name


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder (Europe), a name too long
        return False
    return True


def _ns_url(env, problems: list[str]) -> str:
    ns_url = env.get("NS_URL", "").strip()
    if ns_url:
        if not re.match(r"https?://[^/\s]+", ns_url):
            shown = ns_url.rpartition("@")[2]  # never echo a user:password@
            problems.append(f"NS_URL must start with https:// (or http://), got {shown[:60]!r}"
                            + (" (after its user:password@)" if shown != ns_url else ""))
        elif url_password(ns_url) is None:  # requests could not read it either
            problems.append("NS_URL is not a web address that can be read (a [ or ] without its pair?): write "
                            "@ : / [ ] in a password as %40 %3A %2F %5B %5D")
        ns_url = ns_url.rstrip("/") + "/"  # tconnectsync joins paths onto it
    return ns_url


def url_password(url: str) -> str | None:
    """The password of a URL's user:password@ ("" for none); None for a URL urllib cannot read."""
    try:
        return urllib.parse.urlsplit(url).password or ""
    except ValueError:  # a [ or ] without its pair: "Invalid IPv6 URL"
        return None


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _database_url(env, problems: list[str]) -> str:
    """A postgres:// URL that PostgreSQL's own library (libpq) reads. Its error messages quote the URL, password
    and all: every sentence here is our own and quotes nothing of it."""
    database_url = env.get("DATABASE_URL", "").strip()
    if database_url and not re.match(r"postgres(ql)?://", database_url):  # never echo it: it holds a password
        problems.append(f"DATABASE_URL must be a postgres:// or postgresql:// URL, got one starting with "
                        f"{database_url.split(':', 1)[0][:20]!r}")
    elif database_url:
        info = database_url_info(database_url)
        if info == LIBPQ_MISSING:
            problems.append(LIBPQ_MISSING)
        elif info is None:
            problems.append("DATABASE_URL cannot be read as postgres://USER:PASSWORD@HOST:PORT/NAME: write @ : / ? #"
                            " [ ] % and spaces in the password as %40 %3A %2F %3F %23 %5B %5D %25 %20")
        elif "@" in info.get("host", ""):  # libpq splits at the first @: the rest of a password would be a host
            problems.append("DATABASE_URL holds more than one @: write an @ in the password as %40")
        elif not all(port == "" or (is_digits(port) and len(port) <= 5 and 1 <= int(port) <= 65535)
                     for port in info.get("port", "").split(",")):
            problems.append("DATABASE_URL's port must be a number from 1 to 65535 (a / in the password makes the"
                            " rest look like a host and port: write it as %2F)")
        elif info.get("sslmode", "require") not in SSL_MODES:
            problems.append(f"DATABASE_URL's sslmode must be one of {', '.join(SSL_MODES)}")
    return database_url


LIBPQ_MISSING = ("DATABASE_URL needs PostgreSQL's client library (libpq), which psycopg cannot load on this machine: "
                 "on Raspberry Pi OS or Debian, sudo apt-get install libpq5")


def database_url_info(url: str) -> dict[str, str] | str | None:
    """libpq's reading of a database URL (user, password, host, port, dbname, options), None if it cannot, or
    LIBPQ_MISSING where psycopg has no libpq (plain psycopg, where no binary build exists: requirements.txt)."""
    try:
        from psycopg.conninfo import conninfo_to_dict  # installed always; imported only with a DATABASE_URL
    except ImportError:
        return LIBPQ_MISSING
    try:
        return {name: str(value) for name, value in conninfo_to_dict(url).items()}
    except Exception:  # psycopg.ProgrammingError, whose message quotes the URL
        return None


def _temperature_range(env, problems: list[str]) -> tuple[float, float] | None:
    if not env.get("DT_TEMPERATURE_RANGE", "").strip():
        return None
    try:
        return parse_range(env["DT_TEMPERATURE_RANGE"])
    except ValueError:
        problems.append(f"DT_TEMPERATURE_RANGE must be two numbers of °C from {-MAX_RANGE_DEGREES:g} to "
                        f"{MAX_RANGE_DEGREES:g}, the lower first, like 2..8, got "
                        f"{env['DT_TEMPERATURE_RANGE'].strip()[:40]!r}")
        return None


MAX_ALERT_MINS = 10080  # a week: a longer wait is no alert


def _alerts(env, problems: list[str]) -> dict[str, float | bool]:
    """ALERT_AFTER_MINS, SENSOR_SILENT_MINS, ALERT_REPEAT_MINS, and whether NS_ALERTS is not off."""
    alert_after = _number(env, "ALERT_AFTER_MINS", 15.0, problems, MAX_ALERT_MINS, positive=False)
    silent_after = _number(env, "SENSOR_SILENT_MINS", 60.0, problems, MAX_ALERT_MINS)
    repeat = _number(env, "ALERT_REPEAT_MINS", 60.0, problems, MAX_ALERT_MINS, positive=False)
    ns_alerts = env.get("NS_ALERTS", "").strip().lower() or "on"
    if ns_alerts not in ("on", "off"):
        problems.append(f"NS_ALERTS must be on or off, got {ns_alerts[:40]!r}")
    return {"alert_after_mins": alert_after, "sensor_silent_mins": silent_after, "alert_repeat_mins": repeat,
            "ns_alerts": ns_alerts != "off"}


ORDINALS = ("1st", "2nd", "3rd")


def _alert_urls(env, problems: list[str]) -> tuple[str, ...]:
    """ALERT_URLS: Apprise URLs, separated by spaces or commas, each one Apprise can read (Apprise is imported only
    when the setting is there). A problem names the URL by its place, never by its value: it holds a token."""
    urls = tuple(dict.fromkeys(url for url in re.split(r"[\s,]+", env.get("ALERT_URLS", "")) if url))
    if not urls:
        return ()
    from tcsync.channels import apprise_reads  # imported only with ALERT_URLS set: it brings Apprise in
    known = []
    for position, url in enumerate(urls, 1):
        if apprise_reads(url):
            known.append(url)
        else:
            place = ORDINALS[position - 1] if position <= len(ORDINALS) else f"{position}th"
            problems.append(f"ALERT_URLS: the {place} URL is not one Apprise knows (see docs/alerts.md for ntfy, "
                            "Pushover and the others)")
    return tuple(known)


def url_secret_parts(url: str) -> list[str]:
    """The parts of an Apprise URL that may be a token, a password, a topic or a key: each user, password, host
    that is no network name (pover://USER@TOKEN, tgram://BOT_TOKEN/CHAT), path segment and query value of at least
    MIN_SECRET_CHARS (shorter ones would garble every log line that holds the same word), as written and decoded."""
    _, _, rest = url.partition("://")
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    credentials, _, host = authority.rpartition("@")
    host_is_name = "." in host or host.startswith("[") or host.split(":")[0] == "localhost"
    parts = [*re.split(r"[:@]", credentials), *([] if host_is_name else re.split(r"[:@]", host)), *path.split("/"),
             *(value for _, _, value in (pair.partition("=") for pair in query.split("&")))]
    found = []
    for part in parts:
        found += [part, urllib.parse.unquote(part)] if len(part) >= MIN_SECRET_CHARS else []
    return found
