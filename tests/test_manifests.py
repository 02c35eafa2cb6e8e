"""The deployment manifests (manifests/): kustomize builds validated against the Kubernetes
JSON schemas (kubernetes-validate, strict) and the CRDs' OpenAPI v3 schemas (tests/data/crds),
plus the rules the deployment must keep: security context, probes, RBAC exactly as specified,
a parseable configuration, and monitoring that names only the metrics the README lists.

There is no kubectl here, so a small pure-Python subset of kustomize builds the kustomizations
(resources, components, configMapGenerator without hash suffix, strategic-merge patches,
namespace). It refuses every field and patch form it does not implement, so a manifest can
never rely on a kustomize feature these tests silently skip. Every validator has a negative case
that feeds it a broken copy and expects it to complain.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"

# The oldest Kubernetes the controller supports (issue #3) and the newest schema set that
# kubernetes-validate ships; every core object must validate against both.
K8S_VERSIONS = ("1.27", "1.37")

NAMESPACE = "predictive-autoscaler"
NAME = "predictive-autoscaler"
CONFIGMAP = "predictive-autoscaler-config"
IMAGE = "predictive-autoscaler:0.1.0"
COMMAND = ["autoscaler", "run", "--config", "/etc/predictive-autoscaler/config.yaml"]
PREFIX = "predictive_autoscaler_"


# --------------------------------------------------------------------------- kustomize subset

class KustomizeError(Exception):
    """A kustomization this subset cannot build (or that real kustomize would refuse)."""


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "patches",
                      "configMapGenerator"}
GENERATOR_KEYS = {"name", "namespace", "files", "literals", "options"}
GENERATOR_OPTION_KEYS = {"disableNameSuffixHash", "labels", "annotations"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass", "PersistentVolume", "APIService",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
# Strategic-merge keys of the lists a patch may touch; any other list in a patch is refused
# (its real merge strategy depends on the field's schema, which this subset does not model).
SMP_LIST_KEYS = {"containers": "name", "initContainers": "name", "env": "name",
                 "volumes": "name", "volumeMounts": "mountPath"}


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_kustomization(directory: Path) -> dict:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    k = yaml.safe_load(path.read_text()) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{path}: fields not implemented by the test's kustomize: "
                             f"{sorted(unknown)}")
    return k


def object_id(obj: dict) -> tuple[str, str, str, str]:
    group = obj["apiVersion"].rpartition("/")[0]
    meta = obj.get("metadata", {})
    return group, obj["kind"], meta.get("namespace", ""), meta["name"]


def smp(base: Any, patch: Any, key: str = "") -> Any:
    """Strategic merge of `patch` into `base` (maps merge, null deletes, keyed lists merge)."""
    if isinstance(patch, dict):
        if "$patch" in patch or any(k.startswith("$") for k in patch):
            raise KustomizeError(f"patch directive under {key!r} not implemented")
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(patch, list):
        if key not in SMP_LIST_KEYS:
            raise KustomizeError(f"strategic merge of list {key!r} not implemented")
        merge_key = SMP_LIST_KEYS[key]
        out = [copy.deepcopy(x) for x in (base or [])]
        for item in patch:
            match = [i for i, x in enumerate(out) if x.get(merge_key) == item[merge_key]]
            if match:
                out[match[0]] = smp(out[match[0]], item, key)
            else:
                out.append(copy.deepcopy(item))
        return out
    return patch


def apply_patches(entries: list, directory: Path, objects: list[dict]) -> list[dict]:
    for entry in entries:
        if set(entry) - {"path", "patch"} or len(entry) != 1:
            raise KustomizeError(f"{directory}: patch {entry!r}: only `path` or `patch` "
                                 "(strategic merge, target from the patch) is implemented")
        docs = (load_docs(directory / entry["path"]) if "path" in entry
                else [d for d in yaml.safe_load_all(entry["patch"]) if d is not None])
        for doc in docs:
            if not isinstance(doc, dict) or "kind" not in doc:
                raise KustomizeError(f"{directory}: JSON 6902 patches are not implemented")
            hits = [i for i, o in enumerate(objects) if object_id(o) == object_id(doc)]
            if not hits:
                raise KustomizeError(f"{directory}: patch target {object_id(doc)} not found")
            objects[hits[0]] = smp(objects[hits[0]], doc)
    return objects


def generate_configmaps(entries: list, directory: Path) -> list[dict]:
    out = []
    for g in entries:
        options = g.get("options", {})
        if set(g) - GENERATOR_KEYS or set(options) - GENERATOR_OPTION_KEYS:
            raise KustomizeError(f"{directory}: configMapGenerator fields not implemented: {g}")
        if options.get("disableNameSuffixHash") is not True:
            raise KustomizeError(f"{directory}: generator {g['name']}: name hash suffixes are "
                                 "not implemented (set options.disableNameSuffixHash: true)")
        data = {}
        for spec in g.get("files", []):
            key, _, rel = spec.rpartition("=")
            data[key or Path(rel).name] = (directory / rel).read_text()
        for spec in g.get("literals", []):
            key, _, value = spec.partition("=")
            data[key] = value
        meta = {"name": g["name"]}
        for field in ("namespace",):
            if field in g:
                meta[field] = g[field]
        for field in ("labels", "annotations"):
            if field in options:
                meta[field] = dict(options[field])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    return out


def set_namespace(objects: list[dict], namespace: str, where: Path) -> None:
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        # kustomize versions differ in how they rewrite binding subjects; demand the
        # manifests spell the namespace out so every version yields the same objects.
        for subject in obj.get("subjects", []) if obj["kind"].endswith("RoleBinding") else []:
            if subject.get("kind") == "ServiceAccount" and subject.get("namespace") != namespace:
                raise KustomizeError(f"{where}: subject {subject} must name namespace "
                                     f"{namespace} explicitly")


def build(directory: Path, *, component: bool = False, base: list[dict] | None = None) -> list[dict]:
    """Build a Kustomization (or apply a Component to `base`) the way `kustomize build` does:
    resources, then components, then generators, then patches, then the namespace."""
    directory = directory.resolve()
    k = load_kustomization(directory)
    kind = k.get("kind", "Kustomization")
    if kind != ("Component" if component else "Kustomization"):
        raise KustomizeError(f"{directory}: kind {kind} used as "
                             f"{'a component' if component else 'a resource'}")
    if component and "namespace" in k:
        raise KustomizeError(f"{directory}: namespace in a component is not implemented")
    objects = list(base or [])
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects += build(path)
        elif path.is_file():
            objects += load_docs(path)
        else:
            raise KustomizeError(f"{directory}: resource {entry} not found")
    for entry in k.get("components", []):
        objects = build(directory / entry, component=True, base=objects)
    objects += generate_configmaps(k.get("configMapGenerator", []), directory)
    objects = apply_patches(k.get("patches", []), directory, objects)
    if "namespace" in k:
        set_namespace(objects, k["namespace"], directory)
    dupes = [i for i, n in Counter(object_id(o) for o in objects).items() if n > 1]
    if dupes:
        raise KustomizeError(f"{directory}: duplicate objects {dupes}")
    return objects


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


def buildable_dirs() -> list[str]:
    return [str(d.relative_to(MANIFESTS)) for d in kustomization_dirs()
            if load_kustomization(d).get("kind", "Kustomization") == "Kustomization"]


@functools.cache
def _built(rel: str) -> str:
    return json.dumps(build(MANIFESTS / rel))


def built(rel: str) -> list[dict]:
    """A fresh copy of a build (tests may mutate it)."""
    return json.loads(_built(rel))


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


EXAMPLES = sorted(p for p in (MANIFESTS / "examples").glob("*.yaml"))
BUILDS = buildable_dirs()


@pytest.mark.parametrize(
    ("rel", "case", "message"),
    [pytest.param("unknown-key", {"kind": "Kustomization", "images": []}, "not implemented",
                  id="unknown-field"),
     pytest.param("component-as-resource", {"kind": "Component"}, "used as a resource",
                  id="component-as-resource"),
     pytest.param("missing-resource", {"kind": "Kustomization", "resources": ["nope.yaml"]},
                  "not found", id="missing-resource"),
     pytest.param("dupes", {"kind": "Kustomization", "resources": ["a.yaml", "a.yaml"]},
                  "duplicate", id="duplicate-objects"),
     pytest.param("bad-patch", {"kind": "Kustomization", "resources": ["a.yaml"],
                                "patches": [{"path": "p.yaml"}]}, "not found",
                  id="patch-without-target"),
     pytest.param("hash", {"kind": "Kustomization",
                           "configMapGenerator": [{"name": "x", "literals": ["a=b"]}]},
                  "hash suffixes", id="generator-with-hash-suffix"),
     pytest.param("json6902", {"kind": "Kustomization", "resources": ["a.yaml"],
                               "patches": [{"path": "p.yaml",
                                            "target": {"kind": "ConfigMap"}}]},
                  "only `path` or `patch`", id="patch-with-target")])
def test_kustomize_subset_refuses(tmp_path: Path, rel: str, case: dict, message: str) -> None:
    d = tmp_path / rel
    d.mkdir()
    (d / "kustomization.yaml").write_text(yaml.safe_dump({"apiVersion": "x", **case}))
    (d / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (d / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    with pytest.raises(KustomizeError, match=re.escape(message)):
        build(d)


@pytest.mark.parametrize(
    ("base", "patch", "expected"),
    [pytest.param({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}}, {"a": 1, "b": {"c": 2, "d": 3}},
                  id="maps-merge"),
     pytest.param({"a": 1, "b": 2}, {"b": None}, {"a": 1}, id="null-deletes"),
     pytest.param({"data": {"k": "old"}}, {"data": {"k": "new"}}, {"data": {"k": "new"}},
                  id="scalar-replaces"),
     pytest.param({"containers": [{"name": "a", "image": "x"}, {"name": "b"}]},
                  {"containers": [{"name": "a", "image": "y"}, {"name": "c"}]},
                  {"containers": [{"name": "a", "image": "y"}, {"name": "b"}, {"name": "c"}]},
                  id="keyed-list-merges")])
def test_strategic_merge(base: dict, patch: dict, expected: dict) -> None:
    assert smp(base, patch) == expected


def test_strategic_merge_refuses_unkeyed_list() -> None:
    with pytest.raises(KustomizeError, match="ports"):
        smp({"ports": [{"port": 1}]}, {"ports": [{"port": 2}]})


def test_every_component_is_used_and_every_yaml_is_built() -> None:
    """No manifest sits outside every build (except the hand-applied examples)."""
    used: set[Path] = set()
    components: set[Path] = set()
    for d in kustomization_dirs():
        k = load_kustomization(d)
        if k.get("kind") == "Component":
            components.add(d)
        used.add(d / "kustomization.yaml")
        used.update((d / r).resolve() for r in k.get("resources", []) + [
            p["path"] for p in k.get("patches", [])])
        used.update((d / c).resolve() for c in k.get("components", []))
    assert components <= used, f"components no overlay uses: {components - used}"
    orphans = [p for p in MANIFESTS.rglob("*.yaml")
               if p.resolve() not in used and p.parent != MANIFESTS / "examples"]
    assert not orphans, f"YAML files in no kustomization: {orphans}"
    assert {"base", "overlays/example"} <= set(BUILDS)


# --------------------------------------------------------------------------- schemas

def validate_core(obj: dict, version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


def strictify(schema: Any) -> Any:
    """Unknown fields are errors (kubectl's --validate=strict), except where the schema lets
    them through (additionalProperties, x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strictify(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strictify(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in load_docs(path):
            spec = crd["spec"]
            for v in spec["versions"]:
                key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
                schemas[key] = strictify(v["schema"]["openAPIV3Schema"])
    return schemas


def validate_crd(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key not in crd_schemas():
        raise LookupError(f"no CRD for {key} in {CRD_DIR}")
    jsonschema.Draft4Validator(crd_schemas()[key]).validate(obj)


def validate(obj: dict) -> None:
    if (obj["apiVersion"], obj["kind"]) in crd_schemas():
        validate_crd(obj)
    else:
        for version in K8S_VERSIONS:
            validate_core(obj, version)


def all_objects() -> list[tuple[str, dict]]:
    out = [(f"{rel}:{o['kind']}/{o['metadata']['name']}", o) for rel in BUILDS for o in built(rel)]
    out += [(f"examples/{p.name}:{o['kind']}/{o['metadata']['name']}", o)
            for p in EXAMPLES for o in load_docs(p)]
    return out


@pytest.mark.parametrize(("label", "obj"), [pytest.param(l_, o, id=l_) for l_, o in all_objects()])
def test_object_validates(label: str, obj: dict) -> None:
    validate(obj)


def test_crd_schemas_cover_the_custom_kinds() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for _, o in all_objects()}
    assert {("monitoring.coreos.com/v1", "ServiceMonitor"),
            ("monitoring.coreos.com/v1", "PrometheusRule"),
            ("keda.sh/v1alpha1", "ScaledObject")} <= kinds & set(crd_schemas())


def _deployment() -> dict:
    return copy.deepcopy(find(built("base"), "Deployment", NAME))


def _crd_object(kind: str) -> dict:
    for _, o in all_objects():
        if o["kind"] == kind:
            return copy.deepcopy(o)
    raise AssertionError(kind)


_DELETE = object()


def _set(obj: dict, path: str, value: Any) -> dict:
    """Set (or, with _DELETE, remove) the field at a dotted path; list indexes are digits."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = obj
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return obj


@pytest.mark.parametrize(
    ("path", "value"),
    [pytest.param("spec.replicas", "two", id="wrong-type"),
     pytest.param("spec.replica", 2, id="unknown-field"),
     pytest.param("spec.template.spec.containers.0.ports.0.containerPort", "http",
                  id="port-not-int"),
     pytest.param("spec.selector", _DELETE, id="missing-required")])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_validator_rejects_broken_deployment(path: str, value: Any, version: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_core(_set(_deployment(), path, value), version)


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [pytest.param("ServiceMonitor", "spec.endpoints.0.interval", "15 seconds",
                  id="servicemonitor-bad-duration"),
     pytest.param("ServiceMonitor", "spec.endpoints.0.portt", "http",
                  id="servicemonitor-unknown-field"),
     pytest.param("ServiceMonitor", "spec.selector", _DELETE,
                  id="servicemonitor-missing-selector"),
     pytest.param("PrometheusRule", "spec.groups.0.rules.0.expr", _DELETE,
                  id="prometheusrule-rule-without-expr"),
     pytest.param("PrometheusRule", "spec.groups.0.rules.0.for", "5 minutes",
                  id="prometheusrule-bad-for"),
     pytest.param("ScaledObject", "spec.triggers", _DELETE, id="scaledobject-no-triggers"),
     pytest.param("ScaledObject", "spec.minReplicaCount", "1", id="scaledobject-wrong-type"),
     pytest.param("ScaledObject", "spec.scaleTargetRef.nmae", "x",
                  id="scaledobject-unknown-field")])
def test_crd_validator_rejects_broken_objects(kind: str, path: str, value: Any) -> None:
    obj = _crd_object(kind)
    validate_crd(obj)  # the unbroken object passes
    with pytest.raises(jsonschema.ValidationError):
        validate_crd(_set(obj, path, value))


# --------------------------------------------------------------------------- names and labels

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_LABEL_KINDS = {"Namespace", "Service"}


def metadata_problems(obj: dict) -> list[str]:
    """What the API server checks beyond the JSON schemas: name and label syntax."""
    meta, problems = obj["metadata"], []
    name = meta.get("name", "")
    pattern = DNS_LABEL if obj["kind"] in DNS_LABEL_KINDS else DNS_SUBDOMAIN
    limit = 63 if obj["kind"] in DNS_LABEL_KINDS else 253
    if not pattern.match(name) or len(name) > limit:
        problems.append(f"invalid name {name!r}")
    if "namespace" in meta and not DNS_LABEL.match(meta["namespace"]):
        problems.append(f"invalid namespace {meta['namespace']!r}")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and not DNS_SUBDOMAIN.match(prefix)) or not LABEL_NAME.match(label) \
                or len(label) > 63:
            problems.append(f"invalid label key {key!r}")
        if not isinstance(value, str) or not LABEL_VALUE.match(value) or len(value) > 63:
            problems.append(f"invalid label value {key}={value!r}")
    return problems


def test_names_and_labels_are_valid() -> None:
    problems = {label: p for label, o in all_objects() if (p := metadata_problems(o))}
    assert not problems


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [pytest.param("metadata.name", "Predictive_Autoscaler", "invalid name", id="uppercase-name"),
     pytest.param("metadata.labels.version", "0.1.0+build/7", "invalid label value",
                  id="bad-label-value"),
     pytest.param("metadata.labels", {"-bad": "x"}, "invalid label key", id="bad-label-key")])
def test_metadata_check_rejects(path: str, value: Any, message: str) -> None:
    assert any(message in p for p in metadata_problems(_set(_deployment(), path, value)))


# --------------------------------------------------------------------------- the controller

def quantity(q: str | int) -> float:
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m and m.group(2) in units | {"": 1}, f"quantity {q!r}"
    return float(m.group(1)) * (units[m.group(2)] if m.group(2) else 1)


def deployment_problems(dep: dict) -> list[str]:
    """The controller Deployment's rules: HA, non-root, read-only, probes, limits."""
    p: list[str] = []
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    if spec.get("replicas") != 2:
        p.append("replicas must be 2")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        p.append("pod must run as non-root uid 65532")
    if pod.get("serviceAccountName") != NAME:
        p.append("serviceAccountName")
    labels = spec["template"]["metadata"]["labels"]
    terms = (pod.get("affinity", {}).get("podAntiAffinity", {})
             .get("preferredDuringSchedulingIgnoredDuringExecution", []))
    if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
               for t in terms):
        p.append("no pod anti-affinity across nodes")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            p.append("root filesystem must be read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            p.append("privilege escalation must be off")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            p.append("capabilities must drop ALL")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            p.append("container must run as non-root")
        if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") \
                != "RuntimeDefault":
            p.append("seccomp must be RuntimeDefault")
        if c.get("image") != IMAGE or c.get("command") != COMMAND:
            p.append("image or command")
        if {"name": "http", "containerPort": 8080, "protocol": "TCP"} not in c.get("ports", []):
            p.append("port 8080 named http")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") != "http":
                p.append(f"{probe} must GET {path} on port http")
        res = c.get("resources", {})
        for r in ("cpu", "memory"):
            req, lim = res.get("requests", {}).get(r), res.get("limits", {}).get(r)
            if req is None or lim is None:
                p.append(f"{r} request and limit required")
            elif quantity(lim) < quantity(req):
                p.append(f"{r} limit below request")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if env.get("NUMBA_CACHE_DIR") != "/tmp/numba-cache":
            p.append("NUMBA_CACHE_DIR=/tmp/numba-cache")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        if "emptyDir" not in volumes.get(mounts.get("/tmp", {}).get("name"), {}):
            p.append("/tmp must be an emptyDir")
        cfg = volumes.get(mounts.get("/etc/predictive-autoscaler", {}).get("name"), {})
        if cfg.get("configMap", {}).get("name") != CONFIGMAP:
            p.append("config not mounted from the ConfigMap")
    return p


def test_controller_deployment_rules() -> None:
    assert deployment_problems(_deployment()) == []


C0 = "spec.template.spec.containers.0"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [pytest.param("spec.replicas", 1, "replicas", id="one-replica"),
     pytest.param("spec.template.spec.securityContext.runAsUser", 0, "non-root", id="root"),
     pytest.param(f"{C0}.securityContext.readOnlyRootFilesystem", False, "read-only",
                  id="writable-root"),
     pytest.param(f"{C0}.securityContext.allowPrivilegeEscalation", True, "escalation",
                  id="privilege-escalation"),
     pytest.param(f"{C0}.securityContext.capabilities", {"drop": ["NET_RAW"]}, "drop ALL",
                  id="capabilities-kept"),
     pytest.param(f"{C0}.livenessProbe", _DELETE, "livenessProbe", id="no-liveness"),
     pytest.param(f"{C0}.readinessProbe.httpGet.path", "/healthz", "readinessProbe",
                  id="readiness-on-healthz"),
     pytest.param(f"{C0}.resources.limits", _DELETE, "limit", id="no-limits"),
     pytest.param(f"{C0}.resources.limits.memory", "256Mi", "limit below request",
                  id="limit-below-request"),
     pytest.param(f"{C0}.env", [], "NUMBA_CACHE_DIR", id="no-numba-cache-dir"),
     pytest.param("spec.template.spec.affinity", _DELETE, "anti-affinity", id="no-spread")])
def test_deployment_rules_reject(path: str, value: Any, message: str) -> None:
    assert any(message in p for p in deployment_problems(_set(_deployment(), path, value)))


def reference_problems(objects: list[dict]) -> list[str]:
    """Selectors, ports, names and role references point at objects of the same build."""
    p: list[str] = []
    by_kind: dict[str, list[dict]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)

    def ns(o: dict) -> str:
        return o["metadata"].get("namespace", "")

    def pods_of(namespace: str, selector: dict) -> list[dict]:
        return [d for d in by_kind.get("Deployment", []) if ns(d) == namespace
                and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]

    for svc in by_kind.get("Service", []):
        backends = pods_of(ns(svc), svc["spec"]["selector"])
        if not backends:
            p.append(f"Service {svc['metadata']['name']} selects no Deployment")
        names = {port["name"] for d in backends
                 for c in d["spec"]["template"]["spec"]["containers"] for port in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            if port["targetPort"] not in names:
                p.append(f"Service {svc['metadata']['name']}: no container port "
                         f"{port['targetPort']}")
    for sm in by_kind.get("ServiceMonitor", []):
        wanted = sm["spec"]["selector"]["matchLabels"]
        namespaces = sm["spec"].get("namespaceSelector", {}).get("matchNames", [ns(sm)])
        svcs = [s for s in by_kind.get("Service", []) if ns(s) in namespaces
                and wanted.items() <= s["metadata"].get("labels", {}).items()]
        ports = {port["name"] for s in svcs for port in s["spec"]["ports"]}
        if not svcs or any(e["port"] not in ports for e in sm["spec"]["endpoints"]):
            p.append(f"ServiceMonitor {sm['metadata']['name']} matches no Service port")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not pods_of(ns(pdb), pdb["spec"]["selector"]["matchLabels"]):
            p.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects nothing")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        ref = hpa["spec"]["scaleTargetRef"]
        if not any(o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"]
                   and ns(o) == ns(hpa) for o in objects):
            p.append(f"HPA {hpa['metadata']['name']} targets nothing")
    for d in by_kind.get("Deployment", []):
        pod = d["spec"]["template"]["spec"]
        for v in pod.get("volumes", []):
            if "configMap" in v:
                cms = [c for c in by_kind.get("ConfigMap", []) if ns(c) == ns(d)
                       and c["metadata"]["name"] == v["configMap"]["name"]]
                if not cms or any(i["key"] not in cms[0]["data"]
                                  for i in v["configMap"].get("items", [])):
                    p.append(f"Deployment {d['metadata']['name']}: ConfigMap volume dangles")
        sa = pod.get("serviceAccountName")
        if sa and not any(s["metadata"]["name"] == sa and ns(s) == ns(d)
                          for s in by_kind.get("ServiceAccount", [])):
            p.append(f"Deployment {d['metadata']['name']}: no ServiceAccount {sa}")
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for b in by_kind.get(kind, []):
            ref = b["roleRef"]
            if not any(r["metadata"]["name"] == ref["name"]
                       and (ref["kind"] == "ClusterRole" or ns(r) == ns(b))
                       for r in by_kind.get(ref["kind"], [])):
                p.append(f"{kind} {b['metadata']['name']}: no {ref['kind']} {ref['name']}")
            for s in b["subjects"]:
                if not any(a["metadata"]["name"] == s["name"] and ns(a) == s["namespace"]
                           for a in by_kind.get("ServiceAccount", [])):
                    p.append(f"{kind} {b['metadata']['name']}: no ServiceAccount {s['name']}")
    return p


@pytest.mark.parametrize("rel", BUILDS)
def test_references_resolve(rel: str) -> None:
    assert reference_problems(built(rel)) == []


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [pytest.param("Service", NAME, "spec.selector", {"app": "other"}, id="service-selector"),
     pytest.param("Service", NAME, "spec.ports.0.targetPort", "metrics", id="service-port"),
     pytest.param("ServiceMonitor", NAME, "spec.endpoints.0.port", "web", id="monitor-port"),
     pytest.param("Deployment", NAME, "spec.template.spec.volumes.0.configMap.name", "cfg",
                  id="configmap-volume"),
     pytest.param("RoleBinding", NAME, "roleRef.name", "nobody", id="role-ref"),
     pytest.param("HorizontalPodAutoscaler", "vllm-demo", "spec.scaleTargetRef.name", "vllm",
                  id="hpa-target")])
def test_reference_check_rejects(kind: str, name: str, path: str, value: Any) -> None:
    objects = built("overlays/example")
    _set(find(objects, kind, name), path, value)
    assert reference_problems(objects)


# --------------------------------------------------------------------------- RBAC

SA_SUBJECT = {"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}
API_GROUP = "autoscaling.predictive.dev"
# /tmp/rbac_spec.md of issue #3, one row per rule: (kind, name, namespace, groups, resources,
# verbs). The live controller is written against exactly this list.
RBAC_SPEC = [
    pytest.param("ClusterRole", NAME, "", [""], ["pods"], ["get", "list", "watch"],
                 id="pods-read"),
    pytest.param("ClusterRole", NAME, "", [""], ["pods"], ["create", "delete"],
                 id="balloon-pods"),
    pytest.param("ClusterRole", NAME, "", [""], ["events"], ["create", "patch"], id="events"),
    pytest.param("ClusterRole", NAME, "", ["apps"], ["deployments", "statefulsets"],
                 ["get", "list", "watch"], id="workloads-read"),
    pytest.param("ClusterRole", NAME, "", ["apps"],
                 ["deployments/scale", "statefulsets/scale"], ["get", "patch"], id="scale"),
    pytest.param("ClusterRole", NAME, "", ["autoscaling"], ["horizontalpodautoscalers"],
                 ["get", "list", "watch", "patch"], id="hpa"),
    pytest.param("ClusterRole", NAME, "", ["keda.sh"], ["scaledobjects"],
                 ["get", "list", "watch", "patch"], id="keda"),
    pytest.param("ClusterRole", NAME, "", ["authentication.k8s.io"], ["tokenreviews"],
                 ["create"], id="tokenreviews"),
    pytest.param("ClusterRole", NAME, "", ["authorization.k8s.io"], ["subjectaccessreviews"],
                 ["create"], id="subjectaccessreviews"),
    pytest.param("Role", NAME, NAMESPACE, ["coordination.k8s.io"], ["leases"],
                 ["get", "create", "update"], id="leases"),
    pytest.param("Role", NAME, NAMESPACE, [""], ["configmaps"],
                 ["get", "list", "watch", "create", "update", "patch"], id="configmaps"),
    pytest.param("ClusterRole", f"{NAME}-viewer", "", [API_GROUP], ["policies"], ["get"],
                 id="api-viewer"),
    pytest.param("ClusterRole", f"{NAME}-editor", "", [API_GROUP], ["policies"],
                 ["get", "update"], id="api-editor"),
]
RBAC_BINDINGS = {("ClusterRoleBinding", NAME, ""): ("ClusterRole", NAME),
                 ("RoleBinding", NAME, NAMESPACE): ("Role", NAME)}


def rbac_file_objects() -> list[dict]:
    return load_docs(MANIFESTS / "base" / "rbac.yaml")


def rbac_rules(objects: list[dict]) -> list[tuple]:
    """Each rule as (kind, name, namespace, groups, resources, verbs, other fields)."""
    return sorted(
        (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", ""),
         tuple(sorted(r.get("apiGroups", []))), tuple(sorted(r.get("resources", []))),
         tuple(sorted(r.get("verbs", []))),
         tuple(sorted(k for k in r if k not in {"apiGroups", "resources", "verbs"})))
        for o in objects if o["kind"] in {"Role", "ClusterRole"} for r in o.get("rules", []))


def expected_rules() -> list[tuple]:
    return sorted((*(p.values[:3]), *(tuple(sorted(v)) for v in p.values[3:]), ())
                  for p in RBAC_SPEC)


@pytest.mark.parametrize(("kind", "name", "namespace", "groups", "resources", "verbs"), RBAC_SPEC)
def test_rbac_rule_is_granted(kind: str, name: str, namespace: str, groups: list[str],
                              resources: list[str], verbs: list[str]) -> None:
    rule = (kind, name, namespace, tuple(sorted(groups)), tuple(sorted(resources)),
            tuple(sorted(verbs)), ())
    assert rule in rbac_rules(rbac_file_objects())


def test_rbac_grants_nothing_else() -> None:
    """Exactly the specified rules, in rbac.yaml and in every build (nothing added or widened)."""
    assert rbac_rules(rbac_file_objects()) == expected_rules()
    for rel in BUILDS:
        assert rbac_rules(built(rel)) == expected_rules()


def test_rbac_bindings() -> None:
    bindings = {(o["kind"], o["metadata"]["name"], o["metadata"].get("namespace", "")): o
                for o in rbac_file_objects() if o["kind"].endswith("Binding")}
    assert set(bindings) == set(RBAC_BINDINGS), "the viewer/editor roles ship without binding"
    for key, (role_kind, role_name) in RBAC_BINDINGS.items():
        assert bindings[key]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                            "kind": role_kind, "name": role_name}
        assert bindings[key]["subjects"] == [SA_SUBJECT]


@pytest.mark.parametrize(
    ("index", "mutate"),
    [pytest.param(0, lambda o: o["rules"][0]["verbs"].append("delete"), id="verb-added"),
     pytest.param(0, lambda o: o["rules"].pop(), id="rule-dropped"),
     pytest.param(0, lambda o: o["rules"][4]["resources"].append("replicasets/scale"),
                  id="resource-added"),
     pytest.param(0, lambda o: o["rules"][2].__setitem__("resourceNames", ["x"]),
                  id="resource-names-narrowing"),
     pytest.param(2, lambda o: o["metadata"].__setitem__("namespace", "default"),
                  id="role-in-wrong-namespace")])
def test_rbac_comparison_rejects(index: int, mutate: Any) -> None:
    objects = rbac_file_objects()
    assert objects[index]["kind"] in {"ClusterRole", "Role"}
    mutate(objects[index])
    assert rbac_rules(objects) != expected_rules()


# --------------------------------------------------------------------------- configuration

def controller_config(objects: list[dict]) -> dict:
    cm = find(objects, "ConfigMap", CONFIGMAP, NAMESPACE)
    return yaml.safe_load(cm["data"]["config.yaml"])


def config_problems(text: str) -> list[str]:
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"config.yaml is not YAML: {e}"]
    if not isinstance(cfg, dict):
        return ["config.yaml is not a mapping"]
    p = []
    if not str(cfg.get("prometheus_url", "")).startswith(("http://", "https://")):
        p.append("prometheus_url")
    if cfg.get("tick_s") != 15:
        p.append("tick_s must be 15")
    if cfg.get("api_port") != 8080:
        p.append("api_port must be the container port 8080")
    le = cfg.get("leader_election", {})
    if le.get("lease_name") != NAME or le.get("lease_namespace") != NAMESPACE:
        p.append("lease must be predictive-autoscaler in the controller's namespace (Role)")
    # A leader that cannot renew must stop before its lease can expire and be taken over.
    if not 0 < le.get("retry_period_s", 0) < le.get("renew_deadline_s", 0) \
            < le.get("lease_duration_s", 0):
        p.append("need retry_period_s < renew_deadline_s < lease_duration_s")
    if not isinstance(cfg.get("targets"), list):
        p.append("targets must be a list")
    return p


@pytest.mark.parametrize("rel", BUILDS)
def test_config_parses_and_holds(rel: str) -> None:
    cm = find(built(rel), "ConfigMap", CONFIGMAP, NAMESPACE)
    assert config_problems(cm["data"]["config.yaml"]) == []


def test_base_config_has_no_target() -> None:
    assert controller_config(built("base"))["targets"] == []


@pytest.mark.parametrize(
    ("edit", "message"),
    [pytest.param(lambda t: t.replace("tick_s: 15", "tick_s: 15\n\ttab: 1"), "not YAML",
                  id="tab-indent"),
     pytest.param(lambda t: t.replace("renew_deadline_s: 10", "renew_deadline_s: 20"),
                  "renew_deadline_s", id="renew-after-expiry"),
     pytest.param(lambda t: t.replace("tick_s: 15", "tick_s: 60"), "tick_s", id="slow-tick"),
     pytest.param(lambda t: t.replace("targets: []", "targets: {}"), "targets", id="targets-map")])
def test_config_check_rejects(edit: Any, message: str) -> None:
    text = find(built("base"), "ConfigMap", CONFIGMAP)["data"]["config.yaml"]
    assert any(message in p for p in config_problems(edit(text)))


def test_example_target_matches_its_workload_and_hpa() -> None:
    objects = built("overlays/example")
    base, cfg = controller_config(built("base")), controller_config(objects)
    assert {k: v for k, v in cfg.items() if k != "targets"} == \
        {k: v for k, v in base.items() if k != "targets"}, "the patch drifted from the base"
    [target] = cfg["targets"]
    assert (target["namespace"], target["name"], target["mode"], target["preset"]) == \
        ("inference", "vllm-demo", "floor", "vllm")
    dep = find(objects, "Deployment", "vllm-demo", "inference")
    hpa = find(objects, "HorizontalPodAutoscaler", target["hpa"], "inference")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": dep["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 20)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "vllm_num_requests_running"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    # The floor can never be written above the HPA's maximum (the API would refuse it).
    assert target["policy"]["max_replicas"] <= hpa["spec"]["maxReplicas"]
    assert target["policy"]["min_replicas"] >= hpa["spec"]["minReplicas"]


def test_example_inference_pod() -> None:
    dep = find(built("overlays/example"), "Deployment", "vllm-demo", "inference")
    [c] = dep["spec"]["template"]["spec"]["containers"]
    assert quantity(c["resources"]["requests"]["nvidia.com/gpu"]) == 1
    assert c["resources"]["limits"]["nvidia.com/gpu"] == c["resources"]["requests"]["nvidia.com/gpu"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    startup = c["startupProbe"]
    # vLLM needs minutes to load: at least 10 minutes before liveness may kill it.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


# --------------------------------------------------------------------------- monitoring

@functools.cache
def readme_metrics() -> dict[str, str]:
    """The metric names manifests/README.md lists, name -> type (the controller's contract)."""
    text = (MANIFESTS / "README.md").read_text()
    rows = re.findall(rf"^\| `({PREFIX}[a-z0-9_]+)` \| (gauge|counter|histogram) \|", text,
                      re.MULTILINE)
    assert rows, "manifests/README.md lists no metrics"
    return dict(rows)


def exposed_series() -> set[str]:
    names = set()
    for name, kind in readme_metrics().items():
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}{s}" for s in ("_bucket", "_sum", "_count"))
    return names


def unknown_metrics(expr: str) -> set[str]:
    return set(re.findall(rf"\b{PREFIX}[a-z0-9_]+", expr)) - exposed_series()


def rule_problems(rule_obj: dict) -> list[str]:
    p = []
    rules = [r for g in rule_obj["spec"]["groups"] for r in g["rules"]]
    for r in rules:
        if unknown := unknown_metrics(str(r["expr"])):
            p.append(f"{r.get('alert')}: metrics not in the README: {sorted(unknown)}")
        if not r.get("alert") or not r.get("annotations", {}).get("summary"):
            p.append(f"{r.get('alert')}: alert name and summary required")
    exprs = " ".join(str(r["expr"]) for r in rules)
    if not re.search(rf"{PREFIX}metrics_stale\b", exprs):
        p.append("no alert on stale metrics")
    if f"rate({PREFIX}write_errors_total[" not in exprs:
        p.append("no alert on failed writes")
    return p


def dashboard_problems(cm: dict) -> list[str]:
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        return ["dashboard ConfigMap lacks label grafana_dashboard: \"1\""]
    [text] = cm["data"].values()
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"dashboard is not JSON: {e}"]
    p = []
    exprs = [t["expr"] for panel in dash.get("panels", []) for t in panel.get("targets", [])]
    exprs += [v["definition"] for v in dash.get("templating", {}).get("list", [])
              if "definition" in v]
    for e in exprs:
        if unknown := unknown_metrics(e):
            p.append(f"dashboard uses metrics not in the README: {sorted(unknown)}")
    joined = " ".join(exprs)
    for needed in ("forecast_rps", "desired_floor_replicas", "hpa_desired_replicas",
                   "lead_time_seconds", "decisions_total", "write_errors_total", "errors_total"):
        if f"{PREFIX}{needed}" not in joined:
            p.append(f"no panel shows {PREFIX}{needed}")
    ids = [panel.get("id") for panel in dash.get("panels", [])]
    if len(ids) != len(set(ids)):
        p.append("duplicate panel ids")
    return p


def _monitoring() -> list[dict]:
    return built("overlays/example")


def test_alerts_name_only_listed_metrics() -> None:
    assert rule_problems(find(_monitoring(), "PrometheusRule", NAME)) == []


def test_dashboard_parses_and_names_only_listed_metrics() -> None:
    cm = find(_monitoring(), "ConfigMap", "predictive-autoscaler-dashboard", NAMESPACE)
    assert dashboard_problems(cm) == []


def test_keda_example_names_only_listed_metrics() -> None:
    for p in EXAMPLES:
        for o in load_docs(p):
            for trig in o.get("spec", {}).get("triggers", []):
                assert not unknown_metrics(trig["metadata"].get("query", ""))


@pytest.mark.parametrize(
    ("expr", "message"),
    [pytest.param(f"{PREFIX}metrics_stale > 0 or {PREFIX}stale_seconds > 60", "not in the README",
                  id="unknown-metric"),
     pytest.param(f"{PREFIX}is_leader < 1", "no alert on stale metrics", id="stale-alert-missing")])
def test_rule_check_rejects(expr: str, message: str) -> None:
    rule = find(_monitoring(), "PrometheusRule", NAME)
    for r in rule["spec"]["groups"][0]["rules"]:
        r["expr"] = r["expr"].replace(f"{PREFIX}metrics_stale", f"{PREFIX}is_leader")
    rule["spec"]["groups"][0]["rules"][0]["expr"] = expr
    assert any(message in p for p in rule_problems(rule))


@pytest.mark.parametrize(
    ("edit", "message"),
    [pytest.param(lambda t: t[:-3], "not JSON", id="truncated-json"),
     pytest.param(lambda t: t.replace(f"{PREFIX}lead_time_seconds", f"{PREFIX}lead_seconds"),
                  "not in the README", id="unknown-metric"),
     pytest.param(lambda t: t.replace(f"{PREFIX}decisions_total", "up"),
                  "decisions_total", id="panel-missing")])
def test_dashboard_check_rejects(edit: Any, message: str) -> None:
    cm = find(_monitoring(), "ConfigMap", "predictive-autoscaler-dashboard", NAMESPACE)
    key = next(iter(cm["data"]))
    cm["data"][key] = edit(cm["data"][key])
    assert any(message in p for p in dashboard_problems(cm))


def test_readme_metric_names_follow_prometheus_conventions() -> None:
    for name, kind in readme_metrics().items():
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        assert name.endswith("_total") == (kind == "counter"), name
