"""What a console knows: recent verdicts, the latest decision on each upload, and who holds a
claim on which alert. Pure state, fed by the Kafka feed (feed.py) in log order; no I/O here,
so the rules are tested without a broker.

Claims of one upload are keyed by its id, so they share a partition and every console reads
them in the same order. Walking them in that order, a claim takes the alert when nobody holds
it, when the holder's claim had expired by the time it was made, or when it renews the holder's
own claim; a release gives it back. So two consoles that claim at once agree on the winner:
the first claim in the log.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from streamdetect.events import parse_time

STATES = ("undecided", "claimed", "confirmed", "dismissed")


@dataclass(frozen=True)
class Claim:
    console: str
    moderator: str
    claimed_at: datetime
    expires_at: datetime
    released: bool = False

    @classmethod
    def from_event(cls, event: dict[str, Any]) -> Claim:
        return cls(str(event["console"]), str(event["moderator"]), parse_time(event["claimed_at"]),
                   parse_time(event["expires_at"]), bool(event.get("released", False)))


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    min_score: float | None = None
    max_score: float | None = None
    state: str | None = None  # one of STATES, "open" (undecided or claimed by this console), or None: all


class ReviewState:
    """Verdicts seen (bounded), the alerts among them, decisions and claims."""

    def __init__(self, console: str, max_verdicts: int = 5000, max_alerts: int = 2000) -> None:
        self.console = console
        self._verdicts: deque[tuple[float, bool]] = deque(maxlen=max_verdicts)  # (score, flagged) for the histogram
        self._alerts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max_alerts = max_alerts
        self._labels: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, Claim | None] = {}
        self.threshold: float | None = None
        self.first_stage = 0  # clean verdicts the cascade decided without regeneration (not in the histogram)
        # Evidence keys of the alerts kept, counted (keys are content hashes, so alerts can share
        # one): the only keys the console serves.
        self.keys: Counter[str] = Counter()

    # -- feeding, in log order

    def add_verdict(self, verdict: dict[str, Any]) -> bool:
        """A verdict from audit or alerts; True when it is an alert not seen before."""
        score, upload_id = verdict.get("score"), verdict.get("upload_id")
        if not isinstance(upload_id, str) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return False
        if verdict.get("decided_by") == "first_stage":  # its score is the caption agreement: another scale
            self.first_stage += 1
            return False
        self.threshold = verdict.get("threshold", self.threshold)
        if not verdict.get("flagged"):
            self._verdicts.append((float(score), False))
            return False
        if upload_id in self._alerts:  # the same alert from audit and from alerts, or a re-judged upload
            self.keys.subtract(_keys(self._alerts[upload_id]))
            self.keys.update(_keys(verdict))
            self.keys += Counter()
            self._alerts[upload_id] = verdict
            return False
        self._verdicts.append((float(score), True))
        self._alerts[upload_id] = verdict
        self.keys.update(_keys(verdict))
        while len(self._alerts) > self._max_alerts:
            _, dropped = self._alerts.popitem(last=False)
            self.keys.subtract(_keys(dropped))
            self.keys += Counter()  # drops the keys no alert uses any more
        return True

    def add_label(self, label: dict[str, Any]) -> None:
        self._labels[str(label["upload_id"])] = label  # the latest decision is the one in force

    def add_claim(self, event: dict[str, Any]) -> None:
        upload_id, claim = str(event["upload_id"]), Claim.from_event(event)
        holder = self._claims.get(upload_id)
        if claim.released:
            if holder is not None and holder.console == claim.console:
                self._claims[upload_id] = None
            return
        if holder is None or holder.expires_at <= claim.claimed_at or holder.console == claim.console:
            self._claims[upload_id] = claim

    # -- reading

    def holder(self, upload_id: str, now: datetime) -> Claim | None:
        claim = self._claims.get(upload_id)
        return claim if claim is not None and claim.expires_at > now else None

    def state_of(self, upload_id: str, now: datetime) -> str:
        label = self._labels.get(upload_id)
        if label is not None:
            return str(label["decision"])
        return "claimed" if self.holder(upload_id, now) is not None else "undecided"

    def alert(self, upload_id: str) -> dict[str, Any] | None:
        return self._alerts.get(upload_id)

    def view(self, upload_id: str, now: datetime) -> dict[str, Any]:
        """One alert as the page shows it: the verdict, its decision state, who holds it."""
        holder, label = self.holder(upload_id, now), self._labels.get(upload_id)
        return {
            "verdict": self._alerts[upload_id],
            "state": self.state_of(upload_id, now),
            "claim": None if holder is None else {"moderator": holder.moderator, "mine": holder.console == self.console,
                                                  "expires_at": holder.expires_at.isoformat()},
            "label": None if label is None else {k: label.get(k) for k in ("decision", "moderator", "decided_at",
                                                                            "note")},
        }

    def alerts(self, filters: Filters, now: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """The newest alerts first that pass the filters."""
        out = []
        for upload_id in reversed(self._alerts):
            if self._passes(upload_id, filters, now):
                out.append(self.view(upload_id, now))
                if len(out) >= limit:
                    break
        return out

    def histogram(self, bins: int = 40) -> dict[str, Any]:
        """Counts of recent clean and flagged scores in equal bins over the range seen, with the threshold."""
        scores = [s for s, _ in self._verdicts]
        low = min([*scores, self.threshold if self.threshold is not None else 0.0], default=0.0)
        high = max([*scores, self.threshold if self.threshold is not None else 1.0], default=1.0)
        low, high = (low - 0.01, high + 0.01) if high - low < 0.02 else (low, high)
        width = (high - low) / bins
        clean, flagged = [0] * bins, [0] * bins
        for score, is_flagged in self._verdicts:
            (flagged if is_flagged else clean)[min(bins - 1, int((score - low) / width))] += 1
        return {"low": low, "high": high, "clean": clean, "flagged": flagged, "threshold": self.threshold,
                "verdicts": len(self._verdicts), "first_stage": self.first_stage}

    def _passes(self, upload_id: str, f: Filters, now: datetime) -> bool:
        verdict = self._alerts[upload_id]
        score, state = float(verdict["score"]), self.state_of(upload_id, now)
        if f.min_score is not None and score < f.min_score or f.max_score is not None and score > f.max_score:
            return False
        if f.since is not None or f.until is not None:
            decided = parse_time(verdict["decided_at"])
            if f.since is not None and decided < f.since or f.until is not None and decided >= f.until:
                return False
        if f.state == "open":
            holder = self.holder(upload_id, now)
            return state == "undecided" or (holder is not None and holder.console == self.console
                                            and upload_id not in self._labels)
        return f.state is None or state == f.state


def _keys(verdict: dict[str, Any]) -> Iterable[str]:
    evidence = verdict.get("evidence") or {}
    for kind in ("input", "regenerated"):
        key = (evidence.get(kind) or {}).get("key")
        if isinstance(key, str):
            yield key
