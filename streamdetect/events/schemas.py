"""The event schemas (JSON Schema files in ``schemas/``, shipped as package data) and the one
function that checks an event against its schema."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from streamdetect.events.compiled_schema import Check, NotCompilable, compile_schema

SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_FILES = {
    "upload": "upload.schema.json",
    "verdict": "verdict.schema.json",
    "dead_letter": "dead_letter.schema.json",
    "label": "label.schema.json",
    "claim": "claim.schema.json",
}
# The version each event is written with (its schema's schema_version const). Verdicts are at 2
# since they carry image, metadata and evidence (docs/events.md#verdict-v2).
SCHEMA_VERSIONS = {"upload": 1, "verdict": 2, "dead_letter": 1, "label": 1, "claim": 1}
SCHEMA_VERSION = SCHEMA_VERSIONS["upload"]  # uploads and dead letters


class SchemaError(ValueError):
    """A message does not match its event schema; ``detail`` says where and why."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind} does not match its schema: {detail}")
        self.kind = kind
        self.detail = detail


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS_DIR / SCHEMA_FILES[kind]).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


@cache
def _compiled(kind: str) -> Check | None:
    """The kind's schema compiled (compiled_schema.py), or None where it cannot be: jsonschema then."""
    validator = _validator(kind)
    try:
        return compile_schema(validator.schema, validator.format_checker)
    except NotCompilable:
        return None


def validate_own(kind: str, event: dict[str, Any]) -> None:
    """``validate`` for an event this code built itself (verdicts, dead letters), at a fraction of
    its cost: a compiled check that passes is the answer; anything it refuses goes to ``validate``,
    whose verdict and message stand. Never for what arrives from outside (uploads): those keep
    jsonschema's own walk, so the compiled check can never be what lets a hostile value in."""
    check = _compiled(kind)
    if check is not None and _non_finite(event) is None and check(event):
        return
    validate(kind, event)


def validate(kind: str, event: dict[str, Any]) -> None:
    """Raise SchemaError naming the first failing field if ``event`` breaks the ``kind`` schema.
    Non-finite numbers are refused first: JSON Schema's bounds let NaN through (every comparison
    with NaN is false), and a NaN score read as clean is a detector failing open."""
    where = _non_finite(event)
    if where is not None:
        raise SchemaError(kind, f"{where}: not a finite number")
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(event))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SchemaError(kind, f"{where}: {error.message}")


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity inside ``value``, or None."""
    if not path and _all_finite(value):
        return None  # the common case, without building a path for every value
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(top level)"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, f"{path}/{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        return True
    for item in value:
        if not _all_finite(item):
            return False
    return True
