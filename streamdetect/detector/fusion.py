"""Several detection signals fused by a rule fitted on clean traffic only.

Each signal is a similarity (low means suspicious) on its own scale: MirrorCheck's cosine to the
regeneration, the caption-image agreement, and so on. On clean calibration samples each signal
gets its mean and spread; an image's fused score is its worst standardised signal (the minimum
z-score), so an attacker must keep every signal inside its clean range at once. The threshold
on the fused score is then fitted on clean samples like any other (thresholds.fit_target_fpr),
so the fused detector's false-positive rate is what was asked for, whatever the signals' scales.
No attacked sample is ever used: a rule tuned on the attacks it is measured on proves little.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MIN_SPREAD = 1e-6  # a signal constant on clean samples must not divide by zero


@dataclass(frozen=True)
class Standardiser:
    mean: float
    std: float

    def z(self, value: float) -> float:
        return (value - self.mean) / self.std


@dataclass(frozen=True)
class MinZFusion:
    signals: dict[str, Standardiser]

    @classmethod
    def fit(cls, clean: Mapping[str, Sequence[float]]) -> MinZFusion:
        """clean: signal name -> its scores on clean calibration samples (at least two each)."""
        if not clean:
            raise ValueError("fusion needs at least one signal")
        signals = {}
        for name, values in clean.items():
            if len(values) < 2:
                raise ValueError(f"signal {name!r}: need at least 2 clean samples, got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"signal {name!r}: clean scores must be finite")
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            signals[name] = Standardiser(mean, max(math.sqrt(var), MIN_SPREAD))
        return cls(signals)

    def score(self, values: Mapping[str, float]) -> float:
        """The fused score of one image; a missing or non-finite signal is refused, never skipped."""
        missing = sorted(set(self.signals) - set(values))
        if missing:
            raise ValueError(f"fusion needs signals {missing}")
        zs = [self.signals[name].z(float(values[name])) for name in self.signals]
        if not all(math.isfinite(z) for z in zs):
            raise ValueError(f"non-finite signal in {dict(values)}")
        return min(zs)

    def scores(self, columns: Mapping[str, Sequence[float]]) -> list[float]:
        """Fused scores of many images from per-signal columns of equal length."""
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"signal columns differ in length: {sorted(lengths)}")
        n = lengths.pop()
        return [self.score({name: columns[name][i] for name in columns}) for i in range(n)]
