"""Wire formats: uploads in, verdicts and dead letters out, each with a JSON Schema in
``schemas/``, and the topic specs in ``topics/`` (both shipped as package data, so an installed
wheel validates without a checkout). Knows JSON and the schemas, nothing about Kafka or models.

``upload`` parses a message once into a typed Upload; ``verdict`` builds a verdict once;
``dead_letter`` builds a dead letter; ``codec`` encodes and handles times; ``schemas`` validates.
"""

from streamdetect.events.codec import Source, encode, format_time, now_iso, parse_time
from streamdetect.events.dead_letter import cap_text, dead_letter
from streamdetect.events.schemas import SCHEMA_VERSION, SCHEMA_VERSIONS, SchemaError, validate, validate_own
from streamdetect.events.upload import Upload, UploadError, parse_upload
from streamdetect.events.verdict import NotAVerdict, VerdictEvent, check_finite, image_description

__all__ = ["SCHEMA_VERSION", "SCHEMA_VERSIONS", "NotAVerdict", "SchemaError", "Source", "Upload", "UploadError",
           "VerdictEvent", "cap_text", "check_finite", "dead_letter", "encode", "format_time", "image_description",
           "now_iso", "parse_time", "parse_upload", "validate", "validate_own"]
