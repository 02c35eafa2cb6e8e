"""Replica profiles: how one replica serves, starts, shows utilization and costs.

Pure value types and samplers (randomness from the Generator passed in). The presets live as
YAML files in `simulator/presets/` and go through the same validation as a user's own file:
`load_profile(name_or_path)` reads a preset name or a YAML path, validates it with pydantic
(unknown fields rejected, ranges checked) and converts it once into the frozen `Profile`.

Models (units in the names):
- service: `lognormal` (mean_s, cv), `exponential` (mean_s), or `tokens`: slot occupancy =
  overhead_s + prompt_tokens / prefill_tokens_per_s + output_tokens / decode_tokens_per_s, where
  the decode rate is per sequence (continuous batching: each slot decodes at that rate). For
  traces without tokens, tokens come from the profile's token mix (default AZURE_CONV_MIX).
- SLO: `latency` counts wait + whole service; `ttft` counts wait + overhead + prefill.
- cold start: a split log-normal with median `median_s` that never leaves [low_s, high_s]: below
  the median log(x) is a normal of sd log(median/low)/2 truncated at 2 sd (so at `low_s`), above
  it the same with high_s. The median is therefore exact and the range a hard bound.
- GPU utilization of a replica whose slots are busy a fraction f: idle + (full - idle) * f**exponent.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.special import ndtr, ndtri

from simulator.errors import ProfileError

_TRUNC_SD = 2.0  # cold-start tails are cut at 2 sd of their half-normal


@dataclass(frozen=True)
class TokenMix:
    """Independent prompt and output token counts drawn from a quantile table.

    probs: cumulative probabilities (0 ... 1); prompt_q / output_q: token counts at them. A draw
    inverts the table with linear interpolation in log(tokens), so the body and the tails
    (which a log-normal fit gets wrong: it puts 0.4 % of conversation prompts above 10,000
    tokens where the trace has 0.005 %) follow the recorded distribution, never beyond its max.
    """

    name: str
    probs: tuple[float, ...]
    prompt_q: tuple[int, ...]
    output_q: tuple[int, ...]

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = rng.random((2, n))
        probs = np.asarray(self.probs)
        prompt = np.exp(np.interp(u[0], probs, np.log(self.prompt_q)))
        output = np.exp(np.interp(u[1], probs, np.log(self.output_q)))
        return (np.maximum(1, np.rint(prompt)).astype(np.int64),
                np.maximum(1, np.rint(output)).astype(np.int64))

    def mean_tokens(self) -> tuple[float, float]:
        """Means of the prompt and output draws (numerical, exact for the interpolated CDF)."""
        u = (np.arange(200_000) + 0.5) / 200_000
        probs = np.asarray(self.probs)
        return (float(np.exp(np.interp(u, probs, np.log(self.prompt_q))).mean()),
                float(np.exp(np.interp(u, probs, np.log(self.output_q))).mean()))


# Quantiles of the Azure LLM inference traces 2023 (Patel et al., Splitwise, ISCA 2024;
# ../shared/traces/azure-llm-*/raw) at these probabilities: conversation prompts mean 1155,
# outputs mean 211; code prompts mean 2048, outputs mean 28.
_PROBS = (0.0, 0.001, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95,
          0.975, 0.99, 0.995, 0.999, 1.0)
AZURE_CONV_MIX = TokenMix(
    "azure-conv-2023", _PROBS,
    (2, 8, 29, 120, 181, 207, 387, 403, 703, 1020, 1071, 1130, 1315, 2734, 4083, 4092, 4142,
     4831, 6179, 14050),
    (7, 12, 16, 28, 41, 54, 77, 91, 103, 129, 177, 384, 400, 424, 451, 522, 601, 643, 954, 1000))
AZURE_CODE_MIX = TokenMix(
    "azure-code-2023", _PROBS,
    (3, 7, 17, 44, 75, 147, 386, 770, 1075, 1469, 1909, 2433, 3192, 5188, 7303, 7435, 7436,
     7436, 7437, 7437),
    (6, 6, 6, 6, 6, 7, 8, 9, 11, 13, 16, 20, 29, 55, 90, 145, 251, 359, 825, 1899))
TOKEN_MIXES = {m.name: m for m in (AZURE_CONV_MIX, AZURE_CODE_MIX)}


@dataclass(frozen=True)
class ServiceModel:
    """Slot occupancy per request. kind: "lognormal" | "exponential" | "tokens"."""

    kind: str
    mean_s: float = 0.0  # lognormal / exponential
    cv: float = 1.0  # lognormal: sd / mean
    prefill_tokens_per_s: float = 0.0  # tokens
    decode_tokens_per_s: float = 0.0  # tokens, per sequence
    overhead_s: float = 0.0  # tokens: fixed per-request time (counted in TTFT)
    token_mix: TokenMix = AZURE_CONV_MIX


@dataclass(frozen=True)
class ColdStart:
    """Start-to-ready time: median_s exact, never outside [low_s, high_s]."""

    median_s: float
    low_s: float
    high_s: float

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        # |z| of a half-normal truncated at _TRUNC_SD, by inverse CDF: one draw per sample.
        lower = u < 0.5
        v = np.where(lower, (0.5 - u) * 2, (u - 0.5) * 2)
        z = ndtri(0.5 + v * (ndtr(_TRUNC_SD) - 0.5))
        sd_lo = math.log(self.median_s / self.low_s) / _TRUNC_SD
        sd_hi = math.log(self.high_s / self.median_s) / _TRUNC_SD
        return self.median_s * np.exp(np.where(lower, -sd_lo * z, sd_hi * z))


@dataclass(frozen=True)
class GpuUtil:
    """Utilization (0..1) as a function of the busy fraction of the batch slots."""

    idle: float = 0.0
    full: float = 1.0
    exponent: float = 1.0


@dataclass(frozen=True)
class ServiceSample:
    """occupancy_s: how long each request holds a slot; slo_s: the part counted by the SLO."""

    occupancy_s: np.ndarray
    slo_s: np.ndarray


@dataclass(frozen=True)
class Profile:
    """A replica profile (one per deployment strategy); see the module docstring."""

    name: str
    description: str
    slots: int
    service: ServiceModel
    cold_start: ColdStart
    gpu: GpuUtil
    price_per_replica_hour: float
    slo_ms: float
    slo_metric: str  # "latency" (wait + service) or "ttft" (wait + overhead + prefill)
    min_replicas: int = 1
    max_replicas: int | None = None  # None: sized to the replayed workload
    sources: tuple[str, ...] = field(default=())

    @property
    def slo_s(self) -> float:
        return self.slo_ms / 1000.0

    @property
    def fixed_size(self) -> bool:
        """True when the replica count cannot change (edge: min == max)."""
        return self.max_replicas is not None and self.min_replicas == self.max_replicas

    def sample_service(
        self,
        rng: np.random.Generator,
        n: int,
        prompt_tokens: np.ndarray | None = None,
        output_tokens: np.ndarray | None = None,
    ) -> ServiceSample:
        """Occupancy and SLO-counted service part of n requests (tokens used by `tokens` only;
        without them a token profile draws from its token mix)."""
        s = self.service
        if s.kind == "tokens":
            if prompt_tokens is None or output_tokens is None:
                prompt_tokens, output_tokens = s.token_mix.sample(rng, n)
            prefill = s.overhead_s + np.asarray(prompt_tokens, dtype=np.float64) / s.prefill_tokens_per_s
            occupancy = prefill + np.asarray(output_tokens, dtype=np.float64) / s.decode_tokens_per_s
            return ServiceSample(occupancy, prefill if self.slo_metric == "ttft" else occupancy)
        if s.kind == "exponential":
            occupancy = rng.exponential(s.mean_s, n)
        else:
            sigma2 = math.log1p(s.cv * s.cv)
            occupancy = s.mean_s * np.exp(rng.normal(-sigma2 / 2, math.sqrt(sigma2), n))
        return ServiceSample(occupancy, occupancy)

    def sample_service_s(self, rng: np.random.Generator, n: int, prompt_tokens: np.ndarray | None = None,
                         output_tokens: np.ndarray | None = None) -> np.ndarray:
        """Slot occupancy per request (see sample_service)."""
        return self.sample_service(rng, n, prompt_tokens, output_tokens).occupancy_s

    def sample_cold_start_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.cold_start.sample(rng, n)

    @property
    def service_mean_s(self) -> float:
        """Mean slot occupancy: analytic, or for token profiles from a fixed 2 M-request sample
        of the token mix (seed 0, cached) since capping and rounding make it non-analytic."""
        if self.service.kind != "tokens":
            return self.service.mean_s
        return _token_service_mean(self.service)

    @property
    def capacity_rps_per_replica(self) -> float:
        """Requests/s one replica serves with all slots busy."""
        return self.slots / self.service_mean_s

    def gpu_util(self, busy_fraction: np.ndarray | float) -> np.ndarray:
        f = np.clip(np.asarray(busy_fraction, dtype=np.float64), 0.0, 1.0)
        return self.gpu.idle + (self.gpu.full - self.gpu.idle) * f**self.gpu.exponent


@functools.lru_cache(maxsize=32)
def _token_service_mean(service: ServiceModel) -> float:
    p, o = service.token_mix.sample(np.random.default_rng(0), 2_000_000)
    return float(service.overhead_s + p.mean() / service.prefill_tokens_per_s
                 + o.mean() / service.decode_tokens_per_s)


# ---------------------------------------------------------------- YAML (the edge: pydantic)

Positive = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LogNormalSpec(_Strict):
    kind: Literal["lognormal"]
    mean_s: Positive
    cv: Annotated[float, Field(gt=0, le=10)] = 0.5


class _ExponentialSpec(_Strict):
    kind: Literal["exponential"]
    mean_s: Positive


class _TokensSpec(_Strict):
    kind: Literal["tokens"]
    prefill_tokens_per_s: Positive
    decode_tokens_per_s: Positive
    overhead_s: Annotated[float, Field(ge=0)] = 0.0
    token_mix: Literal["azure-conv-2023", "azure-code-2023"] = "azure-conv-2023"


class _ColdStartSpec(_Strict):
    median_s: Positive
    low_s: Positive
    high_s: Positive

    @model_validator(mode="after")
    def _ordered(self) -> _ColdStartSpec:
        if not self.low_s < self.median_s < self.high_s:
            raise ValueError("needs low_s < median_s < high_s")
        return self


class _GpuSpec(_Strict):
    idle: Annotated[float, Field(ge=0, le=1)] = 0.0
    full: Annotated[float, Field(ge=0, le=1)] = 1.0
    exponent: Annotated[float, Field(gt=0, le=10)] = 1.0


class _ProfileSpec(_Strict):
    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    slots: Annotated[int, Field(ge=1, le=100_000)]
    service: Annotated[_LogNormalSpec | _ExponentialSpec | _TokensSpec, Field(discriminator="kind")]
    cold_start: _ColdStartSpec
    gpu_util: _GpuSpec = _GpuSpec()
    price_per_replica_hour: Annotated[float, Field(ge=0)]
    slo_ms: Positive
    slo_metric: Literal["latency", "ttft"] = "latency"
    min_replicas: Annotated[int, Field(ge=0)] = 1
    max_replicas: Annotated[int, Field(ge=1)] | None = None
    sources: list[str] = []

    @model_validator(mode="after")
    def _consistent(self) -> _ProfileSpec:
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas exceeds max_replicas")
        if self.slo_metric == "ttft" and self.service.kind != "tokens":
            raise ValueError("slo_metric 'ttft' needs a 'tokens' service model")
        return self

    def to_profile(self) -> Profile:
        svc = self.service
        if isinstance(svc, _TokensSpec):
            service = ServiceModel("tokens", prefill_tokens_per_s=svc.prefill_tokens_per_s,
                                   decode_tokens_per_s=svc.decode_tokens_per_s,
                                   overhead_s=svc.overhead_s, token_mix=TOKEN_MIXES[svc.token_mix])
        elif isinstance(svc, _LogNormalSpec):
            service = ServiceModel("lognormal", mean_s=svc.mean_s, cv=svc.cv)
        else:
            service = ServiceModel("exponential", mean_s=svc.mean_s, cv=1.0)
        cs, g = self.cold_start, self.gpu_util
        return Profile(
            name=self.name, description=self.description, slots=self.slots, service=service,
            cold_start=ColdStart(cs.median_s, cs.low_s, cs.high_s),
            gpu=GpuUtil(g.idle, g.full, g.exponent),
            price_per_replica_hour=self.price_per_replica_hour, slo_ms=self.slo_ms,
            slo_metric=self.slo_metric, min_replicas=self.min_replicas,
            max_replicas=self.max_replicas, sources=tuple(self.sources),
        )


def _preset_dir() -> Path:
    return Path(str(resources.files("simulator") / "presets"))


PROFILES: tuple[str, ...] = (
    "small-model", "llm-7b", "container", "serverless", "model-server-gpu", "edge",
)
DEFAULT_PROFILE = "small-model"


def load_profile(name_or_path: str | Path) -> Profile:
    """A preset by name (`PROFILES`) or a profile YAML file, validated; ProfileError otherwise."""
    text = str(name_or_path)
    if text in PROFILES:
        return _load_preset(text)
    path = Path(text)
    if not path.is_file():
        raise ProfileError(
            f"{text}: no such profile file, and not a preset (presets: {', '.join(PROFILES)})"
        )
    return profile_from_yaml(path.read_text(encoding="utf-8"), str(path))


@functools.lru_cache(maxsize=len(PROFILES))
def _load_preset(name: str) -> Profile:
    path = _preset_dir() / f"{name}.yaml"
    return profile_from_yaml(path.read_text(encoding="utf-8"), str(path))


def profile_from_yaml(text: str, label: str = "<profile>") -> Profile:
    """Validate YAML text into a Profile; errors name `label`, the line and the field."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{label}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{label}:1: a profile must be a YAML mapping")
    try:
        return _ProfileSpec.model_validate(data).to_profile()
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"] if not str(x).startswith(("_", "function-"))]
        loc = [x for x in loc if x not in ("lognormal", "exponential", "tokens")]
        if err["type"] == "union_tag_invalid":
            loc.append("kind")
        line = _line_of(root, loc)
        field_name = ".".join(loc) or "profile"
        got = err.get("input")
        scalar = isinstance(got, str | int | float | bool) and err["type"] != "extra_forbidden"
        value = f" (got {got!r})" if scalar and len(repr(got)) <= 40 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ProfileError(f"{label}:{line}: {field_name}: {msg}{value}") from None


def _line_of(node: Any, loc: list[str]) -> int:
    """1-based line of the deepest YAML node on the path `loc` (the mapping's own line if the
    key is missing)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if k.value == key), None)
        if match is None:
            break
        line = match[0].start_mark.line + 1
        node = match[1]
    return line
