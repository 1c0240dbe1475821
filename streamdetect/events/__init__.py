"""Wire formats: uploads in, verdicts and dead letters out, each with a JSON Schema in
``schemas/``, and the topic specs in ``topics/`` (both shipped as package data). Knows JSON and
the schemas, nothing about Kafka or models."""

from streamdetect.events.wire import (
    SCHEMA_VERSION,
    SchemaError,
    Source,
    Upload,
    dead_letter,
    encode,
    now_iso,
    parse_time,
    upload_id_hint,
    validate,
)

__all__ = ["SCHEMA_VERSION", "SchemaError", "Source", "Upload", "dead_letter", "encode", "now_iso", "parse_time",
           "upload_id_hint", "validate"]
