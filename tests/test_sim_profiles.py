"""Replica profiles: the issue's preset figures, samplers, and YAML validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.errors import ProfileError
from simulator.profiles import PROFILES, load_profile

N = 400_000

# Figures from issue #2 section 3: (name, service range s, slots, cold median s, cold range s,
# slo_ms, slo metric). Service ranges are the survey's; small-model's is "~40 ms mean".
ISSUE_FIGURES = [
    pytest.param("small-model", (0.036, 0.044), 4, 60, (45, 90), 250, "latency", id="small-model"),
    pytest.param("container", (0.050, 0.150), None, None, None, None, "latency", id="container"),
    pytest.param("serverless", (0.100, 0.300), 1, 1.0, None, None, "latency", id="serverless"),
    pytest.param("model-server-gpu", (0.010, 0.050), None, 0.2, None, None, "latency", id="model-server-gpu"),
    pytest.param("edge", (0.005, 0.020), None, 0.05, None, None, "latency", id="edge"),
    pytest.param("llm-7b", None, 32, 180, (120, 300), 2000, "ttft", id="llm-7b"),
]


@pytest.mark.parametrize(("name", "service", "slots", "cold_median", "cold_range", "slo_ms", "metric"), ISSUE_FIGURES)
def test_preset_figures_match_the_issue(name, service, slots, cold_median, cold_range, slo_ms, metric) -> None:
    p = load_profile(name)
    rng = np.random.default_rng(0)
    occupancy = p.sample_service_s(rng, N)
    if service is not None:
        lo, hi = service
        assert lo <= occupancy.mean() <= hi and lo <= p.service_mean_s <= hi
        assert occupancy.mean() == pytest.approx(p.service_mean_s, rel=0.01)
        if name != "small-model":  # a survey range: the bulk of the distribution lies in it
            assert np.mean((occupancy >= lo * 0.8) & (occupancy <= hi * 1.25)) > 0.85
    if slots is not None:
        assert p.slots == slots
    cold = p.sample_cold_start_s(rng, N)
    if cold_median is not None:
        assert np.median(cold) == pytest.approx(cold_median, rel=0.01)
    if cold_range is not None:
        assert cold.min() >= cold_range[0] and cold.max() <= cold_range[1]
        assert np.percentile(cold, 1) < cold_range[0] * 1.15 and np.percentile(cold, 99) > cold_range[1] * 0.85
    if slo_ms is not None:
        assert p.slo_ms == slo_ms
    assert p.slo_metric == metric
    assert p.price_per_replica_hour > 0 and p.sources


def test_small_model_serves_about_100_rps_per_replica() -> None:
    p = load_profile("small-model")
    assert p.capacity_rps_per_replica == pytest.approx(100, rel=0.01)
    empirical = 4 / p.sample_service_s(np.random.default_rng(1), N).mean()
    assert empirical == pytest.approx(100, rel=0.01)


def test_llm_7b_service_comes_from_tokens() -> None:
    p = load_profile("llm-7b")
    s = p.sample_service(np.random.default_rng(0), 3, np.array([5000, 0, 2500]), np.array([30, 60, 0]))
    # prefill 5,000 tok/s and decode 30 tok/s per sequence, by hand:
    assert np.allclose(s.occupancy_s, [1.0 + 1.0, 0.0 + 2.0, 0.5 + 0.0])
    assert np.allclose(s.slo_s, [1.0, 0.0, 0.5])  # the TTFT part is the prefill
    # Capacity at the built-in mix, from the Azure conversation trace's means (1155 prompt and
    # 211 output tokens, SOURCE.md): 32 / (1155 / 5000 + 211 / 30) = 4.40 req/s.
    analytic = 32 / (1155 / 5000 + 211 / 30)
    assert p.capacity_rps_per_replica == pytest.approx(analytic, rel=0.03)
    assert 3.0 <= p.capacity_rps_per_replica <= 5.0  # the issue says "about 3 requests/s"


def test_edge_is_a_fixed_fleet_of_four() -> None:
    p = load_profile("edge")
    assert p.min_replicas == p.max_replicas == 4 and p.fixed_size


@pytest.mark.parametrize("name", ["container", "serverless", "model-server-gpu", "edge"])
def test_survey_presets_cite_the_survey(name: str) -> None:
    assert any("Bairagi & Saxena" in s for s in load_profile(name).sources)


@pytest.mark.parametrize("name", PROFILES)
def test_gpu_util_rises_from_idle_to_full(name: str) -> None:
    p = load_profile(name)
    u = p.gpu_util(np.linspace(0, 1, 11))
    assert np.all(np.diff(u) >= 0) and u[0] == p.gpu.idle and u[-1] == pytest.approx(p.gpu.full)
    assert p.gpu_util(1.7) == pytest.approx(p.gpu.full)  # clipped


GOOD = """\
name: mine
slots: 2
service:
  kind: exponential
  mean_s: 0.05
cold_start: {median_s: 10, low_s: 5, high_s: 30}
price_per_replica_hour: 1.5
slo_ms: 300
"""


def test_custom_yaml_profile(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    p = load_profile(path)
    assert (p.name, p.slots, p.service.kind, p.slo_metric) == ("mine", 2, "exponential", "latency")
    assert p.capacity_rps_per_replica == pytest.approx(40)
    x = p.sample_service_s(np.random.default_rng(0), N)
    assert x.std() / x.mean() == pytest.approx(1.0, abs=0.02)  # exponential: cv 1


@pytest.mark.parametrize(
    ("text", "line", "start"),
    [
        pytest.param(GOOD + "colour: red\n", 9, "colour: Extra inputs are not permitted", id="unknown-field"),
        pytest.param(GOOD.replace("slots: 2", "slots: 0"), 2, "slots: Input should be greater than or equal to 1", id="zero-slots"),
        pytest.param(GOOD.replace("mean_s: 0.05", "mean_s: -1"), 5, "service.mean_s: Input should be greater than 0", id="negative-mean"),
        pytest.param(GOOD.replace("low_s: 5", "low_s: 20"), 6, "cold_start: needs low_s < median_s < high_s", id="cold-start-order"),
        pytest.param(GOOD.replace("slo_ms: 300", "slo_ms: 300\nslo_metric: ttft"), 1, "profile: slo_metric 'ttft' needs a 'tokens' service model", id="ttft-without-tokens"),
        pytest.param(GOOD.replace("slots: 2\n", ""), 1, "slots: Field required", id="missing-field"),
        pytest.param(GOOD.replace("kind: exponential", "kind: weibull"), 4, "service.kind: Input tag 'weibull'", id="unknown-kind"),
        pytest.param(GOOD + "min_replicas: 5\nmax_replicas: 2\n", 1, "profile: min_replicas exceeds max_replicas", id="min-above-max"),
        pytest.param(GOOD.replace("slo_ms: 300", "slo_ms: [300"), 9, "invalid YAML", id="bad-yaml"),
        pytest.param("- just\n- a list\n", 1, "a profile must be a YAML mapping", id="not-a-mapping"),
        pytest.param(GOOD.replace("price_per_replica_hour: 1.5", "price_per_replica_hour: cheap"), 7, "price_per_replica_hour: Input should be a valid number", id="non-numeric"),
    ],
)
def test_yaml_errors_name_file_line_and_field(tmp_path: Path, text: str, line: int, start: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: {start}"), msg
    assert "\n" not in msg


def test_unknown_profile_name() -> None:
    with pytest.raises(ProfileError, match="no such profile file, and not a preset"):
        load_profile("gpt-9")
