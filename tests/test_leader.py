"""Leader election against the project's test API server, two candidates on one virtual clock.

The candidates authenticate as the controller's ServiceAccount, so the RBAC manifest's lease
rule (get/create/update in predictive-autoscaler) is exercised too. Time is arithmetic on a
virtual clock; threads appear only in the race tests, to make two requests truly concurrent.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import kubernetes.client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes.client import CoordinationV1Api

from autoscaler.leader import (
    ACQUIRED,
    CONFLICT,
    HELD_BY_OTHER,
    RENEWED,
    LeaderElector,
    LeaseTiming,
)
from tests.kubeserver import CONTROLLER_TOKEN, KubeServer

NS = "predictive-autoscaler"
T0 = 1_800_000_000.0  # virtual epoch seconds
TIMING = LeaseTiming()  # client-go: 15 s lease, 10 s renew deadline, 2 s retry
_names = itertools.count()


def lease_name() -> str:
    return f"lease-{next(_names)}"


def candidate(client: kubernetes.client.ApiClient, identity: str, name: str,
              namespace: str = NS) -> LeaderElector:
    return LeaderElector(client, name=name, namespace=namespace, identity=identity, timing=TIMING)


def read(admin: kubernetes.client.ApiClient, name: str) -> kubernetes.client.V1Lease:
    return CoordinationV1Api(admin).read_namespaced_lease(name, NS)


def ts(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s, tz=UTC)


@pytest.fixture
def pair(make_kube_client: Callable[[str], kubernetes.client.ApiClient],
         ) -> tuple[LeaderElector, LeaderElector, str]:
    name = lease_name()
    return (candidate(make_kube_client(CONTROLLER_TOKEN), "a", name),
            candidate(make_kube_client(CONTROLLER_TOKEN), "b", name), name)


def test_first_candidate_creates_the_lease(pair, kube_admin_client) -> None:
    a, b, name = pair
    assert a.try_acquire_or_renew(T0) and a.last_outcome == ACQUIRED
    assert not b.try_acquire_or_renew(T0) and b.last_outcome == HELD_BY_OTHER
    spec = read(kube_admin_client, name).spec
    assert (spec.holder_identity, spec.lease_duration_seconds, spec.lease_transitions) == \
        ("a", 15, 0)
    assert spec.acquire_time == ts(T0) and spec.renew_time == ts(T0)
    assert a.try_acquire_or_renew(T0 + 2) and a.last_outcome == RENEWED
    spec = read(kube_admin_client, name).spec
    assert (spec.acquire_time, spec.renew_time, spec.lease_transitions) == \
        (ts(T0), ts(T0 + 2), 0)


def test_exactly_one_leads_while_both_run(pair) -> None:
    a, b, _ = pair
    for k in range(40):
        now = T0 + k * TIMING.retry_period_s
        for c in (b, a) if k % 2 else (a, b):  # alternate who asks first
            c.try_acquire_or_renew(now)
        assert [a.is_leader(now), b.is_leader(now)].count(True) == 1, now
    assert a.is_leader(now)  # the first holder keeps it: no needless handovers


@pytest.mark.parametrize("phase_s", [pytest.param(0.0, id="in-step"),
                                     pytest.param(0.7, id="phase-0.7s"),
                                     pytest.param(1.99, id="phase-1.99s")])
def test_killed_leader_hands_over_within_lease_plus_retry(pair, kube_admin_client,
                                                          phase_s: float) -> None:
    a, b, name = pair
    retry = TIMING.retry_period_s
    events = sorted([(T0 + k * retry, a) for k in range(10)]  # a is killed after its 10th call
                    + [(T0 + phase_s + k * retry, b) for k in range(40)], key=lambda e: e[0])
    last_renewal = max(t for t, c in events if c is a)
    took_over = None
    for now, c in events:
        c.try_acquire_or_renew(now)
        assert not (a.is_leader(now) and b.is_leader(now)), now
        if c is b and b.is_leader(now) and took_over is None:
            took_over = now
    assert took_over is not None
    # After a stopped acting (renew deadline), within lease duration + retry period.
    assert last_renewal + TIMING.renew_deadline_s <= took_over
    assert took_over <= last_renewal + TIMING.lease_duration_s + retry
    assert not a.is_leader(last_renewal + TIMING.renew_deadline_s)
    spec = read(kube_admin_client, name).spec
    assert (spec.holder_identity, spec.lease_transitions) == ("b", 1)
    assert spec.acquire_time == ts(took_over)


@pytest.mark.parametrize("skew_s", [pytest.param(-60.0, id="standby-60s-behind"),
                                    pytest.param(-3.0, id="standby-3s-behind"),
                                    pytest.param(3.0, id="standby-3s-ahead"),
                                    pytest.param(60.0, id="standby-60s-ahead")])
def test_clock_skew_never_lets_the_standby_in_early(pair, skew_s: float) -> None:
    """The holder's renewTime is trusted only near the standby's own observation, so a
    skewed clock delays takeover at most a retry or so, and never makes it premature."""
    a, b, _ = pair
    retry = TIMING.retry_period_s
    last_renewal, took_over = T0 + 8 * retry, None
    for k in range(30):  # true time t; b's clock reads t + skew_s
        t = T0 + k * retry
        if t <= last_renewal:
            a.try_acquire_or_renew(t)
        b.try_acquire_or_renew(t + skew_s)
        assert not (a.is_leader(t) and b.is_leader(t + skew_s)), t
        if took_over is None and b.is_leader(t + skew_s):
            took_over = t
    assert took_over is not None
    assert last_renewal + TIMING.renew_deadline_s <= took_over
    assert took_over <= last_renewal + TIMING.lease_duration_s + 2 * retry


def test_leader_that_cannot_renew_stops_before_the_lease_expires(
        make_kube_client, kube_server: KubeServer) -> None:
    name = lease_name()
    a = candidate(make_kube_client(CONTROLLER_TOKEN), "a", name)
    assert a.try_acquire_or_renew(T0)
    assert a.try_acquire_or_renew(T0 + 2)
    kube_server.stop()
    for k in range(2, 8):  # renewals keep failing; the last success was at T0 + 2
        now = T0 + k * TIMING.retry_period_s
        assert not a.try_acquire_or_renew(now)
        assert a.last_outcome.startswith("error")
    last = T0 + 2
    assert a.is_leader(last + TIMING.renew_deadline_s - 0.01)
    assert not a.is_leader(last + TIMING.renew_deadline_s)
    assert TIMING.renew_deadline_s < TIMING.lease_duration_s  # i.e. before it could expire


def test_overwritten_holder_ends_leadership_at_once(pair, kube_admin_client) -> None:
    a, b, name = pair
    assert a.try_acquire_or_renew(T0)
    api = CoordinationV1Api(kube_admin_client)
    lease = api.read_namespaced_lease(name, NS)
    lease.spec.holder_identity, lease.spec.renew_time = "intruder", ts(T0 + 1)
    api.replace_namespaced_lease(name, NS, lease)
    assert not a.try_acquire_or_renew(T0 + 2)
    assert a.last_outcome == HELD_BY_OTHER and a.observed_holder == "intruder"
    assert not a.is_leader(T0 + 2)  # well before its renew deadline (T0 + 10)
    # The intruder's lease is honoured: nobody takes it before it expires.
    for k in range(2, 8):  # up to T0 + 14 < T0 + 1 + 15
        now = T0 + k * TIMING.retry_period_s
        assert not a.try_acquire_or_renew(now) and not b.try_acquire_or_renew(now)
    assert b.try_acquire_or_renew(T0 + 1 + TIMING.lease_duration_s + TIMING.retry_period_s)


def test_release_hands_over_at_the_next_attempt(pair, kube_admin_client) -> None:
    a, b, name = pair
    assert a.try_acquire_or_renew(T0)
    assert not b.try_acquire_or_renew(T0 + 1)
    assert a.release() and not a.is_leader(T0 + 2)
    assert b.try_acquire_or_renew(T0 + 3) and b.last_outcome == ACQUIRED
    assert read(kube_admin_client, name).spec.lease_transitions == 1
    assert not a.release()  # not ours any more


def test_forbidden_namespace_is_an_error_not_a_crash(make_kube_client) -> None:
    c = candidate(make_kube_client(CONTROLLER_TOKEN), "a", lease_name(), namespace="default")
    assert not c.try_acquire_or_renew(T0)
    assert c.last_outcome == "error: 403 Forbidden" and not c.is_leader(T0)


class RacingApi(CoordinationV1Api):
    """The real client; once armed, each read waits until the rival has read too, so both
    write from the same resourceVersion (or both create), as two replicas can."""

    barrier: threading.Barrier | None = None

    def read_namespaced_lease(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().read_namespaced_lease(*args, **kwargs)
        finally:
            if self.barrier is not None:
                self.barrier.wait(timeout=10)


def racers(make_kube_client, name: str) -> list[LeaderElector]:
    return [LeaderElector(RacingApi(make_kube_client(CONTROLLER_TOKEN)), name=name,
                          namespace=NS, identity=f"racer-{i}", timing=TIMING) for i in range(2)]


def race(candidates: list[LeaderElector], now: float) -> LeaderElector:
    """Both attempt at once; exactly one wins, the other gets 409. Returns the winner."""
    barrier = threading.Barrier(2)
    for c in candidates:
        c.api.barrier = barrier  # type: ignore[attr-defined]
    results: dict[int, bool] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, candidates[i].try_acquire_or_renew(now))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results.values()) == [False, True], results
    assert sorted(c.last_outcome for c in candidates) == sorted([ACQUIRED, CONFLICT])
    [winner] = [c for c in candidates if c.is_leader(now)]
    return winner


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_creation_has_one_winner(make_kube_client, kube_admin_client,
                                            round_: int) -> None:
    name = lease_name()
    winner = race(racers(make_kube_client, name), T0)
    assert read(kube_admin_client, name).spec.holder_identity == winner.identity


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_takeover_of_an_expired_lease_has_one_winner(
        make_kube_client, kube_admin_client, round_: int) -> None:
    name = lease_name()
    old = candidate(make_kube_client(CONTROLLER_TOKEN), "old", name)
    assert old.try_acquire_or_renew(T0)
    both = racers(make_kube_client, name)
    for c in both:  # both stand by and watch the old leader's record, one at a time
        assert not c.try_acquire_or_renew(T0) and c.last_outcome == HELD_BY_OTHER
    winner = race(both, T0 + TIMING.lease_duration_s)  # it expired for both at once
    spec = read(kube_admin_client, name).spec
    assert (spec.holder_identity, spec.lease_transitions) == (winner.identity, 1)


@pytest.mark.parametrize(("timing", "ok"), [
    pytest.param((15, 10, 2), True, id="client-go-defaults"),
    pytest.param((15, 15, 2), False, id="deadline-equals-lease"),
    pytest.param((15, 10, 10), False, id="retry-equals-deadline"),
    pytest.param((15, 10, 0), False, id="zero-retry"),
])
def test_timing_rules(timing: tuple[int, float, float], ok: bool) -> None:
    if ok:
        LeaseTiming(*timing)
    else:
        with pytest.raises(ValueError, match="retry_period_s < renew_deadline_s"):
            LeaseTiming(*timing)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0.5, 4.0)),
                         min_size=8, max_size=25))
def test_never_two_leaders_under_any_call_pattern(make_kube_client, schedule) -> None:
    """Candidates skip calls at random (crash, pause, slow loop) and time steps vary."""
    name = lease_name()
    a = candidate(make_kube_client(CONTROLLER_TOKEN), "a", name)
    b = candidate(make_kube_client(CONTROLLER_TOKEN), "b", name)
    now = T0
    for call_a, call_b, step_s in schedule:
        now += step_s
        if call_a:
            a.try_acquire_or_renew(now)
        if call_b:
            b.try_acquire_or_renew(now)
        assert not (a.is_leader(now) and b.is_leader(now)), now
