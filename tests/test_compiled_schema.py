"""The compiled schema checks (events/compiled_schema.py) agree with jsonschema: on every shipped
schema, for a valid example of each event and thousands of mutations of it (each field removed,
replaced by values of every JSON type and of the schema's own edge cases, extra fields added,
and random pairs of these). ``validate_own`` relies on a compiled "yes" never being wrong."""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Iterator

import pytest

from streamdetect.events import SchemaError, Source, dead_letter, validate, validate_own
from streamdetect.events.compiled_schema import NotCompilable, compile_schema
from streamdetect.events.schemas import SCHEMA_FILES, _compiled, _validator

SHA = "ab" * 32
T = "2026-12-01T10:00:00.000Z"
STORED = {"key": f"input/{SHA}.png", "sha256": SHA, "size": 10, "media_type": "image/png"}
VERDICT = {
    "schema_version": 2, "upload_id": "u1", "flagged": True, "score": 0.25, "threshold": 0.5,
    "scores": {"a": 0.2, "b": 0.3}, "caption": "a cat", "caption_source": "model", "seed": 7,
    "models": {"captioner": "hf:x", "generator": "g", "encoders": ["e1", "e2"]},
    "stochastic": {"seed": 3, "noise_scale": 0.001, "generator": "g", "encoders": ["e1"]},
    "decided_by": "regeneration",
    "cascade": {"agreement": 0.3, "exit_threshold": 0.5, "exited": False, "scores": {"a": 0.3}},
    "submitted_at": T, "decided_at": T, "worker": "w", "threshold_source": "setting",
    "source": {"topic": "uploads", "partition": 0, "offset": 5},
    "image": {"reference": None, "inline": True, "sha256": SHA, "size": 100}, "metadata": {"k": [1, {"x": None}]},
    "evidence": {"store": "s3://b/p/", "input": STORED, "regenerated": {**STORED, "key": None}, "caption": "a cat",
                 "caption_source": "model", "scores": {"a": 0.2}, "threshold": 0.5, "error": "store down"},
}
EXAMPLES = {
    "verdict": VERDICT,
    "dead_letter": dead_letter(b'{"x": 1}', "bad_schema", "why", Source("uploads", 1, 2), "w", "u1"),
    "upload": {"schema_version": 1, "upload_id": "u1", "image": "s3://b/k", "caption": "c", "submitted_at": T,
               "deadline": T, "metadata": {"a": 1}},
    "label": {"schema_version": 1, "upload_id": "u1", "decision": "confirmed", "moderator": "m", "decided_at": T,
              "note": "n", "console": "c", "verdict": {"score": 0.1, "threshold": 0.5, "flagged": True, "models": {},
                                                       "decided_at": T, "schema_version": 2}},
    "claim": {"schema_version": 1, "upload_id": "u1", "moderator": "m", "console": "c", "claimed_at": T,
              "expires_at": T, "released": False},
}
VALUES: list[Any] = [None, True, False, 0, 1, -1, 2, 3, 1.0, 0.5, -1.5, 1.0000001, 2**53, "", "x", "a" * 300,
                     T, "2026-12-01t10:00:00z", "2026-13-01T00:00:00Z", "not a time", SHA, SHA.upper(), SHA[:-1],
                     f"input/{SHA}.png", f"regenerated/{SHA}.png", f"other/{SHA}.png", "image/png", "model", "upload",
                     "calibration", "confirmed", [], ["x"], [1], [None], {}, {"k": 1}, STORED]


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*path, key))


def _mutations(event: dict[str, Any]) -> Iterator[Any]:
    for path in _paths(event):
        for value in VALUES:
            yield _set(event, path, value)
        if path:
            yield _set(event, path, _DELETE)
        if isinstance(_get(event, path), dict):
            yield _set(event, (*path, "zz_extra"), 1)
        if isinstance(_get(event, path), list):
            yield _set(event, (*path, len(_get(event, path))), "extra")


_DELETE = object()


def _get(event: Any, path: tuple) -> Any:
    for key in path:
        event = event[key]
    return event


def _set(event: Any, path: tuple, value: Any) -> Any:
    if not path:
        return copy.deepcopy(value)
    out = copy.deepcopy(event)
    parent = _get(out, path[:-1])
    if value is _DELETE:
        del parent[path[-1]]
    elif isinstance(parent, list) and path[-1] == len(parent):
        parent.append(value)
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return out


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_every_shipped_schema_compiles(kind: str) -> None:
    assert _compiled(kind) is not None, f"{kind}: the compiler refused it, so its events fall back to jsonschema"


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_compiled_check_agrees_with_jsonschema_on_mutated_events(kind: str) -> None:
    check, reference = _compiled(kind), _validator(kind)
    assert check is not None and reference.is_valid(EXAMPLES[kind]) and check(EXAMPLES[kind])
    mutants = list(_mutations(EXAMPLES[kind]))
    rng = random.Random(kind)
    for first in rng.sample(mutants, min(300, len(mutants))):  # pairs: a field wrong and a sibling missing...
        if isinstance(first, dict):
            path = rng.choice(list(_paths(first))[1:] or [("zz_extra",)])
            mutants.append(_set(first, path, rng.choice([*VALUES, _DELETE])))
    disagreements = [m for m in mutants if check(m) != reference.is_valid(m)]
    assert not disagreements, disagreements[:3]
    assert sum(1 for m in mutants if not reference.is_valid(m)) > len(mutants) / 4  # the mutations do bite


def test_validate_own_raises_what_validate_raises_and_refuses_nan() -> None:
    bad = {**VERDICT, "score": 1.5}
    with pytest.raises(SchemaError) as own:
        validate_own("verdict", bad)
    with pytest.raises(SchemaError) as plain:
        validate("verdict", bad)
    assert own.value.detail == plain.value.detail == "score: 1.5 is greater than the maximum of 1"
    for where in ("score", "threshold"):
        with pytest.raises(SchemaError, match=f"{where}: not a finite number"):
            validate_own("verdict", {**VERDICT, where: math.nan})
    with pytest.raises(SchemaError, match="scores/a: not a finite number"):
        validate_own("verdict", {**VERDICT, "scores": {"a": math.inf}})
    with pytest.raises(SchemaError, match="metadata/k/0: not a finite number"):
        validate_own("verdict", {**VERDICT, "metadata": {"k": [-math.inf]}})
    validate_own("verdict", VERDICT)


@pytest.mark.parametrize("schema", [
    {"type": "object", "patternProperties": {"^x": {}}},
    {"$ref": "https://example.com/other.json"},
    {"properties": {"a": {"$id": "inner", "type": "string"}}},
    {"unevaluatedProperties": False},
    {"type": "tuple"},
    {"prefixItems": [{"type": "string"}]},
])
def test_what_the_compiler_does_not_know_it_refuses(schema: dict[str, Any]) -> None:
    with pytest.raises(NotCompilable):
        compile_schema(schema, _validator("verdict").format_checker)
