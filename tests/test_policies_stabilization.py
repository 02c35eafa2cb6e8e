"""Window stabilizers and per-period step limits, against hand counts and invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.stabilization import (
    ScalingPolicy,
    bounded_step,
    change_in_period,
    record,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    window_max,
    window_min,
)

H = ((0.0, 10), (15.0, 6), (30.0, 8), (45.0, 3))
K8S_UP = (ScalingPolicy("Pods", 4, 15.0), ScalingPolicy("Percent", 100, 15.0))


@pytest.mark.parametrize(
    ("fn", "now", "window", "initial", "expected"),
    [
        pytest.param(window_max, 45.0, 45.0, 0, 8, id="max-excludes-sample-at-cutoff"),
        pytest.param(window_max, 44.0, 45.0, 0, 10, id="max-includes-sample-inside"),
        pytest.param(window_max, 45.0, 0.0, 5, 5, id="max-zero-window-is-initial"),
        pytest.param(window_min, 45.0, 30.0, 9, 3, id="min-over-window"),
        pytest.param(window_min, 45.0, 10.0, 9, 3, id="min-newest-only"),
        pytest.param(window_min, 100.0, 30.0, 9, 9, id="min-all-too-old"),
    ],
)
def test_windows(fn, now, window, initial, expected) -> None:
    assert fn(H, now, window, initial) == expected


def test_inclusive_window_counts_sample_at_cutoff() -> None:
    assert window_max(H, 45.0, 45.0, 0, inclusive=True) == 10


@pytest.mark.parametrize(
    ("current", "desired", "up_w", "down_w", "expected"),
    [
        pytest.param(5, 2, 0.0, 300.0, 5, id="down-held-by-recent-max-8>5"),
        pytest.param(5, 2, 0.0, 20.0, 3, id="down-to-max-in-short-window"),
        pytest.param(2, 9, 20.0, 0.0, 3, id="up-to-min-in-window"),
        pytest.param(2, 9, 0.0, 0.0, 9, id="no-windows-follows-desired"),
    ],
)
def test_stabilize(current, desired, up_w, down_w, expected) -> None:
    assert stabilize(current, desired, H, 50.0, up_w, down_w) == expected


@pytest.mark.parametrize(
    ("current", "ups", "downs", "policies", "select", "expected"),
    [
        pytest.param(3, (), (), K8S_UP, "Max", 7, id="k8s-default-3-to-7"),
        pytest.param(10, (), (), K8S_UP, "Max", 20, id="k8s-default-10-to-20"),
        pytest.param(3, (), (), K8S_UP, "Min", 6, id="select-min-3-to-6"),
        pytest.param(3, (), (), K8S_UP, "Disabled", 3, id="disabled"),
        pytest.param(7, ((95.0, 4),), (), K8S_UP, "Max", 7, id="period-start-from-events"),
        pytest.param(7, ((85.0, 4),), (), K8S_UP, "Max", 14, id="event-out-of-period"),
        pytest.param(
            1, (), (), (ScalingPolicy("Percent", 10, 15.0),), "Max", 2, id="percent-rounds-up"
        ),
    ],
)
def test_scale_up_limit(current, ups, downs, policies, select, expected) -> None:
    assert scale_up_limit(current, ups, downs, policies, select, 100.0) == expected


@pytest.mark.parametrize(
    ("current", "downs", "policies", "select", "expected"),
    [
        pytest.param(10, (), (ScalingPolicy("Percent", 100, 15.0),), "Max", 0, id="k8s-default"),
        pytest.param(
            5, (), (ScalingPolicy("Percent", 50, 15.0),), "Max", 2, id="percent-truncates"
        ),
        pytest.param(
            10, ((90.0, 3),), (ScalingPolicy("Pods", 4, 60.0),), "Max", 9, id="pods-budget-used"
        ),
        pytest.param(
            10,
            (),
            (ScalingPolicy("Pods", 2, 15.0), ScalingPolicy("Percent", 50, 15.0)),
            "Max",
            5,
            id="max-change",
        ),
        pytest.param(
            10,
            (),
            (ScalingPolicy("Pods", 2, 15.0), ScalingPolicy("Percent", 50, 15.0)),
            "Min",
            8,
            id="min-change",
        ),
    ],
)
def test_scale_down_limit(current, downs, policies, select, expected) -> None:
    assert scale_down_limit(current, (), downs, policies, select, 100.0) == expected


def test_change_in_period_and_record() -> None:
    assert change_in_period(H, 45.0, 30.0) == 8 + 3  # (15, 45]: 15 is at the cutoff, excluded
    assert record(H, 60.0, 1, 30.0) == ((45.0, 3), (60.0, 1))


@pytest.mark.parametrize(
    ("current", "target", "up", "down", "expected"),
    [
        pytest.param(5, 20, 4, None, 9, id="up-bounded"),
        pytest.param(5, 1, None, 2, 3, id="down-bounded"),
        pytest.param(5, 1, 4, None, 1, id="down-unbounded"),
        pytest.param(5, 6, 4, 1, 6, id="within-step"),
    ],
)
def test_bounded_step(current, target, up, down, expected) -> None:
    assert bounded_step(current, target, up, down) == expected


@settings(max_examples=200, deadline=None)
@given(
    current=st.integers(0, 50),
    seq=st.lists(st.integers(0, 50), min_size=1, max_size=40),
    up_w=st.sampled_from([0.0, 15.0, 60.0]),
    down_w=st.sampled_from([0.0, 45.0, 300.0]),
)
def test_stabilized_between_current_and_desired_and_pruning_is_lossless(
    current, seq, up_w, down_w
) -> None:
    full: tuple = ()
    pruned: tuple = ()
    for i, desired in enumerate(seq):
        now = 15.0 * i
        out = stabilize(current, desired, full, now, up_w, down_w)
        assert min(current, desired) <= out <= max(current, desired)
        assert stabilize(current, desired, pruned, now, up_w, down_w) == out
        full = (*full, (now, desired))
        pruned = record(pruned, now, desired, max(up_w, down_w))
        current = out
