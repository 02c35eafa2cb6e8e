"""End to end on a virtual clock: backfilled real Prometheus + test API server + Controller.

The worldcup98 trace (days 45-47) has an evening peak every day: the rate doubles at about
18:00 (trace time) and stays high until about 20:15. The test sizes 700 req/s per replica
(target utilization 1), so the afternoon needs 1 replica and the evening 2. With a measured
lead time L (the seeded pods took L from creation to Ready), the floor must reach 2 between
2 L + one tick and L before the recorded rate first needs it, and fall back to the user's
minimum (1) once the evening is over. Every expected time is computed from the trace, never
taken from the code under test. No sleeping: the loop runs on Prometheus time, tick by tick.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import kubernetes.client as k8s
import numpy as np
import pytest

from autoscaler.kube_actuator import USER_MIN_ANNOTATION, KubeActuator
from autoscaler.loop import ClusterReader, Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.settings import Settings
from autoscaler.target_state import key_of
from tests.kubeserver.seeding import hpa, pod, seed, seed_deployment_with_pods

DAY_S = 86_400
TICK_S = 60.0
LEAD_TIMES_S = (900.0, 1000.0, 1100.0, 1150.0, 1200.0)  # q95 by nearest rank of 5: the last
LEAD_S = 1200.0
CAP_RPS = 700.0
RATE_QUERY = "sum by (namespace, deployment) (rate(demo_requests_total[2m]))"


def _dt(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s, UTC)


def seed_target(store, namespace: str, created_s: float) -> None:
    """The vLLM-style Deployment (1 replica) with its HPA (minReplicas 1) and 5 Ready pods
    whose start-to-Ready times are LEAD_TIMES_S (older pods of earlier scale-ups)."""
    seed_deployment_with_pods(store, "demo", namespace, 1, created_at=_dt(created_s),
                              ready_after_s=LEAD_TIMES_S[0])
    for i, lead_s in enumerate(LEAD_TIMES_S[1:]):
        seed(store, pod(f"demo-old-{i}", namespace, {"app": "demo"}, _dt(created_s + 60 * i),
                        scheduled_after_s=5.0, ready_after_s=lead_s))
    autoscaler = hpa("demo", namespace, "demo", 1, 10)
    autoscaler["status"] = {"currentReplicas": 1, "desiredReplicas": 1}
    seed(store, autoscaler)


def make_settings(*namespaces: str, dry_run: bool = False, cap_rps: float = CAP_RPS) -> Settings:
    return Settings(tick_s=TICK_S, dry_run=dry_run, targets=[
        {"namespace": ns, "name": "demo", "queries": {"request_rate": RATE_QUERY},
         "lead_time_default_s": 300.0,
         "policy": {"capacity_rps_per_replica": cap_rps, "target_utilization": 1.0,
                    "forecaster": "seasonal-naive-daily", "trend_floor": False}}
        for ns in namespaces])


def make_controller(settings: Settings, url: str, kube_client, start_s: float) -> Controller:
    source = PrometheusSource(url, step_s=60, history_points=3 * 1440)
    return Controller(settings.targets_config(), source,
                      actuator=KubeActuator(kube_client, sleep=lambda s: None),
                      cluster=ClusterReader(kube_client), metrics=ControllerMetrics(),
                      tick_s=TICK_S, history_s=3 * DAY_S, log_size=10_000, start_s=start_s)


def run(controller: Controller, start_s: float, end_s: float, each=None) -> None:
    """Tick on the virtual clock; due refits run before the tick (the service's own jobs)."""
    now = start_s
    while now <= end_s:
        for key in controller.refit_due(now):
            controller.refit(key, now)
        controller.tick(now)
        if each is not None:
            each(now)
        now += TICK_S


def trace_rate_rps(pb, trace_s: float) -> float:
    """The recorded rate of the trace interval starting at trace_s."""
    i = int(np.searchsorted(pb.trace_s, trace_s))
    return float(pb.requests[i]) / pb.step_s


def first_need_s(pb, day: int, from_h: float, to_h: float, cap_rps: float, need: int) -> float:
    """Trace time of the first interval in [from_h, to_h) whose rate needs `need` replicas."""
    sel = (pb.trace_s >= day * DAY_S + from_h * 3600) & (pb.trace_s < day * DAY_S + to_h * 3600)
    t, r = pb.trace_s[sel], pb.requests[sel] / pb.step_s
    hits = np.flatnonzero(np.ceil(r / cap_rps) >= need)
    assert hits.size, "the trace has no such peak: wrong window"
    return float(t[hits[0]])


def hpa_state(admin, namespace: str) -> tuple[int, str | None, str]:
    h = k8s.AutoscalingV2Api(admin).read_namespaced_horizontal_pod_autoscaler("demo", namespace)
    return (h.spec.min_replicas, (h.metadata.annotations or {}).get(USER_MIN_ANNOTATION),
            h.metadata.resource_version)


def test_floor_rises_a_lead_time_ahead_of_the_daily_peak_and_falls_back(
        prometheus_backfilled, kube_server, kube_client, kube_admin_client):
    pb = prometheus_backfilled
    day = 47
    onset_trace_s = first_need_s(pb, day, 16.0, 21.0, CAP_RPS, 2)
    # The afternoon before truly needs 1 replica (else the test would not be about a peak).
    assert all(trace_rate_rps(pb, onset_trace_s - k * 60) <= CAP_RPS for k in range(1, 90))
    onset_s = pb.trace_to_prom(onset_trace_s)
    start_s = onset_s - 2 * 3600
    end_s = pb.trace_to_prom(day * DAY_S + 21.5 * 3600)
    seed_target(kube_server.store, "default", start_s - 4 * 3600)
    controller = make_controller(make_settings("default"), pb.url, kube_client, start_s)
    seen: list[tuple[float, int, str | None]] = []
    run(controller, start_s, end_s,
        lambda now: seen.append((now, *hpa_state(kube_admin_client, "default")[:2])))

    state = controller.targets[("default", "Deployment", "demo")]
    records = list(state.log)
    assert {r.lead_time_source for r in records} == {"measured"}
    assert {r.lead_time_s for r in records} == {LEAD_S}
    raised = [t for t, spec_min, _ in seen if spec_min >= 2]
    assert raised, "the floor never rose"
    first_up_s = raised[0]
    assert onset_s - 2 * LEAD_S - TICK_S <= first_up_s <= onset_s - LEAD_S, (
        f"floor rose {(onset_s - first_up_s) / 60:.1f} min before the need; expected between "
        f"{LEAD_S / 60:.0f} and {(2 * LEAD_S + TICK_S) / 60:.0f}")
    # Before the rise: the user's own minimum, no annotation; while raised: user min kept.
    assert all(m == 1 and a is None for t, m, a in seen if t < first_up_s)
    assert all(a == "1" for t, m, a in seen if m >= 2)
    # After the evening (the recorded rate back under one replica's capacity) it falls back.
    evening_end_trace_s = next(
        t for t in np.arange(onset_trace_s + 3600, day * DAY_S + 21.5 * 3600, 60)
        if all(trace_rate_rps(pb, t + k * 60) <= CAP_RPS for k in range(10)))
    after = [(m, a) for t, m, a in seen if t > pb.trace_to_prom(evening_end_trace_s)]
    assert (1, None) in after, "the floor never fell back to the user's minimum"
    # Decisions are records with their reasons; raised by the forecast, not by reaction.
    up = next(r for r in records if r.now_s == first_up_s)
    assert up.reason == "lead-time-scale-up" and up.written and up.floor == 2
    assert up.forecast_quantiles_rps[0.95] > CAP_RPS >= up.inputs["rate_rps"]

    text = controller.metrics.render().decode()
    labels = 'namespace="default",target="demo"'
    # The exposed floor is the last decision's, which is what the HPA carries now.
    assert records[-1].floor == seen[-1][1]
    assert f"predictive_autoscaler_desired_floor_replicas{{{labels}}} {float(seen[-1][1])}" in text
    assert f"predictive_autoscaler_hpa_desired_replicas{{{labels}}} 1.0" in text
    assert f"predictive_autoscaler_lead_time_seconds{{{labels}}} {LEAD_S}" in text
    assert f"predictive_autoscaler_metrics_stale{{{labels}}} 0.0" in text
    for reason in {r.reason for r in records}:
        count = sum(r.reason == reason for r in records)
        line = (f'predictive_autoscaler_decisions_total{{namespace="default",reason="{reason}",'
                f'target="demo"}} {float(count)}')
        assert line in text
    assert 'predictive_autoscaler_forecast_rps{namespace="default",quantile="0.95"' in text
    assert "predictive_autoscaler_fit_duration_seconds_count" in text


@pytest.mark.parametrize("mode", [pytest.param("dry-run", id="dry-run"),
                                  pytest.param("standby", id="not-leader")])
def test_dry_run_or_standby_writes_nothing_and_still_logs(
        prometheus_backfilled, kube_server, kube_client, kube_admin_client, mode):
    pb = prometheus_backfilled
    onset_s = pb.trace_to_prom(first_need_s(pb, 47, 16.0, 21.0, CAP_RPS, 2))
    start_s, end_s = onset_s - 2 * LEAD_S - 10 * TICK_S, onset_s - LEAD_S + TICK_S
    seed_target(kube_server.store, "default", start_s - 4 * 3600)
    core, apps = k8s.CoreV1Api(kube_admin_client), k8s.AppsV1Api(kube_admin_client)
    before = (hpa_state(kube_admin_client, "default"),
              apps.read_namespaced_deployment("demo", "default").metadata.resource_version)
    controller = make_controller(make_settings("default", dry_run=mode == "dry-run"), pb.url,
                                 kube_client, start_s)
    if mode == "standby":
        controller.is_leader = lambda now_s: False
    run(controller, start_s, end_s)

    after = (hpa_state(kube_admin_client, "default"),
             apps.read_namespaced_deployment("demo", "default").metadata.resource_version)
    assert after == before
    assert core.list_namespaced_event("default").items == []
    records = list(controller.targets[("default", "Deployment", "demo")].log)
    assert len(records) == math.floor((end_s - start_s) / TICK_S) + 1
    assert all(not r.written for r in records)
    if mode == "standby":  # a standby decides (ready to take over) but never calls the API
        assert all(not r.acted and not r.dry_run for r in records)
        assert any(r.reason == "lead-time-scale-up" and r.floor == 2 for r in records)
        assert "predictive_autoscaler_is_leader 0.0" in controller.metrics.render().decode()
        return
    assert all(r.dry_run for r in records)
    would = [r for r in records if r.action.get("after") == 2]
    assert would and would[0].reason == "lead-time-scale-up"


def test_missing_metrics_hold_the_floor_and_other_targets_go_on(
        prometheus_backfilled, kube_server, kube_client):
    """default/demo loses its samples for 30 minutes (the fixture's hole); team-b/demo keeps
    them; team-b/ghost has neither metrics nor a Deployment and fails every tick."""
    pb = prometheus_backfilled
    hole_first_s, hole_last_s = pb.hole_sample_s
    start_s, end_s = hole_first_s - 1800, hole_first_s + 900
    for ns in ("default", "team-b"):
        seed_target(kube_server.store, ns, start_s - 4 * 3600)
    settings = make_settings("default", "team-b", cap_rps=100.0)
    ghost = settings.model_copy(update={"targets": [
        settings.targets[0].model_copy(update={"namespace": "team-b", "name": "ghost"})]})
    controller = make_controller(settings, pb.url, kube_client, start_s)
    controller.add_target(ghost.targets_config()[0], start_s)
    run(controller, start_s, end_s)

    logs = {key: list(s.log) for key, s in controller.targets.items()}
    demo = logs[("default", "Deployment", "demo")]
    # rate(...[2m]) still sees the last sample for up to 2 minutes, then nothing.
    held = [r for r in demo if r.now_s >= hole_first_s + 120]
    fresh = [r for r in demo if r.now_s < hole_first_s - 60]
    assert held and all(r.reason == "hold: metrics stale" for r in held)
    assert {r.floor for r in held} == {fresh[-1].floor}
    assert fresh[-1].floor >= 2  # a floor above the minimum is what must be held
    assert all(r.reason != "hold: metrics stale" for r in fresh)
    assert all(r.inputs["stale"] for r in held)
    team_b = logs[("team-b", "Deployment", "demo")]
    assert all(not r.reason.startswith("hold") for r in team_b)
    assert len(team_b) == len(demo)
    ghost_log = logs[key_of(ghost.targets_config()[0])]
    assert len(ghost_log) == len(demo) and all(r.reason.startswith("error:") for r in ghost_log)

    text = controller.metrics.render().decode()
    assert 'predictive_autoscaler_metrics_stale{namespace="default",target="demo"} 1.0' in text
    assert 'predictive_autoscaler_metrics_stale{namespace="team-b",target="demo"} 0.0' in text
    stale_line = ('predictive_autoscaler_decisions_total{namespace="default",'
                  f'reason="hold: metrics stale",target="demo"}} '
                  f'{float(sum(r.reason == "hold: metrics stale" for r in demo))}')
    assert stale_line in text


@pytest.mark.parametrize("failing", [
    pytest.param("read_tick", id="prometheus-down-for-reads"),
    pytest.param("history", id="prometheus-down-for-history"),
])
def test_prometheus_failure_never_kills_the_tick(prometheus_backfilled, failing):
    """Without Kubernetes (standalone-style): a failing source is an error count, and the
    policy holds or decides on what it has; tick never raises."""
    from autoscaler.errors import MetricsUnavailable

    pb = prometheus_backfilled
    now = pb.trace_to_prom(47 * DAY_S + 12 * 3600)
    source = PrometheusSource(pb.url, step_s=60, history_points=2 * 1440)

    def boom(*args, **kwargs):
        raise MetricsUnavailable("connection refused")

    setattr(source, failing, boom)
    controller = Controller(make_settings("default").targets_config(), source,
                            tick_s=TICK_S, history_s=2 * DAY_S, start_s=now)
    records = controller.tick(now)
    (record,) = records.values()
    expected = "hold: metrics stale" if failing == "read_tick" else "hold: no forecast"
    assert record.reason == expected
    text = controller.metrics.render().decode()
    assert 'predictive_autoscaler_errors_total{stage="query"} 1.0' in text


def test_fits_only_in_refit_and_a_failed_fit_holds(prometheus_backfilled, monkeypatch):
    """The tick never fits (refits are the service's separate jobs); a fit that raises is
    counted, recorded, and the policy decides without a forecast."""
    import forecasting.online

    pb = prometheus_backfilled
    now = pb.trace_to_prom(47 * DAY_S + 12 * 3600)
    source = PrometheusSource(pb.url, step_s=60, history_points=2 * 1440)
    controller = Controller(make_settings("default").targets_config(), source,
                            tick_s=TICK_S, history_s=2 * DAY_S, start_s=now)
    key = ("default", "Deployment", "demo")
    no_forecast = {"hold: no forecast", "reactive: no forecast"}
    assert controller.tick(now)[key].reason in no_forecast
    assert controller.targets[key].forecaster.fit_count == 0
    assert controller.refit_due(now) == [key]

    def broken(name):
        raise RuntimeError("singular matrix")

    monkeypatch.setattr(forecasting.online, "make_forecaster", broken)
    assert controller.refit(key, now) is False
    assert controller.refit_due(now) == []  # next attempt one refit interval later
    record = controller.tick(now + TICK_S)[key]
    assert record.reason in no_forecast
    assert "singular matrix" in record.inputs["fit_failure"]
    monkeypatch.undo()
    assert controller.refit(key, now + 3600) is True
    record = controller.tick(now + 3600)[key]
    assert record.reason not in no_forecast and record.forecast_quantiles_rps
    text = controller.metrics.render().decode()
    assert 'predictive_autoscaler_errors_total{stage="fit"} 1.0' in text
    assert "predictive_autoscaler_fit_duration_seconds_count 2.0" in text


def test_removing_a_target_restores_its_hpa(prometheus_backfilled, kube_server, kube_client,
                                            kube_admin_client):
    """Remove a target while its floor is raised: the user's own minimum comes back and the
    annotation goes; the controller forgets the target."""
    pb = prometheus_backfilled
    day = 47
    onset_s = pb.trace_to_prom(first_need_s(pb, day, 16.0, 21.0, CAP_RPS, 2))
    start_s = onset_s - 2 * 3600
    seed_target(kube_server.store, "default", start_s - 4 * 3600)
    controller = make_controller(make_settings("default"), pb.url, kube_client, start_s)
    run(controller, start_s, onset_s + 600)
    raised, annotation, _ = hpa_state(kube_admin_client, "default")
    assert raised == 2 and annotation == "1"  # raised for the evening, user's min kept
    key = key_of(controller.targets[("default", "Deployment", "demo")].config)
    controller.remove_target(key, onset_s + 660)
    restored, annotation, _ = hpa_state(kube_admin_client, "default")
    assert restored == 1 and annotation is None
    assert key not in controller.targets
