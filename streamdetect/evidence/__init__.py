"""Where the evidence of a verdict is kept: the regenerated image, and the input as the worker
decoded it, as PNGs in an S3 bucket (boto3) or a local folder. The worker writes them; the
console reads them back by key, and only by a key of the form this part makes, so nothing the
browser sends can name another object or path. Knows boto3 and the file system; no models, no
Kafka.
"""

from streamdetect.evidence.store import (KEY_PATTERN, EvidenceError, EvidenceStore, LocalStore, S3Store, StoredImage,
                                         open_store, png_bytes)

__all__ = ["KEY_PATTERN", "EvidenceError", "EvidenceStore", "LocalStore", "S3Store", "StoredImage", "open_store",
           "png_bytes"]
