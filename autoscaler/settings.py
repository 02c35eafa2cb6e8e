"""The controller's configuration: a YAML file, overridable by AUTOSCALER_* environment variables.

Rules:
- Keys are exactly those of manifests/base/configmap.yaml (`config.yaml`); unknown keys are
  errors, ranges are checked, and any problem becomes ONE `ConfigError` line naming the key
  (and the environment variable, when the value came from one).
- Every setting can be overridden by an environment variable: `AUTOSCALER_` + the key, nested
  keys joined by `__` (AUTOSCALER_PROMETHEUS_URL, AUTOSCALER_LEADER_ELECTION__LEASE_DURATION_S,
  AUTOSCALER_TARGETS as JSON). Environment wins over the file.
- pydantic stays here, at the edge: `Settings.targets_config()` converts each target once into
  the frozen `TargetConfig`, whose `policy` is the core `policies.predictive.PredictiveConfig`.
  A target's `policy` accepts exactly PredictiveConfig's fields (generated from the dataclass,
  so the two cannot drift) and PredictiveConfig's own checks decide the ranges.
Reads the file and the environment only in `load_settings`; everything else is pure.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import re
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from autoscaler.errors import ConfigError
from autoscaler.leader import LeaseTiming
from autoscaler.metric_presets import PRESETS
from policies.predictive import PredictiveConfig

ENV_PREFIX = "AUTOSCALER_"
ENV_NESTED_DELIMITER = "__"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_STRICT = ConfigDict(extra="forbid", frozen=True)
PREWARM_PRIORITY_CLASS = "predictive-autoscaler-placeholder"
PREWARM_MAX_PLACEHOLDERS = 4


def _field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string right after each field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[stmt.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _policy_model() -> type[BaseModel]:
    """A pydantic mirror of PredictiveConfig: same fields, types, defaults and descriptions."""
    hints = typing.get_type_hints(PredictiveConfig)
    docs = _field_docs(PredictiveConfig)
    fields: dict[str, Any] = {
        f.name: (hints[f.name], Field(f.default, description=docs.get(f.name, f.name)))
        for f in dataclasses.fields(PredictiveConfig)
    }
    return create_model("PolicySettings", __config__=_STRICT,
                        __doc__="Fields of policies.predictive.PredictiveConfig.", **fields)


PolicySettings = _policy_model()


class QueriesSettings(BaseModel):
    """PromQL that overrides the preset's; each must group by namespace and workload or
    return one series for this target."""

    model_config = _STRICT
    request_rate: str | None = Field(None, min_length=1,
                                     description="requests/s of the target [the preset's]")
    gpu_util: str | None = Field(None, min_length=1,
                                 description="mean GPU utilization of its pods, percent [the "
                                             "preset's DCGM join, or none]")


class TargetSettings(BaseModel):
    """One workload to act on."""

    model_config = _STRICT
    namespace: str = Field(pattern=DNS_LABEL, description="the workload's namespace [required]")
    name: str = Field(pattern=DNS_SUBDOMAIN, max_length=253, description="its name [required]")
    kind: Literal["Deployment", "StatefulSet"] = Field(
        "Deployment", description="workload kind [Deployment]")
    mode: Literal["floor", "metric", "direct"] = Field(
        "floor", description="floor: raise the HPA's minReplicas; metric: serve the need as a "
                             "metric; direct: patch the scale subresource [floor]")
    preset: str | None = Field(None, description=f"request-rate/GPU queries, one of "
                                                 f"{sorted(PRESETS)} [none: queries needed]")
    hpa: str | None = Field(None, pattern=DNS_SUBDOMAIN,
                            description="the HPA to raise [the one targeting the workload]")
    keda_scaled_object: str | None = Field(
        None, pattern=DNS_SUBDOMAIN, description="KEDA ScaledObject to patch instead [none]")
    dry_run: bool | None = Field(None, description="observer mode for this target [global "
                                                   "dry_run]")
    lead_time_default_s: float | None = Field(
        None, gt=0, description="lead time until enough pods were measured, s "
                                "[lead_time.default_s]")
    prewarm_nodes: bool = Field(False, description="placeholder pods so GPU nodes come up early "
                                                   "[false]")
    profile: str = Field("small-model", min_length=1,
                         description="replica profile the what-if replay simulates: a preset "
                                     "name or a YAML file [small-model]")
    queries: QueriesSettings = Field(default_factory=QueriesSettings,
                                     description="PromQL overriding the preset's [none]")
    policy: PolicySettings = Field(  # type: ignore[valid-type]
        default_factory=PolicySettings,
        description="fields of policies.predictive.PredictiveConfig [its defaults]")
    prewarm_max_placeholders: int | None = Field(
        None, ge=0, description="with prewarm_nodes: placeholder pods held at most for this "
                                "target [prewarm_max_placeholders]")

    @model_validator(mode="after")
    def _check(self) -> TargetSettings:
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset: unknown {self.preset!r}; known: {sorted(PRESETS)}")
        if self.preset is None and self.queries.request_rate is None:
            raise ValueError("needs a preset or queries.request_rate")
        if self.hpa is not None and self.keda_scaled_object is not None:
            raise ValueError("hpa and keda_scaled_object are exclusive (KEDA owns its HPA)")
        if self.mode == "direct" and (self.hpa or self.keda_scaled_object):
            raise ValueError("mode direct is for workloads without an HPA; use mode floor")
        try:
            PredictiveConfig(**self.policy.model_dump())
        except ValueError as e:
            raise ValueError(f"policy: {e}") from None
        return self


class LeaderElectionSettings(BaseModel):
    """Leader election on a coordination.k8s.io/v1 Lease (client-go semantics)."""

    model_config = _STRICT
    enabled: bool = Field(True, description="only the Lease holder acts [true]")
    lease_name: str = Field("predictive-autoscaler", pattern=DNS_SUBDOMAIN,
                            description="the Lease's name [predictive-autoscaler]")
    lease_namespace: str = Field("predictive-autoscaler", pattern=DNS_LABEL,
                                 description="its namespace [predictive-autoscaler]")
    lease_duration_s: int = Field(15, ge=1, description="a standby waits this long after the "
                                                        "last renewal it saw, s [15]")
    renew_deadline_s: float = Field(10.0, gt=0, description="a leader that could not renew "
                                                            "this long stops acting, s [10]")
    retry_period_s: float = Field(2.0, gt=0, description="interval between acquire/renew "
                                                         "attempts, s [2]")
    identity: str | None = Field(None, min_length=1, description="holder identity [$POD_NAME, "
                                                                 "else the host name]")

    @model_validator(mode="after")
    def _check(self) -> LeaderElectionSettings:
        # Stop acting before the lease can expire for the standby, with a retry to spare.
        if not self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("renew_deadline_s: need retry_period_s < renew_deadline_s < "
                             f"lease_duration_s, got {self.retry_period_s} < "
                             f"{self.renew_deadline_s} < {self.lease_duration_s}")
        return self

    def timing(self) -> LeaseTiming:
        """The frozen timing autoscaler.leader.LeaderElector runs with."""
        return LeaseTiming(self.lease_duration_s, self.renew_deadline_s, self.retry_period_s)

    def holder_identity(self, environ: Mapping[str, str] = os.environ) -> str:
        """identity, else $POD_NAME (set by the Deployment), else the host name."""
        return self.identity or environ.get("POD_NAME") or os.uname().nodename


class LeadTimeSettings(BaseModel):
    """Lead time (pod creation -> PodScheduled -> Ready), measured per target."""

    model_config = _STRICT
    default_s: float = Field(300.0, gt=0, description="used until min_pods pods were measured, "
                                                      "s [300]")
    min_pods: int = Field(5, ge=1, description="measured pods before the measurement is trusted "
                                               "[5]")
    window_pods: int = Field(50, ge=1, description="the rolling distribution keeps this many "
                                                   "latest pods [50]")
    quantile: float = Field(0.95, gt=0, lt=1, description="the policy plans with this quantile "
                                                          "[0.95]")

    @model_validator(mode="after")
    def _check(self) -> LeadTimeSettings:
        if self.window_pods < self.min_pods:
            raise ValueError(f"window_pods: must be >= min_pods ({self.min_pods}), "
                             f"got {self.window_pods}")
        return self


class HistorySettings(BaseModel):
    """History for fitting: fetched once at step_s, then extended every tick."""

    model_config = _STRICT
    step_s: float = Field(60.0, gt=0, le=3600, description="resolution of the fitted series, s "
                                                           "[60]")
    days: float = Field(7.0, gt=0, le=90, description="how far back the forecasters look, d [7]")


DISCOVERY_ANNOTATION = "autoscaling.predictive.dev/enabled"
_NOT_DEFAULTS = ("namespace", "name", "kind")  # come from the discovered workload


def _defaults_model() -> type[BaseModel]:
    """TargetSettings' fields a discovered target starts from (same types, defaults and
    descriptions; generated so the two cannot drift). No cross-field check here: a
    discovered target is validated whole, as TargetSettings, once its annotations apply."""
    fields: dict[str, Any] = {
        name: (f.annotation, f) for name, f in TargetSettings.model_fields.items()
        if name not in _NOT_DEFAULTS}
    return create_model("DiscoveryDefaults", __config__=_STRICT,
                        __doc__="TargetSettings fields for discovered targets.", **fields)


DiscoveryDefaults = _defaults_model()


class DiscoverySettings(BaseModel):
    """Targets discovered by an annotation on Deployments and StatefulSets (in-cluster only)."""

    model_config = _STRICT
    enabled: bool = Field(False, description="list workloads and act on the annotated ones "
                                             "[false]")
    interval_s: float = Field(60.0, gt=0, description="how often the workloads are listed, s "
                                                      "[60]")
    annotation: str = Field(DISCOVERY_ANNOTATION, min_length=1, max_length=316,
                            pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]"
                                    r"([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                            description="value \"true\" opts a workload in "
                                        f"[{DISCOVERY_ANNOTATION}]")
    defaults: DiscoveryDefaults = Field(  # type: ignore[valid-type]
        default_factory=DiscoveryDefaults,
        description="target fields a discovered workload starts from; its "
                    "autoscaling.predictive.dev/* annotations override them [TargetSettings' "
                    "defaults]")

    @model_validator(mode="after")
    def _check(self) -> DiscoverySettings:
        # the rest is checked per workload, once its annotations apply; a wrong preset here
        # would make every discovered target invalid, so it fails at start
        preset = self.defaults.preset  # type: ignore[attr-defined]
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"defaults.preset: unknown {preset!r}; known: {sorted(PRESETS)}")
        return self


class Settings(BaseSettings):
    """The whole configuration (config.yaml), environment over file."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER, extra="forbid",
        frozen=True, case_sensitive=False)

    prometheus_url: str = Field("http://127.0.0.1:9090", pattern=r"^https?://[^\s/]+",
                                description="Prometheus HTTP API [http://127.0.0.1:9090]")
    tick_s: float = Field(15.0, ge=1, le=3600, description="seconds between two ticks of the "
                                                           "control loop, s [15]")
    dry_run: bool = Field(False, description="observer mode for every target: compute, log, "
                                             "expose, write nothing [false]")
    api_host: str = Field("127.0.0.1", min_length=1, description="address of the REST API and "
                          "/metrics [127.0.0.1; the ConfigMap sets 0.0.0.0]")
    api_port: int = Field(8080, ge=1, le=65535, description="its port [8080]")
    leader_election: LeaderElectionSettings = Field(
        default_factory=LeaderElectionSettings, description="Lease-based leader election [see its fields]")
    lead_time: LeadTimeSettings = Field(default_factory=LeadTimeSettings,
                                        description="measured lead time [see its fields]")
    history: HistorySettings = Field(default_factory=HistorySettings,
                                     description="history for fitting [see its fields]")
    refit_interval_s: float = Field(3600.0, gt=0, description="forecasters are refitted this "
                                                              "often per target, s [3600]")
    policy_namespace: str = Field("predictive-autoscaler", pattern=DNS_LABEL,
                                  description="in-cluster, policies live in ConfigMaps of this "
                                              "namespace (the controller's) "
                                              "[predictive-autoscaler]")
    api_tokens_file: Path | None = Field(None, description="standalone API tokens, one "
                                         "token:read|write per line [none; "
                                         "$AUTOSCALER_API_TOKENS]")
    api_tls_cert_file: Path | None = Field(None, description="serve the API over TLS with this "
                                           "certificate (PEM, from a mounted Secret) [none]")
    api_tls_key_file: Path | None = Field(None, description="its private key (PEM) [none]")
    whatif_max_running_per_caller: int = Field(2, ge=1, description="running what-if jobs "
                                               "per caller before 429 [2]")
    state_dir: Path | None = Field(None, description="standalone mode keeps policies here "
                                                     "[./.autoscaler-state; --state-dir wins]")
    targets: list[TargetSettings] = Field(default_factory=list,
                                          description="the workloads to act on [none]")
    prewarm_priority_class: str = Field(
        PREWARM_PRIORITY_CLASS, pattern=DNS_SUBDOMAIN, max_length=253,
        description="PriorityClass of placeholder pods (prewarm_nodes); the cluster admin "
                    "creates it with a negative value and preemptionPolicy Never "
                    f"[{PREWARM_PRIORITY_CLASS}]")
    prewarm_max_placeholders: int = Field(
        PREWARM_MAX_PLACEHOLDERS, ge=0, description="placeholder pods held at most per target "
                                                    f"[{PREWARM_MAX_PLACEHOLDERS}]")
    discovery: DiscoverySettings = Field(
        default_factory=DiscoverySettings,
        description="targets discovered by annotation [off; see its fields]")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; the environment is listed first so it wins.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if (self.api_tls_cert_file is None) != (self.api_tls_key_file is None):
            raise ValueError("api_tls_cert_file: needs api_tls_key_file too (and vice versa)")
        if self.refit_interval_s < self.tick_s:
            raise ValueError(f"refit_interval_s: must be >= tick_s ({self.tick_s}), "
                             f"got {self.refit_interval_s}")
        seen: set[tuple[str, str, str]] = set()
        for t in self.targets:
            key = (t.namespace, t.kind, t.name)
            if key in seen:
                raise ValueError(f"targets: {t.kind} {t.namespace}/{t.name} is listed twice")
            seen.add(key)
        return self

    def targets_config(self) -> tuple[TargetConfig, ...]:
        """Each target converted once into frozen types, global defaults resolved."""
        return tuple(_target_config(t, self) for t in self.targets)

    def target_config(self, target: TargetSettings) -> TargetConfig:
        """One (e.g. discovered) target converted as targets_config() converts each."""
        return _target_config(target, self)

    def for_standalone(self) -> Settings:
        """No Kubernetes: every target dry-run, no leader election."""
        return self.model_copy(update={
            "dry_run": True,
            "leader_election": self.leader_election.model_copy(update={"enabled": False}),
            "targets": [t.model_copy(update={"dry_run": True}) for t in self.targets]})


@dataclass(frozen=True)
class TargetConfig:
    """A target as the loop uses it: defaults resolved, the policy a core PredictiveConfig."""

    namespace: str
    name: str
    kind: str
    mode: str
    preset: str | None
    hpa: str | None
    keda_scaled_object: str | None
    dry_run: bool
    lead_time_default_s: float
    prewarm_nodes: bool
    profile: str
    request_rate_query: str | None
    gpu_util_query: str | None
    policy: PredictiveConfig
    prewarm_priority_class: str = PREWARM_PRIORITY_CLASS
    prewarm_max_placeholders: int = PREWARM_MAX_PLACEHOLDERS


def _target_config(t: TargetSettings, s: Settings) -> TargetConfig:
    policy = t.policy.model_dump()
    if "tick_s" not in t.policy.model_fields_set:
        policy["tick_s"] = s.tick_s  # the policy plans with the loop's actual tick
    return TargetConfig(
        namespace=t.namespace, name=t.name, kind=t.kind, mode=t.mode, preset=t.preset,
        hpa=t.hpa, keda_scaled_object=t.keda_scaled_object,
        dry_run=s.dry_run if t.dry_run is None else t.dry_run or s.dry_run,
        lead_time_default_s=t.lead_time_default_s or s.lead_time.default_s,
        prewarm_nodes=t.prewarm_nodes, profile=t.profile, request_rate_query=t.queries.request_rate,
        gpu_util_query=t.queries.gpu_util, policy=PredictiveConfig(**policy),
        prewarm_priority_class=s.prewarm_priority_class,
        prewarm_max_placeholders=(s.prewarm_max_placeholders if t.prewarm_max_placeholders
                                  is None else t.prewarm_max_placeholders))


def env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the key at `loc` (list indices end the name)."""
    parts = []
    for p in loc:
        if isinstance(p, int):
            break
        parts.append(str(p).upper())
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts)


def _one_line(e: ValidationError, source: str, environ: Mapping[str, str]) -> str:
    errors = e.errors(include_url=False)
    first = errors[0]
    loc = tuple(p for p in first["loc"] if not str(p).startswith(("function-", "model-")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    names = {env_name(loc[:i]).upper() for i in range(1, len(loc) + 1)}
    env = next((n for n in sorted(names) if n in {k.upper() for k in environ}), None)
    origin = f" (from ${env})" if env else ""
    message = re.sub(r"^(Value error|Assertion failed), ", "", first["msg"])
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {key}{origin}: {message}{more}"


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the configuration: the YAML file at `path` (None: defaults only),
    overridden by the process's AUTOSCALER_* environment variables. Raises ConfigError with
    one line naming the key."""
    data: Any = {}
    source = "configuration"
    if path is not None:
        source = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a mapping of keys, got {type(data).__name__}")
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source, os.environ)) from None
