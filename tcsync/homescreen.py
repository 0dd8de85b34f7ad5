"""The service's icons: the browser tab's dot, and what "Add to Home Screen" shows (the manifest and its icon).

The home-screen icon is drawn here, as a PNG (phones want a PNG for a home-screen icon; iOS ignores an SVG one), with
the standard library: no image file in the repository, nothing fetched from elsewhere.
"""

from __future__ import annotations

import functools
import json
import math
import string
import struct
import zlib

# The browser tab's icon: a dot in the state's colour (red unless listed), inline so that nothing is fetched.
TAB_ICON = string.Template("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 2 2'%3E"
                           "%3Ccircle cx='1' cy='1' r='1' fill='%23$colour'/%3E%3C/svg%3E")
TAB_COLOURS = {"ok": "1a7f37", "paused": "9a5b00", "not configured": "59636e"}
NAME = "tconnectsync service"
ICON_SIZE = 256  # pixels: at least the 144 Android asks for; iOS scales it to its 180
BLUE, WHITE = (9, 105, 218), (255, 255, 255)  # the page's --info blue

MANIFEST = json.dumps({
    "name": NAME, "short_name": "tconnectsync", "start_url": "/", "scope": "/", "display": "standalone",
    "background_color": "#ffffff", "theme_color": "#0969da",
    "icons": [{"src": "/icon.png", "sizes": f"{ICON_SIZE}x{ICON_SIZE}", "type": "image/png", "purpose": "any"}],
}).encode()


def tab_icon(state: str) -> str:
    """The tab's icon for a badge word, as a data: URL."""
    return TAB_ICON.substitute(colour=TAB_COLOURS.get(state, "cf222e"))


def _coverage(distance: float, inner: float, outer: float) -> float:
    """How much of a pixel at that distance from the centre lies between the two radii (edges smoothed by a pixel)."""
    return max(0.0, min(1.0, distance - inner + 0.5, outer - distance + 0.5))


@functools.cache
def icon_png() -> bytes:
    """A white ring and dot on blue, ICON_SIZE square: drawn once, on first request (about 0.1 s)."""
    centre, rows = (ICON_SIZE - 1) / 2, []
    ring, dot = (0.22 * ICON_SIZE, 0.34 * ICON_SIZE), (-1, 0.1 * ICON_SIZE)  # radii, inner and outer
    for y in range(ICON_SIZE):
        row = bytearray(b"\0")  # PNG filter type 0: the bytes as they are
        for x in range(ICON_SIZE):
            distance = math.hypot(x - centre, y - centre)
            white = max(_coverage(distance, *ring), _coverage(distance, *dot))
            row += bytes(round(b + (w - b) * white) for b, w in zip(BLUE, WHITE, strict=True))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", ICON_SIZE, ICON_SIZE, 8, 2, 0, 0, 0)  # 8 bits a channel, RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + \
        chunk(b"IEND", b"")
