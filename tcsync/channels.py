"""Alert channels other than Nightscout: the Apprise URLs of ALERT_URLS (ntfy, Pushover, Telegram, e-mail, ...).

Apprise is imported here only, and only when ALERT_URLS names a channel (a service without it never loads it). A
channel is known by an id, a hash of its URL, and shown by a label naming its kind and host ("ntfy (ntfy.sh)"):
the URL holds tokens and passwords, so it is stored, shown and logged nowhere. One send is bounded by Apprise's own
call timeout, and its HTTP calls by outbound's deadline and redirect guard, as the Nightscout calls are: a channel
that hangs holds its sender for CHANNEL_SECS at most. What the channel answered decides the outcome: "sent" when
Apprise says the service took it, "refused" when the service answered 4xx (sending it again cannot help), else
"waiting" with the reason (down, slow, 5xx, 429), to be tried again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import re

from tcsync import outbound

CHANNEL_SECS = 15.0  # one send to one channel, all of it (Apprise's call timeout; its connect and read are 4 s each)
LEVELS = ("warning", "info")  # an alert's start, its end: Apprise's notify_type, for channels that have levels
TITLES = {"warning": "tcsync_wsgi: alert", "info": "tcsync_wsgi: alert over"}
_REFUSED = re.compile(r"error=(4(?!08|29)[0-9]{2})\b")  # Apprise's plugins end a refusal with "error=<status>."


@dataclasses.dataclass(frozen=True)
class Channel:
    """One Apprise URL: its id (stored), its label (shown), the URL itself (neither)."""

    id: str
    label: str
    url: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class Outcome:
    state: str  # "sent", "waiting" or "refused"
    reason: str = ""  # Apprise's words for a failure (redact before showing or storing: they may quote the URL)

    def words(self) -> str:
        return self.state + (f": {self.reason}" if self.reason else "")


@functools.cache
def _apprise():
    """Apprise, imported once; its own log silenced (it would write to stderr, unredacted: we log the outcome), and
    requests guarded as for Nightscout: a redirect of a POST that carries a token is not followed."""
    import apprise
    import requests
    import urllib3.connection

    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(logging.NullHandler())
    apprise_log.propagate = False  # not into a sync's captured log either
    outbound.guard_requests(requests, urllib3.connection)
    return apprise


def apprise_reads(url: str) -> bool:
    """Whether Apprise knows the URL (its scheme, and the tokens that scheme needs)."""
    return _apprise().Apprise.instantiate(url) is not None


def channel_id(url: str) -> str:
    """The same for the same URL in every process and across restarts; not the URL, nor a way back to it."""
    return hashlib.sha256(b"tcsync-channel\0" + url.encode()).hexdigest()[:16]


def channels_of(urls: tuple[str, ...]) -> tuple[Channel, ...]:
    """The channels of ALERT_URLS (read_settings kept only the URLs Apprise reads), labels made unique."""
    if not urls:
        return ()
    labels = [label_of(_apprise().Apprise.instantiate(url)) for url in urls]
    return tuple(Channel(channel_id(url), label if labels.count(label) == 1 else f"{label}, URL {position}", url)
                 for position, (url, label) in enumerate(zip(urls, labels, strict=True), 1))


def label_of(service) -> str:
    """The service's name and, when the URL names a network host, that host: "ntfy (ntfy.sh)", "JSON
    (127.0.0.1:8080)", "Pushover" (its "host" is a token: never shown)."""
    name = service.service_name
    if getattr(service, "mode", None) == "cloud" and name == "ntfy":  # ntfys://TOPIC: the topic is the secret
        return f"{name} (ntfy.sh)"
    host = str(service.host or "")
    if not ("." in host or host.startswith("[") or host == "localhost") or "{host}" not in str(service.templates):
        return name
    return f"{name} ({host}{f':{service.port}' if service.port else ''})"


def send(channel: Channel, body: str, level: str, title: str | None = None) -> Outcome:
    """Send one message to one channel within CHANNEL_SECS."""
    apprise = _apprise()
    service = apprise.Apprise.instantiate(channel.url)
    if service is None:  # read_settings checked it: only a changed Apprise could say otherwise
        return Outcome("refused", "Apprise no longer reads this URL")
    notifier = apprise.Apprise()
    notifier.add(service)
    try:
        with outbound.deadline(CHANNEL_SECS):
            result = notifier.notify(body, title=title or TITLES[level], notify_type=level,
                                     body_format=apprise.NotifyFormat.TEXT, timeout=CHANNEL_SECS)
    except Exception as e:  # a plugin's own failure: tried again later
        return Outcome("waiting", f"{type(e).__name__}: {e}"[:300])
    return outcome_of(result, apprise.AppriseResultStatus)


def outcome_of(result, statuses) -> Outcome:
    """Apprise's result for one service in our words: the last thing it logged is the reason."""
    if result.status == statuses.SUCCESS:
        return Outcome("sent")
    said = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
    reason = " ".join((said[-1] if said else "Apprise could not send it").split())[:300]
    if result.status == statuses.TIMEOUT:
        return Outcome("waiting", f"no answer within {CHANNEL_SECS:g} s")
    return Outcome("refused" if any(_REFUSED.search(message) for message in said) else "waiting", reason)
