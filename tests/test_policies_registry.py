"""Policy specs from the command line: parsed, typed and range-checked, or refused in one line."""

from __future__ import annotations

import pytest

from policies.registry import PolicySpec, PolicySpecError, parse_policy_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("hpa", PolicySpec("hpa", {}), id="bare-name"),
        pytest.param("hpa:target_utilization=0.6,tolerance=0.1",
                     PolicySpec("hpa", {"target_utilization": 0.6, "tolerance": 0.1}),
                     id="floats"),
        pytest.param("hpa:max_replicas=40", PolicySpec("hpa", {"max_replicas": 40}), id="int"),
        pytest.param("predictive:quantile=0.99,hpa_target_utilization=0.7",
                     PolicySpec("predictive", {"quantile": 0.99, "hpa_target_utilization": 0.7}),
                     id="beside-hpa-prefix"),
        pytest.param("predictive:target_utilization=none",
                     PolicySpec("predictive", {"target_utilization": None}), id="optional-none"),
        pytest.param("predictive:trend_floor=false",
                     PolicySpec("predictive", {"trend_floor": False}), id="bool"),
        pytest.param("hpa:behavior=none", PolicySpec("hpa", {"behavior": None}),
                     id="legacy-hpa-without-behavior"),
        pytest.param(" oracle:max_miss=0.01 ", PolicySpec("oracle", {"max_miss": 0.01}),
                     id="oracle-and-spaces"),
    ],
)
def test_parses(text: str, expected: PolicySpec) -> None:
    assert parse_policy_spec(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("keda", "unknown policy 'keda'", id="unknown-policy"),
        pytest.param("hpa:speed=3", "unknown parameter 'speed'", id="unknown-parameter"),
        pytest.param("hpa:target_utilization", "expected key=value", id="no-value"),
        pytest.param("hpa:max_replicas=lots", "not a valid int", id="not-an-int"),
        pytest.param("hpa:target_utilization=1.5", "at most 1", id="utilization-above-one"),
        pytest.param("hpa:target_utilization=0", "must be positive", id="utilization-zero"),
        pytest.param("hpa:min_replicas=5,max_replicas=2", "min_replicas", id="min-above-max"),
        pytest.param("predictive:quantile=1.2", "quantile must be in", id="quantile-range"),
        pytest.param("predictive:hpa_tolerance=-1", "the HPA beside it", id="beside-hpa-range"),
        pytest.param("hpa:behavior=fast", "cannot be set from the command line",
                     id="structured-field"),
        pytest.param("oracle:max_miss=2", "max_miss must be in", id="oracle-range"),
    ],
)
def test_refuses_with_one_line(text: str, message: str) -> None:
    with pytest.raises(PolicySpecError) as err:
        parse_policy_spec(text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_str_round_trips() -> None:
    spec = parse_policy_spec("hpa:target_utilization=0.6,tolerance=0.05")
    assert parse_policy_spec(str(spec)) == spec
