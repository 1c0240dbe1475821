"""How much of the clean-score spread is regeneration noise, and what averaging buys.

Each clean validation scene is captioned once and regenerated under ``k`` seeds; each
regeneration is scored against the scene. The spread of the scores splits into the part between
scenes (what the picture is) and the part within a scene (which seed drew its regeneration).
Averaging ``m`` regenerations divides the within-scene variance by ``m``; the report gives the
clean-score standard deviation and the 5% quantile (where a 5% FPR threshold sits) it would
leave, as measured by averaging the first ``m`` seeds of each scene.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

from streamdetect.detector.mirrorcheck import ensemble_score, score_pairs
from streamdetect.mini.domain import make_split
from streamdetect.models.profiles import MINI_WEIGHTS, load_models, mini_profile

SEED_BASE = 5_000_000


def regeneration_noise(n: int = 100, k: int = 4, seed: int = 0, weights: Path = MINI_WEIGHTS,
                       log: Callable[[str], None] = lambda m: None) -> dict:
    if n < 2 or k < 2:
        raise ValueError(f"n={n}, k={k}: need at least 2 scenes and 2 seeds")
    models = load_models(mini_profile(Path(weights)))
    images, _ = make_split(seed, "val", n)
    captions = models.captioner.caption(images)
    scores = [[0.0] * k for _ in range(n)]  # scores[scene][seed]
    for j in range(k):
        log(f"regeneration seed {j + 1} of {k}")
        regenerated = models.generator.generate(captions, [SEED_BASE + j * n + i for i in range(n)])
        for i, pair in enumerate(score_pairs(models.encoders, images, regenerated)):
            scores[i][j] = ensemble_score(pair)
    return summarise(scores)


def summarise(scores: list[list[float]]) -> dict:
    """Variance split (between scenes, within a scene) and the effect of averaging m seeds."""
    flat = [s for row in scores for s in row]
    within = statistics.fmean(statistics.pvariance(row) for row in scores)  # population variances: they add up
    total = statistics.pvariance(flat)
    k = len(scores[0])
    averaged = []
    for m in range(1, k + 1):
        means = [statistics.fmean(row[:m]) for row in scores]
        averaged.append({"regenerations": m, "clean_std": round(statistics.stdev(means), 4),
                         "clean_q05": round(sorted(means)[int(0.05 * len(means))], 4)})
    return {"scenes": len(scores), "seeds": k, "total_variance": round(total, 6),
            "within_scene_variance": round(within, 6), "regeneration_share": round(within / total, 3),
            "averaging": averaged}
