"""Policy specs: "name:key=value,key=value" parsed and checked against each policy's fields. Pure."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from policies.hpa import HPAConfig
from policies.predictive import PredictiveConfig

POLICY_NAMES = ("hpa", "predictive", "oracle")


class PolicySpecError(ValueError):
    """A policy spec that cannot be used; the message is one line."""


@dataclass(frozen=True)
class PolicySpec:
    """A policy name with the parameters the user gave (others take their defaults)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params.items())


# Parameters the predictive policy takes for the HPA that runs beside it.
BESIDE_HPA_PREFIX = "hpa_"
CONFIG_TYPES: dict[str, type] = {"hpa": HPAConfig, "predictive": PredictiveConfig}
ORACLE_PARAMS = {"max_miss": float}


def _field_types(config_type: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_type)}


def _convert(raw: str, annotation: Any, key: str, policy: str) -> Any:
    """Convert a CLI string to the annotated type (int, float, bool, str, optional of these)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null", "") and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
    try:
        if annotation is bool:
            if raw.lower() in ("true", "1", "yes"):
                return True
            if raw.lower() in ("false", "0", "no"):
                return False
            raise ValueError(raw)
        if annotation in (int, float, str):
            return annotation(raw)
    except ValueError:
        pass
    else:
        raise PolicySpecError(f"{policy}: parameter {key} cannot be set from the command line")
    raise PolicySpecError(f"{policy}: {key}={raw!r} is not a valid {annotation.__name__}")


def allowed_params(name: str) -> dict[str, Any]:
    """Parameter name -> type for a policy name."""
    if name == "oracle":
        return dict(ORACLE_PARAMS)
    fields = _field_types(CONFIG_TYPES[name])
    if name == "predictive":
        for key, ann in _field_types(HPAConfig).items():
            fields[BESIDE_HPA_PREFIX + key] = ann
    return fields


def parse_policy_spec(text: str) -> PolicySpec:
    """Parse "hpa:target_utilization=0.6,tolerance=0.1" into a checked PolicySpec."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if name not in POLICY_NAMES:
        raise PolicySpecError(f"unknown policy {name!r}: choose from {', '.join(POLICY_NAMES)}")
    allowed = allowed_params(name)
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise PolicySpecError(f"{name}: expected key=value, got {item!r}")
        if key not in allowed:
            raise PolicySpecError(
                f"{name}: unknown parameter {key!r} (known: {', '.join(sorted(allowed))})")
        params[key] = _convert(raw.strip(), allowed[key], key, name)
    check_params(name, params)
    return PolicySpec(name, params)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Build the policy's config from the given values (defaults elsewhere) to check ranges."""
    try:
        if name == "hpa":
            HPAConfig(**params)
        elif name == "predictive":
            own = {k: v for k, v in params.items() if not k.startswith(BESIDE_HPA_PREFIX)}
            beside = {k[len(BESIDE_HPA_PREFIX):]: v for k, v in params.items()
                      if k.startswith(BESIDE_HPA_PREFIX)}
            PredictiveConfig(**own)
            try:
                HPAConfig(**beside)
            except ValueError as e:
                raise ValueError(f"the HPA beside it (hpa_ parameters): {e}") from None
        elif name == "oracle" and "max_miss" in params and not 0 < params["max_miss"] < 1:
            raise ValueError(f"max_miss must be in (0, 1), got {params['max_miss']}")
    except ValueError as e:
        raise PolicySpecError(f"{name}: {e}") from None
