"""Label and field selectors, parsed from the query string into predicates.

Pure.  Label selectors: the full grammar a client sends (`k=v`, `k==v`, `k!=v`,
`k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined).  Field selectors: equality and
inequality (`=`, `==`, `!=`) on any dotted path such as `metadata.name` or `status.phase`
(a real server allows only a few paths per kind; we allow any).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .status import ApiError

Predicate = Callable[[dict], bool]
_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_CMP = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def _label_term(term: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET.match(term):
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _CMP.match(term):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.match(term):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise ApiError("BadRequest", f"unable to parse requirement: {term!r}")


def label_selector(text: str | None) -> Predicate:
    terms = [_label_term(t) for t in _split(text or "")]
    return lambda obj: all(t((obj.get("metadata") or {}).get("labels") or {}) for t in terms)


def _path_value(obj: dict, dotted: str) -> str:
    node = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_selector(text: str | None) -> Predicate:
    terms: list[Callable[[dict], bool]] = []
    for term in _split(text or ""):
        m = _CMP.match(term)
        if not m:
            raise ApiError("BadRequest", f"invalid field selector: {term!r}")
        path, op, value = m.groups()
        if op == "!=":
            terms.append(lambda o, p=path, v=value: _path_value(o, p) != v)
        else:
            terms.append(lambda o, p=path, v=value: _path_value(o, p) == v)
    return lambda obj: all(t(obj) for t in terms)


def selector_string(selector: dict | None) -> str:
    """A LabelSelector object as the string a Scale's status.selector carries."""
    selector = selector or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(parts)
