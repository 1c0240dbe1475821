"""Micro-batched stages that run MirrorCheck on many requests at once. Knows no Kafka."""

from streamdetect.pipeline.batcher import Batcher, BatchObserver, BatchReport, BatchSettings, StageSettings
from streamdetect.pipeline.pipeline import DeadlineExceeded, ModelError, Pipeline, Request

__all__ = ["Batcher", "BatchObserver", "BatchReport", "BatchSettings", "DeadlineExceeded", "ModelError", "Pipeline", "Request",
           "StageSettings"]
