"""A JSON Schema compiled once into plain Python checks, for the events this code writes itself.

jsonschema walks a schema on every call: a verdict took about 0.6 ms to check, more than all
the rest of the work on an upload together (docs/architecture.md#self-validation). This turns
a schema into nested closures once, so a check is a few attribute tests (tens of microseconds).

It answers only yes or no; ``schemas.validate_own`` sends every "no" to jsonschema, whose answer
and message stand. So the compiled check must never say yes where jsonschema says no: it
knows the keywords the shipped schemas use, with jsonschema's semantics (draft 2020-12: bool is
no number, 1.0 is an integer, keywords apply only to their own type, ``format`` through
jsonschema's own format checker), and refuses to compile anything else (``NotCompilable``), so
a schema that grows a keyword it does not know is checked by jsonschema alone, never less.
tests/test_compiled_schema.py checks it against jsonschema on thousands of mutated events.
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import unquote

Check = Callable[[Any], bool]
ANNOTATIONS = frozenset({"$schema", "title", "description", "$defs", "$comment", "default", "examples"})
_TYPES: dict[str, Check] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "number": lambda v: isinstance(v, numbers.Number) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


class NotCompilable(ValueError):
    """The schema uses something this compiler does not know: leave it to jsonschema."""


class FormatChecker(Protocol):
    """What the compiler needs of jsonschema's FormatChecker."""

    def conforms(self, instance: object, format: str) -> bool: ...


def compile_schema(schema: Mapping[str, Any], formats: FormatChecker) -> Check:
    return _Compiler(schema, formats).compile(schema, root=True)


Keyword = tuple[str | None, Check]  # the JSON type a keyword applies to (None: every value), its test


def _all(checks: list[Check]) -> Check:
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]

    def check(v: Any) -> bool:
        for c in checks:
            if not c(v):
                return False
        return True
    return check


def _applies(keyword_type: str | None, schema_type: str | None) -> bool:
    """Whether a keyword for ``keyword_type`` can matter for a value already of ``schema_type``."""
    return keyword_type in (None, schema_type) or (keyword_type, schema_type) == ("number", "integer")


def _guarded(keywords: list[Keyword], schema_type: str | None) -> list[Check]:
    """The keywords' tests, each run only on values of its type. After a single-type ``type`` test
    (``schema_type``) they need no guard, and those of other types can never fail, so they go."""
    if schema_type is not None:
        return [test for kind, test in keywords if _applies(kind, schema_type)]
    by_type: dict[str | None, list[Check]] = {}
    for kind, test in keywords:
        by_type.setdefault(kind, []).append(test)
    checks = by_type.pop(None, [])
    for kind, tests in by_type.items():
        is_kind, test = _TYPES[kind], _all(tests)  # type: ignore[index]
        checks.append(lambda v, is_kind=is_kind, test=test: not is_kind(v) or test(v))
    return checks


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON Schema means it: True is not 1, and containers compare item by item."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return False
    return bool(a == b)


def _one_of_values(options: list[Any]) -> Check:
    if all(isinstance(o, str) for o in options):  # the common case: a set lookup
        allowed = frozenset(options)
        return lambda v: isinstance(v, str) and v in allowed
    return lambda v: any(json_equal(v, option) for option in options)


class _Compiler:
    def __init__(self, root: Mapping[str, Any], formats: FormatChecker) -> None:
        self._root = root
        self._formats = formats
        self._refs: dict[str, Check] = {}

    def compile(self, schema: Any, root: bool = False) -> Check:
        if schema is True or schema is False:
            return (lambda v: True) if schema else (lambda v: False)
        if not isinstance(schema, Mapping):
            raise NotCompilable(f"a schema must be an object or a boolean, not {schema!r}")
        if "$id" in schema and not root:
            raise NotCompilable("$id inside a schema changes the base URI")
        keywords: list[Keyword] = []
        for name, value in schema.items():
            if name in ANNOTATIONS or name in ("$id", "type"):
                continue
            build = getattr(self, f"_kw_{name.lstrip('$')}", None)
            if build is None:
                raise NotCompilable(f"keyword {name!r} is not supported")
            keywords.append(build(value, schema))
        if "type" not in schema:
            return _all(_guarded(keywords, None))
        names = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        if not names or any(n not in _TYPES for n in names):
            raise NotCompilable(f"type {schema['type']!r}")
        tests = [_TYPES[n] for n in names]
        type_test = tests[0] if len(tests) == 1 else (lambda v: any(t(v) for t in tests))
        return _all([type_test, *_guarded(keywords, names[0] if len(names) == 1 else None)])

    def _kw_const(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return None, _one_of_values([value])

    def _kw_enum(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return None, _one_of_values(list(value))

    def _kw_required(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        names = list(value)
        return "object", lambda v: all(n in v for n in names)

    def _kw_properties(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        compiled = [(name, self.compile(sub)) for name, sub in value.items()]

        def check(v: dict[str, Any]) -> bool:
            for name, c in compiled:
                if name in v and not c(v[name]):
                    return False
            return True
        return "object", check

    def _kw_additionalProperties(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        if "patternProperties" in schema:
            raise NotCompilable("patternProperties")
        known = frozenset(schema.get("properties", {}))
        if value is False:
            return "object", known.issuperset
        extra = self.compile(value)
        return "object", lambda v: all(extra(item) for key, item in v.items() if key not in known)

    def _kw_minProperties(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "object", lambda v: len(v) >= value

    def _kw_maxProperties(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "object", lambda v: len(v) <= value

    def _kw_items(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        if "prefixItems" in schema or isinstance(value, list):
            raise NotCompilable("prefixItems or an array of item schemas")
        item = self.compile(value)
        return "array", lambda v: all(item(x) for x in v)

    def _kw_minItems(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "array", lambda v: len(v) >= value

    def _kw_maxItems(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "array", lambda v: len(v) <= value

    def _kw_minLength(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "string", lambda v: len(v) >= value

    def _kw_maxLength(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "string", lambda v: len(v) <= value

    def _kw_pattern(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        search = re.compile(value).search  # jsonschema uses re.search too: unanchored
        return "string", lambda v: search(v) is not None

    def _kw_format(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        conforms = self._formats.conforms  # jsonschema's own checks; each decides which types it checks
        return None, lambda v: conforms(v, value)

    def _kw_minimum(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "number", lambda v: v >= value

    def _kw_maximum(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "number", lambda v: v <= value

    def _kw_exclusiveMinimum(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "number", lambda v: v > value

    def _kw_exclusiveMaximum(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return "number", lambda v: v < value

    def _kw_allOf(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        return None, _all([self.compile(sub) for sub in value])

    def _kw_anyOf(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        subs = [self.compile(sub) for sub in value]
        return None, lambda v: any(s(v) for s in subs)

    def _kw_oneOf(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        subs = [self.compile(sub) for sub in value]
        return None, lambda v: sum(1 for s in subs if s(v)) == 1

    def _kw_not(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        sub = self.compile(value)
        return None, lambda v: not sub(v)

    def _kw_ref(self, value: Any, schema: Mapping[str, Any]) -> Keyword:
        """A pointer into this schema (``#/$defs/x``), compiled once and late, so cycles work."""
        if not isinstance(value, str) or not value.startswith("#"):
            raise NotCompilable(f"$ref {value!r}: only references within the schema are supported")
        if value not in self._refs:
            cell: list[Check] = []
            self._refs[value] = lambda v: cell[0](v)
            cell.append(self.compile(_pointer(self._root, value[1:])))
        return None, self._refs[value]


def _pointer(root: Mapping[str, Any], pointer: str) -> Any:
    """The part of ``root`` that a JSON pointer (RFC 6901, URI-fragment encoded) names."""
    node: Any = root
    for part in unquote(pointer).split("/")[1:] if pointer else []:
        key = part.replace("~1", "/").replace("~0", "~")
        try:
            node = node[int(key)] if isinstance(node, list) else node[key]
        except (KeyError, IndexError, ValueError) as exc:
            raise NotCompilable(f"$ref #{pointer} points at nothing") from exc
    return node
