"""JSON Schemas that never fetch: references resolve only inside the schema itself.

jsonschema resolves a remote `$ref` (http, https, file) by default: a case or `--schema` naming
`http://host/x.json` made the tool fetch it, and `file:///...` read a local file as the schema. Every
validator here is built on a `referencing.Registry` whose retrieve refuses, and every schema is checked
when it is given (and when a stored one is read back) so that a `$ref` pointing outside it is a clear
input error before anything is written, never a fetch or a crash later.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
MAX_SCHEMA_DEPTH = 200  # far beyond any real schema; deeper is refused instead of recursing


class _NoFetch(LookupError):
    """Raised by the registry's retrieve: nothing outside the schema is ever loaded."""


def _refuse(uri: str) -> Resource:
    raise _NoFetch(uri)


NO_FETCH_REGISTRY: Registry = Registry(retrieve=_refuse)  # type: ignore[call-arg]


def offline_validator(cls: Any, schema: Any) -> Any:
    """A jsonschema validator of class `cls` for `schema` that resolves references only inside it."""
    return cls(schema, registry=NO_FETCH_REGISTRY)


def reference_problem(schema: Any) -> str | None:
    """Why `schema` cannot be used offline (a `$ref` outside it, unresolvable, or too deep), or None."""
    if not isinstance(schema, dict):
        return None
    spec = specification_with(schema.get("$schema", ""), default=DRAFT202012) if isinstance(
        schema.get("$schema", ""), str) else DRAFT202012
    root = spec.create_resource(schema)
    root_uri = root.id() or ""
    try:
        registry = NO_FETCH_REGISTRY.with_resource(root_uri, root).crawl()
    except Exception as exc:  # noqa: BLE001 - a malformed $id etc.: say so, never crash
        return f"its $id values cannot be read ({exc})"
    resolver = registry.resolver(base_uri=root_uri)
    stack: list[tuple[Any, str, int]] = [(schema, root_uri, 0)]
    while stack:
        node, base, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            return f"it is nested more than {MAX_SCHEMA_DEPTH} levels deep"
        if isinstance(node, list):
            stack.extend((item, base, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        own_id = spec.id_of(node) if node is not schema else None
        if isinstance(own_id, str):
            base = urljoin(base, own_id)
        for key in _REF_KEYS:
            ref = node.get(key)
            if isinstance(ref, str) and not _resolves(resolver, urljoin(base, ref) if base else ref):
                return (f"{key} {ref!r} does not resolve inside the schema (only references within it, "
                        "e.g. #/$defs/name, are followed; nothing is fetched)")
        stack.extend((value, base, depth + 1) for value in node.values())
    return None


def _resolves(resolver: Any, uri: str) -> bool:
    try:
        resolver.lookup(uri)
    except (Unresolvable, _NoFetch):
        return False
    except Exception:  # noqa: BLE001 - any other failure to resolve is also "not inside the schema"
        return False
    return True
