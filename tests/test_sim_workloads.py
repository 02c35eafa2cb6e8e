"""Built-in workloads: seeded, sized for the demo, and shaped as their docstrings say."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.workloads import WORKLOADS, diurnal, flash_crowd, llm_bursty, make_workload

DAY = 86400


@pytest.mark.parametrize("name", WORKLOADS)
def test_same_seed_same_trace_other_seed_different(name: str) -> None:
    a, b, c = (make_workload(name, s, duration_s=6 * 3600) for s in (3, 3, 4))
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)
    if a.is_per_request:
        assert np.array_equal(a.arrivals_s, b.arrivals_s)
        assert np.array_equal(a.prompt_tokens, b.prompt_tokens)


@pytest.mark.parametrize("name", WORKLOADS)
def test_defaults_fit_a_one_minute_demo(name: str) -> None:
    trace = make_workload(name, 0)
    assert DAY <= trace.duration_s <= 2 * DAY
    assert 0.5e6 < trace.total < 20e6
    assert trace.start_s == 0 and np.all(trace.counts >= 0)


def test_make_workload_rejects_unknown_names_and_parameters() -> None:
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        make_workload("nope", 0)
    with pytest.raises(ValueError, match="workload 'diurnal'"):
        make_workload("diurnal", 0, not_a_parameter=1.0)


def test_diurnal_daily_and_weekly_cycle() -> None:
    trace = diurnal(1, duration_s=14 * DAY, noise_sigma=0.05)
    rate = trace.rates_rps().reshape(14, 24, 60).mean(axis=2)  # day x hour
    weekday, weekend = rate[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]], rate[[5, 6, 12, 13]]
    # Mean 100 req/s on weekdays; weekends at 0.7 of that (hours away from the midnight blend).
    assert weekday.mean() == pytest.approx(100, rel=0.05)
    assert weekend[:, 4:20].mean() / weekday[:, 4:20].mean() == pytest.approx(0.7, abs=0.05)
    # Peak at 14:00 of 1 + 0.7 times the mean, trough at 02:00 of 1 - 0.7 (hourly means).
    profile = weekday.mean(axis=0)
    assert int(np.argmax(profile)) in (13, 14) and int(np.argmin(profile)) in (1, 2, 3)
    assert profile.max() == pytest.approx(170, rel=0.08)
    assert profile.min() == pytest.approx(30, rel=0.2)


def test_flash_crowd_has_its_surges() -> None:
    days, per_day = 4, 3.0
    trace = flash_crowd(5, duration_s=days * DAY, surges_per_day=per_day)
    base = diurnal(5, duration_s=days * DAY, base_rps=70.0, interval_s=10.0)
    ratio = trace.rates_rps() / np.maximum(base.rates_rps(), 1.0)
    surging = ratio > 3.0  # a 5-20x surge stands far above the Poisson/noise spread
    starts = np.flatnonzero(surging[1:] & ~surging[:-1]) + 1
    # Episodes separated by less than 5 minutes are one surge seen through Poisson noise.
    episodes = 1 + np.sum(np.diff(starts) > 30) if starts.size else 0
    assert episodes == round(days * per_day)
    assert 4.5 <= ratio.max() <= 23  # 5-20x, give or take the two Poisson draws (~5 % each)


def test_llm_bursty_is_bursty_with_heavy_tailed_tokens() -> None:
    trace = llm_bursty(2, duration_s=DAY)
    assert trace.is_per_request and trace.has_tokens
    assert np.all(np.diff(trace.arrivals_s) >= 0) and trace.arrivals_s[-1] < DAY
    assert trace.arrivals_s.size / DAY == pytest.approx(8.0, rel=0.15)
    per_minute = trace.counts.reshape(-1, 60).sum(axis=1)
    assert per_minute.std() / per_minute.mean() > 0.6  # a Poisson stream at 480/min has 0.05
    out, prompt = trace.output_tokens, trace.prompt_tokens
    # the Azure conversation mix (SOURCE.md quantiles): output p99 / median = 601 / 129 = 4.7,
    # prompt max / median = 14050 / 1020 = 13.8
    assert np.percentile(out, 99) / np.median(out) == pytest.approx(601 / 129, rel=0.1)
    assert prompt.max() / np.median(prompt) > 10
    assert out.min() >= 1 and prompt.min() >= 1


def test_batch_peaks_repeat_exactly_every_period() -> None:
    trace = make_workload("batch-peaks", 1, duration_s=DAY)
    rate = trace.counts / trace.interval_s
    # the job starts at 1 h and every 2 h after: 5x the base within the 30 s ramp
    for k in range(11):
        before = rate[(3600 + k * 7200) // 10 - 6 : (3600 + k * 7200) // 10].mean()
        during = rate[(3600 + k * 7200) // 10 + 6 : (3600 + k * 7200) // 10 + 60].mean()
        assert during / before == pytest.approx(5.0, rel=0.25)
    # outside the jobs there is no surge: 1.5 h after a start the rate is back at the base
    quiet = rate[(3600 + 5400) // 10 : (3600 + 5400) // 10 + 60].mean()
    assert quiet < 1.5 * rate[(3600 - 600) // 10 : 3600 // 10].mean()
