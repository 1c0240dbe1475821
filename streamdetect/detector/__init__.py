"""MirrorCheck scoring and decisions. Knows tensors, not Kafka nor where images came from."""

from streamdetect.detector.cascade import RIVALS, CascadeSettings, agreement, agreement_scores, fit_exit, margin_scores
from streamdetect.detector.swaps import Swaps, VocabularyError, load_swaps
from streamdetect.detector.mirrorcheck import Verdict, cosine_scores, decide, score_pairs
from streamdetect.detector.stochastic import (
    Draw,
    PairToScore,
    StochasticSettings,
    draw,
    new_seed,
    perturbed,
    rescore,
    score_batch,
)

__all__ = [
    "RIVALS", "CascadeSettings", "Draw", "PairToScore", "StochasticSettings", "Verdict", "agreement", "agreement_scores",
    "fit_exit", "margin_scores", "cosine_scores", "decide", "draw", "new_seed",
    "perturbed", "rescore", "score_batch", "score_pairs", "Swaps", "VocabularyError", "load_swaps",
]
