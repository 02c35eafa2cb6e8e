"""Leader election on a coordination.k8s.io/v1 Lease, so two replicas never act at once.

Rules (client-go's leaderelection semantics, driven as a plain object on the caller's clock):
- The caller calls `try_acquire_or_renew(now)` every `retry_period_s` and acts only while
  `is_leader(now)`; time enters as `now` (epoch seconds), so tests run on a virtual clock.
  Nothing here sleeps, spawns threads or reads a clock.
- Every write carries the resourceVersion it read (create when absent, else a PUT of the read
  object): of two candidates racing, the API server lets one win and answers the other 409,
  which is "lost the race", never an error that kills the loop.
- A leader counts from the `now` of its last successful renewal (taken before the request,
  so conservatively early) and stops leading `renew_deadline_s` later unless it renews again;
  renew_deadline_s < lease_duration_s, so it stops before anyone may take over. Seeing another
  holder, or a 409 on its own lease, ends leadership at once.
- A standby takes over when the record it saw has not changed for the record's
  leaseDurationSeconds. Like client-go it trusts its own observation time, not the holder's
  clock, with one refinement: the holder's renewTime is believed within half the safety margin
  (lease_duration_s - renew_deadline_s) below that observation. That keeps takeover strictly
  after the old leader stopped whatever the clock skew, and with synchronized clocks bounds
  takeover to lease_duration_s + retry_period_s after the last renewal, whatever the phase of
  the two replicas' retry timers.
Not pure: talks HTTP to the Kubernetes API through the official client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import kubernetes.client
import urllib3
from kubernetes.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

ACQUIRED = "acquired"
RENEWED = "renewed"
HELD_BY_OTHER = "held-by-other"
CONFLICT = "conflict"
RELEASED = "released"
ERROR = "error"


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults; need retry_period_s < renew_deadline_s < lease_duration_s."""

    lease_duration_s: int = 15
    """A standby waits this long after the last change it saw [15 s]."""
    renew_deadline_s: float = 10.0
    """A leader that could not renew this long stops acting [10 s]."""
    retry_period_s: float = 2.0
    """Interval between acquire/renew attempts (the caller's schedule) [2 s]."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("need 0 < retry_period_s < renew_deadline_s < lease_duration_s, got "
                             f"{self.retry_period_s}, {self.renew_deadline_s}, "
                             f"{self.lease_duration_s}")


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease, as this candidate saw them."""

    holder: str
    lease_duration_s: int
    acquire_time_s: float | None
    renew_time_s: float | None
    transitions: int


def _to_dt(t_s: float) -> datetime:
    return datetime.fromtimestamp(t_s, tz=UTC)


def _to_s(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _record(lease: V1Lease, default_duration_s: int) -> LeaseRecord:
    spec = lease.spec or V1LeaseSpec()
    return LeaseRecord(holder=spec.holder_identity or "",
                       lease_duration_s=spec.lease_duration_seconds or default_duration_s,
                       acquire_time_s=_to_s(spec.acquire_time),
                       renew_time_s=_to_s(spec.renew_time),
                       transitions=spec.lease_transitions or 0)


class LeaderElector:
    """One candidate for the Lease `namespace/name`, identified by `identity`.

    last_outcome: what the last call did: acquired, renewed, held-by-other, conflict (409:
        lost a race), released, or "error: ..." (unreachable, forbidden, ...).
    """

    def __init__(self, api: CoordinationV1Api | kubernetes.client.ApiClient, *, name: str,
                 namespace: str, identity: str, timing: LeaseTiming = LeaseTiming()) -> None:
        if not identity:
            raise ValueError("identity must be non-empty")
        self.api = api if isinstance(api, CoordinationV1Api) else CoordinationV1Api(api)
        self.name, self.namespace, self.identity, self.timing = name, namespace, identity, timing
        self.last_outcome = ""
        self._renewed_at_s: float | None = None  # `now` of our last successful write
        self._observed: LeaseRecord | None = None
        self._observed_at_s = 0.0
        self._lease: V1Lease | None = None  # the last object read or written, for its version

    # -------------------------------------------------------------- queries
    def is_leader(self, now: float) -> bool:
        """True while our last renewal is less than renew_deadline_s old."""
        return (self._renewed_at_s is not None
                and now < self._renewed_at_s + self.timing.renew_deadline_s)

    @property
    def observed_holder(self) -> str | None:
        """The holder in the last record seen ("" when released; None before any read)."""
        return None if self._observed is None else self._observed.holder

    def expires_at(self) -> float | None:
        """When this candidate may take the lease from its current holder (None: not seen)."""
        if self._observed is None:
            return None
        rec, seen = self._observed, self._observed_at_s
        anchor = seen
        if rec.renew_time_s is not None:
            margin_s = (self.timing.lease_duration_s - self.timing.renew_deadline_s) / 2
            anchor = min(seen, max(rec.renew_time_s, seen - margin_s))
        return anchor + rec.lease_duration_s

    # -------------------------------------------------------------- actions
    def try_acquire_or_renew(self, now: float) -> bool:
        """One attempt: read the Lease, then create, renew or take it over if allowed.
        Returns whether we hold it now; never raises for API or network failures."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                return self._failed(e)
            return self._create(now)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return self._failed(e)
        self._observe(lease, now)
        rec = self._observed
        assert rec is not None
        if rec.holder != self.identity:
            self._renewed_at_s = None  # someone else holds it: we act no more, at once
            expires = self.expires_at()
            if rec.holder and expires is not None and now < expires:
                self.last_outcome = HELD_BY_OTHER
                return False
        taking = rec.holder != self.identity
        lease.spec = V1LeaseSpec(
            holder_identity=self.identity, lease_duration_seconds=self.timing.lease_duration_s,
            acquire_time=_to_dt(now if taking or rec.acquire_time_s is None
                                else rec.acquire_time_s),
            renew_time=_to_dt(now),
            lease_transitions=rec.transitions + 1 if taking else rec.transitions)
        try:  # a PUT of the read object: it carries the resourceVersion we saw
            written = self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            return self._failed(e)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return self._failed(e)
        return self._won(written, now, ACQUIRED if taking else RENEWED)

    def release(self) -> bool:
        """Give the Lease up (holder cleared, duration 1 s) so a standby takes over at its
        next attempt. Only when we hold it; a 409 means it was no longer ours."""
        if self._lease is None or self._renewed_at_s is None:
            return False
        lease = self._lease
        spec = lease.spec or V1LeaseSpec()
        lease.spec = V1LeaseSpec(holder_identity=None, lease_duration_seconds=1,
                                 acquire_time=spec.acquire_time, renew_time=spec.renew_time,
                                 lease_transitions=spec.lease_transitions)
        self._renewed_at_s = None  # stop acting before the write, whatever its fate
        try:
            self._lease = self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            return self._failed(e)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return self._failed(e)
        self.last_outcome = RELEASED
        return True

    # -------------------------------------------------------------- helpers
    def _create(self, now: float) -> bool:
        lease = V1Lease(
            metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=V1LeaseSpec(holder_identity=self.identity,
                             lease_duration_seconds=self.timing.lease_duration_s,
                             acquire_time=_to_dt(now), renew_time=_to_dt(now),
                             lease_transitions=0))
        try:
            written = self.api.create_namespaced_lease(self.namespace, lease)
        except ApiException as e:
            return self._failed(e)  # 409 AlreadyExists: another candidate created it first
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return self._failed(e)
        return self._won(written, now, ACQUIRED)

    def _observe(self, lease: V1Lease, now: float) -> None:
        self._lease = lease
        rec = _record(lease, self.timing.lease_duration_s)
        if rec != self._observed:  # the expiry clock restarts only when the record changes
            self._observed, self._observed_at_s = rec, now

    def _won(self, written: V1Lease, now: float, outcome: str) -> bool:
        self._observe(written, now)
        self._renewed_at_s = now
        self.last_outcome = outcome
        if outcome == ACQUIRED:
            log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
        return True

    def _failed(self, e: Exception) -> bool:
        if isinstance(e, ApiException) and e.status == 409:
            # Lost a race (or the record changed under us): the winner leads; we act no more.
            self._renewed_at_s = None
            self.last_outcome = CONFLICT
            return False
        if isinstance(e, ApiException):
            self.last_outcome = f"{ERROR}: {e.status} {e.reason}"
        else:
            self.last_outcome = f"{ERROR}: {type(e).__name__}"
        # Keep leading until the renew deadline: a brief outage must not drop leadership.
        log.warning("lease %s/%s: %s", self.namespace, self.name, self.last_outcome)
        return False
