"""Surge detection: a flash crowd versus a seasonal peak. Pure.

Rule: a sample is "above the band" when observed > q_hi * (1 + margin) + min_excess_rps, where
q_hi is the forecast's ``band_level`` quantile (default q0.99) for that sample's time, made
BEFORE the sample was seen. A seasonal model expects a daily peak, so a peak that repeats stays
inside its band; a 10x step that never happened before does not. ``consecutive`` samples above
the band raise the surge flag; it clears after ``clear_after`` samples back inside. The state is
an explicit frozen value passed in and returned, so the detector is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SurgeConfig:
    """band_level: forecast quantile that bounds normal traffic (0..1), default 0.99.
    margin: relative excess over that quantile needed to count (0.2 = 20 % above).
    min_excess_rps: absolute excess needed as well, in req/s (ignores noise at tiny rates).
    consecutive: samples above the band before the flag rises.
    clear_after: samples back inside the band before the flag clears.
    """

    band_level: float = 0.99
    margin: float = 0.2
    min_excess_rps: float = 1.0
    consecutive: int = 3
    clear_after: int = 5


@dataclass(frozen=True)
class SurgeState:
    """above: consecutive samples above the band; inside: consecutive samples inside it;
    active: whether the surge flag is up; peak_ratio: largest observed / band since it rose."""

    above: int = 0
    inside: int = 0
    active: bool = False
    peak_ratio: float = 0.0


@dataclass(frozen=True)
class SurgeSignal:
    """surge: flag; magnitude: observed / band (1.0 = at the band); reason: why."""

    surge: bool
    magnitude: float
    reason: str


def detect_surge(
    observed_rps: float, band_rps: float, state: SurgeState, config: SurgeConfig = SurgeConfig()
) -> tuple[SurgeSignal, SurgeState]:
    """One sample: observed rate and the band (forecast quantile) made before it -> signal."""
    if observed_rps != observed_rps or band_rps != band_rps:  # NaN: no evidence either way
        return SurgeSignal(state.active, 0.0, "hold: missing sample or forecast"), state
    threshold = band_rps * (1.0 + config.margin) + config.min_excess_rps
    magnitude = observed_rps / band_rps if band_rps > 0 else float("inf")
    if observed_rps > threshold:
        above = state.above + 1
        active = state.active or above >= config.consecutive
        new = replace(state, above=above, inside=0, active=active,
                      peak_ratio=max(state.peak_ratio, magnitude) if active else 0.0)
        if active:
            return SurgeSignal(True, magnitude, f"surge: {above} samples above q{config.band_level:g} band"), new
        return SurgeSignal(False, magnitude, f"above band {above}/{config.consecutive}"), new
    inside = state.inside + 1
    if state.active and inside < config.clear_after:
        new = replace(state, above=0, inside=inside)
        return SurgeSignal(True, magnitude, f"surge settling: {inside}/{config.clear_after} inside band"), new
    return SurgeSignal(False, magnitude, "within forecast band"), SurgeState(inside=inside)
