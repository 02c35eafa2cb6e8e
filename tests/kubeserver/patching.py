"""The three patch formats the official client sends, applied to plain JSON values.

Pure: every function returns a new value and never mutates its inputs.

- JSON patch (RFC 6902, `application/json-patch+json`): add, remove, replace, move, copy, test.
- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, `null` deletes,
  anything else (lists included) replaces.
- Strategic merge patch (`application/strategic-merge-patch+json`), THE SUBSET OUR RESOURCES
  NEED: maps merge recursively and `null` deletes a key; a list whose field name is in
  `MERGE_KEYS` merges element-wise by that key (new elements appended, existing ones merged
  recursively, `{"$patch": "delete", <key>: ...}` removes one); `PRIMITIVE_MERGE_LISTS`
  (finalizers) merge as an ordered union; every other list is replaced; `{"$patch": "replace"}`
  in a map replaces that map; `$setElementOrder/...` directives are accepted and ignored.
  Merge keys are looked up by field NAME, not by the full Go type as the real server does
  (`containers` merges by `name` wherever it appears) -- exact for the types we serve.
  Not supported: `$retainKeys`, `$deleteFromPrimitiveList`, `$patch: merge|delete` on maps.
"""

from __future__ import annotations

import copy
from typing import Any

JSON = Any


class PatchError(ValueError):
    """The patch cannot be applied (the server answers 422 Invalid)."""


class MalformedPatch(ValueError):
    """The patch document itself is not of the right shape (the server answers 400)."""


# field name -> patchMergeKey, from the Go struct tags of the types we serve.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
PRIMITIVE_MERGE_LISTS = frozenset({"finalizers"})


# ---------------------------------------------------------------- RFC 7386 merge patch
def merge_patch(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ---------------------------------------------------------------- strategic merge patch
def strategic_merge_patch(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        raise MalformedPatch("a strategic merge patch must be a JSON object")
    return _merge_map(target if isinstance(target, dict) else {}, patch)


def _merge_map(target: dict, patch: dict) -> dict:
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if "$patch" in patch:
        raise MalformedPatch(f"unsupported $patch directive on a map: {patch['$patch']!r}")
    out = dict(target)
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            continue  # ordering hint only; our merge keeps the original order
        if key.startswith("$"):
            raise MalformedPatch(f"unsupported strategic merge directive {key!r}")
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            current = out.get(key)
            out[key] = _merge_map(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list) and key in MERGE_KEYS:
            current = out.get(key)
            out[key] = _merge_list(current if isinstance(current, list) else [], value,
                                   MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_MERGE_LISTS:
            current = out.get(key) if isinstance(out.get(key), list) else []
            out[key] = list(current) + [v for v in value if v not in current]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(target: list, patch: list, merge_key: str) -> list:
    out = [copy.deepcopy(item) for item in target]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise MalformedPatch(f"list elements must be objects carrying {merge_key!r}")
        index = next(
            (i for i, have in enumerate(out)
             if isinstance(have, dict) and have.get(merge_key) == item[merge_key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(_merge_map({}, item))
        else:
            out[index] = _merge_map(out[index], item)
    return out


# ---------------------------------------------------------------- RFC 6902 JSON patch
def json_patch(target: JSON, operations: JSON) -> JSON:
    if not isinstance(operations, list):
        raise MalformedPatch("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for number, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise MalformedPatch(f"operation {number} needs 'op' and 'path'")
        doc = _apply_op(doc, op)
    return doc


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise MalformedPatch(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: JSON, tokens: list[str], path: str) -> JSON:
    node = doc
    for token in tokens[:-1]:
        node = _child(node, token, path)
    return node


def _child(node: JSON, token: str, path: str) -> JSON:
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"path {path!r} does not exist")
        return node[token]
    if isinstance(node, list):
        return node[_index(node, token, path, allow_end=False)]
    raise PatchError(f"path {path!r} goes through a scalar")


def _index(node: list, token: str, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(node)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"bad array index {token!r} in {path!r}")
    index = int(token)
    if index > len(node) or (index == len(node) and not allow_end):
        raise PatchError(f"array index out of range in {path!r}")
    return index


def _get(doc: JSON, path: str) -> JSON:
    node = doc
    for token in _pointer(path):
        node = _child(node, token, path)
    return node


def _add(doc: JSON, path: str, value: JSON) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[tokens[-1]] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, tokens[-1], path, allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError(f"cannot add below a scalar at {path!r}")
    return doc


def _remove(doc: JSON, path: str) -> tuple[JSON, JSON]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        if tokens[-1] not in parent:
            raise PatchError(f"path {path!r} does not exist")
        return doc, parent.pop(tokens[-1])
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, tokens[-1], path, allow_end=False))
    raise PatchError(f"cannot remove below a scalar at {path!r}")


def _apply_op(doc: JSON, op: dict) -> JSON:
    kind, path = op["op"], op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise MalformedPatch(f"{kind} at {path!r} needs a 'value'")
    if kind == "add":
        return _add(doc, path, op["value"])
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        _get(doc, path)  # must exist
        if not _pointer(path):
            return copy.deepcopy(op["value"])
        doc, _ = _remove(doc, path)
        return _add(doc, path, op["value"])
    if kind in ("move", "copy"):
        if "from" not in op:
            raise MalformedPatch(f"{kind} to {path!r} needs a 'from'")
        if kind == "move" and (path + "/").startswith(op["from"] + "/") and path != op["from"]:
            raise PatchError(f"cannot move {op['from']!r} into its own child {path!r}")
        if kind == "move":
            doc, value = _remove(doc, op["from"])
        else:
            value = copy.deepcopy(_get(doc, op["from"]))
        return _add(doc, path, value)
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise PatchError(f"test failed at {path!r}")
        return doc
    raise MalformedPatch(f"unknown JSON patch operation {kind!r}")


CONTENT_TYPES = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}
