"""The service shell: builds the controller from Settings and runs it on APScheduler. Not pure.

Rules:
- Everything comes from `Settings`: the Prometheus source, the Kubernetes client (in-cluster
  config, or a kubeconfig), the actuator, the cluster reader and the Lease elector.
  Standalone (`standalone=True`): no Kubernetes at all (no client, actuator, cluster reader
  or Lease), every target dry-run, the state directory created.
- APScheduler 3.x `BackgroundScheduler`, three kinds of jobs:
  * `tick` every tick_s, max_instances=1 and coalesce=True, so a slow tick never piles up;
  * `refit:<ns>/<kind>/<name>`: one-shot jobs the tick submits for the targets whose refit is
    due (the Controller spreads them over the refit interval), on their own small executor,
    so fits never run inside a tick nor in the API's threads;
  * `lease` every retry_period_s: `LeaderElector.try_acquire_or_renew`, which feeds the
    Controller's `is_leader` (only when leader election is on).
- The Controller is not thread-safe: one lock serializes a tick, a refit (each refit is one
  target, so a tick waits at most one fit) and the API's policy changes (`apply_policies`).
  The API's reads copy what they show (a deque copies atomically under the GIL).
- Policies (issue 4): the store (files under the state directory standalone, ConfigMaps
  in-cluster) is the source of truth; `PolicySync.sync` at the start of every tick makes the
  Controller follow it, so a change written by any replica is applied within one tick.
  The API's authenticator and the what-if jobs live here too, so that one object owns
  everything the process runs and `shutdown` stops it all.
- Discovery (in-cluster only, `discovery.enabled`): every discovery.interval_s a tick first
  reconciles the annotated workloads (autoscaler/discovery.py), then syncs the policies.
- The wall clock is read here and only here (`clock`), and handed to the core as `now_s`.
- Shutdown stops the jobs and gives the Lease up; it restores nothing (the floors stay where
  they are: a restart must not make capacity drop; only removing a target restores its HPA).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from autoscaler.errors import ConfigError
from autoscaler.kube_actuator import KubeActuator
from autoscaler.lead_time import LeadTimeTracker
from autoscaler.leader import LeaderElector
from autoscaler.loop import ClusterReader, Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.prometheus_source import PrometheusSource
from autoscaler.settings import Settings
from autoscaler.target_state import TargetKey

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".autoscaler-state")
TICK_JOB = "tick"
LEASE_JOB = "lease"
REFIT_PREFIX = "refit:"
REFIT_EXECUTOR = "refit"
REFIT_WORKERS = 2
PROBE_TIMEOUT_S = 2.0


def kube_api_client(kubeconfig: Path | None) -> Any:
    """An official-client ApiClient: the kubeconfig when given, else the in-cluster config."""
    import kubernetes.client
    import kubernetes.config

    cfg = kubernetes.client.Configuration()
    try:
        if kubeconfig is not None:
            kubernetes.config.load_kube_config(config_file=str(kubeconfig),
                                               client_configuration=cfg)
        else:
            kubernetes.config.load_incluster_config(client_configuration=cfg)
    except (kubernetes.config.ConfigException, OSError) as e:
        where = kubeconfig or "in-cluster config (no --kubeconfig given)"
        raise ConfigError(f"{where}: cannot load Kubernetes config: {e}") from None
    return kubernetes.client.ApiClient(cfg)


@dataclass
class Service:
    """The running controller. `tick_fn(now_s)` is what the tick job calls (the Controller's
    tick unless a test passes its own); tick_s overrides settings.tick_s (tests)."""

    settings: Settings
    controller: Controller
    standalone: bool
    state_dir: Path | None = None
    api_client: Any = None
    elector: LeaderElector | None = None
    clock: Callable[[], float] = time.time
    tick_fn: Callable[[float], Any] | None = None
    tick_s: float | None = None
    store: Any = None  # autoscaler.policy_store.PolicyStore
    sync: Any = None  # autoscaler.policy_sync.PolicySync (None: the config file only)
    auth: Any = None  # autoscaler.auth.Authenticator
    whatif: Any = None  # autoscaler.whatif.WhatIfJobs
    discovery: Any = None  # autoscaler.discovery.Discovery (None: the config's targets only)

    def __post_init__(self) -> None:
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(2),
                       REFIT_EXECUTOR: ThreadPoolExecutor(REFIT_WORKERS)},
            job_defaults={"coalesce": True, "max_instances": 1}, timezone=UTC)
        self._lock = threading.Lock()
        self._discovered_at_s: float | None = None
        self._refits_pending: set[TargetKey] = set()
        self._pending_lock = threading.Lock()
        # APScheduler's shutdown holds its job-store lock while it waits for running jobs, so
        # a tick adding a refit job then would deadlock it: once stopping, none is added.
        self._stopping = False
        self.tick_s = self.tick_s or self.settings.tick_s
        self.add_jobs()

    # -- jobs ---------------------------------------------------------------------------

    def add_jobs(self) -> None:
        now = datetime.now(UTC)
        if self.elector is not None:  # the lease first, so the first tick may already lead
            self.scheduler.add_job(self.renew_lease, "interval", id=LEASE_JOB,
                                   seconds=self.settings.leader_election.retry_period_s,
                                   next_run_time=now, max_instances=1, coalesce=True)
        self.scheduler.add_job(self.tick, "interval", id=TICK_JOB, seconds=self.tick_s,
                               next_run_time=now, max_instances=1, coalesce=True)

    def tick(self) -> None:
        """The tick job: one Controller tick at the wall clock, then submit due refits."""
        now_s = self.clock()
        try:
            with self._lock:
                self._discover(now_s)
                self._sync(now_s)
                (self.tick_fn or self.controller.tick)(now_s)
        except Exception:  # Controller.tick never raises; a test's tick_fn might
            log.exception("tick failed")
        self.submit_refits(now_s)

    def _sync(self, now_s: float) -> None:
        if self.sync is None:
            return
        try:  # PolicySync never raises on a store failure; anything else must not stop a tick
            self.sync.sync(now_s)
        except Exception:
            log.exception("policy sync failed")
            self.controller.metrics.errors.labels("api").inc()

    def _discover(self, now_s: float) -> None:
        """Targets discovered by annotation, every discovery.interval_s (before the sync, so
        a new target runs its stored policy from its first tick); a failure waits for the
        next interval, never stops the tick."""
        last = self._discovered_at_s
        if self.discovery is None or (
                last is not None and now_s - last < self.settings.discovery.interval_s):
            return
        self._discovered_at_s = now_s
        try:
            self.discovery.reconcile(self.controller, self.sync, now_s)
        except Exception as exc:
            log.warning("target discovery failed, targets unchanged: %s", exc)
            self.controller.metrics.errors.labels("discovery").inc()

    def apply_policies(self) -> None:
        """Make the Controller follow the store now (after an API write), not at the next tick."""
        with self._lock:
            self._sync(self.clock())

    def submit_refits(self, now_s: float) -> list[str]:
        """One one-shot job per target whose refit is due and not already queued."""
        with self._lock:
            due = self.controller.refit_due(now_s)
        ids = []
        for key in due:
            job_id = REFIT_PREFIX + "/".join(key)
            with self._pending_lock:
                if key in self._refits_pending or self._stopping:
                    continue
                self._refits_pending.add(key)
                self.scheduler.add_job(self.refit, id=job_id, args=[key],
                                       executor=REFIT_EXECUTOR, replace_existing=True,
                                       misfire_grace_time=None)
            ids.append(job_id)
        return ids

    def refit(self, key: TargetKey) -> None:
        try:
            with self._lock:
                if key in self.controller.targets:  # removed meanwhile: nothing to fit
                    self.controller.refit(key, self.clock())
        except Exception:
            log.exception("refit of %s failed", "/".join(key))
        finally:
            with self._pending_lock:
                self._refits_pending.discard(key)

    def renew_lease(self) -> None:
        assert self.elector is not None
        held = self.elector.try_acquire_or_renew(self.clock())
        log.debug("lease %s: %s", "held" if held else "not held", self.elector.last_outcome)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> Service:
        self.scheduler.start()
        log.info("controller started: %d target(s), tick %s s%s", len(self.controller.targets),
                 self.tick_s, ", standalone (dry run, no Kubernetes)" if self.standalone else "")
        return self

    def shutdown(self) -> None:
        """Stop the jobs (waiting for a running tick), give the Lease up; restore nothing."""
        with self._pending_lock:  # after this, no tick adds a job (see _stopping)
            self._stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.whatif is not None:
            self.whatif.shutdown(wait=False)
        if self.elector is not None:
            try:
                self.elector.release()
            except Exception:
                log.exception("releasing the lease failed")
        getattr(self.store, "close", lambda: None)()  # the policy store's watch, if any
        if self.api_client is not None:
            self.api_client.close()

    # -- readiness ----------------------------------------------------------------------

    def prometheus_problem(self) -> str | None:
        """None when Prometheus answers /-/ready, else why not."""
        url = self.settings.prometheus_url.rstrip("/") + "/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as r:
                return None if r.status == 200 else f"prometheus: HTTP {r.status}"
        except Exception as e:
            return f"prometheus unreachable at {self.settings.prometheus_url}: {e}"

    def kubernetes_problem(self) -> str | None:
        """None when standalone or the API server answers /version, else why not."""
        if self.standalone or self.api_client is None:
            return None
        import kubernetes.client

        try:
            kubernetes.client.VersionApi(self.api_client).get_code(
                _request_timeout=PROBE_TIMEOUT_S)
            return None
        except Exception as e:
            return f"kubernetes unreachable: {type(e).__name__}: {str(e).splitlines()[0]}"


def build_service(settings: Settings, *, standalone: bool = False,
                  state_dir: Path | None = None, kubeconfig: Path | None = None,
                  api_client: Any = None, clock: Callable[[], float] = time.time,
                  tick_s: float | None = None,
                  tick_fn: Callable[[float], Any] | None = None,
                  insecure_no_auth: bool = False,
                  environ: Mapping[str, str] | None = None) -> Service:
    """The service for `settings` (not started). Standalone: no Kubernetes, every target
    dry-run, no leader election, state_dir (default ./.autoscaler-state) created, policies
    in files under it, API tokens from `environ` (default os.environ) / api_tokens_file.
    Otherwise `api_client`, else one from `kubeconfig`, else the in-cluster config; policies
    in ConfigMaps of settings.policy_namespace, callers checked by TokenReview and
    SubjectAccessReview. insecure_no_auth: no API authentication at all.
    Raises ConfigError when the API would have no way to authenticate anyone."""
    from autoscaler.auth import authenticator_for
    from autoscaler.policy_store import FilePolicyStore
    from autoscaler.policy_store_kube import ConfigMapPolicyStore
    from autoscaler.policy_sync import KubePolicyEvents, PolicySync
    from autoscaler.whatif import WhatIfJobs

    if standalone and settings.discovery.enabled:
        raise ConfigError("discovery.enabled: target discovery needs Kubernetes; standalone "
                          "mode has none (set discovery.enabled: false)")
    if standalone:
        settings = settings.for_standalone()
        state_dir = Path(state_dir or settings.state_dir or DEFAULT_STATE_DIR)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--state-dir {state_dir}: cannot be used as the state "
                              f"directory: {e.strerror or e}") from None
        api_client = None
    elif api_client is None:
        api_client = kube_api_client(kubeconfig)
    auth = authenticator_for(settings, standalone=standalone, api_client=api_client,
                             insecure_no_auth=insecure_no_auth, environ=environ)
    step_s = int(settings.history.step_s)
    history_s = settings.history.days * 86400.0
    source = PrometheusSource(settings.prometheus_url, step_s=step_s,
                              history_points=max(1, int(history_s // step_s)))
    elector = None
    if api_client is not None and settings.leader_election.enabled:
        le = settings.leader_election
        elector = LeaderElector(api_client, name=le.lease_name, namespace=le.lease_namespace,
                                identity=le.holder_identity(), timing=le.timing())
    lt = settings.lead_time
    controller = Controller(
        settings.targets_config(), source,
        actuator=(KubeActuator(api_client, dry_run=settings.dry_run)
                  if api_client is not None else None),
        cluster=ClusterReader(api_client) if api_client is not None else None,
        metrics=ControllerMetrics(),
        is_leader=elector.is_leader if elector is not None else None,
        tick_s=settings.tick_s, refit_interval_s=settings.refit_interval_s,
        history_s=history_s, start_s=clock(),
        lead_time_factory=lambda default_s: LeadTimeTracker(
            default_s, window=lt.window_pods, min_pods=lt.min_pods, quantile=lt.quantile))
    store = (FilePolicyStore(state_dir) if standalone
             else ConfigMapPolicyStore(api_client, settings.policy_namespace))
    sync = PolicySync(controller, store, global_dry_run=settings.dry_run,
                      events=KubePolicyEvents(api_client) if api_client is not None else None)
    sync.sync(clock())  # stored policies run from the first tick; sets the Events' baseline
    discovery = None
    if settings.discovery.enabled and api_client is not None:
        from autoscaler.discovery import Discovery

        discovery = Discovery(api_client, settings)  # first run: the first tick
    return Service(settings, controller, standalone, state_dir=state_dir,
                   api_client=api_client, elector=elector, clock=clock, tick_fn=tick_fn,
                   tick_s=tick_s, store=store, sync=sync, auth=auth,
                   whatif=WhatIfJobs(settings.whatif_max_running_per_caller),
                   discovery=discovery)
