"""The rivals of the cascade's ``swap`` first stage: the caption with one word swapped for
another of its kind (a colour for a colour, a shape for a shape), from a fixed vocabulary.

Unlike the captioner's own beam (first stage ``margin``), these rivals are a pure function of the
caption: an attacker who forces a caption one word away from the truth cannot push the truth
out of the rivals, so the caption must beat the true one under the robust encoders to exit. A
caption with a word the vocabulary neither swaps nor lists as fixed cannot be checked word by
word, and is never let through unregenerated (``Swaps.unchecked`` says why); nor is one with no
rival or with more rivals than a first stage may spend on one upload.

The rivals test the words a caption says, not what it leaves out: a caption that drops an
attribute (or says a size where the background belongs) has no rival for the missing claim. A
vocabulary may therefore list ``templates``, the shapes its captions take; a caption that
follows none of them is not checked either. Without templates (``general``) an omission goes
untested: README, "The cascade".

A vocabulary is a JSON file: ``{"kinds": {kind: [word, ...]}, "fixed": [word, ...], "templates":
["a {size} {shape} ...", ...]}``, where a word belongs to at most one kind, ``fixed`` holds the
words that carry no visual claim (a, the, on, ...) and ``templates`` (optional) are captions of
fixed words and ``{kind}`` slots. The packaged ones are in ``vocabularies/``: ``mini`` (the mini
domain's attributes and its one template) and ``general`` (a starting vocabulary of common
visual words for open-domain captions, no templates).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "vocabularies"
MAX_RIVALS = 64  # most rivals one caption is measured against; more and it is not checked
MAX_WORDS = 64  # a longer caption is not checked word by word (a producer may send any caption)


class VocabularyError(ValueError):
    """A vocabulary file is missing or malformed; the message says which and why."""


@dataclass(frozen=True)
class Swaps:
    kinds: dict[str, tuple[str, ...]]
    fixed: frozenset[str]
    name: str = "custom"
    templates: tuple[tuple[str, ...], ...] = ()  # fixed words and "{kind}" slots; empty: any shape

    def __post_init__(self) -> None:
        for template in self.templates:
            bad = [t for t in template
                   if t not in self.fixed and not (t.startswith("{") and t.endswith("}") and t[1:-1] in self.kinds)]
            if bad or not template:
                raise VocabularyError(f"vocabulary {self.name}: template {' '.join(template)!r} has {bad or 'no words'}: "
                                      "expected fixed words and {kind} slots")
        seen: dict[str, str] = {}
        for kind, words in self.kinds.items():
            if len(words) < 2:
                raise VocabularyError(f"vocabulary {self.name}: kind {kind!r} needs at least two words to swap")
            for word in words:
                if word != word.lower() or not word.isalpha():
                    raise VocabularyError(f"vocabulary {self.name}: {word!r} must be one lower-case word")
                if word in seen or word in self.fixed:
                    raise VocabularyError(f"vocabulary {self.name}: {word!r} is listed twice "
                                          f"({seen.get(word, 'fixed')} and {kind})")
                seen[word] = kind

    @cached_property
    def kind_of(self) -> dict[str, str]:
        return {word: kind for kind, words in self.kinds.items() for word in words}

    def rivals(self, caption: str) -> list[str]:
        """The caption with each swappable word replaced, in turn, by every other word of its
        kind (word order kept; lower-cased, single-spaced), at most MAX_RIVALS of them."""
        words = caption.lower().split()[:MAX_WORDS]
        kind_of, out = self.kind_of, []
        for i, word in enumerate(words):
            for other in self.kinds.get(kind_of.get(word, ""), ()):
                if other != word:
                    out.append(" ".join([*words[:i], other, *words[i + 1 :]]))
                    if len(out) == MAX_RIVALS:
                        return out
        return out

    def unchecked(self, caption: str) -> str | None:
        """Why this caption cannot be let through unregenerated, or None when every word was checked."""
        words = caption.lower().split()
        if len(words) > MAX_WORDS:
            return f"more than {MAX_WORDS} words"
        unknown = sorted({w for w in words if w not in self.fixed and w not in self.kind_of})
        if unknown:
            shown = ", ".join(unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            return f"words the vocabulary does not know: {shown}"[:500]
        if self.templates and not any(self._follows(words, t) for t in self.templates):
            return "does not follow the vocabulary's templates"
        count = sum(len(self.kinds[self.kind_of[w]]) - 1 for w in words if w in self.kind_of)
        if count == 0:
            return "no word to swap"
        if count > MAX_RIVALS:
            return f"more than {MAX_RIVALS} rivals"
        return None

    def _follows(self, words: list[str], template: tuple[str, ...]) -> bool:
        return len(words) == len(template) and all(
            self.kind_of.get(w) == t[1:-1] if t.startswith("{") else w == t for w, t in zip(words, template))

    def fingerprint(self) -> str:
        """What a fitted exit threshold depends on: the vocabulary's content."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        canonical = json.dumps({"kinds": self.kinds, "fixed": sorted(self.fixed),
                                "templates": [" ".join(t) for t in self.templates]}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_swaps(name_or_path: str) -> Swaps:
    """A packaged vocabulary by name (mini, general) or a JSON file by path."""
    path = PACKAGED / f"{name_or_path}.json" if (PACKAGED / f"{name_or_path}.json").is_file() else Path(name_or_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        packaged = ", ".join(sorted(p.stem for p in PACKAGED.glob("*.json")))
        raise VocabularyError(f"vocabulary {name_or_path!r}: no such file, nor a packaged one ({packaged})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocabularyError(f"vocabulary {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("kinds"), dict) or not isinstance(data.get("fixed"), list):
        raise VocabularyError(f"vocabulary {path}: expected {{\"kinds\": {{kind: [words]}}, \"fixed\": [words]}}")
    try:
        kinds = {str(k): tuple(str(w) for w in v) for k, v in data["kinds"].items() if isinstance(v, list)}
    except TypeError as exc:
        raise VocabularyError(f"vocabulary {path}: {exc}") from exc
    if len(kinds) != len(data["kinds"]):
        raise VocabularyError(f"vocabulary {path}: every kind must be a list of words")
    templates = data.get("templates", [])
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise VocabularyError(f"vocabulary {path}: templates must be a list of strings")
    return Swaps(kinds, frozenset(str(w) for w in data["fixed"]), path.stem,
                 tuple(tuple(t.lower().split()) for t in templates))
