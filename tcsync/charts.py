"""The status page's drawings: the 24 h sync strip and a sensor's 24 h chart, as inline SVG computed here."""

from __future__ import annotations

import datetime as dt
import itertools
import math

from tcsync.markup import KIND_NAMES, PARTS, Markup, clock_text, fill, join, number_text
from tcsync.readings import local_time

DAY_SECS = 86400


AXIS_UNITS = 1440  # SVG x units across the last 24 h: one per minute


MARK_UNITS = 4  # a run's mark in the sync strip, in minutes: wide enough to see on a phone


THIN_SECS = 300  # a chart draws at most the lowest and the highest reading of each 5 minutes


PLOT_UNITS = 100  # SVG y units of a chart


MARK_Y = {"ok": 8}  # an ok run's mark is shorter than the others: the outcome shows without colour too


def axis_ticks(now: float, tz: dt.tzinfo) -> list[tuple[float, str]]:
    """(fraction of the last 24 h, '06:00') at each local 00:00, 06:00, 12:00 and 18:00."""
    start = now - DAY_SECS
    first = math.ceil(start / 900) * 900  # quarter hours: every zone's offset is a multiple of 15 minutes
    ticks = []
    for ts in range(int(first), int(now), 900):
        local = local_time(ts, tz)
        if local is not None and local.minute == 0 and local.hour % 6 == 0:
            ticks.append(((ts - start) / DAY_SECS, f"{local:%H:%M}"))
    return ticks


def axis_html(ticks: list[tuple[float, str]]) -> Markup:
    """The time labels under a strip or chart; none so close to an edge that it would stick out."""
    return join(fill(PARTS["tick_label"], left=f"{f * 100:.2f}", text=text) for f, text in ticks if 0.07 < f < 0.88)


def tick_lines(ticks: list[tuple[float, str]], height: int) -> Markup:
    path = "".join(f"M{f * AXIS_UNITS:.1f} 0V{height}" for f, _ in ticks)
    return fill(PARTS["ticks"], d=path) if path else Markup()


def strip_html(runs: list[dict], now: float, tz: dt.tzinfo) -> Markup:
    """One mark per run of the last 24 h, coloured and shaped by outcome; the right edge is now."""
    start = now - DAY_SECS
    ticks = axis_ticks(now, tz)
    by_outcome: dict[str, list[str]] = {}
    for run in runs:  # one path per outcome, one rectangle in it per run: a quarter of the bytes of <rect>s
        y = MARK_Y.get(run["outcome"], 0)
        x = min(max(run["started_at"] - start, 0) / 60, AXIS_UNITS - MARK_UNITS)
        by_outcome.setdefault(run["outcome"], []).append(f"M{x:.1f} {y}h{MARK_UNITS}v{24 - y}h-{MARK_UNITS}z")
    marks = join(fill(PARTS["marks"], outcome=outcome, d="".join(d)) for outcome, d in by_outcome.items())
    return fill(PARTS["strip"], ticks=tick_lines(ticks, 24), marks=marks, axis=axis_html(ticks),
                label=f"{len(runs)} syncs in the last 24 hours")


def out_of_range(value: float, band: tuple[float, float] | None) -> bool:
    return band is not None and not band[0] <= value <= band[1]


def band_text(band: tuple[float, float]) -> str:
    return f"{band[0]:g}\N{EN DASH}{band[1]:g} °C"


def out_since(points: list[tuple[float, float]], band: tuple[float, float] | None) -> float | None:
    """When the newest readings started being outside the band (None if the newest is inside)."""
    since = None
    for at, value in reversed(points):
        if not out_of_range(value, band):
            break
        since = at
    return since


def thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lowest and the highest reading of each THIN_SECS, in time order: a sensor that reports every few seconds
    still draws a small chart, with its peaks."""
    buckets: dict[int, list[tuple[float, float]]] = {}
    for point in points:
        buckets.setdefault(int(point[0] // THIN_SECS), []).append(point)
    kept: list[tuple[float, float]] = []
    for bucket in buckets.values():
        extremes = {min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])}
        kept += bucket if len(bucket) <= 2 else sorted(extremes)
    return kept


def segments(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where the sensor was silent for long (3 x its usual interval, at least 30 min)."""
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(points))
    silent = max(1800.0, 3 * gaps[len(gaps) // 2]) if gaps else 0.0
    parts: list[list[tuple[float, float]]] = []
    for i, point in enumerate(points):
        if i == 0 or point[0] - points[i - 1][0] > silent:
            parts.append([])
        parts[-1].append(point)
    return parts


def chart_html(kind: str, unit: str | None, points: list[tuple[float, float]], now: float, tz: dt.tzinfo,
               band: tuple[float, float] | None) -> Markup:
    """A 24 h line chart of one numeric kind: min and max labelled, the band (if any) shaded, readings outside it
    marked. x in minutes of the last 24 h, y in PLOT_UNITS, top down."""
    start, unit_text = now - DAY_SECS, f" {unit}" if unit else ""
    values = [value for _, value in points]
    low, high = min(values), max(values)
    bottom, top = min(low, *band) if band else low, max(high, *band) if band else high
    pad = (top - bottom) * 0.1 or max(1.0, abs(top) / 100)
    bottom, top = bottom - pad, top + pad
    span = top - bottom if math.isfinite(top - bottom) and top > bottom else 0.0  # 0: values beyond floats' reach

    def x(at: float) -> str:  # a reading a little ahead of now (Store.series allows for clock skew): at the edge
        return f"{(min(at, now) - start) / 60:.1f}"

    def y(value: float) -> float:
        return (top - value) / span * PLOT_UNITS if span else PLOT_UNITS / 2

    lines = join(fill(PARTS["line"], points=" ".join(f"{x(at)},{y(value):.2f}" for at, value in part))
                 for part in segments(points))
    single = [part[0] for part in segments(points) if len(part) == 1]
    outside = [(at, value) for at, value in points if out_of_range(value, band)]
    dots = join(fill(PARTS["dots"], cls=cls, d="".join(f"M{x(at)} {y(value):.2f}h0" for at, value in chosen))
                for cls, chosen in (("dot", single + points[-1:]), ("dot out", outside)) if chosen)
    shaded = fill(PARTS["band"], y=f"{y(band[1]):.2f}", height=f"{y(band[0]) - y(band[1]):.2f}") if band \
        else Markup()
    lowest, highest = min(points, key=lambda p: p[1]), max(points, key=lambda p: p[1])
    ticks = axis_ticks(now, tz)
    return fill(PARTS["chart"], title=f"{KIND_NAMES.get(kind, kind)}, last 24 hours", band=shaded,
                ticks=tick_lines(ticks, PLOT_UNITS), lines=lines, dots=dots, axis=axis_html(ticks),
                guides=fill(PARTS["guides"], d=f"M0 {y(high):.2f}H{AXIS_UNITS}M0 {y(low):.2f}H{AXIS_UNITS}"),
                label=f"{KIND_NAMES.get(kind, kind)} from {number_text(low, unit)} to {number_text(high, unit)}"
                      f"{unit_text}", max_top=f"{y(high):.2f}", min_top=f"{y(low):.2f}",
                # each label on the outer side of its line, unless that is off the chart; one label if just one value
                max_in=" in" if y(high) < 15 else "", min_in=" in" if y(low) > 85 else "",
                max=f"max {number_text(high, unit)}{unit_text} ({clock_text(highest[0], now, tz)})",
                min=f"min {number_text(low, unit)}{unit_text} ({clock_text(lowest[0], now, tz)})" if low < high
                else "")
