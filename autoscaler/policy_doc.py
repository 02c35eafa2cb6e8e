"""The REST API's flat policy document: validation, JSON merge patch, conversion. Pure.

Rules:
- A document holds every field of `policies.predictive.PredictiveConfig` except `tick_s` (the
  loop's, never the API's), plus `mode` ("floor" | "metric" | "direct") and `dry_run`. Fractions
  are fractions (a quantile of 0.95, never 95); tuples are JSON lists.
- `validate_document` is PUT: unknown fields, wrong types and out-of-range values are refused
  with `PolicyInvalid` naming the first bad field (unknown fields first, then POLICY_FIELDS
  order, then the cross-field rules: min <= max, known forecaster, a mean service time
  slots_per_replica / capacity_rps_per_replica of at most MAX_SERVICE_S, since the
  queueing model's cost grows with it); a missing field
  takes its default (PredictiveConfig's, mode "floor", dry_run false). The ranges live in one
  table (`_RANGES`) that also feeds the OpenAPI schema, and PredictiveConfig's own checks run
  last, so a document accepted here always builds a config.
- `merge_patch` is RFC 7386: objects merge recursively, null deletes (here: back to the
  default), anything else replaces; the result is validated like a PUT.
- `apply_document` / `document_of` convert between a target's TargetConfig and the document;
  for a valid document `document_of(apply_document(config, doc)) == doc`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from autoscaler.errors import AutoscalerError
from autoscaler.settings import TargetConfig, _field_docs
from forecasting.registry import model_names
from policies.predictive import PredictiveConfig

MODES = ("floor", "metric", "direct")
MAX_LIST_ITEMS = 32  # slo_part_quantiles_s: a handful of quantiles, never a payload
# The queueing model walks the Erlang recursion one slot at a time up to the offered load
# rate x slots / capacity, so its cost grows with the mean service time slots / capacity: a
# capacity of 1e-300 req/s (or a billion slots) would stall every tick of every target. A
# request that occupies a slot for over an hour is no inference service; an hour at 1,000
# req/s is a few million steps, once per 0.1 % rate bucket.
MAX_SERVICE_S = 3600.0
MAX_SLOTS_PER_REPLICA = 4096


class PolicyInvalid(AutoscalerError):
    """A policy document was refused: `field` names the first bad field, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class _Spec:
    """One document field: its JSON type, whether null is allowed, its default."""

    name: str
    kind: type  # float, int, bool, str or tuple (a list of floats)
    nullable: bool
    default: Any
    description: str


@dataclass(frozen=True)
class _Range:
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    hint: str = ""


# Ranges of the numeric fields (PredictiveConfig's checks, plus sense where it has none).
_RANGES: dict[str, _Range] = {
    "capacity_rps_per_replica": _Range(gt=0),
    "target_utilization": _Range(gt=0, le=1, hint="a fraction, e.g. 0.7 (not 70)"),
    "slots_per_replica": _Range(ge=1, le=MAX_SLOTS_PER_REPLICA),
    "wait_budget_s": _Range(gt=0),
    "max_wait_miss": _Range(gt=0, lt=1, hint="a fraction, e.g. 0.001 (not 0.1 %)"),
    "slo_s": _Range(ge=0),
    "slo_part_quantiles_s": _Range(ge=0),
    "service_scv": _Range(ge=0),
    "quantile": _Range(ge=0.5, lt=1, hint="a fraction, e.g. 0.95 (not 95)"),
    "min_replicas": _Range(ge=0),
    "max_replicas": _Range(ge=1),
    "lead_time_s": _Range(ge=0),
    "scale_down_window_s": _Range(ge=0),
    "scale_down_window_leads": _Range(ge=0),
    "scale_down_max_fraction": _Range(gt=0, le=1, hint="a fraction, e.g. 0.1 (not 10)"),
    "surge_margin": _Range(ge=0, hint="a fraction, e.g. 0.2 (not 20)"),
    "surge_confirm_ticks": _Range(ge=1),
    "surge_hold_s": _Range(gt=0),
    "stale_after_s": _Range(gt=0),
    "handback_after_s": _Range(ge=0),
}


def _specs() -> tuple[_Spec, ...]:
    hints = typing.get_type_hints(PredictiveConfig)
    docs = _field_docs(PredictiveConfig)
    out = []
    for f in dataclasses.fields(PredictiveConfig):
        if f.name == "tick_s":
            continue
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, UnionType) else ()
        nullable = NoneType in args
        base = next((a for a in args if a is not NoneType), hint)
        kind = tuple if typing.get_origin(base) is tuple else base
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        out.append(_Spec(f.name, kind, nullable, default, docs.get(f.name, f.name)))
    out.append(_Spec("mode", str, False, "floor",
                     "floor: raise the HPA's minReplicas; metric: serve the need as a metric; "
                     "direct: patch the scale subresource [floor]"))
    out.append(_Spec("dry_run", bool, False, False,
                     "observer mode: compute, log, expose, write nothing [false]"))
    return tuple(out)


_SPECS = _specs()
_BY_NAME = {s.name: s for s in _SPECS}
POLICY_FIELDS: tuple[str, ...] = tuple(s.name for s in _SPECS)
"""Every field of a policy document, in validation order."""


def defaults() -> dict[str, Any]:
    """The document of PredictiveConfig's defaults, mode floor, dry_run false."""
    return {s.name: _copy(s.default) for s in _SPECS}


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


# -- validation ---------------------------------------------------------------------------

def _number(spec: _Spec, value: Any) -> float | int:
    # bool is an int in Python but never a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyInvalid(spec.name, f"must be a number, got {_json_type(value)}")
    if not math.isfinite(value):
        raise PolicyInvalid(spec.name, f"must be finite, got {value!r}")
    if spec.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise PolicyInvalid(spec.name, f"must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_range(name: str, value: float, rule: _Range) -> None:
    bounds = []
    if rule.gt is not None and not value > rule.gt:
        bounds.append(f"> {rule.gt:g}")
    if rule.ge is not None and not value >= rule.ge:
        bounds.append(f">= {rule.ge:g}")
    if rule.lt is not None and not value < rule.lt:
        bounds.append(f"< {rule.lt:g}")
    if rule.le is not None and not value <= rule.le:
        bounds.append(f"<= {rule.le:g}")
    if bounds:
        wanted = _describe(rule)
        hint = f" ({rule.hint})" if rule.hint else ""
        raise PolicyInvalid(name, f"must be {wanted}{hint}, got {value!r}")


def _describe(rule: _Range) -> str:
    low = (f"> {rule.gt:g}" if rule.gt is not None else
           f">= {rule.ge:g}" if rule.ge is not None else "")
    high = (f"< {rule.lt:g}" if rule.lt is not None else
            f"<= {rule.le:g}" if rule.le is not None else "")
    return " and ".join(p for p in (low, high) if p)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _field_value(spec: _Spec, value: Any) -> Any:
    if value is None:
        if spec.nullable:
            return None
        raise PolicyInvalid(spec.name, "must not be null")
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise PolicyInvalid(spec.name, f"must be a boolean, got {_json_type(value)}")
        return value
    if spec.kind is str:
        if not isinstance(value, str):
            raise PolicyInvalid(spec.name, f"must be a string, got {_json_type(value)}")
        return value
    rule = _RANGES.get(spec.name, _Range())
    if spec.kind is tuple:
        if not isinstance(value, list | tuple):
            raise PolicyInvalid(spec.name, f"must be an array of numbers, got "
                                           f"{_json_type(value)}")
        if len(value) > MAX_LIST_ITEMS:
            raise PolicyInvalid(spec.name, f"at most {MAX_LIST_ITEMS} items, got {len(value)}")
        items = [_number(spec, v) for v in value]
        for v in items:
            _check_range(spec.name, v, rule)
        return items
    number = _number(spec, value)
    _check_range(spec.name, number, rule)
    return number


def validate_document(data: object, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A full (PUT) document, normalized: every field present, missing ones taken from `base`
    (the target's own configured policy; None: the built-in defaults). Raises PolicyInvalid
    naming the first bad field."""
    if not isinstance(data, dict):
        raise PolicyInvalid("(body)", f"must be a JSON object, got {_json_type(data)}")
    unknown = [k for k in data if k not in _BY_NAME]
    if unknown:
        first = sorted(map(str, unknown))[0]
        raise PolicyInvalid(first, f"unknown field (known: {', '.join(POLICY_FIELDS)})")
    doc = defaults()
    if base is not None:
        doc.update({k: _copy(v) for k, v in base.items() if k in _BY_NAME})
    for spec in _SPECS:
        if spec.name in data:
            doc[spec.name] = _field_value(spec, data[spec.name])
    if doc["mode"] not in MODES:
        raise PolicyInvalid("mode", f"must be one of {', '.join(MODES)}, got {doc['mode']!r}")
    if doc["forecaster"] not in model_names():
        raise PolicyInvalid("forecaster", f"unknown forecaster {doc['forecaster']!r}; known: "
                                          f"{', '.join(model_names())}")
    if doc["min_replicas"] > doc["max_replicas"]:
        raise PolicyInvalid("min_replicas", f"must be <= max_replicas ({doc['max_replicas']}),"
                                            f" got {doc['min_replicas']}")
    service_s = doc["slots_per_replica"] / doc["capacity_rps_per_replica"]
    if not service_s <= MAX_SERVICE_S:
        raise PolicyInvalid("capacity_rps_per_replica", (
            f"must be >= slots_per_replica / {MAX_SERVICE_S:g} s "
            f"({doc['slots_per_replica'] / MAX_SERVICE_S:g}: a request may hold a slot for at "
            f"most {MAX_SERVICE_S:g} s), got {doc['capacity_rps_per_replica']!r}"))
    try:  # the core's own checks have the last word
        _predictive(doc, tick_s=PredictiveConfig.tick_s)
    except ValueError as e:
        name = str(e).split(" ", 1)[0]
        raise PolicyInvalid(name if name in _BY_NAME else "(policy)", str(e)) from None
    return doc


# -- merge patch --------------------------------------------------------------------------

def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch(target, patch), without mutating either."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def merge_patch(current: dict[str, Any], patch: object,
                base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document after an RFC 7386 merge patch, validated; null puts a field back to its
    value in `base` (the target's configured policy; None: the built-in default)."""
    if not isinstance(patch, dict):
        # RFC 7386 would replace the whole document with a non-object; no valid doc is one.
        raise PolicyInvalid("(body)", f"a merge patch must be a JSON object, got "
                                      f"{_json_type(patch)}")
    return validate_document(_merge(current, patch), base)


# -- conversion ---------------------------------------------------------------------------

def _predictive(doc: dict[str, Any], *, tick_s: float) -> PredictiveConfig:
    fields = {s.name: doc[s.name] for s in _SPECS if s.name not in ("mode", "dry_run")}
    fields["slo_part_quantiles_s"] = tuple(fields["slo_part_quantiles_s"])
    return PredictiveConfig(**fields, tick_s=tick_s)


def document_of(config: TargetConfig) -> dict[str, Any]:
    """The flat, JSON-able document of a target's effective policy."""
    policy = dataclasses.asdict(config.policy)
    doc = {name: _copy(policy[name]) for name in POLICY_FIELDS if name in policy}
    doc["mode"] = config.mode
    doc["dry_run"] = config.dry_run
    return doc


def apply_document(config: TargetConfig, doc: dict[str, Any], *,
                   global_dry_run: bool = False) -> TargetConfig:
    """The config running `doc` (validated first): its policy, mode and dry_run; tick_s and
    everything else kept from `config`. A global dry run still wins over the document's."""
    doc = validate_document(doc)
    if doc["mode"] == "direct" and (config.hpa or config.keda_scaled_object):
        raise PolicyInvalid("mode", "direct is for workloads without an HPA; this target names "
                                    "one (use floor or metric)")
    return dataclasses.replace(
        config, policy=_predictive(doc, tick_s=config.policy.tick_s), mode=doc["mode"],
        dry_run=bool(doc["dry_run"] or global_dry_run))


# -- OpenAPI schema -----------------------------------------------------------------------

def _annotation(spec: _Spec) -> Any:
    if spec.name == "mode":
        return Literal[MODES]  # type: ignore[valid-type]
    if spec.name == "forecaster":
        return Literal[tuple(model_names())]  # type: ignore[valid-type]
    base: Any = list[float] if spec.kind is tuple else spec.kind
    return base | None if spec.nullable else base


def _constraints(spec: _Spec) -> dict[str, Any]:
    rule = _RANGES.get(spec.name)
    if rule is None or spec.kind is tuple:
        return {"max_length": MAX_LIST_ITEMS} if spec.kind is tuple else {}
    return {k: v for k, v in (("gt", rule.gt), ("ge", rule.ge), ("lt", rule.lt),
                              ("le", rule.le)) if v is not None}


def _model(name: str, *, patch: bool) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for spec in _SPECS:
        kind = _annotation(spec)
        if patch:  # every field optional; null resets it to the default
            fields[spec.name] = (kind | None, Field(None, description=spec.description,
                                                    **_constraints(spec)))
        else:
            fields[spec.name] = (kind, Field(_copy(spec.default), description=spec.description,
                                             **_constraints(spec)))
    doc = ("A target's policy (PUT: missing fields take their defaults)." if not patch else
           "A JSON merge patch (RFC 7386) of a policy: absent fields are kept, null resets "
           "a field to its default.")
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=doc, **fields)


PolicyDocument = _model("PolicyDocument", patch=False)
PolicyPatch = _model("PolicyPatch", patch=True)


def pydantic_model() -> type[BaseModel]:
    """The request/response schema of a full policy document (OpenAPI)."""
    return PolicyDocument


def patch_model() -> type[BaseModel]:
    """The schema of a PATCH body (every field optional and nullable)."""
    return PolicyPatch
