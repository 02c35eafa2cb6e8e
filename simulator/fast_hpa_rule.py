"""The HPA rule of policies/hpa.py `hpa_desired`, compiled for simulator/fast_hpa.py's replay.

Rule: one HPA sync for a Pods utilization metric (no floor, no External metric), as
`hpa_desired` decides it: the pods metric proposal (tolerances, missing and unready pods),
then the legacy normalization (one downscale stabilization window, the legacy scale-up limit)
or the behavior one (scale-up/down stabilization windows, rate-limit policies with
Max/Min/Disabled selection, scale events recorded for them), and the most specific reason.
Every float is computed with the same operations in the same order as policies/hpa.py and
policies/stabilization.py, so the decisions are equal, not merely close
(tests/test_sim_fast_hpa.py). Reasons are small ints (index into REASONS); the settings arrive
packed in arrays by `_hpa_arrays` (integer slots hi, float slots hf, policies pol).
Pure and deterministic: it reads nothing but its arguments; the HPA's state (histories as
(times, values, head/tail) buffers, oldest first, live in [ht[0], ht[1])) is the caller's arrays,
changed in place.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from policies.hpa import (
    _CEIL_EPS,
    SCALE_UP_LIMIT_FACTOR,
    SCALE_UP_LIMIT_MINIMUM,
    HPAConfig,
)

# Decision reasons of hpa_desired, as the kernel counts them (index = code).
REASONS = ("ScalingDisabled", "TooManyReplicas", "TooFewReplicas", "FailedGetPodsMetric",
           "DesiredWithinRange", "ScaleUpLimit", "ScaleDownLimit", "ScaleUpStabilized",
           "ScaleDownStabilized")
(_DISABLED, _TOO_MANY, _TOO_FEW, _FAILED, _WITHIN_RANGE, _UP_LIMIT, _DOWN_LIMIT,
 _UP_STABILIZED, _DOWN_STABILIZED) = range(len(REASONS))
_READY_FOR_NEW_SCALE = len(REASONS)  # an "able to scale" condition, never a reason itself
_SELECT = {"Max": 0, "Min": 1, "Disabled": 2}
# integer HPA settings (hi) and float ones (hf), by slot
_MIN_R, _MAX_R, _LEGACY, _UP_SELECT, _DOWN_SELECT = range(5)
(_TARGET, _TOL_UP, _TOL_DOWN, _UP_W, _DOWN_W, _REC_KEEP, _UP_KEEP, _DOWN_KEEP, _CEIL_GUARD,
 _UP_FACTOR, _UP_MINIMUM) = range(11)


# -- histories: (time, value) buffers, oldest first, live in [ht[0], ht[1]) -----------------
@njit(cache=True)
def _window_max(ts, vs, ht, cutoff, inclusive, initial):
    """stabilization.window_max: max of initial and the values after the cutoff."""
    out = initial
    i = ht[0]
    while i < ht[1] and (ts[i] < cutoff or (ts[i] == cutoff and not inclusive)):
        i += 1
    for j in range(i, ht[1]):
        out = max(out, vs[j])
    return out


@njit(cache=True)
def _window_min(ts, vs, ht, cutoff, initial):
    """stabilization.window_min: min of initial and the values strictly after the cutoff."""
    out = initial
    i = ht[0]
    while i < ht[1] and ts[i] <= cutoff:
        i += 1
    for j in range(i, ht[1]):
        out = min(out, vs[j])
    return out


@njit(cache=True)
def _record(ts, vs, ht, now_s, value, keep_s):
    """stabilization.record: drop the samples no window of keep_s can count, append."""
    cutoff = now_s - keep_s
    while ht[0] < ht[1] and ts[ht[0]] <= cutoff:
        ht[0] += 1
    ts[ht[1]] = now_s
    vs[ht[1]] = value
    ht[1] += 1


@njit(cache=True)
def _change_in_period(ts, vs, ht, now_s, period_s):
    cutoff = now_s - period_s
    total = 0
    for j in range(ht[1] - 1, ht[0] - 1, -1):
        if ts[j] <= cutoff:
            break
        total += vs[j]
    return total


@njit(cache=True)
def _rate_limit(up, current, now_s, kind, value, period, select, ev):
    """stabilization.scale_up_limit (up) / scale_down_limit: the count the policies allow.
    ev = (up times, up values, up head/tail, down times, down values, down head/tail)."""
    if select == 2 or kind.shape[0] == 0:  # Disabled, or no policy (Go clamps to current)
        return current
    result = 0
    for p in range(kind.shape[0]):
        start = (current - _change_in_period(ev[0], ev[1], ev[2], now_s, period[p])
                 + _change_in_period(ev[3], ev[4], ev[5], now_s, period[p]))
        if up:
            proposed = (start + int(value[p]) if kind[p] == 0
                        else int(math.ceil(start * (1 + value[p] / 100))))
        else:
            proposed = (start - int(value[p]) if kind[p] == 0
                        else int(start * (1 - value[p] / 100)))
        if p == 0:
            result = proposed
        elif (select == 1) == up:  # the strictest: Min up, Max down (and vice versa)
            result = min(result, proposed)
        else:
            result = max(result, proposed)
    return result


# -- the HPA rule (policies/hpa.py) ----------------------------------------------------------
@njit(cache=True)
def _within(ratio, tol_up, tol_down):
    return 1.0 - ratio <= tol_down and ratio - 1.0 <= tol_up


@njit(cache=True)
def _pods_metric(ready_n, util_sum, unready, missing, target, current, tol_up, tol_down, eps):
    """hpa.pods_metric_replicas; -1 when no ready pod has a metric."""
    if ready_n <= 0:
        return -1
    usage = util_sum / ready_n
    ratio = usage / target
    up_with_unready = unready > 0 and ratio > 1.0
    if not up_with_unready and missing == 0:
        if _within(ratio, tol_up, tol_down):
            return current
        return int(math.ceil(ratio * ready_n - eps))
    total, n = util_sum, ready_n
    if missing > 0:
        if ratio < 1.0:
            total += missing * target
            n += missing
        elif ratio > 1.0:
            n += missing
    if up_with_unready:
        n += unready
    new_ratio = (total / n) / target
    if _within(new_ratio, tol_up, tol_down) or ratio < 1.0 < new_ratio or ratio > 1.0 > new_ratio:
        return current
    proposal = int(math.ceil(new_ratio * n - eps))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


@njit(cache=True)
def _normalize_legacy(hi, hf, recs, current, desired, min_r, now_s):
    """hpa._normalize_legacy: (count, stabilized, able, limited)."""
    window = hf[_REC_KEEP]
    stabilized = _window_max(recs[0], recs[1], recs[2], now_s - window, True, desired)
    _record(recs[0], recs[1], recs[2], now_s, desired, window)
    able = _DOWN_STABILIZED if stabilized != desired else _READY_FOR_NEW_SCALE
    up_limit = int(max(hf[_UP_FACTOR] * current, hf[_UP_MINIMUM]))
    max_r = hi[_MAX_R]
    if max_r > up_limit:
        max_allowed, limit_reason = up_limit, _UP_LIMIT
    else:
        max_allowed, limit_reason = max_r, _TOO_MANY
    if stabilized < min_r:
        return min_r, stabilized, able, _TOO_FEW
    if stabilized > max_allowed:
        return max_allowed, stabilized, able, limit_reason
    return stabilized, stabilized, able, _WITHIN_RANGE


@njit(cache=True)
def _normalize_behavior(hi, hf, pol, recs, ev, current, desired, min_r, now_s):
    """hpa._normalize_with_behavior: (count, stabilized, able, limited)."""
    up = _window_min(recs[0], recs[1], recs[2], now_s - hf[_UP_W], desired)
    down = _window_max(recs[0], recs[1], recs[2], now_s - hf[_DOWN_W], False, desired)
    stabilized = current
    if stabilized < up:
        stabilized = up
    if stabilized > down:
        stabilized = down
    _record(recs[0], recs[1], recs[2], now_s, desired, hf[_REC_KEEP])
    if stabilized != desired:
        able = _UP_STABILIZED if desired >= current else _DOWN_STABILIZED
    else:
        able = _READY_FOR_NEW_SCALE
    out, limited = stabilized, _WITHIN_RANGE
    if stabilized > current:
        limit = max(_rate_limit(True, current, now_s, pol[0], pol[1], pol[2], hi[_UP_SELECT],
                                ev), current)
        if hi[_MAX_R] > limit:
            max_allowed, reason = limit, _UP_LIMIT
        else:
            max_allowed, reason = hi[_MAX_R], _TOO_MANY
        if stabilized > max_allowed:
            out, limited = max_allowed, reason
    elif stabilized < current:
        limit = min(_rate_limit(False, current, now_s, pol[3], pol[4], pol[5], hi[_DOWN_SELECT],
                                ev), current)
        if min_r < limit:
            min_allowed, reason = limit, _DOWN_LIMIT
        else:
            min_allowed, reason = min_r, _TOO_FEW
        if stabilized < min_allowed:
            out, limited = min_allowed, reason
    return out, stabilized, able, limited


@njit(cache=True)
def _hpa_sync(hi, hf, pol, recs, ev, init, current, ready_n, util_sum, unready, missing, now_s):
    """hpa.hpa_desired without a floor or an External metric: (desired, reason code).
    The histories (recs, ev) and init (recordInitialRecommendation done) change in place."""
    max_r = hi[_MAX_R]
    min_r = max(0, min(hi[_MIN_R], max_r))
    if init[0] == 0:
        recs[2][0], recs[2][1] = 0, 0
        _record(recs[0], recs[1], recs[2], now_s, current, math.inf)
        init[0] = 1
    if current == 0 and min_r != 0:
        return 0, _DISABLED
    if current > max_r:
        desired, reason = max_r, _TOO_MANY
    elif current < min_r:
        desired, reason = min_r, _TOO_FEW
    else:
        proposal = _pods_metric(ready_n, util_sum, unready, missing, hf[_TARGET], current,
                                hf[_TOL_UP], hf[_TOL_DOWN], hf[_CEIL_GUARD])
        if proposal < 0:  # no metric: hold (an invalid metric blocks every change)
            return current, _FAILED
        if hi[_LEGACY] == 1:
            desired, stabilized, able, limited = _normalize_legacy(hi, hf, recs, current,
                                                                   max(0, proposal), min_r, now_s)
        else:
            desired, stabilized, able, limited = _normalize_behavior(
                hi, hf, pol, recs, ev, current, max(0, proposal), min_r, now_s)
        # the most specific condition: a limit, else a stabilization, else within range
        if desired != stabilized:
            reason = limited
        elif able != _READY_FOR_NEW_SCALE:
            reason = able
        else:
            reason = _WITHIN_RANGE
    if desired != current and hi[_LEGACY] == 0:  # storeScaleEvent (behavior only)
        if desired > current:
            _record(ev[0], ev[1], ev[2], now_s, desired - current, hf[_UP_KEEP])
        else:
            _record(ev[3], ev[4], ev[5], now_s, current - desired, hf[_DOWN_KEEP])
    return desired, reason


# -- the Python side: the settings the rule supports, packed as it reads them ----------------
def _policies_supported(hpa: HPAConfig) -> bool:
    """Pods policies with whole values (the kernel adds them as integers)."""
    if hpa.behavior is None:
        return True
    rules = (hpa.behavior.scale_up, hpa.behavior.scale_down)
    return all(r.select_policy in _SELECT and all(
        p.kind == "Percent" or float(p.value).is_integer() for p in r.policies) for r in rules)


def _hpa_arrays(hpa: HPAConfig) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """The HPA settings as the kernel reads them (see policies/hpa.py for their meaning)."""
    b, down_s = hpa.behavior, hpa.downscale_stabilization_s
    hi = np.zeros(5, dtype=np.int64)
    hf = np.zeros(11)
    # constants of policies/hpa.py go in as values: numba's cache would freeze another
    # module's globals (it tracks only this file)
    hf[_CEIL_GUARD], hf[_UP_FACTOR], hf[_UP_MINIMUM] = (_CEIL_EPS, SCALE_UP_LIMIT_FACTOR,
                                                        SCALE_UP_LIMIT_MINIMUM)
    hi[_MIN_R], hi[_MAX_R] = hpa.min_replicas, hpa.max_replicas
    hf[_TARGET] = hpa.target_utilization
    hf[_TOL_UP] = hf[_TOL_DOWN] = hpa.tolerance
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
    if b is None:
        hi[_LEGACY] = 1
        hf[_REC_KEEP] = down_s
        return hi, hf, empty + empty
    up, down = b.scale_up, b.scale_down
    hi[_UP_SELECT], hi[_DOWN_SELECT] = _SELECT[up.select_policy], _SELECT[down.select_policy]
    if up.tolerance is not None:
        hf[_TOL_UP] = up.tolerance
    if down.tolerance is not None:
        hf[_TOL_DOWN] = down.tolerance
    hf[_UP_W] = down_s if up.stabilization_window_s is None else up.stabilization_window_s
    hf[_DOWN_W] = down_s if down.stabilization_window_s is None else down.stabilization_window_s
    hf[_REC_KEEP] = max(hf[_UP_W], hf[_DOWN_W])
    hf[_UP_KEEP] = max((p.period_s for p in up.policies), default=0.0)
    hf[_DOWN_KEEP] = max((p.period_s for p in down.policies), default=0.0)
    pol: list[np.ndarray] = []
    for rules in (up, down):
        pol.append(np.array([0 if p.kind == "Pods" else 1 for p in rules.policies],
                            dtype=np.int64))
        pol.append(np.array([float(p.value) for p in rules.policies], dtype=np.float64))
        pol.append(np.array([float(p.period_s) for p in rules.policies], dtype=np.float64))
    return hi, hf, tuple(pol)
