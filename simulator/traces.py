"""Recorded traces: the `Trace` value and the readers that build it.

Two shapes of trace:
- counts: one row per fixed interval (`series.csv`: `timestamp_s,requests`); `interval_s` > 0.
- per-request: the Azure LLM format (`TIMESTAMP,ContextTokens,GeneratedTokens`), replayed with
  its exact arrival times and token counts; `interval_s` == 0, and `counts` then hold the
  arrivals per 1-second bin (`bin_s`) so that policies can learn from the series.

All times in a Trace are seconds on the trace's own clock (0 = the recorded trace's start);
`window()` keeps that clock, so a replay from `--start S` and its history line up.

Readers validate everything and repair nothing: a bad file raises TraceError with
``file:line: fault``. Parsing is vectorized (pandas); a vectorized check finds the first bad row.
The Trace value and its methods are pure; only the `load_*` functions read the disk.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.errors import TraceError

SERIES_HEADER = ("timestamp_s", "requests")
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
AZURE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
PER_REQUEST_BIN_S = 1.0  # bin of `counts` for per-request traces


@dataclass(frozen=True)
class Trace:
    """A recorded (or generated) request trace.

    name: short name (the trace directory's name for recorded traces).
    interval_s: length of one counts interval; 0 for a per-request trace.
    start_s: start of the covered span on the trace clock (the first interval's start).
    end_s: end of the covered span (exclusive).
    counts: requests per interval (np.int64); per 1-second bin for per-request traces.
    timestamps_s: start of each interval of `counts` (float64, same length).
    arrivals_s: per-request arrival times (float64, sorted, on the trace clock), or None.
    prompt_tokens, output_tokens: per-request token counts (np.int64), or None.
    source: the path it was read from ("" for generated traces), for messages.
    """

    name: str
    interval_s: float
    start_s: float
    end_s: float
    counts: np.ndarray
    timestamps_s: np.ndarray
    arrivals_s: np.ndarray | None = None
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", np.asarray(self.counts, dtype=np.int64))
        object.__setattr__(self, "timestamps_s", np.asarray(self.timestamps_s, dtype=np.float64))
        if self.counts.shape != self.timestamps_s.shape:
            raise ValueError("counts and timestamps_s differ in length")
        if self.arrivals_s is not None:
            object.__setattr__(self, "arrivals_s", np.asarray(self.arrivals_s, dtype=np.float64))
            for tokens in (self.prompt_tokens, self.output_tokens):
                if tokens is not None and len(tokens) != len(self.arrivals_s):
                    raise ValueError("token arrays must have one entry per arrival")

    @property
    def is_per_request(self) -> bool:
        return self.arrivals_s is not None

    @property
    def has_tokens(self) -> bool:
        return self.prompt_tokens is not None and self.output_tokens is not None

    @property
    def bin_s(self) -> float:
        """Length of one `counts` interval (1 s for per-request traces)."""
        return self.interval_s if self.interval_s > 0 else PER_REQUEST_BIN_S

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def rates_rps(self) -> np.ndarray:
        """Mean request rate of each interval (counts / bin)."""
        return self.counts / self.bin_s

    def total_requests(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Requests in [start_s, end_s) (defaults: the whole trace).

        Per-request traces: the exact number of arrivals. Counts traces: exact for bounds on
        interval boundaries; an interval cut by a bound counts in proportion to its overlap.
        """
        lo = self.start_s if start_s is None else start_s
        hi = self.end_s if end_s is None else end_s
        if self.arrivals_s is not None:
            a = self.arrivals_s
            return float(np.searchsorted(a, hi, "left") - np.searchsorted(a, lo, "left"))
        starts = self.timestamps_s
        overlap = np.clip(np.minimum(starts + self.interval_s, hi) - np.maximum(starts, lo), 0, None)
        return float(np.sum(self.counts * (overlap / self.interval_s)))

    def window(self, start_s: float, duration_s: float) -> Trace:
        """The part of the trace in [start_s, start_s + duration_s), on the same clock.

        For counts traces both bounds must lie on interval boundaries (a cut interval would
        need a count that the file does not hold); the span is clipped to the trace.
        """
        if duration_s <= 0:
            raise TraceError(f"{self._label()}: window duration must be positive, got {duration_s}")
        lo = max(start_s, self.start_s)
        hi = min(start_s + duration_s, self.end_s)
        if hi <= lo:
            raise TraceError(
                f"{self._label()}: window [{start_s:g}, {start_s + duration_s:g}) s lies outside "
                f"the trace [{self.start_s:g}, {self.end_s:g}) s"
            )
        if self.arrivals_s is None:
            return self._count_window(lo, hi)
        return self._request_window(lo, hi)

    def _count_window(self, lo: float, hi: float) -> Trace:
        for bound, label in ((lo, "start"), (hi, "end")):
            steps = (bound - self.start_s) / self.interval_s
            if abs(steps - round(steps)) > 1e-9 and bound != self.end_s:
                raise TraceError(
                    f"{self._label()}: window {label} {bound:g} s is not on the trace's "
                    f"{self.interval_s:g} s interval grid"
                )
        i0 = round((lo - self.start_s) / self.interval_s)
        i1 = math.ceil((hi - self.start_s) / self.interval_s - 1e-9)
        return replace(
            self,
            start_s=float(self.timestamps_s[i0]),
            end_s=float(min(self.timestamps_s[i1 - 1] + self.interval_s, self.end_s)),
            counts=self.counts[i0:i1],
            timestamps_s=self.timestamps_s[i0:i1],
        )

    def _request_window(self, lo: float, hi: float) -> Trace:
        a = self.arrivals_s
        assert a is not None
        j0, j1 = np.searchsorted(a, lo, "left"), np.searchsorted(a, hi, "left")
        return _per_request_trace(
            self.name,
            a[j0:j1],
            None if self.prompt_tokens is None else self.prompt_tokens[j0:j1],
            None if self.output_tokens is None else self.output_tokens[j0:j1],
            lo,
            hi,
            self.source,
        )

    def scaled(self, rate_scale: float, seed: int = 0) -> Trace:
        """The trace with its request rate multiplied by `rate_scale` (> 0).

        Counts: interval i gets round(S_i) - round(S_{i-1}) requests where S is the running sum
        of counts * rate_scale, so every interval is within 1 of the exact product, the total
        within 0.5, and an integer scale is exact. No randomness.
        Per-request: scale = k + f (k integer, 0 <= f < 1): each request is kept k times, plus
        once more with probability f (seeded by `seed`). The first copy keeps its recorded time;
        every further copy is placed uniformly between the request and the next one (the
        trace end for the last), so the local rate shape is kept and no two copies collide.
        Copies keep the original's token counts.
        """
        if not (rate_scale > 0 and math.isfinite(rate_scale)):
            raise TraceError(f"{self._label()}: rate scale must be a positive number, got {rate_scale}")
        if rate_scale == 1:
            return self
        if self.arrivals_s is None:
            running = np.round(np.cumsum(self.counts.astype(np.float64)) * rate_scale)
            counts = np.diff(running, prepend=0.0).astype(np.int64)
            return replace(self, counts=counts)
        return self._scaled_requests(rate_scale, np.random.default_rng(seed))

    def _scaled_requests(self, rate_scale: float, rng: np.random.Generator) -> Trace:
        a = self.arrivals_s
        assert a is not None
        whole = math.floor(rate_scale)
        copies = whole + (rng.random(a.size) < rate_scale - whole)
        idx = np.repeat(np.arange(a.size), copies)
        first = np.ones(idx.size, dtype=bool)
        first[1:] = idx[1:] != idx[:-1]
        gap = np.diff(a, append=self.end_s)
        times = a[idx] + np.where(first, 0.0, rng.random(idx.size) * gap[idx])
        order = np.argsort(times, kind="stable")
        idx = idx[order]
        return _per_request_trace(
            self.name,
            times[order],
            None if self.prompt_tokens is None else self.prompt_tokens[idx],
            None if self.output_tokens is None else self.output_tokens[idx],
            self.start_s,
            self.end_s,
            self.source,
        )

    def _label(self) -> str:
        return self.source or self.name


def _per_request_trace(
    name: str,
    arrivals_s: np.ndarray,
    prompt_tokens: np.ndarray | None,
    output_tokens: np.ndarray | None,
    start_s: float,
    end_s: float,
    source: str = "",
) -> Trace:
    """A per-request Trace with its counts binned per second from `start_s`."""
    n_bins = max(1, math.ceil((end_s - start_s) / PER_REQUEST_BIN_S - 1e-9))
    bins = np.floor((arrivals_s - start_s) / PER_REQUEST_BIN_S).astype(np.int64)
    counts = np.bincount(np.clip(bins, 0, n_bins - 1), minlength=n_bins)
    return Trace(
        name=name,
        interval_s=0.0,
        start_s=float(start_s),
        end_s=float(end_s),
        counts=counts,
        timestamps_s=start_s + PER_REQUEST_BIN_S * np.arange(n_bins),
        arrivals_s=arrivals_s,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        source=source,
    )


def per_request_trace(
    name: str,
    arrivals_s: np.ndarray,
    end_s: float,
    prompt_tokens: np.ndarray | None = None,
    output_tokens: np.ndarray | None = None,
) -> Trace:
    """A per-request Trace from sorted arrival times in [0, end_s) (for generators and tests)."""
    a = np.asarray(arrivals_s, dtype=np.float64)
    if a.size and (a[0] < 0 or a[-1] >= end_s or np.any(np.diff(a) < 0)):
        raise ValueError("arrivals must be sorted and lie in [0, end_s)")
    p = None if prompt_tokens is None else np.asarray(prompt_tokens, dtype=np.int64)
    o = None if output_tokens is None else np.asarray(output_tokens, dtype=np.int64)
    return _per_request_trace(name, a, p, o, 0.0, float(end_s))


# ---------------------------------------------------------------- readers (these read the disk)


def load_trace(path: str | Path) -> Trace:
    """Read a trace: a `series.csv`, an Azure raw CSV, or a trace directory.

    A directory is read from its Azure raw per-request CSV (under `raw/`) when it has one, since
    that replays the exact arrival times and tokens; else from its `series.csv`.
    """
    p = Path(path)
    if p.is_dir():
        return _load_directory(p)
    if not p.exists():
        raise TraceError(f"{p}: no such file or directory")
    header = _first_line(p)
    if header is not None and tuple(header.split(",")) == AZURE_HEADER:
        return load_azure_raw(p)
    return load_series_csv(p)


def _load_directory(d: Path) -> Trace:
    for candidate in sorted((d / "raw").glob("*.csv")) if (d / "raw").is_dir() else []:
        header = _first_line(candidate)
        if header is not None and tuple(header.split(",")) == AZURE_HEADER:
            return load_azure_raw(candidate, name=d.name)
    series = d / "series.csv"
    if series.is_file():
        return load_series_csv(series, name=d.name)
    raise TraceError(f"{d}: trace directory holds neither series.csv nor an Azure raw CSV in raw/")


def _first_line(p: Path) -> str | None:
    with p.open("rb") as f:
        line = f.readline()
    if not line:
        return None
    return line.decode("utf-8", errors="replace").rstrip("\r\n").lstrip("\ufeff")


def _trace_name(p: Path) -> str:
    parent = p.parent.parent if p.parent.name == "raw" else p.parent
    return parent.name if p.name == "series.csv" or p.parent.name == "raw" else p.stem


def _read_cells(p: Path, header: tuple[str, ...]) -> pd.DataFrame:
    """Read every data row as strings, one DataFrame row per file line after the header."""
    first = _first_line(p)
    if first is None or first.strip() == "":
        raise TraceError(f"{p}:1: empty file (expected header '{','.join(header)}')")
    if tuple(c.strip() for c in first.split(",")) != header:
        raise TraceError(f"{p}:1: expected header '{','.join(header)}', found '{first[:80]}'")
    try:
        df = pd.read_csv(
            p, header=None, skiprows=1, dtype=str, na_filter=False, skip_blank_lines=False,
            names=list(header), engine="c",
        )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(header))
    except pd.errors.ParserError as e:
        raise TraceError(f"{p}:{_parser_error_line(e)}") from None
    if len(df) == 0:
        raise TraceError(f"{p}:2: no data rows after the header")
    return df


def _read_numeric(p: Path, header: tuple[str, ...]) -> np.ndarray | None:
    """All data cells as float64 when the file is clean, else None (use the string path)."""
    first = _first_line(p)
    if first is None or tuple(c.strip() for c in first.split(",")) != header:
        return None
    try:
        df = pd.read_csv(
            p, header=None, skiprows=1, names=list(header), dtype=np.float64,
            skip_blank_lines=False, engine="c",
        )
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    values = df.to_numpy(dtype=np.float64)
    if values.shape[0] == 0 or not np.isfinite(values).all():
        return None
    return values


def _parser_error_line(e: Exception) -> str:
    """'LINE: fault' from a pandas tokenizer error ('Expected 2 fields in line 3, saw 3')."""
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
    if m:
        return f"{m.group(2)}: wrong number of cells (expected {m.group(1)}, found {m.group(3)})"
    return "?: " + " ".join(str(e).split())


def _first_bad(p: Path, checks: list[tuple[np.ndarray, object]]) -> None:
    """Raise for the earliest row flagged by any check (ties: the earlier check wins).

    Each check is (bool array over data rows, message or callable row -> message).
    """
    best: tuple[int, int] | None = None
    for k, (bad, _) in enumerate(checks):
        hits = np.flatnonzero(bad)
        if hits.size and (best is None or hits[0] < best[0]):
            best = (int(hits[0]), k)
    if best is None:
        return
    row, k = best
    msg = checks[k][1]
    text = msg(row) if callable(msg) else msg
    raise TraceError(f"{p}:{row + 2}: {text}")


class _LazyText:
    """Cell texts for messages when the fast path parsed numbers: formats one on demand."""

    def __init__(self, values: np.ndarray) -> None:
        self.iat = self
        self._values = values

    def __getitem__(self, i: int) -> str:
        return f"{self._values[i]:g}"


def _cell(name: str, value: str) -> str:
    return f"missing {name}" if value.strip() == "" else f"non-numeric {name} '{value}'"


def _numbers(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col.str.strip(), errors="coerce").to_numpy(dtype=np.float64)


def load_series_csv(path: str | Path, name: str | None = None) -> Trace:
    """Read a `timestamp_s,requests` file with a fixed interval."""
    p = Path(path)
    fast = _read_numeric(p, SERIES_HEADER)
    if fast is not None:
        # Every cell parsed as a number: no string pass needed (the common, clean case).
        t, c = fast[:, 0], fast[:, 1]
        raw_t, raw_c = _LazyText(t), _LazyText(c)
        blank = np.zeros(t.size, dtype=bool)
    else:
        df = _read_cells(p, SERIES_HEADER)
        raw_t, raw_c = df["timestamp_s"], df["requests"]
        t, c = _numbers(raw_t), _numbers(raw_c)
        blank = ((raw_t.str.strip() == "") & (raw_c.str.strip() == "")).to_numpy()
    n = t.size
    dt = np.diff(t, prepend=np.nan)
    interval = dt[1] if n > 1 and np.isfinite(dt[1]) and dt[1] > 0 else np.nan
    irregular = np.zeros(n, dtype=bool)
    irregular[1:] = (dt[1:] > 0) & ~np.isclose(dt[1:], interval, rtol=1e-9, atol=1e-9)
    _first_bad(p, [
        (blank, "empty row"),
        (~np.isfinite(t), lambda i: _cell("timestamp_s", raw_t.iat[i])),
        (~np.isfinite(c), lambda i: _cell("requests", raw_c.iat[i])),
        (t < 0, lambda i: f"negative timestamp_s ({raw_t.iat[i]})"),
        (c < 0, lambda i: f"negative count ({raw_c.iat[i]})"),
        (np.isfinite(c) & (c != np.floor(c)), lambda i: f"non-integer count ({raw_c.iat[i]})"),
        (dt < 0, lambda i: f"timestamps out of order ({t[i]:g} after {t[i - 1]:g})"),
        (dt == 0, lambda i: f"duplicated timestamp ({t[i]:g})"),
        (irregular, lambda i: f"irregular interval ({dt[i]:g} s where the first is {interval:g} s)"),
    ])
    if n == 1:
        raise TraceError(f"{p}:2: a single data row: the interval cannot be inferred")
    interval = float(interval)
    return Trace(
        name=name or _trace_name(p),
        interval_s=interval,
        start_s=float(t[0]),
        end_s=float(t[-1] + interval),
        counts=c.astype(np.int64),
        timestamps_s=t,
        source=str(p),
    )


def load_azure_raw(path: str | Path, name: str | None = None) -> Trace:
    """Read an Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`).

    Time 0 is the first request's timestamp floored to the whole second (the convention of the
    shared `series.csv` files, whose 1-second bins this trace's `counts` then reproduce); the
    trace ends at the end of the last request's second. Equal timestamps are allowed (two
    requests in one 100 ns tick); decreasing ones are not.
    """
    p = Path(path)
    df = _read_cells(p, AZURE_HEADER)
    raw_ts = df["TIMESTAMP"].str.strip()
    ts = pd.to_datetime(raw_ts, format=AZURE_TIME_FORMAT, errors="coerce")
    ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    bad_ts = ts.isna().to_numpy()
    raw_p, raw_o = df["ContextTokens"], df["GeneratedTokens"]
    prompt, output = _numbers(raw_p), _numbers(raw_o)
    back = np.zeros(ns.size, dtype=bool)
    back[1:] = (ns[1:] < ns[:-1]) & ~bad_ts[1:] & ~bad_ts[:-1]
    _first_bad(p, [
        (bad_ts, lambda i: f"TIMESTAMP '{raw_ts.iat[i]}' is not 'YYYY-MM-DD HH:MM:SS.fffffff'"),
        (~np.isfinite(prompt), lambda i: _cell("ContextTokens", raw_p.iat[i])),
        (~np.isfinite(output), lambda i: _cell("GeneratedTokens", raw_o.iat[i])),
        ((prompt < 0) | (prompt != np.floor(prompt)),
         lambda i: f"ContextTokens must be a non-negative integer ({raw_p.iat[i]})"),
        ((output < 0) | (output != np.floor(output)),
         lambda i: f"GeneratedTokens must be a non-negative integer ({raw_o.iat[i]})"),
        (back, lambda i: f"timestamps out of order ({raw_ts.iat[i]} after {raw_ts.iat[i - 1]})"),
    ])
    t0_ns = (ns[0] // 1_000_000_000) * 1_000_000_000
    arrivals = (ns - t0_ns) / 1e9
    end_s = math.floor(arrivals[-1]) + 1.0
    trace = _per_request_trace(
        name or _trace_name(p), arrivals, prompt.astype(np.int64), output.astype(np.int64),
        0.0, end_s, str(p),
    )
    return trace
