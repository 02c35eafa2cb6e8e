"""The controller's configuration: the shipped manifests load, env overrides, one-line errors."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from autoscaler.errors import ConfigError
from autoscaler.leader import LeaseTiming
from autoscaler.settings import PolicySettings, Settings, env_name, load_settings
from policies.predictive import PredictiveConfig

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIGMAP = ROOT / "manifests" / "base" / "configmap.yaml"
EXAMPLE_PATCH = ROOT / "manifests" / "overlays" / "example" / "config-patch.yaml"
STANDALONE = ROOT / "examples" / "standalone.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    for key in list(os.environ):
        if key.upper().startswith("AUTOSCALER_") and key != "AUTOSCALER_TRACES_DIR":
            monkeypatch.delenv(key)


def config_text(manifest: Path) -> str:
    return yaml.safe_load(manifest.read_text())["data"]["config.yaml"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_base_configmap_loads_with_its_documented_values(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, config_text(BASE_CONFIGMAP)))
    # Values as the ConfigMap's comments state them.
    assert s.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert (s.tick_s, s.dry_run, s.api_host, s.api_port) == (15, False, "0.0.0.0", 8080)
    le = s.leader_election
    assert (le.enabled, le.lease_name, le.lease_namespace) == \
        (True, "predictive-autoscaler", "predictive-autoscaler")
    assert (le.lease_duration_s, le.renew_deadline_s, le.retry_period_s) == (15, 10, 2)
    assert le.timing() == LeaseTiming(15, 10, 2)
    assert le.holder_identity({"POD_NAME": "pod-1"}) == "pod-1"
    assert (s.lead_time.default_s, s.lead_time.min_pods, s.lead_time.window_pods,
            s.lead_time.quantile) == (300, 5, 50, 0.95)
    assert (s.history.step_s, s.history.days, s.refit_interval_s) == (60, 7, 3600)
    assert s.targets == [] and s.targets_config() == ()


def test_example_overlay_config_loads_into_core_types(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, config_text(EXAMPLE_PATCH)))
    [t] = s.targets_config()
    assert (t.namespace, t.name, t.kind, t.mode, t.preset, t.hpa) == \
        ("inference", "vllm-demo", "Deployment", "floor", "vllm", "vllm-demo")
    assert (t.dry_run, t.lead_time_default_s, t.prewarm_nodes) == (False, 600, False)
    assert t.policy == PredictiveConfig(capacity_rps_per_replica=4.0, quantile=0.97,
                                        min_replicas=1, max_replicas=20, tick_s=15.0)


def test_standalone_example_loads() -> None:
    s = load_settings(STANDALONE)
    assert s.prometheus_url == "http://127.0.0.1:9090"
    assert (s.api_host, s.dry_run) == ("127.0.0.1", True)
    [t] = s.for_standalone().targets_config()
    assert (t.namespace, t.name, t.dry_run) == ("default", "demo", True)
    assert t.request_rate_query == "sum(rate(demo_requests_total[1m]))"
    assert not s.for_standalone().leader_election.enabled


def test_defaults_without_a_file_match_the_configmap_comments() -> None:
    s = load_settings(None)
    assert (s.tick_s, s.dry_run, s.api_port, s.refit_interval_s) == (15, False, 8080, 3600)
    assert (s.lead_time.default_s, s.lead_time.min_pods, s.lead_time.window_pods) == (300, 5, 50)
    assert (s.history.step_s, s.history.days) == (60, 7)
    le = s.leader_election
    assert (le.lease_duration_s, le.renew_deadline_s, le.retry_period_s) == (15, 10, 2)


def test_for_standalone_forces_dry_run_on_every_target(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, config_text(EXAMPLE_PATCH))).for_standalone()
    assert all(t.dry_run for t in s.targets_config())


@pytest.mark.parametrize(("env", "path", "expected"), [
    pytest.param({"AUTOSCALER_PROMETHEUS_URL": "http://prom:9090"}, ("prometheus_url",),
                 "http://prom:9090", id="prometheus-url"),
    pytest.param({"AUTOSCALER_API_HOST": "127.0.0.2"}, ("api_host",), "127.0.0.2", id="api-host"),
    pytest.param({"AUTOSCALER_API_PORT": "9100"}, ("api_port",), 9100, id="api-port"),
    pytest.param({"autoscaler_api_port": "9101"}, ("api_port",), 9101, id="lower-case-name"),
    pytest.param({"AUTOSCALER_DRY_RUN": "true"}, ("dry_run",), True, id="dry-run"),
    pytest.param({"AUTOSCALER_LEADER_ELECTION__LEASE_DURATION_S": "30"},
                 ("leader_election", "lease_duration_s"), 30, id="nested-lease-duration"),
    pytest.param({"AUTOSCALER_LEADER_ELECTION__LEASE_DURATION_S": "30"},
                 ("leader_election", "renew_deadline_s"), 10, id="nested-keeps-file-siblings"),
    pytest.param({"AUTOSCALER_LEAD_TIME__DEFAULT_S": "90"}, ("lead_time", "default_s"), 90,
                 id="nested-lead-time"),
    pytest.param({"AUTOSCALER_TARGETS": json.dumps(
        [{"namespace": "a", "name": "b", "preset": "kserve"}])},
        ("targets", 0, "name"), "b", id="targets-json"),
])
def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         env: dict[str, str], path: tuple[Any, ...],
                                         expected: Any) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    value: Any = load_settings(write(tmp_path, config_text(BASE_CONFIGMAP)))
    for p in path:
        value = value[p] if isinstance(p, int) else getattr(value, p)
    assert value == expected


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


TARGET = "targets:\n  - {namespace: ns, name: app, preset: vllm"


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(lambda t: t + "\nprometheus: x\n", "prometheus: unknown key", id="unknown-top"),
    pytest.param(lambda t: _edit(t, "enabled: true", "enabled: true\n  lease_time_s: 3"),
                 "leader_election.lease_time_s: unknown key", id="unknown-nested"),
    pytest.param(lambda t: _edit(t, "api_port: 8080", "api_port: 70000"), "api_port:",
                 id="port-range"),
    pytest.param(lambda t: _edit(t, "tick_s: 15", "tick_s: 0"), "tick_s:", id="tick-zero"),
    pytest.param(lambda t: _edit(t, "renew_deadline_s: 10", "renew_deadline_s: 20"),
                 "leader_election: renew_deadline_s", id="renew-after-expiry"),
    pytest.param(lambda t: _edit(t, "quantile: 0.95", "quantile: 1.0"), "lead_time.quantile",
                 id="lead-quantile"),
    pytest.param(lambda t: _edit(t, "window_pods: 50", "window_pods: 2"), "window_pods",
                 id="window-below-min"),
    pytest.param(lambda t: _edit(t, "refit_interval_s: 3600", "refit_interval_s: 5"),
                 "refit_interval_s", id="refit-faster-than-tick"),
    pytest.param(lambda t: _edit(t, "prometheus_url: http", "prometheus_url: ftp"),
                 "prometheus_url", id="url-scheme"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", kindd: x}"),
                 "targets.0.kindd: unknown key", id="unknown-target-key"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", policy: {quantiles: 1}}"),
                 "targets.0.policy.quantiles: unknown key", id="unknown-policy-key"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", policy: {quantile: 1.5}}"),
                 "policy: quantile must be in [0.5, 1)", id="policy-range"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", policy: {min_replicas: 9, "
                                 "max_replicas: 3}}"), "policy: min_replicas", id="min-above-max"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", mode: sideways}"),
                 "targets.0.mode", id="bad-mode"),
    pytest.param(lambda t: _edit(t, "targets: []", "targets:\n  - {namespace: ns, name: app, "
                                 "preset: nginx}"), "preset: unknown 'nginx'", id="bad-preset"),
    pytest.param(lambda t: _edit(t, "targets: []", "targets:\n  - {namespace: ns, name: app}"),
                 "needs a preset or queries.request_rate", id="no-query"),
    pytest.param(lambda t: _edit(t, "targets: []", "targets:\n  - {namespace: Bad_NS, name: a, "
                                 "preset: vllm}"), "targets.0.namespace", id="bad-namespace"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", hpa: h, keda_scaled_object: k}"),
                 "exclusive", id="hpa-and-keda"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + ", mode: direct, hpa: h}"),
                 "mode direct", id="direct-with-hpa"),
    pytest.param(lambda t: _edit(t, "targets: []", TARGET + "}\n  - {namespace: ns, name: app, "
                                 "preset: tgi}"), "listed twice", id="duplicate-target"),
    pytest.param(lambda t: _edit(t, "tick_s: 15", "tick_s: 15\n\ttab: 1"), "not YAML",
                 id="not-yaml"),
    pytest.param(lambda t: "- a\n- b\n", "must be a mapping", id="not-a-mapping"),
])
def test_invalid_config_is_one_line_naming_the_key(tmp_path: Path, edit: Any,
                                                  message: str) -> None:
    path = write(tmp_path, edit(config_text(BASE_CONFIGMAP)))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith(str(path))


@pytest.mark.parametrize(("env", "message"), [
    pytest.param({"AUTOSCALER_API_PORT": "http"}, "api_port (from $AUTOSCALER_API_PORT)",
                 id="port-not-int"),
    pytest.param({"AUTOSCALER_LEADER_ELECTION__RETRY_PERIOD_S": "-1"},
                 "leader_election.retry_period_s (from "
                 "$AUTOSCALER_LEADER_ELECTION__RETRY_PERIOD_S)", id="nested-negative"),
])
def test_invalid_environment_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                env: dict[str, str], message: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=r"\(from \$AUTOSCALER_") as info:
        load_settings(write(tmp_path, config_text(BASE_CONFIGMAP)))
    assert message in str(info.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("loc", "name"), [
    pytest.param(("api_port",), "AUTOSCALER_API_PORT", id="top"),
    pytest.param(("leader_election", "lease_name"), "AUTOSCALER_LEADER_ELECTION__LEASE_NAME",
                 id="nested"),
    pytest.param(("targets", 0, "name"), "AUTOSCALER_TARGETS", id="list-item"),
])
def test_env_name(loc: tuple[Any, ...], name: str) -> None:
    assert env_name(loc) == name


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    out = [model]
    for f in model.model_fields.values():
        for arg in (f.annotation, *getattr(f.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in out:
                out += _models(arg)
    return out


def test_every_setting_documents_its_default() -> None:
    models = _models(Settings)
    assert PolicySettings in models and len(models) >= 6
    for model in models:
        for name, f in model.model_fields.items():
            assert f.description and "[" in f.description, f"{model.__name__}.{name}"


def test_policy_accepts_exactly_the_core_fields() -> None:
    assert list(PolicySettings.model_fields) == [f.name for f in fields(PredictiveConfig)]
    assert PredictiveConfig(**PolicySettings().model_dump()) == PredictiveConfig()


@pytest.mark.parametrize(("global_tick", "policy", "expected"), [
    pytest.param(30, {}, 30.0, id="inherits-loop-tick"),
    pytest.param(30, {"tick_s": 20}, 20.0, id="explicit-wins"),
])
def test_policy_tick_follows_the_loop(global_tick: float, policy: dict[str, Any],
                                      expected: float) -> None:
    s = Settings(tick_s=global_tick,
                 targets=[{"namespace": "a", "name": "b", "preset": "vllm", "policy": policy}])
    assert s.targets_config()[0].policy.tick_s == expected


@pytest.mark.parametrize(("global_dry", "target_dry", "expected"), [
    pytest.param(False, None, False, id="inherit-off"),
    pytest.param(True, None, True, id="inherit-on"),
    pytest.param(False, True, True, id="target-on"),
    pytest.param(True, False, True, id="global-on-wins"),
])
def test_dry_run_resolution(global_dry: bool, target_dry: bool | None, expected: bool) -> None:
    s = Settings(dry_run=global_dry,
                 targets=[{"namespace": "a", "name": "b", "preset": "vllm", "dry_run": target_dry}])
    assert s.targets_config()[0].dry_run is expected


@given(quantile=st.floats(0.0, 1.5, allow_nan=False),
       min_replicas=st.integers(-2, 30), max_replicas=st.integers(-2, 30),
       capacity=st.floats(-5, 50, allow_nan=False))
def test_policy_valid_exactly_when_the_core_says_so(quantile: float, min_replicas: int,
                                                    max_replicas: int, capacity: float) -> None:
    policy = {"quantile": quantile, "min_replicas": min_replicas, "max_replicas": max_replicas,
              "capacity_rps_per_replica": capacity}
    try:
        core: PredictiveConfig | None = PredictiveConfig(**policy)
    except ValueError:
        core = None
    target = {"namespace": "a", "name": "b", "preset": "vllm", "policy": policy}
    try:
        got: PredictiveConfig | None = Settings(targets=[target]).targets_config()[0].policy
    except ValueError:
        got = None
    assert (got is None) == (core is None)
    if core is not None and got is not None:
        assert got == PredictiveConfig(**policy, tick_s=15.0)
