"""Settings: built once from the environment; nothing else reads os.environ for our own settings."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import urllib.parse
import zoneinfo

# tconnectsync.features.ALL_FEATURES, copied so that validating settings does not import
# tconnectsync (slow, and it exits the process on bad settings); a test checks they agree.
ALL_FEATURES = ("BASAL", "BOLUS", "IOB", "PUMP_EVENTS", "PUMP_EVENTS_BASAL_SUSPENSION",
                "PROFILES", "CGM", "CGM_ALERTS", "DEVICE_STATUS")
TESTING_FEATURES = ("BOLUS_BG",)  # tconnectsync adds these when ENABLE_TESTING_MODES is true
DEFAULT_FEATURES = ("BASAL", "BOLUS", "PUMP_EVENTS", "PROFILES")
MIN_SECRET_CHARS = 8


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
    host: str = "0.0.0.0"
    port: int | None = 5000  # None: PORT or LISTEN_PORT is no port (a problem the web cannot serve past)
    connection_limit: int | None = None  # None: as many as the open-files limit allows (connection_limit())
    channel_timeout_secs: int = 30
    tconnect_email: str = ""
    tconnect_password: str = dataclasses.field(default="", repr=False)
    tconnect_region: str = "US"
    ns_url: str = dataclasses.field(default="", repr=False)  # may hold a password: https://user:pass@host/
    ns_secret: str = dataclasses.field(default="", repr=False)
    timezone_name: str = ""  # the pump's zone; "" while neither TIMEZONE_NAME nor TZ names one (a missing setting)
    dt_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    temperature_range: tuple[float, float] | None = None  # °C; the status page marks readings outside it
    on_heroku: bool = False  # DYNO is set: the dyno's disk, and a SQLite file on it, is wiped at every restart
    missing: tuple[str, ...] = ()  # sync settings not given: syncs are refused, the web stays up
    problems: tuple[str, ...] = ()  # unusable settings (read_settings): the web serves a page naming them, nothing else

    def secret_values(self) -> list[str]:
        """Every secret value that must never leave the process."""
        values = [self.secret, self.tconnect_password, self.ns_secret, *self.dt_secrets]
        for url in (self.ns_url, self.database_url):  # user:password@ (a Nightscout behind basic auth)
            password = urllib.parse.urlsplit(url).password or ""
            values += [password, urllib.parse.unquote(password)]
        if self.ns_secret:
            values.append(hashlib.sha1(self.ns_secret.encode()).hexdigest())
        return [v for v in values if v]


def _number(env, name: str, default: float, problems: list[str], *, positive: bool) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        problems.append(f"{name} must be a number {'above' if positive else 'of at least'} 0, got {raw!r}")
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
    """"A..B" with A < B (2..8, -20..-15, 2.5 .. 8); raises ValueError otherwise."""
    match = re.fullmatch(r"\s*(-?[0-9]+(?:\.[0-9]+)?)\s*\.\.\s*(-?[0-9]+(?:\.[0-9]+)?)\s*", raw)
    if not match or float(match[1]) >= float(match[2]):
        raise ValueError(raw)
    return float(match[1]), float(match[2])


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
    interval = _number(env, "TCONNECTSYNC_HEROKU_INTERVAL_MINS", 0.0, problems, positive=False)
    timeout = _number(env, "TCONNECTSYNC_HEROKU_SYNC_TIMEOUT_SECS", 120.0, problems, positive=True)
    stale = _number(env, "TCONNECTSYNC_HEROKU_STALE_MINS", max(60.0, 3 * interval), problems, positive=True)
    features, allowed = _features(env, problems)
    connection_limit = _whole_number(env, "WAITRESS_CONNECTION_LIMIT", None, problems)
    channel_timeout = _whole_number(env, "WAITRESS_CHANNEL_TIMEOUT_SECS", 30, problems)
    port = _port(env, problems)
    region, tz_name = _tandem(env, problems)
    ns_url = _ns_url(env, problems)
    database_url = _database_url(env, problems)
    temperature_range = _temperature_range(env, problems)
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
        host=env.get("LISTEN_HOST", "").strip() or "0.0.0.0",
        port=port,
        connection_limit=connection_limit,
        channel_timeout_secs=channel_timeout,
        tconnect_email=values["TCONNECT_EMAIL"],
        tconnect_password=values["TCONNECT_PASSWORD"],
        tconnect_region=region,
        ns_url=ns_url,
        ns_secret=values["NS_SECRET"],
        timezone_name=tz_name,
        dt_secrets=tuple(s for s in dt_secrets if s),
        temperature_range=temperature_range,
        on_heroku=bool(env.get("DYNO", "").strip()),
        missing=tuple(name for name, value in values.items() if not value),
        problems=tuple(problems),
    )


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
        except ValueError as e:
            problems.append(f"TCONNECTSYNC_HEROKU_FEATURES: {e}")
    return features, allowed


def _port(env, problems: list[str]) -> int | None:
    port_name = "PORT" if env.get("PORT", "").strip() else "LISTEN_PORT"
    port_raw = env.get(port_name, "").strip() or "5000"
    if is_digits(port_raw) and int(port_raw) <= 65535:
        return int(port_raw)
    problems.append(f"{port_name} must be a TCP port number, got {port_raw!r}")
    return None


def _tandem(env, problems: list[str]) -> tuple[str, str]:
    """(region, time zone name or ""). tconnectsync calls sys.exit(1) at import on these, or silently misbehaves
    (it takes America/New_York when no zone is named): check first."""
    region = env.get("TCONNECT_REGION", "").strip() or "US"
    if region not in ("US", "EU"):
        problems.append(f"TCONNECT_REGION must be US or EU (capitals), got {region!r}")
    serial = env.get("PUMP_SERIAL_NUMBER", "").strip()
    if serial and not is_digits(serial):
        problems.append(f"PUMP_SERIAL_NUMBER must be the pump's serial number (digits), got {serial!r}")
    tz_source = "TIMEZONE_NAME" if env.get("TIMEZONE_NAME", "").strip() else "TZ"
    tz_name = env.get(tz_source, "").strip()
    if tz_name and not _is_zone(tz_name):
        problems.append(f"{tz_source} must be a time zone name like America/New_York"
                        f"{' (or set TIMEZONE_NAME)' if tz_source == 'TZ' else ''}, got {tz_name!r}")
        tz_name = ""
    cache = env.get("CACHE_CREDENTIALS", "").strip().lower()
    if cache in ("true", "1"):
        problems.append("CACHE_CREDENTIALS=true breaks tconnectsync 3.0.3's login; unset it or set it to false")
    return region, tz_name


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _ns_url(env, problems: list[str]) -> str:
    ns_url = env.get("NS_URL", "").strip()
    if ns_url:
        if not re.match(r"https?://[^/\s]+", ns_url):
            shown = ns_url.rpartition("@")[2]  # never echo a user:password@
            problems.append(f"NS_URL must start with https:// (or http://), got {shown!r}"
                            + (" (after its user:password@)" if shown != ns_url else ""))
        ns_url = ns_url.rstrip("/") + "/"  # tconnectsync joins paths onto it
    return ns_url


def _database_url(env, problems: list[str]) -> str:
    database_url = env.get("DATABASE_URL", "").strip()
    if database_url and not re.match(r"postgres(ql)?://", database_url):  # never echo it: it holds a password
        problems.append(f"DATABASE_URL must be a postgres:// or postgresql:// URL, got one starting with "
                        f"{database_url.split(':', 1)[0][:20]!r}")
    return database_url


def _temperature_range(env, problems: list[str]) -> tuple[float, float] | None:
    if not env.get("DT_TEMPERATURE_RANGE", "").strip():
        return None
    try:
        return parse_range(env["DT_TEMPERATURE_RANGE"])
    except ValueError:
        problems.append("DT_TEMPERATURE_RANGE must be two numbers of °C, the lower first, like 2..8, got "
                        f"{env['DT_TEMPERATURE_RANGE'].strip()[:40]!r}")
        return None
