"""`autoscaler record`: export a Prometheus rate query as a trace the simulator replays.

Rules:
- Time enters as arguments (`now_s`, parsed `--until`); nothing here reads a clock.
- The query is evaluated on a grid of multiples of `step_s` (the same grid as the controller's
  history), fetched in chunks below Prometheus' 11,000-points limit through PrometheusSource,
  so chunking never shows in the output.
- The trace starts at the first value (`timestamp_s` 0) and ends at the last one; each row's
  `requests` is rate x step rounded to an integer. Interior missing steps or NaN are a gap:
  an error naming the first one (RFC 3339 and offset) unless a fill ("zero" or "linear") is
  chosen. A query that yields several series must be aggregated by the user.
- Library errors arrive as autoscaler.errors (translated by PrometheusSource).
Not pure: queries Prometheus over HTTP. The parsing helpers and `to_requests` are pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import numpy as np

from autoscaler.errors import MetricsError, MetricsGap, MetricsUnavailable, QueryRejected
from autoscaler.prometheus_source import PROMETHEUS_MAX_POINTS, PrometheusSource

FILLS = ("zero", "linear")
MAX_POINTS = 5_000_000  # refuse absurd windows (e.g. a year at 1 s) before querying
_UNIT_S = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)(w|d|h|m|s)")


def parse_duration_s(text: str, option: str = "duration") -> int:
    """'30m', '6h', '7d', '60s', '1h30m' -> whole seconds (> 0). ValueError names the option."""
    s = text.strip().lower()
    parts = _DURATION.findall(s)
    units = [u for _, u in parts]
    ordered = units == sorted(units, key=list(_UNIT_S).index) and len(set(units)) == len(units)
    if not s or "".join(n + u for n, u in parts) != s or not ordered:
        raise ValueError(
            f"{option}: {text!r} is not a duration; use a whole number with s, m, h, d or w "
            "(e.g. 60s, 30m, 6h, 7d)"
        )
    seconds = sum(int(n) * _UNIT_S[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{option}: {text!r} must be longer than 0 s")
    return seconds


def parse_time_s(text: str, now_s: float, option: str = "--until") -> float:
    """'now' or an RFC 3339 time with a zone ('2026-11-29T12:00:00Z') -> epoch seconds."""
    s = text.strip()
    if s.lower() == "now":
        return float(now_s)
    try:
        t = datetime.fromisoformat(s[:-1] + "+00:00" if s[-1:] in "zZ" and s else s)
    except ValueError:
        t = None
    if t is None or t.tzinfo is None or "T" not in s.upper():
        raise ValueError(
            f"{option}: {text!r} is not 'now' or an RFC 3339 time with a zone "
            "(e.g. 2026-11-29T12:00:00Z)"
        )
    return t.timestamp()


def rfc3339(t_s: float) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Recording:
    """A recorded rate on the grid: values[i] is the rate (1/s) at start_s + i * step_s.

    NaN marks a missing step or a NaN answer; leading and trailing ones are already trimmed.
    window_s: the [start, end] asked for, epoch seconds (for messages).
    """

    values_rps: np.ndarray
    step_s: int
    start_s: float
    window_s: tuple[float, float]
    queries: int

    def gaps(self) -> list[tuple[int, int]]:
        """[start, end) index runs of missing values."""
        missing = np.concatenate(([False], np.isnan(self.values_rps), [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(missing))
        return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _describe_series(series: Iterable[dict]) -> str:
    labels = ["{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.items())) + "}" for s in series]
    return ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")


def fetch(
    url: str,
    query: str,
    start_s: float,
    end_s: float,
    step_s: int,
    *,
    max_points_per_query: int = PROMETHEUS_MAX_POINTS,
    timeout_s: float = 30.0,
) -> Recording:
    """The query's single series on the step grid within [start_s, end_s], in chunks.

    Raises MetricsUnavailable / QueryRejected (from the source), MetricsError when the query
    returns no data or more than one series, ValueError on a window that is empty or too big.
    """
    first_k, end_k = math.ceil(start_s / step_s), math.floor(end_s / step_s)
    n = end_k - first_k + 1
    if n < 2:
        raise ValueError(f"the window holds {max(n, 0)} step(s) of {step_s} s; it needs 2 or more")
    if n > MAX_POINTS:
        raise ValueError(f"the window holds {n:,} steps of {step_s} s; at most {MAX_POINTS:,}")
    source = PrometheusSource(
        url, step_s=step_s, max_points_per_query=max_points_per_query, timeout_s=timeout_s
    )
    values = np.full(n, np.nan)
    seen: dict[tuple, dict] = {}
    for a, b in source.chunks(first_k, end_k):
        for series in source.range(query, a, b):
            metric = series.get("metric", {})
            seen.setdefault(tuple(sorted(metric.items())), metric)
            if len(seen) > 1:
                raise MetricsError(
                    f"the query returns several series ({_describe_series(seen.values())}); "
                    "aggregate it to one, e.g. sum(...)"
                )
            for t, v in series.get("values", ()):
                i = round(float(t) / step_s) - first_k
                if 0 <= i < n:
                    values[i] = float(v)  # float("NaN") stays NaN: a gap
    present = np.flatnonzero(~np.isnan(values))
    if len(present) == 0:
        raise MetricsError(
            f"the query returned no data between {rfc3339(first_k * step_s)} and "
            f"{rfc3339(end_k * step_s)}"
        )
    i0, i1 = int(present[0]), int(present[-1])
    return Recording(
        values_rps=values[i0 : i1 + 1],
        step_s=step_s,
        start_s=float((first_k + i0) * step_s),
        window_s=(float(first_k * step_s), float(end_k * step_s)),
        queries=sum(source.queries_issued.values()),
    )


def fill_gaps(values: np.ndarray, fill: str | None) -> np.ndarray:
    """Missing (NaN) values replaced by 0 ('zero') or by the straight line between the values on
    either side ('linear'); None leaves them. Ends are never missing (trimmed by fetch)."""
    if fill is None:
        return values
    if fill not in FILLS:
        raise ValueError(f"--fill-gaps: {fill!r} is not one of {', '.join(FILLS)}")
    missing = np.isnan(values)
    out = values.copy()
    if fill == "zero":
        out[missing] = 0.0
    else:
        idx = np.arange(len(out))
        out[missing] = np.interp(idx[missing], idx[~missing], values[~missing])
    return out


def gap_error(rec: Recording) -> MetricsGap:
    """One message naming the first gap (RFC 3339 and offset) and counting the others."""
    runs = rec.gaps()
    a, b = runs[0]
    start, end = rec.start_s + a * rec.step_s, rec.start_s + b * rec.step_s
    more = f" (and {len(runs) - 1} more)" if len(runs) > 1 else ""
    missing = int(np.isnan(rec.values_rps).sum())
    return MetricsGap(
        f"gap in the data from {rfc3339(start)} to {rfc3339(end)} "
        f"(timestamp_s {a * rec.step_s} to {b * rec.step_s}, {b - a} missing step(s) of "
        f"{rec.step_s} s){more}, {missing} missing in all; pass --fill-gaps zero|linear to fill",
        gaps_s=tuple(
            (rec.start_s + x * rec.step_s, rec.start_s + y * rec.step_s) for x, y in runs
        ),
    )


def to_requests(values_rps: np.ndarray, step_s: int) -> np.ndarray:
    """Requests per step: rate x step rounded to an integer (negatives, impossible for a
    rate, are clipped to 0 so the trace stays loadable)."""
    return np.maximum(np.rint(values_rps * step_s), 0).astype(np.int64)


def write_series_csv(out: TextIO, requests: np.ndarray, step_s: int) -> None:
    """The simulator's `timestamp_s,requests` format, timestamps from 0 in whole steps."""
    out.write("timestamp_s,requests\n")
    out.writelines(f"{i * step_s},{int(r)}\n" for i, r in enumerate(requests.tolist()))


def record(
    out: TextIO,
    url: str,
    query: str,
    *,
    since_s: int,
    until_s: float,
    step_s: int = 60,
    fill: str | None = None,
    max_points_per_query: int = PROMETHEUS_MAX_POINTS,
) -> Recording:
    """Fetch, check for gaps (or fill them), and write the trace to `out`.

    Nothing is written when it fails (MetricsGap, MetricsError, ValueError)."""
    if fill is not None and fill not in FILLS:
        raise ValueError(f"--fill-gaps: {fill!r} is not one of {', '.join(FILLS)}")
    rec = fetch(
        url, query, until_s - since_s, until_s, step_s, max_points_per_query=max_points_per_query
    )
    if len(rec.values_rps) < 2:
        raise MetricsError(
            f"the query has a single value (at {rfc3339(rec.start_s)}) in the window; "
            "a trace needs two or more steps"
        )
    if fill is None and rec.gaps():
        raise gap_error(rec)
    # Round the known steps first, so a linear fill runs between the exported integers.
    per_step = fill_gaps(np.rint(rec.values_rps * step_s), fill)
    write_series_csv(out, to_requests(per_step, 1), step_s)
    return rec


def one_line(exc: Exception, url: str) -> str:
    """A user-facing line for an error of `record`: Prometheus' own reason for a rejected
    query, the address for an unreachable server, the message otherwise."""
    text = str(exc)
    if isinstance(exc, QueryRejected):
        m = re.search(r'"error":"((?:[^"\\]|\\.)*)"', text)
        return f"Prometheus rejected the query: {m.group(1) if m else text.splitlines()[0]}"
    if isinstance(exc, MetricsUnavailable):
        reason = "connection refused" if "refused" in text.lower() else text.splitlines()[0]
        return f"Prometheus at {url} is unreachable or failed: {reason}"
    return text.splitlines()[0] if text else type(exc).__name__
