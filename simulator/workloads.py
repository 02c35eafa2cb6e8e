"""Built-in, seeded synthetic workloads, each returned as a Trace. Pure.

Every generator is a deterministic function of its seed and its explicit keyword parameters
(documented below with their units); `make_workload(name, seed, **params)` picks one by name.
The defaults are sized for the `small-model` profile (~100 req/s per replica) and for a demo
that runs in about a minute: two days of simulated time at well under 20 M requests.

- `diurnal`: counts per minute of a daily cycle (cosine, peak at `peak_hour`) times a weekly
  cycle (weekdays 1.0, Saturday and Sunday `weekend_factor`, blended over a few hours around midnight),
  times correlated log-normal noise (AR(1) with correlation time `noise_corr_s`), drawn Poisson.
  The trace starts on a Monday at 00:00. Defaults: mean 100 req/s on weekdays, peak ~170 req/s,
  trough ~30 req/s; 2 days ~ 17 M requests.
- `flash-crowd`: the same diurnal base at 10-second counts plus round(surges_per_day * days)
  surges, one at a uniformly random time in each equal slot of the trace: each multiplies the rate by a factor drawn
  uniformly in `surge_factor` (5-20x) after a linear ramp of `ramp_s`, holds it for a duration
  drawn uniformly in `surge_duration_s` (2-15 min), then decays exponentially with time
  constant `ramp_s`. Defaults: base 70 req/s mean, 14-17 M requests in 2 days (by seed).
- `batch-peaks`: a diurnal base (mean `base_rps` 80 req/s) plus a scheduled batch job that
  every `period_s` (2 h, first at `offset_s` 1 h) multiplies the rate by `factor` (5x) after a
  `ramp_s` (30 s) ramp, holds it `hold_s` (10 min), then decays with time constant `ramp_s`.
  Too fast for any reactive scaler (5x in 30 s against a 60 s cold start), but exactly
  periodic: a forecaster that finds the 2-hour period sees it coming. The `make demo` workload.
- `llm-bursty`: a per-request trace. An on/off source (exponential ON periods of mean `on_s`,
  OFF of mean `off_s`; the OFF rate is `off_fraction` of the ON rate) modulated by a mild daily
  cycle; arrivals Poisson within each second, placed uniformly. Each request carries prompt and
  output tokens from the built-in heavy-tailed token mix (profiles.AZURE_CONV_MIX). Defaults:
  mean 8 req/s (ON bursts ~25 req/s), 2 days ~ 1.4 M requests, sized for `llm-7b` (~4 req/s
  per replica at that mix).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.signal import lfilter

from simulator.profiles import AZURE_CONV_MIX
from simulator.traces import Trace, per_request_trace

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
DEFAULT_DURATION_S = 2 * DAY_S


def _daily_weekly(t_s: np.ndarray, amplitude: float, peak_hour: float, weekend_factor: float) -> np.ndarray:
    """Mean-one daily cosine times the weekly factor (trace starts Monday 00:00)."""
    daily = 1.0 + amplitude * np.cos(2 * np.pi * (t_s / 3600.0 - peak_hour) / 24.0)
    # Weekend indicator switched by a logistic of ~1 h scale at Saturday and Monday midnight,
    # so the rate has no step: L(pos - Sat) - L(pos - next Mon) + (1 - L(pos - this Mon)).
    pos = np.mod(t_s, WEEK_S)
    logistic = lambda x: 0.5 * (1.0 + np.tanh(x / 7200.0))  # noqa: E731
    weekend = logistic(pos - 5 * DAY_S) - logistic(pos - WEEK_S) + 1.0 - logistic(pos)
    return daily * (1.0 - (1.0 - weekend_factor) * weekend)


def _ar1_lognormal(rng: np.random.Generator, n: int, sigma: float, phi: float) -> np.ndarray:
    """Mean-one log-normal noise whose log is a stationary AR(1) with sd `sigma`."""
    if sigma <= 0 or n == 0:
        return np.ones(n)
    eps = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), n)
    eps[0] = rng.normal(0.0, sigma)
    x = lfilter([1.0], [1.0, -phi], eps)  # x[i] = phi * x[i-1] + eps[i]
    return np.exp(x - sigma * sigma / 2)


def _counts_trace(name: str, rng: np.random.Generator, rate_rps: np.ndarray, interval_s: float) -> Trace:
    counts = rng.poisson(np.maximum(rate_rps, 0.0) * interval_s)
    n = counts.size
    return Trace(name=name, interval_s=float(interval_s), start_s=0.0, end_s=n * float(interval_s),
                 counts=counts, timestamps_s=np.arange(n) * float(interval_s))


def _diurnal_rate(rng: np.random.Generator, duration_s: float, base_rps: float, interval_s: float,
                  daily_amplitude: float, weekend_factor: float, peak_hour: float,
                  noise_sigma: float, noise_corr_s: float) -> np.ndarray:
    n = math.ceil(duration_s / interval_s)
    mid = (np.arange(n) + 0.5) * interval_s
    noise = _ar1_lognormal(rng, n, noise_sigma, math.exp(-interval_s / noise_corr_s))
    return base_rps * _daily_weekly(mid, daily_amplitude, peak_hour, weekend_factor) * noise


def diurnal(seed: int = 0, *, duration_s: float = DEFAULT_DURATION_S, base_rps: float = 100.0,
            interval_s: float = 60.0, daily_amplitude: float = 0.7, weekend_factor: float = 0.7,
            peak_hour: float = 14.0, noise_sigma: float = 0.08, noise_corr_s: float = 1800.0) -> Trace:
    """Daily and weekly cycle with noise (see the module docstring for every parameter)."""
    rng = np.random.default_rng(seed)
    rate = _diurnal_rate(rng, duration_s, base_rps, interval_s, daily_amplitude, weekend_factor,
                         peak_hour, noise_sigma, noise_corr_s)
    return _counts_trace("diurnal", rng, rate, interval_s)


def flash_crowd(seed: int = 0, *, duration_s: float = DEFAULT_DURATION_S, base_rps: float = 70.0,
                interval_s: float = 10.0, daily_amplitude: float = 0.7, weekend_factor: float = 0.7,
                peak_hour: float = 14.0, noise_sigma: float = 0.08, noise_corr_s: float = 1800.0,
                surges_per_day: float = 3.0, surge_factor: tuple[float, float] = (5.0, 20.0),
                surge_duration_s: tuple[float, float] = (120.0, 900.0), ramp_s: float = 60.0) -> Trace:
    """Diurnal base plus sudden surges at random times (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = _diurnal_rate(rng, duration_s, base_rps, interval_s, daily_amplitude, weekend_factor,
                         peak_hour, noise_sigma, noise_corr_s)
    mid = (np.arange(base.size) + 0.5) * interval_s
    # A fixed number of surges, one at a uniformly random time in each equal slot of the trace:
    # every seed gets its surges (a Poisson count would give none for some seeds) and they
    # rarely pile up. The first 5 % and last 15 % of each slot are left out.
    n_surges = max(1, round(surges_per_day * duration_s / DAY_S))
    slot_s = duration_s / n_surges
    onsets = slot_s * (np.arange(n_surges) + rng.uniform(0.05, 0.85, n_surges))
    factors = rng.uniform(*surge_factor, n_surges)
    holds = rng.uniform(*surge_duration_s, n_surges)
    extra = np.zeros_like(mid)
    for onset, factor, hold in zip(onsets, factors, holds, strict=True):
        x = mid - onset
        shape = np.where(x < 0, 0.0, np.minimum(x / ramp_s, 1.0))
        decay = np.exp(-np.maximum(x - ramp_s - hold, 0.0) / ramp_s)
        extra += (factor - 1.0) * shape * decay
    return _counts_trace("flash-crowd", rng, base * (1.0 + extra), interval_s)


def batch_peaks(seed: int = 0, *, duration_s: float = DEFAULT_DURATION_S,
                base_rps: float = 80.0, interval_s: float = 10.0, daily_amplitude: float = 0.5,
                weekend_factor: float = 0.7, peak_hour: float = 14.0, noise_sigma: float = 0.08,
                noise_corr_s: float = 1800.0, period_s: float = 7200.0, offset_s: float = 3600.0,
                factor: float = 5.0, ramp_s: float = 30.0, hold_s: float = 600.0) -> Trace:
    """Diurnal base plus a scheduled batch job (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = _diurnal_rate(rng, duration_s, base_rps, interval_s, daily_amplitude, weekend_factor,
                         peak_hour, noise_sigma, noise_corr_s)
    mid = (np.arange(base.size) + 0.5) * interval_s
    x = np.mod(mid - offset_s, period_s)  # seconds since the job's last start
    up = np.clip(x / ramp_s, 0.0, 1.0)
    down = np.exp(-np.maximum(x - ramp_s - hold_s, 0.0) / ramp_s)
    return _counts_trace("batch-peaks", rng, base * (1.0 + (factor - 1.0) * up * down),
                         interval_s)


def llm_bursty(seed: int = 0, *, duration_s: float = DEFAULT_DURATION_S, base_rps: float = 8.0,
               on_s: float = 120.0, off_s: float = 360.0, off_fraction: float = 0.1,
               daily_amplitude: float = 0.3, peak_hour: float = 14.0) -> Trace:
    """On/off bursts with heavy-tailed tokens, as a per-request trace (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n_s = math.ceil(duration_s)
    on_rate = base_rps * (on_s + off_s) / (on_s + off_fraction * off_s)
    state = np.empty(n_s)
    t, on = 0, bool(rng.random() < on_s / (on_s + off_s))
    while t < n_s:
        length = max(1, round(rng.exponential(on_s if on else off_s)))
        state[t : t + length] = 1.0 if on else off_fraction
        t, on = t + length, not on
    sec = np.arange(n_s) + 0.5
    daily = 1.0 + daily_amplitude * np.cos(2 * np.pi * (sec / 3600.0 - peak_hour) / 24.0)
    counts = rng.poisson(on_rate * state * daily)
    arrivals = np.repeat(np.arange(n_s, dtype=np.float64), counts) + rng.random(int(counts.sum()))
    arrivals.sort()  # positions are uniform within each second, so only within-second reorders
    arrivals = arrivals[arrivals < duration_s]
    prompt, output = AZURE_CONV_MIX.sample(rng, arrivals.size)
    trace = per_request_trace("llm-bursty", arrivals, float(duration_s), prompt, output)
    return trace


_GENERATORS: dict[str, Callable[..., Trace]] = {
    "diurnal": diurnal,
    "flash-crowd": flash_crowd,
    "llm-bursty": llm_bursty,
    "batch-peaks": batch_peaks,
}
WORKLOADS: tuple[str, ...] = tuple(_GENERATORS)


def make_workload(name: str, seed: int = 0, **params: float) -> Trace:
    """The named built-in workload (`WORKLOADS`) for `seed`, with optional parameter overrides
    (e.g. duration_s=86400, base_rps=50). Unknown names or parameters raise ValueError."""
    try:
        generator = _GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown workload '{name}' (choose from {', '.join(WORKLOADS)})") from None
    try:
        return generator(seed, **params)
    except TypeError as e:
        raise ValueError(f"workload '{name}': {e}") from None
