"""Validation of whole objects: the published OpenAPI schemas, then the server-side rules.

Reads schema files from disk once (cached); otherwise pure.  Built-in kinds are checked
against the STRICT JSON schemas that `kubernetes-validate` ships for Kubernetes
`SCHEMA_VERSION` (1.27, the oldest version the controller supports, so an object valid here
uses no field a supported cluster lacks).  Strict means unknown fields are rejected: a real
server in its default `fieldValidation=Warn` mode would drop them silently, which in a test
hides a typo that makes a patch do nothing.  ScaledObjects are checked against the KEDA CRD's
openAPIV3Schema in tests/data/crds/ (unknown fields rejected likewise) plus ObjectMeta.

After the schema, `SEMANTIC_RULES` adds the apiserver's own validation that our resources
depend on (replica bounds, HPA min <= max, selector matches template labels, lease duration,
DNS names, and KEDA's admission rule min <= max).  Anything else the real server checks is
not checked here.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from referencing import Registry, Resource

from .resources import ResourceType
from .status import ApiError, invalid

SCHEMA_VERSION = "1.27"
CRD_DIR = Path(__file__).resolve().parents[1] / "data" / "crds"
_SCHEMA_DIR = (
    Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    / f"v{SCHEMA_VERSION}.0-local-strict"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


# ---------------------------------------------------------------- schema loading (cached)
@cache
def _definitions() -> Resource:
    return Resource.from_contents(json.loads((_SCHEMA_DIR / "_definitions.json").read_text()))


@cache
def builtin_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    """The strict validator for one built-in kind, e.g. ("Scale", "autoscaling/v1")."""
    suffix = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = json.loads((_SCHEMA_DIR / f"{kind.lower()}-{suffix}.json").read_text())
    registry = Resource.from_contents(schema) @ (_definitions() @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@cache
def _object_meta_validator() -> jsonschema.protocols.Validator:
    schema = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/"
                      "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema, registry=_definitions() @ Registry())


@cache
def crd_validator(group: str, kind: str, version: str) -> jsonschema.protocols.Validator:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            if spec["group"] != group or spec["names"]["kind"] != kind:
                continue
            for served in spec["versions"]:
                if served["name"] == version:
                    schema = _openapi_to_jsonschema(served["schema"]["openAPIV3Schema"])
                    schema.get("properties", {}).pop("metadata", None)  # checked as ObjectMeta
                    return jsonschema.Draft4Validator(schema)
    raise FileNotFoundError(f"no CRD for {kind}.{group}/{version} under {CRD_DIR}")


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (CRD dialect) -> JSON schema: nullable, int-or-string, closed objects."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    closed = ("properties" in node and "additionalProperties" not in node
              and not node.get("x-kubernetes-preserve-unknown-fields"))
    if closed:
        out["additionalProperties"] = False
    out.pop("nullable", None)
    return out


# ---------------------------------------------------------------- schema errors -> 422
def _field(path: Iterator[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _schema_error(rtype: ResourceType, name: str, error: jsonschema.ValidationError) -> ApiError:
    field = _field(error.absolute_path)
    detail = f"Invalid value: {json.dumps(error.instance)[:200]}: {error.message}"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - known)
        if unknown:
            field = f"{field}.{unknown[0]}" if field != "<root>" else unknown[0]
            detail = "Unsupported value: field not declared in schema"
    elif error.validator == "required":
        detail = f"Required value: {error.message}"
    return invalid(rtype.kind, rtype.group, name, field, detail)


def _check(validator: jsonschema.protocols.Validator, rtype: ResourceType, instance: Any,
           name: str, prefix: tuple[Any, ...] = ()) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        error.path.extendleft(reversed(prefix))
        raise _schema_error(rtype, name, error)


# ---------------------------------------------------------------- semantic rules
def _get(obj: dict, dotted: str) -> Any:
    node: Any = obj
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _metadata_rules(obj: dict) -> Iterator[tuple[str, str]]:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if not name:
        yield "metadata.name", "Required value: name or generateName is required"
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        yield "metadata.name", (f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                                "must consist of lower case alphanumeric characters, '-' or '.'")
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_NAME.match(key.rsplit("/", 1)[-1]) or len(key.rsplit("/", 1)[-1]) > 63:
            yield f"metadata.labels[{key}]", f'Invalid value: "{key}": not a valid label key'
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            yield f"metadata.labels[{key}]", f'Invalid value: "{value}": not a valid label value'


def _at_least(obj: dict, dotted: str, low: int) -> Iterator[tuple[str, str]]:
    value = _get(obj, dotted)
    if isinstance(value, int) and value < low:
        yield dotted, f"Invalid value: {value}: must be greater than or equal to {low}"


def _workload_rules(obj: dict) -> Iterator[tuple[str, str]]:
    yield from _at_least(obj, "spec.replicas", 0)
    selector = _get(obj, "spec.selector.matchLabels") or {}
    labels = _get(obj, "spec.template.metadata.labels") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        yield "spec.template.metadata.labels", (
            f"Invalid value: {json.dumps(labels)}: `selector` does not match template `labels`")


def _hpa_rules(obj: dict) -> Iterator[tuple[str, str]]:
    yield from _at_least(obj, "spec.minReplicas", 1)
    yield from _at_least(obj, "spec.maxReplicas", 1)
    low, high = _get(obj, "spec.minReplicas"), _get(obj, "spec.maxReplicas")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        yield "spec.maxReplicas", (f"Invalid value: {high}: must be greater than or equal "
                                   "to `minReplicas`")


def _lease_rules(obj: dict) -> Iterator[tuple[str, str]]:
    yield from _at_least(obj, "spec.leaseDurationSeconds", 1)
    yield from _at_least(obj, "spec.leaseTransitions", 0)


def _scaled_object_rules(obj: dict) -> Iterator[tuple[str, str]]:
    yield from _at_least(obj, "spec.minReplicaCount", 0)
    low, high = _get(obj, "spec.minReplicaCount"), _get(obj, "spec.maxReplicaCount")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        yield "spec.minReplicaCount", (f"Invalid value: {low}: MinReplicaCount={low} must be "
                                       f"less than MaxReplicaCount={high}")


def _scale_rules(obj: dict) -> Iterator[tuple[str, str]]:
    yield from _at_least(obj, "spec.replicas", 0)


SEMANTIC_RULES: dict[str, tuple[Callable[[dict], Iterator[tuple[str, str]]], ...]] = {
    "Deployment": (_workload_rules,),
    "StatefulSet": (_workload_rules,),
    "HorizontalPodAutoscaler": (_hpa_rules,),
    "Lease": (_lease_rules,),
    "ScaledObject": (_scaled_object_rules,),
    "Scale": (_scale_rules,),
}


# ---------------------------------------------------------------- entry point
def validate(rtype: ResourceType, obj: dict) -> None:
    """Raise `ApiError` (422 Invalid, naming the first bad field) unless `obj` is valid."""
    name = str(_get(obj, "metadata.name") or "")
    if obj.get("kind") != rtype.kind or obj.get("apiVersion") != rtype.api_version:
        raise invalid(rtype.kind, rtype.group, name, "kind",
                      f"Invalid value: {obj.get('apiVersion')}/{obj.get('kind')}: "
                      f"expected {rtype.api_version}/{rtype.kind}")
    if rtype.custom:
        _check(_object_meta_validator(), rtype, obj.get("metadata") or {}, name, ("metadata",))
        body = {k: v for k, v in obj.items() if k != "metadata"}
        _check(crd_validator(rtype.group, rtype.kind, rtype.version), rtype, body, name)
    else:
        _check(builtin_validator(rtype.kind, rtype.api_version), rtype, obj, name)
    rules = (_metadata_rules,) if rtype.kind != "Scale" else ()
    for rule in rules + SEMANTIC_RULES.get(rtype.kind, ()):
        for field, detail in rule(obj):
            raise invalid(rtype.kind, rtype.group, name, field, detail)


def validate_copy(rtype: ResourceType, obj: dict) -> dict:
    """Validate and return a deep copy, so callers can store it without aliasing."""
    validate(rtype, obj)
    return copy.deepcopy(obj)
