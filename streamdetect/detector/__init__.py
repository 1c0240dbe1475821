"""MirrorCheck scoring and decisions. Knows tensors, not Kafka nor where images came from."""

from streamdetect.detector.mirrorcheck import Verdict, cosine_scores, decide

__all__ = ["Verdict", "cosine_scores", "decide"]
