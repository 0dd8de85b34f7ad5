"""Log lines: logfmt, one write per line, every value cut and redacted."""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

_NEEDS_QUOTES = re.compile(r'[\s="\\]|^$')
MAX_FIELD_CHARS = 300  # of one logged value (a path, an error): a stranger's 100 KB path is not 100 KB of log
# After a quiet moment the writer waits this long for more lines to join the first one's write: under load a wake-up
# and a write per dozen lines instead of per line (half the log's CPU, about 4 % more deliveries a second).
GATHER_SECS = 0.002
MAX_LINE_BYTES = 4096  # PIPE_BUF: a write up to this size reaches a pipe's reader whole, never mixed with another's


def cut(text: str, limit: int) -> str:
    """text, or its first limit characters and how many more there were."""
    return text if len(text) <= limit else f"{text[:limit]}...[cut {len(text) - limit} chars]"


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: cut to MAX_FIELD_CHARS, quoted (JSON-style) if it has spaces, quotes or odd
    characters; those (controls, bidi overrides) as \\u escapes, printable text such as é or °C as it is."""
    text = str(value)
    if len(text) > MAX_FIELD_CHARS:
        text = cut(text, MAX_FIELD_CHARS)
    printable = text.isprintable()
    if _NEEDS_QUOTES.search(text) or not printable:
        return json.dumps(text, ensure_ascii=not printable)
    return text


def bounded_line(text: str) -> str:
    """text and a newline in at most MAX_LINE_BYTES of UTF-8; a longer line is cut, saying how much."""
    if len(text) < MAX_LINE_BYTES // 4:  # at most 4 bytes a character: short enough without encoding it
        return text + "\n"
    data = text.encode("utf-8", "replace")
    if len(data) < MAX_LINE_BYTES:
        return text + "\n"
    kept = data[:MAX_LINE_BYTES - 40].decode("utf-8", "ignore")  # 40: the marker's room; ignore: no half character
    return f"{kept}...[cut {len(text) - len(kept)} chars]\n"


class Log:
    """Whole lines to stdout, written by one thread in os.write calls of up to MAX_LINE_BYTES.

    A request thread only queues its line: a write system call releases the GIL, and taking it
    back from busy threads stalled every request (measured in bench/). Lines stay whole and in
    order; close() (also run at exit, and by the CLI before its last line) writes what is queued.
    Tests pass their own write callable.
    """

    def __init__(self, write: Callable[[str], Any] | None = None, redact: Callable[[str], str] = str):
        self.redact = redact
        self._write = write
        if write is None:
            self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
            self._writer = threading.Thread(target=self._write_queued, name="log-writer", daemon=True)
            self._writer.start()
            atexit.register(self.close)

    def value(self, value: Any) -> str:
        """One value for a line: redacted before logfmt_value cuts it, so a cut never leaves half a secret behind."""
        return logfmt_value(self.redact(str(value)))

    def fields(self, **fields: Any) -> str:
        """key=value pairs on one line, each through value(); None values are left out."""
        return " ".join(f"{key}={self.value(value)}" for key, value in fields.items() if value is not None)

    def write_redacted(self, text: str) -> None:
        """A line that has been through self.redact already; cut to MAX_LINE_BYTES."""
        text = bounded_line(text)
        if self._write is None:
            self._queue.put(text.encode("utf-8", "replace"))
        else:
            self._write(text)

    def __call__(self, at: str = "info", **fields: Any) -> None:
        self.write_redacted(self.fields(at=at, **fields))

    def _write_queued(self) -> None:
        line = self._queue.get()
        while line is not None:
            batch, size = [line], len(line)
            line = self._queued_now()
            while line and size + len(line) <= MAX_LINE_BYTES:  # more queued lines join this write
                batch.append(line)
                size += len(line)
                line = self._queued_now()
            try:
                os.write(1, b"".join(batch))
            except OSError:
                pass  # stdout gone (a closed pipe): nothing else to tell it to
            if line == b"":  # nothing was queued: wait for the next line (else it starts the next write, or stops)
                line = self._queue.get()
                time.sleep(GATHER_SECS)

    def _queued_now(self) -> bytes | None:
        """The next queued line without waiting: None is the stop, b"" means nothing is queued."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return b""

    def close(self) -> None:
        """Write everything queued and stop the writer; later lines are written at once, by their own thread."""
        if self._write is None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(5)
            self._write = _write_stdout


def _write_stdout(text: str) -> None:
    try:
        os.write(1, text.encode("utf-8", "replace"))
    except OSError:
        pass  # stdout gone (a closed pipe)


class Redactor:
    """Replaces every secret value, and any api_secret= query value, with [redacted]."""

    def __init__(self, secrets: list[str]):
        # The longer of two overlapping secrets first: else the shorter would leave the rest of the longer behind.
        # In any case: a setting's problem may quote a secret upper-cased (a password in TCONNECTSYNC_HEROKU_FEATURES).
        self._needles = (*sorted(set(secrets), key=len, reverse=True), "api_secret=")
        alternatives = [re.escape(s) for s in self._needles[:-1]]
        alternatives.append(r"(?<=api_secret=)[^&\s'\"]+")
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE)
        self._folded = tuple(needle.casefold() for needle in self._needles)

    def __call__(self, text: str) -> str:
        # The pattern finds nothing where no needle occurs: a substring test per needle is a tenth of its search,
        # and nearly every value logged (a path, a device, a reading) holds none.
        folded = text.casefold()
        for needle in self._folded:
            if needle in folded:
                return self._pattern.sub("[redacted]", text)
        return text
