"""The predictive floor: forecast quantile + lead time + capacity model + surge path. Pure.

Each tick it sizes the workload for the highest calibrated forecast quantile over the window
[now, now + lead time + one tick] (what is decided now is only in place a lead time later, and a
scale-down takes effect at once, so the whole window must be covered), never below the demand
observed right now. When the observed rate leaves the forecast band from above (a flash crowd
the forecast could not know), a fast reactive path extrapolates the observed trend over the
lead time instead. Scale-down is slow and bounded: the floor is the maximum of the needs seen
over a stabilization window and falls by at most a bounded step per tick. Stale metrics or a
missing forecast hold the current floor and, after `handback_after_s`, lower it gradually so
that control returns to the HPA without a cliff. The result is a floor for the HPA beside us;
the count that runs is max(floor, HPA's own) within [min, max].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from forecasting.surge import SurgeConfig, SurgeState, detect_surge
from forecasting.types import Forecast
from policies.capacity import (
    min_replicas_for_attainment,
    min_servers_for_slo,
    replicas_for_demand,
)
from policies.types import Decision, Observation

BESIDE_HPA_TARGET_UTILIZATION = 0.9
"""Default target of the HPA that runs beside the floor in the simulator: with the floor buying
capacity ahead of the forecast, the HPA is the safety net for what the forecast missed."""


@dataclass(frozen=True)
class PredictiveConfig:
    """Parameters of the predictive floor (units in names; defaults in brackets)."""

    capacity_rps_per_replica: float = 100.0
    """Requests/s one replica serves with every slot busy [100]."""
    target_utilization: float | None = None
    """Size for this busy share of the slots; None sizes from the SLO with an M/M/c model [None]."""
    slots_per_replica: int = 4
    """Concurrent requests per replica, used by the SLO sizing [4]."""
    wait_budget_s: float = 0.1
    """Queueing delay the SLO leaves room for, used by the SLO sizing [0.1 s]."""
    max_wait_miss: float = 0.001
    """SLO sizing: share of requests that queueing may push past the SLO (or, without
    slo_s, that may wait longer than wait_budget_s) [0.001]."""
    slo_s: float | None = None
    """Latency SLO for the SLO sizing; None sizes by wait_budget_s instead [None]."""
    slo_part_quantiles_s: tuple[float, ...] = ()
    """Quantiles of the service part the SLO counts (service, or time to first token) [()]."""
    service_scv: float = 1.0
    """Squared coefficient of variation of slot occupancy, for the queueing model [1.0]."""
    quantile: float = 0.97
    """Calibrated forecast quantile sized for [0.97]."""
    min_replicas: int = 1
    """Lowest floor [1]."""
    max_replicas: int = 100
    """Highest floor [100]."""
    lead_time_s: float | None = None
    """Override of the measured start-to-ready time; None uses the measured one [None]."""
    tick_s: float = 15.0
    """Control interval, added to the lead time [15 s]."""
    scale_down_window_s: float | None = None
    """The floor is the largest need seen over this window; None: scale_down_window_leads lead
    times [None]."""
    scale_down_window_leads: float = 1.0
    """Scale-down window in lead times when scale_down_window_s is None: a pod needed again
    within a cold start is cheaper kept than restarted (the oracle's own rule) [1.0]."""
    scale_down_max_fraction: float = 0.1
    """Largest share of the floor removed in one tick (at least one replica) [0.1]."""
    surge_margin: float = 0.2
    """Observed rate above the forecast's q0.99 band by this share counts as a surge [0.2]."""
    surge_confirm_ticks: int = 2
    """Ticks above the band before the reactive surge path takes over [2]."""
    surge_hold_s: float = 600.0
    """The reactive path stays on until the rate has been back in the band this long [600 s]."""
    stale_after_s: float = 120.0
    """Metrics older than this hold the floor [120 s]."""
    handback_after_s: float = 900.0
    """After holding this long, lower the floor one step per tick toward min [900 s]."""
    trend_floor: bool = True
    """Never plan below the observed rate's recent linear rise extrapolated over the lead time
    (a ramp in progress is the surest sign of need the forecast may still lag) [True]."""
    forecaster: str = "auto"
    """Forecaster name from forecasting.registry ["auto"]."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> None:
            raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        if not self.capacity_rps_per_replica > 0:
            bad("capacity_rps_per_replica", "positive")
        if self.target_utilization is not None and not 0 < self.target_utilization <= 1:
            bad("target_utilization", "in (0, 1]")
        if not 0.5 <= self.quantile < 1:
            bad("quantile", "in [0.5, 1)")
        if not 0 < self.max_wait_miss < 1:
            bad("max_wait_miss", "in (0, 1)")
        if self.slots_per_replica < 1:
            bad("slots_per_replica", "at least 1")
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            bad("min_replicas", "between 0 and max_replicas (max_replicas >= 1)")
        if not 0 < self.scale_down_max_fraction <= 1:
            bad("scale_down_max_fraction", "in (0, 1]")
        for name in ("wait_budget_s", "tick_s", "stale_after_s", "surge_hold_s"):
            if not getattr(self, name) > 0:
                bad(name, "positive")
        for name in ("lead_time_s", "scale_down_window_s", "slo_s"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                bad(name, "non-negative")
        if self.surge_margin < 0 or self.handback_after_s < 0 or self.surge_confirm_ticks < 1:
            raise ValueError("surge_margin and handback_after_s must be >= 0, "
                             "surge_confirm_ticks >= 1")


@dataclass(frozen=True)
class PredictiveState:
    """What the rule carries between ticks."""

    needs: tuple[tuple[float, int], ...] = ()
    floor: int | None = None
    surge: SurgeState = SurgeState()
    band_time_s: float = -math.inf
    band_upper_rps: float = math.nan
    hold_since_s: float | None = None
    prev_rates: tuple[float, ...] = ()
    lagging: bool = False
    """The observed rate was above the forecast's median at the last tick."""


_RATE_GRID = math.log1p(0.001)  # the queueing model is evaluated on a 0.1 % rate grid


def size_for(config: PredictiveConfig, rate_rps: float) -> int:
    """Replicas for a demand, by target utilization or by the SLO queueing model.

    The queueing model is costly for thousands of slots, so it runs on the rate rounded UP to
    a 0.1 % grid (never fewer replicas than the exact rate needs) and is memoized.
    """
    if rate_rps <= 0:
        return 0
    if config.target_utilization is not None:
        return replicas_for_demand(rate_rps, config.capacity_rps_per_replica,
                                   config.target_utilization)
    grid_rps = math.exp(math.ceil(math.log(rate_rps) / _RATE_GRID) * _RATE_GRID)
    return _slo_replicas(grid_rps, config.slots_per_replica / config.capacity_rps_per_replica,
                         config.slots_per_replica, config.wait_budget_s, config.max_wait_miss,
                         config.slo_s, config.slo_part_quantiles_s, config.service_scv,
                         config.max_replicas)


@functools.lru_cache(maxsize=65536)
def _slo_replicas(rate_rps: float, service_mean_s: float, slots: int, wait_budget_s: float,
                  max_miss: float, slo_s: float | None, slo_part_s: tuple[float, ...],
                  scv: float, limit: int) -> int:
    # the walk stops past max_replicas: the floor is capped there anyway, and an absurd
    # policy (a tiny capacity, a huge slot count) must never stall a tick
    if slo_s is not None and slo_part_s:
        return min_replicas_for_attainment(rate_rps, service_mean_s, slots, slo_s, slo_part_s,
                                           max_miss, scv, limit=limit)
    return min_servers_for_slo(rate_rps, service_mean_s, slots, wait_budget_s, max_miss,
                               limit=limit)


def _trend_rps_per_s(rates: tuple[float, ...], tick_s: float, min_samples: int = 3) -> float:
    """Least-squares slope of the last observed rates (req/s per second), never negative;
    0 with fewer than min_samples rates."""
    if len(rates) < max(2, min_samples):
        return 0.0
    # closed form on the tick grid (a handful of points: numpy's polyfit costs 40x more)
    n = len(rates)
    x_mean = (n - 1) / 2.0
    y_mean = sum(rates) / n
    sxy = sum((k - x_mean) * (y - y_mean) for k, y in enumerate(rates))
    sxx = n * (n * n - 1) / 12.0
    return max(0.0, sxy / sxx / tick_s)


def _extrapolated_rps(obs: Observation, rates: tuple[float, ...], tick_s: float,
                      now_s: float, horizon_end_s: float, min_samples: int = 3) -> float:
    """The observed rate plus its rise over `rates`, carried from the centre of the rate
    window (metrics_age_s + rate_window_s / 2 old) to horizon_end_s."""
    rate = rates[-1]
    reach_s = horizon_end_s - now_s + obs.metrics_age_s + obs.rate_window_s / 2
    return rate + _trend_rps_per_s(rates, tick_s, min_samples) * reach_s


class PredictivePolicy:
    """The predictive floor as a Policy (see the module docstring)."""

    name = "predictive"

    def __init__(self, config: PredictiveConfig) -> None:
        self.config = config
        self._surge_config = SurgeConfig(
            margin=config.surge_margin, consecutive=config.surge_confirm_ticks,
            clear_after=max(1, round(config.surge_hold_s / config.tick_s)))

    @property
    def params(self) -> Mapping[str, Any]:
        return asdict(self.config)

    def initial_state(self) -> PredictiveState:
        return PredictiveState()

    def decide(self, obs: Observation, forecast: Forecast | None, state: PredictiveState,
               now_s: float) -> tuple[Decision, PredictiveState]:
        cfg = self.config
        lead_s = cfg.lead_time_s if cfg.lead_time_s is not None else obs.lead_time_s
        horizon_end_s = now_s + lead_s + cfg.tick_s
        stale = obs.rate_rps is None or obs.metrics_age_s > cfg.stale_after_s
        if stale:
            return self._hold(obs, state, now_s, "hold: metrics stale")
        rate = float(obs.rate_rps or 0.0)
        rates = (state.prev_rates + (rate,))[-8:]
        if forecast is None:
            return self._react_without_forecast(obs, state, now_s, rate, rates, horizon_end_s)
        surge_state = state.surge
        if abs(now_s - state.band_time_s) < cfg.tick_s / 2:  # the band made for this tick
            signal, surge_state = detect_surge(rate, state.band_upper_rps, state.surge,
                                               self._surge_config)
            surging = signal.surge
        else:
            surging = state.surge.active
        band = forecast.quantile(cfg.quantile)  # interpolated when the level is not stored
        planned_rps = max(forecast.max_of(band, now_s, horizon_end_s), rate)
        reason = "forecast"
        # The trend floor is for ramps the forecast lags: where the forecast's median already
        # has the observed rate (a recurring peak it learned), extrapolating would overshoot.
        seen_at_s = now_s - obs.metrics_age_s - obs.rate_window_s / 2
        median = forecast.quantile(0.5)
        i_seen = min(len(median) - 1, max(0, int((seen_at_s - forecast.start_s)
                                                 // forecast.step_s)))
        lagging_now = rate > float(median[i_seen])
        # A forecast refreshed this tick has just absorbed the newest history step and reads
        # level with the rate for that one tick: a ramp that is still rising is still lagged.
        lagging = lagging_now or (state.lagging and len(rates) > 1 and rate > rates[-2])
        if surging or (cfg.trend_floor and lagging):
            # the surge path follows the last 45 s, the trend floor the last 2 minutes, or
            # the last 15 s once the rate is above the calibrated band (the forecast is then
            # plainly behind, and a ramp that speeds up is seen soonest in the newest rates)
            above_band = rate > float(band[i_seen])
            recent = rates[-3:] if surging else rates[-2:] if above_band else rates
            reactive_rps = _extrapolated_rps(obs, recent, cfg.tick_s, now_s, horizon_end_s,
                                             min_samples=2)
            if reactive_rps > planned_rps:
                planned_rps, reason = reactive_rps, "surge" if surging else "trend"
        need = min(max(size_for(cfg, planned_rps), cfg.min_replicas), cfg.max_replicas)
        window_s = (cfg.scale_down_window_s if cfg.scale_down_window_s is not None
                    else cfg.scale_down_window_leads * lead_s)
        needs = tuple((t, n) for t, n in state.needs if t > now_s - window_s)
        needs += ((now_s, need),)
        stabilized = max(n for _, n in needs)
        floor = self._bounded(stabilized, state.floor)
        if surging and rate > state.band_upper_rps and state.floor is not None:
            # no scale-down while the rate is still above the band (KPA's panic mode); once it
            # is back inside, the usual bounded scale-down applies while the flag settles
            floor = max(floor, state.floor)
        if state.floor is not None and floor > state.floor:
            reason = {"surge": "surge-scale-up", "trend": "trend-scale-up"}.get(
                reason, "lead-time-scale-up")
        elif state.floor is not None and floor < state.floor:
            reason = "scale-down-bounded" if floor > stabilized else "scale-down"
        elif stabilized > need:
            reason = "scale-down-stabilized"
        # The band the next observation is judged against: the forecast's q0.99 for the time
        # the next tick's observed rate stands for (now + tick - its age).
        upper = forecast.quantile(self._surge_config.band_level)
        seen_at = now_s + cfg.tick_s - obs.metrics_age_s
        next_band = float(upper[min(len(upper) - 1, max(0, int(
            (seen_at - forecast.start_s) // forecast.step_s)))])
        new_state = replace(state, needs=needs, floor=floor, surge=surge_state,
                            band_time_s=now_s + cfg.tick_s, band_upper_rps=next_band,
                            hold_since_s=None, prev_rates=rates, lagging=lagging_now)
        replicas = max(floor, obs.hpa_replicas or 0)
        details = {"planned_rps": planned_rps, "observed_rps": rate, "quantile": cfg.quantile,
                   "lead_time_s": lead_s, "need": need, "stabilized": stabilized,
                   "floor": floor, "hpa_replicas": obs.hpa_replicas, "model": forecast.model,
                   "surge": surging}
        return Decision(replicas=min(replicas, cfg.max_replicas), reason=reason, floor=floor,
                        details=details), new_state

    def _bounded(self, target: int, previous: int | None) -> int:
        """Scale up at once; scale down by at most the configured step per tick."""
        if previous is None or target >= previous:
            return target
        step = max(1, math.floor(previous * self.config.scale_down_max_fraction))
        return max(target, previous - step)

    def _react_without_forecast(self, obs: Observation, state: PredictiveState, now_s: float,
                                rate: float, rates: tuple[float, ...], horizon_end_s: float
                                ) -> tuple[Decision, PredictiveState]:
        """No forecast (no history yet, or the model failed) but fresh metrics: hold the floor
        as on stale data, and still raise it for the observed rate and its trend."""
        decision, held = self._hold(obs, state, now_s, "hold: no forecast")
        planned_rps = _extrapolated_rps(obs, rates, self.config.tick_s, now_s,
                                        horizon_end_s)
        need = min(size_for(self.config, planned_rps), self.config.max_replicas)
        held = replace(held, prev_rates=rates)
        if decision.floor is None or need <= decision.floor:
            return decision, held
        floor = need
        replicas = min(max(floor, obs.hpa_replicas or 0), self.config.max_replicas)
        return Decision(replicas=replicas, reason="reactive: no forecast", floor=floor,
                        details={**decision.details, "floor": floor, "planned_rps": planned_rps,
                                 "observed_rps": rate}), replace(held, floor=floor)

    def _hold(self, obs: Observation, state: PredictiveState, now_s: float,
              reason: str) -> tuple[Decision, PredictiveState]:
        cfg = self.config
        since = state.hold_since_s if state.hold_since_s is not None else now_s
        floor = state.floor if state.floor is not None else max(cfg.min_replicas,
                                                                 obs.spec_replicas)
        if now_s - since >= cfg.handback_after_s and floor > cfg.min_replicas:
            floor = self._bounded(cfg.min_replicas, floor)
            reason += ", handing back to the HPA"
        replicas = max(floor, obs.hpa_replicas or 0)
        new_state = replace(state, floor=floor, hold_since_s=since)
        return Decision(replicas=min(replicas, cfg.max_replicas), reason=reason, floor=floor,
                        details={"floor": floor, "held_for_s": now_s - since}), new_state
