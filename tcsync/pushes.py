"""Pushes: the tells of the alerts sent to ALERT_URLS' channels, and the test alert that proves every path works.

Each tell (an alert's start or end, or many of one kind in one note) is one row per channel in the store's pushes
table, queued with the tell's Nightscout announcement (alerts.py) and sent by a sender of its own: a channel that
hangs holds neither the Nightscout announcements nor the judging, and each send ends by channels.CHANNEL_SECS.
Claims work as the announcements' do, so two processes on one database send each push once between them. A channel
that fails for a reason that may pass (down, slow, 5xx) holds its other pushes until the next round; the other
channels go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tcsync import channels as channel_calls
from tcsync.alertbook import AlertBook
from tcsync.channels import Channel
from tcsync.log import Log
from tcsync.outbound import NightscoutProblem, Redirected
from tcsync.readings import iso
from tcsync.settings import Settings
from tcsync.sync import Syncer

TEST_NOTES = "Test from tcsync_wsgi: alerts reach you here"
ENTERED_BY = "tcsync_wsgi"


class PushSender:
    """Sends what waits for the channels, the most urgent first; records each outcome (redacted)."""

    RETRY_SECS = 30  # a push that could not go is tried again this much later

    def __init__(self, channels: tuple[Channel, ...], book: AlertBook, log: Log,
                 clock: Callable[[], float] = time.time):
        self.channels, self.book, self.log, self.clock = {c.id: c for c in channels}, book, log, clock

    def send_pending(self) -> int:
        """Send the pushes that wait; how many the channels took."""
        sent, held = 0, set()
        for identifier, channel_id, notes, level in self.book.claim_pushes(self.clock(), list(self.channels)):
            channel = self.channels[channel_id]
            if channel_id in held:  # the channel failed this round: its pushes wait with it
                self.book.push_done(identifier, channel_id, self.clock(), "waiting",
                                    retry_at=self.clock() + self.RETRY_SECS)
                continue
            outcome = channel_calls.send(channel, notes, level)
            reason = self.log.redact(outcome.reason)
            self.book.push_done(identifier, channel_id, self.clock(), outcome.state, reason,
                                retry_at=self.clock() + self.RETRY_SECS)
            if outcome.state == "sent":
                sent += 1
                self.log(event="alert.pushed", identifier=identifier, channel=channel.label)
            elif outcome.state == "refused":
                self.log("error", event="alert.push_refused", identifier=identifier, channel=channel.label,
                         error=reason)
            else:
                held.add(channel_id)
                self.log("warn", event="alert.push_waiting", identifier=identifier, channel=channel.label,
                         error=reason)
        return sent


class TooSoon(Exception):
    """A test alert was sent less than a minute ago (by any process on the database)."""

    def __init__(self, retry_after: float):
        self.retry_after = max(1, round(retry_after))
        super().__init__(f"a test alert was sent this minute: try again in {self.retry_after} s")


def send_test_alert(settings: Settings, channels: tuple[Channel, ...], book: AlertBook, syncer: Syncer, log: Log,
                    now: float) -> list[str]:
    """One test message to Nightscout (as an announcement, if NS_URL and NS_SECRET are set, whatever NS_ALERTS
    says) and to each channel, at once; a line per channel saying what became of it. Records no alert; one a
    minute (TooSoon)."""
    if not channels and not (settings.ns_url and settings.ns_secret):
        return ["No channel to test: set ALERT_URLS, or NS_URL and NS_SECRET (see docs/alerts.md)"]
    retry_after = book.take_test_minute(now)
    if retry_after is not None:
        raise TooSoon(retry_after)
    lines = [f"Nightscout: {_test_nightscout(book, syncer, now)}"] if settings.ns_url and settings.ns_secret else []
    for channel in channels:
        outcome = channel_calls.send(channel, TEST_NOTES, "info", title="tcsync_wsgi: test")
        state = "not sent" if outcome.state == "waiting" else outcome.state
        lines.append(f"{channel.label}: {state}" + (f": {log.redact(outcome.reason)}" if outcome.reason else ""))
    log(event="alert.tested", results=" | ".join(lines))
    return lines


def _test_nightscout(book: AlertBook, syncer: Syncer, now: float) -> str:
    """The test announcement, through the outbox (its created_at a millisecond no other announcement holds: on
    Nightscout up to 15.0.6 it would replace that one), claimed by us so the sender never sends it too."""
    identifier = f"tcsync-test-{round(now * 1000)}"
    created_at = book.queue(identifier, now, TEST_NOTES, claimed_until=now + book.CLAIM_SECS)
    treatment = {"eventType": "Announcement", "isAnnouncement": True, "notes": TEST_NOTES, "enteredBy": ENTERED_BY,
                 "created_at": iso(created_at, "milliseconds"), "identifier": identifier}
    try:
        syncer.upload_treatment(treatment)
    except Exception as e:  # whatever stopped it, in one line
        reason = syncer.describe(e, f"{syncer.ANNOUNCE_SECS:g} s")
        book.drop(identifier, reason)  # a test is not tried again
        refused = isinstance(e, Redirected) or (isinstance(e, NightscoutProblem) and (e.final or e.settings))
        return f"{'refused' if refused else 'not sent'}: {reason}"
    book.sent(identifier, now)
    return "sent"
