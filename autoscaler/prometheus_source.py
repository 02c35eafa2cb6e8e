"""The controller's Prometheus source: per-tick readings and cached history for all targets.

Rules:
- Time enters as `now_s` (epoch seconds); nothing here reads a clock or sleeps, so the loop can
  drive it on a virtual clock. Retries are the loop's business: the HTTP client does none.
- One instant query per distinct query string per tick, whatever the number of targets; the
  result is split by the (namespace, workload) labels the query groups by.
- History is sampled on a grid of multiples of `step_s`, fetched with query_range in chunks of at
  most `max_points_per_query` points (Prometheus refuses more than 11,000 per series), cached
  per target, extended with only the new part each call, and trimmed to `history_points`.
- Missing data is reported, never filled: gaps (no sample), NaN values, counter resets and
  stale series come back in a report beside the values.
- Library errors are translated here into autoscaler.errors.
Not pure: talks HTTP to Prometheus and keeps caches.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from autoscaler.errors import MetricsError, MetricsUnavailable, QueryRejected
from autoscaler.metric_presets import MetricQueries
from forecasting.types import Series

PROMETHEUS_MAX_POINTS = 11_000
_PRESENT, _MISSING, _NAN = 0, 1, 2


@dataclass(frozen=True, order=True)
class TargetRef:
    """A scaled workload: namespace and Deployment/StatefulSet name."""

    namespace: str
    name: str


@dataclass(frozen=True)
class MetricTarget:
    """A target and the queries it is read with."""

    ref: TargetRef
    queries: MetricQueries


@dataclass(frozen=True)
class TickReading:
    """One target's current metrics at `at_s`.

    rate_rps / gpu_util_pct: None when the query returned nothing (or NaN) for the target.
    counter_resets: resets of the request counter in the rate window (None: not checked).
    last_sample_age_s: now minus the newest sample seen for the target (None: never seen).
    stale: no current rate, the series is gone (staleness marker), or its newest sample is
        older than the source's stale_after_s. rate_rps may still be set for one rate window
        after a series stops; stale says not to trust it.
    nan_kinds: query kinds that returned NaN. errors: kinds whose query Prometheus rejected.
    """

    target: TargetRef
    at_s: float
    rate_rps: float | None
    gpu_util_pct: float | None
    counter_resets: int | None
    last_sample_age_s: float | None
    stale: bool
    nan_kinds: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    extra: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HistoryReport:
    """What the history of one target is missing. Ranges are [start_s, end_s) on the grid.

    gaps_s: runs without any value between the first and the last sample.
    nan_s: runs where Prometheus returned NaN.
    first_sample_s / last_sample_s: grid times of the first/last value (None: no data).
    stale: the last value is older than stale_after_s at `now_s` (or there is none).
    """

    target: TargetRef
    now_s: float
    step_s: float
    points: int
    gaps_s: tuple[tuple[float, float], ...]
    nan_s: tuple[tuple[float, float], ...]
    first_sample_s: float | None
    last_sample_s: float | None
    stale: bool

    @property
    def last_sample_age_s(self) -> float | None:
        return None if self.last_sample_s is None else self.now_s - self.last_sample_s


@dataclass
class _Cache:
    """Grid-aligned history of one target: index i is time (start_k + i) * step."""

    start_k: int
    values: np.ndarray
    state: np.ndarray

    @property
    def end_k(self) -> int:
        """Grid index after the last cached point."""
        return self.start_k + len(self.values)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _status_of(exc: PrometheusApiClientException) -> int | None:
    m = re.search(r"HTTP Status Code (\d+)", str(exc))
    return int(m.group(1)) if m else None


class PrometheusSource:
    """Reads all targets from one Prometheus.

    url: Prometheus base URL (ignored when `client` is given).
    client: a PrometheusConnect to use (tests may count its calls).
    step_s: history grid step, whole seconds (default 60).
    history_points: cached history length per target, points (default 7 days at 60 s).
    max_points_per_query: points per series per query_range chunk (default 11,000).
    settle_s: history stops this long before now so late scrapes are not taken for gaps (30).
    stale_after_s: a target whose newest sample is older is stale (default 180).
    timeout_s: HTTP timeout per request, seconds (default 10).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:9090",
        *,
        client: PrometheusConnect | None = None,
        step_s: int = 60,
        history_points: int = 7 * 24 * 60,
        max_points_per_query: int = PROMETHEUS_MAX_POINTS,
        settle_s: float = 30.0,
        stale_after_s: float = 180.0,
        timeout_s: float = 10.0,
    ) -> None:
        if step_s < 1 or int(step_s) != step_s:
            raise ValueError(f"step_s must be a whole number of seconds >= 1, got {step_s}")
        if not 1 <= max_points_per_query <= PROMETHEUS_MAX_POINTS:
            raise ValueError(f"max_points_per_query must be in 1..{PROMETHEUS_MAX_POINTS}")
        self.client = client or PrometheusConnect(
            url, retry=Retry(total=0, status_forcelist=()), timeout=timeout_s
        )
        self.step_s = int(step_s)
        self.history_points = int(history_points)
        self.max_points_per_query = int(max_points_per_query)
        self.settle_s = settle_s
        self.stale_after_s = stale_after_s
        self.queries_issued: Counter[str] = Counter()
        self._cache: dict[TargetRef, _Cache] = {}
        self._last_seen_s: dict[TargetRef, float] = {}

    # -- HTTP boundary -------------------------------------------------------------------

    def _call(self, kind: str, fn, *args, **kwargs) -> list[dict]:
        """Run one client call, counting it and translating its errors."""
        self.queries_issued[kind] += 1
        query = str(args[0]) if args else ""
        try:
            return fn(*args, **kwargs)
        except PrometheusApiClientException as exc:
            status = _status_of(exc)
            if status is not None and 400 <= status < 500 and status not in (408, 429):
                raise QueryRejected(f"Prometheus rejected the query: {exc}", query=query) from exc
            raise MetricsUnavailable(f"Prometheus failed: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise MetricsUnavailable(f"Prometheus unreachable: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise MetricsError(f"malformed answer from Prometheus: {exc!r}") from exc

    def instant(self, query: str, now_s: float) -> list[dict]:
        """One instant query evaluated at now_s."""
        return self._call("instant", self.client.custom_query, query, params={"time": now_s})

    def range(self, query: str, start_k: int, end_k: int) -> list[dict]:
        """One query_range over grid indices [start_k, end_k], both included."""
        start = datetime.fromtimestamp(start_k * self.step_s, UTC)
        end = datetime.fromtimestamp(end_k * self.step_s, UTC)
        return self._call(
            "range", self.client.custom_query_range, query, start, end, str(self.step_s)
        )

    # -- splitting results by target -------------------------------------------------------

    @staticmethod
    def _split(
        result: Iterable[dict], users: Sequence[TargetRef], labels: tuple[str, str]
    ) -> dict[TargetRef, dict]:
        """Series of one result per target, by its (namespace, workload) labels.

        A query owned by a single target may return one series without those labels
        (e.g. `sum(rate(x[1m]))`); it belongs to that target.
        """
        wanted = set(users)
        out: dict[TargetRef, dict] = {}
        result = list(result)
        for series in result:
            metric = series.get("metric", {})
            ref = TargetRef(metric.get(labels[0], ""), metric.get(labels[1], ""))
            if ref in wanted:
                out[ref] = series
        if not out and len(users) == 1 and len(result) == 1:
            metric = result[0].get("metric", {})
            if labels[0] not in metric and labels[1] not in metric:
                out[users[0]] = result[0]
        return out

    # -- per tick --------------------------------------------------------------------------

    def read_tick(
        self, targets: Sequence[MetricTarget], now_s: float
    ) -> dict[TargetRef, TickReading]:
        """Current rate, GPU utilization and health of every target, at now_s.

        One instant query per distinct query string. A query Prometheus rejects is reported in
        the readings of the targets using it; MetricsUnavailable (temporary) is raised when
        Prometheus cannot answer at all, and the loop holds.
        """
        by_query: dict[str, list[tuple[MetricTarget, str]]] = {}
        for t in targets:
            for kind, q in t.queries.all_queries().items():
                by_query.setdefault(q, []).append((t, kind))
        values: dict[TargetRef, dict[str, float]] = {t.ref: {} for t in targets}
        errors: dict[TargetRef, list[str]] = {t.ref: [] for t in targets}
        for query, users in by_query.items():
            refs = sorted({t.ref for t, _ in users})
            try:
                result = self.instant(query, now_s)
            except QueryRejected:
                for t, kind in users:
                    errors[t.ref].append(kind)
                continue
            labels = users[0][0].queries.split_labels
            split = self._split(result, refs, labels)
            for t, kind in users:
                series = split.get(t.ref)
                if series is not None:
                    values[t.ref][kind] = float(series["value"][1])
        return {
            t.ref: self._reading(
                t.ref, values[t.ref], errors[t.ref], now_s, t.queries.last_sample is not None
            )
            for t in targets
        }

    def _reading(
        self,
        ref: TargetRef,
        got: dict[str, float],
        errors: list[str],
        now_s: float,
        checks_samples: bool,
    ) -> TickReading:
        nan_kinds = tuple(sorted(k for k, v in got.items() if math.isnan(v)))
        ok = {k: v for k, v in got.items() if not math.isnan(v)}
        rate = ok.get("request_rate")
        # An instant selector honours staleness markers, a rate window does not: after a
        # series stops, rate() lingers for one window but timestamp() is gone at once.
        # Without a last-sample query, a current rate is the only evidence of a sample.
        rate_seen = now_s if rate is not None else None
        seen = ok.get("last_sample") if checks_samples else rate_seen
        if seen is not None:
            self._last_seen_s[ref] = seen  # remembered for ticks where the series is gone
        last = self._last_seen_s.get(ref)
        age = None if last is None else now_s - last
        fresh = seen is not None and rate is not None and now_s - seen <= self.stale_after_s
        resets = ok.get("counter_resets")
        return TickReading(
            target=ref,
            at_s=now_s,
            rate_rps=rate,
            gpu_util_pct=ok.get("gpu_util"),
            counter_resets=None if resets is None else int(round(resets)),
            last_sample_age_s=age,
            stale=not fresh,
            nan_kinds=nan_kinds,
            errors=tuple(errors),
            extra={k.removeprefix("extra:"): v for k, v in ok.items() if k.startswith("extra:")},
        )

    # -- history ---------------------------------------------------------------------------

    def history(
        self, targets: Sequence[MetricTarget], now_s: float
    ) -> dict[TargetRef, tuple[Series, HistoryReport]]:
        """Request-rate history of every target up to now_s - settle_s, extending the cache.

        Series start at the target's first value in the window and end at the grid point at or
        before now_s - settle_s; NaN marks gaps, which the report lists. Targets sharing a
        query and a cache end are fetched together. Raises MetricsUnavailable / QueryRejected.
        """
        end_k = math.floor((now_s - self.settle_s) / self.step_s)
        first_k = end_k - self.history_points + 1
        groups: dict[tuple[str, int], list[MetricTarget]] = {}
        for t in targets:
            cache = self._cache.get(t.ref)
            if cache is not None and cache.end_k < first_k:
                del self._cache[t.ref]  # entirely outside the window: start afresh
                cache = None
            from_k = first_k if cache is None else cache.end_k
            if from_k <= end_k:
                groups.setdefault((t.queries.request_rate, from_k), []).append(t)
        for (query, from_k), members in groups.items():
            fetched = self._fetch(query, from_k, end_k, members)
            for t in members:
                self._extend(t.ref, from_k, *fetched[t.ref])
        return {t.ref: self._series_and_report(t.ref, now_s, first_k) for t in targets}

    def chunks(self, from_k: int, end_k: int) -> list[tuple[int, int]]:
        """[start, end] grid-index chunks of at most max_points_per_query points."""
        n = self.max_points_per_query
        return [(a, min(a + n - 1, end_k)) for a in range(from_k, end_k + 1, n)]

    def _fetch(
        self, query: str, from_k: int, end_k: int, members: Sequence[MetricTarget]
    ) -> dict[TargetRef, tuple[np.ndarray, np.ndarray]]:
        n = end_k - from_k + 1
        out = {t.ref: (np.full(n, np.nan), np.full(n, _MISSING, dtype=np.int8)) for t in members}
        refs = [t.ref for t in members]
        labels = members[0].queries.split_labels
        for a, b in self.chunks(from_k, end_k):
            split = self._split(self.range(query, a, b), refs, labels)
            for ref, series in split.items():
                vals, state = out[ref]
                for t, v in series.get("values", ()):
                    i = round(float(t) / self.step_s) - from_k
                    if 0 <= i < n:
                        x = float(v)
                        vals[i] = x
                        state[i] = _NAN if math.isnan(x) else _PRESENT
        return out

    def _extend(self, ref: TargetRef, from_k: int, vals: np.ndarray, state: np.ndarray) -> None:
        cache = self._cache.get(ref)
        if cache is None:
            cache = _Cache(from_k, vals, state)
        else:
            cache = _Cache(
                cache.start_k,
                np.concatenate((cache.values, vals)),
                np.concatenate((cache.state, state)),
            )
        drop = len(cache.values) - self.history_points
        if drop > 0:  # bounded: keep the newest history_points
            cache = _Cache(cache.start_k + drop, cache.values[drop:], cache.state[drop:])
        self._cache[ref] = cache

    def _series_and_report(
        self, ref: TargetRef, now_s: float, first_k: int
    ) -> tuple[Series, HistoryReport]:
        cache = self._cache.get(ref) or _Cache(first_k, np.empty(0), np.empty(0, dtype=np.int8))
        present = np.flatnonzero(cache.state == _PRESENT)
        step = self.step_s

        def t_of(i: int) -> float:
            return float((cache.start_k + i) * step)

        nans = tuple((t_of(a), t_of(b)) for a, b in _runs(cache.state == _NAN))
        if len(present) == 0:
            series = Series(np.empty(0), step, float(cache.end_k * step))
            report = HistoryReport(ref, now_s, step, 0, (), nans, None, None, True)
            return series, report
        i0, i1 = int(present[0]), int(present[-1])
        interior = cache.state[i0 : i1 + 1]
        gaps = tuple((t_of(i0 + a), t_of(i0 + b)) for a, b in _runs(interior == _MISSING))
        last_s = t_of(i1)
        series = Series(cache.values[i0:].copy(), step, t_of(i0))
        report = HistoryReport(
            target=ref,
            now_s=now_s,
            step_s=step,
            points=len(present),
            gaps_s=gaps,
            nan_s=nans,
            first_sample_s=t_of(i0),
            last_sample_s=last_s,
            stale=now_s - last_s > self.stale_after_s + self.settle_s,
        )
        return series, report

    def forget(self, ref: TargetRef) -> None:
        """Drop a removed target's cache and memory."""
        self._cache.pop(ref, None)
        self._last_seen_s.pop(ref, None)

    def cached_points(self) -> int:
        """Points held in the history cache over all targets (for memory checks)."""
        return sum(len(c.values) for c in self._cache.values())
