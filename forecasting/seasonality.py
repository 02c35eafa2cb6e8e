"""Automatic seasonal-period detection (periodogram proposes, autocorrelation confirms). Pure.

Rule: a period P is accepted when (1) the history spans at least two periods, (2) the
periodogram has a local peak near frequency 1/P, and (3) the autocorrelation function has a
local maximum at lag P that clears a threshold: ``max(min_acf, z / sqrt(n))``, the second term
being ``z`` standard errors of the ACF of white noise (a threshold test instead of a permutation
test, which costs nothing and needs no random state). Any period counts: an hourly batch job is
found as readily as a daily cycle. Periods within 3 % of a round clock period (1 h .. 12 h,
1 d, 7 d) are snapped to it. Long series are averaged down to at most ``max_points`` samples
first, so detection stays cheap on weeks of minute data.
"""

from __future__ import annotations

import numpy as np

_ROUND_PERIODS_S = (
    *(3600.0 * h for h in (1, 2, 3, 4, 6, 8, 12)),
    86400.0,
    7 * 86400.0,
)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN gaps; edges take the nearest observed value."""
    x = np.asarray(values, dtype=float)
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x.copy()
    idx = np.arange(x.size)
    return np.interp(idx, idx[ok], x[ok])


def _downsample(x: np.ndarray, max_points: int) -> tuple[np.ndarray, int]:
    factor = max(1, int(np.ceil(x.size / max_points)))
    if factor == 1:
        return x, 1
    m = (x.size // factor) * factor
    return x[x.size - m :].reshape(-1, factor).mean(axis=1), factor


def _acf(x: np.ndarray) -> np.ndarray:
    n = x.size
    f = np.fft.rfft(x, 2 * n)
    r = np.fft.irfft(f * np.conj(f))[:n]
    if r[0] <= 0:
        return np.zeros(n)
    return r / r[0] * n / np.maximum(n - np.arange(n), 1)  # unbiased: long lags not shrunk


def _snap(period_s: float, step_s: float) -> float:
    for p in _ROUND_PERIODS_S:
        if abs(period_s - p) <= 0.03 * p and p >= 2 * step_s:
            return p
    return float(round(period_s / step_s) * step_s)


def detect_periods(
    values: np.ndarray,
    step_s: float,
    max_periods: int = 2,
    min_acf: float = 0.2,
    z: float = 3.0,
    max_points: int = 2048,
    n_candidates: int = 8,
) -> tuple[float, ...]:
    """Seasonal periods in seconds, strongest autocorrelation first; () when none.

    values: the series (NaN = gap); step_s: seconds between samples.
    max_periods: at most this many periods are returned.
    min_acf: least autocorrelation at the period's lag to accept it.
    """
    raw = np.asarray(values, dtype=float)
    if np.isfinite(raw).sum() < 8:
        return ()
    x, factor = _downsample(fill_gaps(raw), max_points)
    n = x.size
    if n < 8:
        return ()
    if np.nanmin(x) >= 0:  # log tames flash crowds that would otherwise dominate the spectrum
        x = np.log(x + 0.1 * max(float(np.median(x)), 1e-9) + 1e-12)
    x = x - np.polyval(np.polyfit(np.arange(n), x, 1), np.arange(n))
    if not np.any(x):
        return ()
    power = np.abs(np.fft.rfft(x)) ** 2
    acf = _acf(x)
    threshold = max(min_acf, z / np.sqrt(n))
    ks = np.arange(2, power.size - 1)  # k >= 2: at least two periods in the window
    peaks = ks[(power[ks] >= power[ks - 1]) & (power[ks] >= power[ks + 1])]
    peaks = peaks[np.argsort(power[peaks])[::-1][:n_candidates]]
    found: list[tuple[float, float]] = []
    for k in peaks:
        lo = max(2, int(np.floor(n / (k + 1))))
        hi = min(n // 2, int(np.ceil(n / max(k - 1, 1))))
        if hi <= lo:
            continue
        lag = lo + int(np.argmax(acf[lo : hi + 1]))
        if lag <= lo or lag >= hi or acf[lag] < threshold:
            continue  # no interior ACF maximum: a trend or a harmonic, not a cycle
        period_s = _snap(lag * factor * step_s, step_s)
        if 2 * period_s > raw.size * step_s:
            continue
        found.append((period_s, float(acf[lag])))
    # shortest first: a multiple of an accepted period must add regularity of its own, and an
    # accepted period that is a weak divisor of a much more regular one is its harmonic
    found.sort()
    accepted: list[tuple[float, float]] = []
    for period_s, a in found:
        if any(_multiple(period_s, p) and a < pa + 0.05 for p, pa in accepted):
            continue
        accepted.append((period_s, a))
    kept = [
        (p, a) for p, a in accepted
        if not any(_multiple(q, p) and a < 0.6 * qa for q, qa in accepted)
    ]
    kept.sort(key=lambda pa: -pa[1])
    return tuple(p for p, _ in kept[:max_periods])


def _multiple(longer: float, shorter: float) -> bool:
    r = longer / shorter
    return r > 1.5 and abs(r - round(r)) <= 0.05 * r
