"""The mini domain: synthetic scenes, small trained models shipped in weights/, attacks on them
and the evaluation that measures detection (issue 5). Importing this package is cheap; the
modules that need torch are imported where they are used."""

ATTACKS = ("pgd", "transfer", "untargeted", "adaptive", "easiest", "weakest")
# The detectors `mini eval` judges with by default (mini/eval/bench.py): every one but "private",
# which needs robust encoders trained from a private seed.
DEFAULT_METHODS = ("mirrorcheck", "stochastic", "robust", "robust_clip", "robust_margin", "fused", "clip_score",
                   "feature_squeezing", "mutation_divergence")
# Target sets of the targeted attacks (mini/domain.py TARGET_SETS holds the attributes each changes).
TARGET_SETS = ("one", "shape", "colour", "size", "position", "background", "any", "pair")
# The detector README recommends against white-box adaptive attacks on the mini domain: the
# caption margin under the robust encoders (README, "Defences against adaptive attacks").
RECOMMENDED = "robust_margin"
