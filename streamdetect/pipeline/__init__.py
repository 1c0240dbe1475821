"""Micro-batched stages that run MirrorCheck on many requests at once. Knows no Kafka."""

from streamdetect.pipeline.batcher import Batcher, BatchSettings
from streamdetect.pipeline.pipeline import ModelError, Pipeline, Request

__all__ = ["Batcher", "BatchSettings", "ModelError", "Pipeline", "Request"]
