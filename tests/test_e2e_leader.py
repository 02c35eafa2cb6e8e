"""Leader handover between two running services, end to end: real Prometheus (scraping a live
exporter) + the test API server + two `build_service` instances with the real APScheduler,
different holder identities and short Lease timings (duration 3 s, renew deadline 2 s,
retry 0.5 s).

The leader goes away without giving the Lease up, in two ways: `kill` (its scheduler stopped,
no release) and `partition` (only its renewal job stopped, its ticks still running: a
replica cut off from the Lease that keeps deciding, the harder case). Every Lease write is
recorded by the API server's store, so the times come from the Lease itself:
- only one replica acts at a time; the standby never acts before it took the Lease;
- the old leader stops acting renew_deadline after its last renewTime, i.e. before the
  Lease can expire for anyone else, and never acts again although its ticks go on;
- the standby takes over within lease_duration + retry_period of that last renewTime
  (leader.py's bound for synchronized clocks), and not before the renew deadline.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import kubernetes.client as k8s
import pytest

from autoscaler.service import LEASE_JOB, build_service
from autoscaler.settings import Settings
from tests.kubeserver import CONTROLLER_TOKEN
from tests.test_e2e_support import poll, rate_query, request_stream, seed_workload, wait_rate

NS, NAME = "e2e-leader", "demo"
LEASE_NS, LEASE_NAME = "predictive-autoscaler", "e2e-handover"
DURATION_S, DEADLINE_S, RETRY_S = 3, 2.0, 0.5
# APScheduler starts a job a few milliseconds after its due time, and the `now` a replica
# stamps on the Lease is read when the job starts: the only slack beyond the design bound.
DISPATCH_SLACK_S = 0.25
FLOOR = 4


def settings(url: str, identity: str) -> Settings:
    return Settings(
        prometheus_url=url, tick_s=1, history={"step_s": 60, "days": 0.05},
        leader_election={"identity": identity, "lease_name": LEASE_NAME,
                         "lease_namespace": LEASE_NS, "lease_duration_s": DURATION_S,
                         "renew_deadline_s": DEADLINE_S, "retry_period_s": RETRY_S},
        targets=[{"namespace": NS, "name": NAME, "queries": {"request_rate": rate_query(NS, NAME)},
                  "lead_time_default_s": 60.0,
                  "policy": {"capacity_rps_per_replica": 1.0, "target_utilization": 1.0,
                             "forecaster": "last", "min_replicas": 1, "max_replicas": FLOOR}}])


def _s(stamp: str | None) -> float | None:
    return None if stamp is None else datetime.fromisoformat(stamp).timestamp()


def acted_at(service) -> list[float]:
    state = service.controller.targets[(NS, "Deployment", NAME)]
    return [r.now_s for r in list(state.log) if r.acted]


def ticks_at(service) -> list[float]:
    return [r.now_s for r in list(service.controller.targets[(NS, "Deployment", NAME)].log)]


@pytest.mark.parametrize("how", [pytest.param("kill", id="kill"),
                                 pytest.param("partition", id="partition")])
def test_standby_takes_over_within_the_lease_bound_and_the_old_leader_stops(
        prometheus_scraping, kube_server, kube_admin_client, how: str) -> None:
    seed_workload(kube_server.store, NS, NAME, real_pods=1)
    writes: list[tuple[str, float | None, float | None]] = []  # holder, renewTime, acquireTime
    lock = threading.Lock()

    def on_write(kind, rtype, obj) -> None:
        meta = obj.get("metadata", {})
        if rtype.kind == "Lease" and (meta.get("namespace"), meta.get("name")) == (
                LEASE_NS, LEASE_NAME):
            spec = obj.get("spec", {})
            with lock:
                writes.append((spec.get("holderIdentity") or "", _s(spec.get("renewTime")),
                               _s(spec.get("acquireTime"))))

    kube_server.store.add_listener(on_write)
    services = {}
    with request_stream(prometheus_scraping.exporter, NS, NAME, 45.0):
        wait_rate(prometheus_scraping, NS, NAME, 10.0)
        try:
            for identity in ("replica-a", "replica-b"):
                services[identity] = build_service(
                    settings(prometheus_scraping.url, identity),
                    api_client=kube_server.client(CONTROLLER_TOKEN), tick_s=0.25)
            for service in services.values():
                service.start()
            poll(lambda: [i for i, s in services.items() if acted_at(s)], bool, 10.0,
                 "a replica acting")
            time.sleep(1.0)  # both running side by side for a while
            leader_id = next(i for i, s in services.items() if acted_at(s))
            standby_id = next(i for i in services if i != leader_id)
            leader, standby = services[leader_id], services[standby_id]
            assert acted_at(standby) == [], "the standby acted while the other one led"
            assert len(ticks_at(standby)) >= 3, "the standby decides (and logs) all along"
            h = k8s.AutoscalingV2Api(kube_admin_client).read_namespaced_horizontal_pod_autoscaler(
                NAME, NS)
            assert h.spec.min_replicas == FLOOR

            if how == "kill":
                leader.scheduler.shutdown(wait=True)  # no release: the Lease stays its own
            else:
                leader.scheduler.pause_job(LEASE_JOB)  # cut off from the Lease; ticks go on
            paused_at = time.time()
            poll(lambda: acted_at(standby), bool, DURATION_S + 5.0, "the standby taking over")
            time.sleep(0.5)  # a few more ticks of both
        finally:
            for service in services.values():
                service.shutdown()  # the old leader's release answers 409: no longer its Lease

    with lock:
        log = list(writes)
    last_renew_s = max(r for h, r, _ in log if h == leader_id and r is not None)
    takeover_s = next(a for h, _, a in log if h == standby_id and a is not None)
    assert last_renew_s <= paused_at + RETRY_S  # (a renewal in flight may land after the pause)
    waited_s = takeover_s - last_renew_s
    assert DEADLINE_S < waited_s <= DURATION_S + RETRY_S + DISPATCH_SLACK_S, (
        f"took over {waited_s:.3f} s after the last renewal; bound "
        f"({DEADLINE_S}, {DURATION_S + RETRY_S}]")
    # The old leader: acted only before its renew deadline, kept ticking without acting.
    old_acts = acted_at(leader)
    assert max(old_acts) < last_renew_s + DEADLINE_S
    if how == "partition":
        assert [t for t in ticks_at(leader) if t >= last_renew_s + DEADLINE_S], \
            "the old leader's ticks should have gone on (it was cut off, not stopped)"
    # The new one: acted only once it held the Lease; never both at once.
    new_acts = acted_at(standby)
    assert min(new_acts) >= takeover_s
    assert max(old_acts) < min(new_acts)
    holders = [h for h, _, _ in log if h]
    assert set(holders[holders.index(standby_id):]) == {standby_id}, "the Lease flip-flopped"
    print(f"takeover {waited_s:.3f} s after the last renewal")  # shown with -s
