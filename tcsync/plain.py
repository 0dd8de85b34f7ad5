"""Outside text made plain before it is shown elsewhere: a device's name (set by anyone with access to the Data
Connector's project) in a Nightscout note, a phone's push, /alerts and the status page."""

from __future__ import annotations

import re
import unicodedata

NAME_LIMIT = 64  # characters of a device's name in a note, /alerts and on the page, the … included
# A terminal's escape sequences, whole: CSI (ESC [ 31 m: colours, cursor moves) and OSC (ESC ] ... BEL or ESC \:
# titles, hyperlinks). Removing only the ESC would leave "[31m" in the text.
TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)")
# Characters that Markdown or HTML give meaning to: tags, links, images, emphasis, code, headings, entities.
# Each becomes a space: a space means nothing to either, cannot pose as another character (as a look-alike
# could), and keeps the words on both sides apart ("Fridge_2" -> "Fridge 2", "a<b" -> "a b").
MARKUP_CHARACTERS = str.maketrans(dict.fromkeys("<>[]()`*_#&", " "))
INVISIBLE_CATEGORIES = ("Cc", "Cf", "Cs")  # controls; formats (bidi controls, zero widths); lone surrogates


def shorten(text: str, limit: int) -> str:
    """The text if it fits in limit characters, else cut to fit with '…' (the … counted)."""
    if len(text) <= limit:
        return text
    return text[:limit - 1].rstrip() + "…"


def plain_text(text: str, limit: int) -> str:
    """Outside text made safe for a note: escape sequences and invisible characters removed, the markup
    characters replaced by spaces, every run of whitespace (newlines too) one space, at most limit characters."""
    text = TERMINAL_ESCAPE.sub("", text)
    text = "".join(" " if char.isspace() else char for char in text
                   if char.isspace() or unicodedata.category(char) not in INVISIBLE_CATEGORIES)
    return shorten(" ".join(text.translate(MARKUP_CHARACTERS).split()), limit)


def safe_name(name: str | None, fallback: str | None = None) -> str:
    """A device's name as a note, /alerts and a phone may show it (plain_text, at most NAME_LIMIT characters);
    a name with nothing left falls back to the fallback (the device id), made safe too, else 'a sensor'."""
    return (plain_text(name or "", NAME_LIMIT) or plain_text(fallback or "", NAME_LIMIT)) or "a sensor"
