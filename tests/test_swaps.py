"""The swap first stage's rivals: a pure function of the caption and a fixed vocabulary, the
mini domain's one-attribute rivals for every domain caption, and every caption it cannot check
word by word (a producer may send any caption) refused an early exit, with a reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streamdetect.detector.swaps import MAX_RIVALS, Swaps, VocabularyError, load_swaps
from streamdetect.mini.domain import ALL_SCENES, neighbours


def test_for_every_mini_caption_the_rivals_are_its_one_attribute_neighbours() -> None:
    swaps = load_swaps("mini")
    for scene in ALL_SCENES:
        rivals = swaps.rivals(scene.caption)
        assert sorted(rivals) == sorted(neighbours(scene.caption)) and swaps.unchecked(scene.caption) is None


def test_a_caption_that_cannot_be_checked_word_by_word_says_why() -> None:
    swaps = load_swaps("mini")
    assert "does not know: hexagon" in swaps.unchecked("a small red hexagon at the left on a white background")
    # What a caption leaves out has no rival: the mini vocabulary's template says what it must name.
    assert swaps.unchecked("a large orange triangle at the left on a large background") == \
        "does not follow the vocabulary's templates"
    assert swaps.unchecked("a small red circle at the the left on a white background") == \
        "does not follow the vocabulary's templates"
    no_template = Swaps(swaps.kinds, swaps.fixed)
    assert no_template.unchecked("a at the on a background") == "no word to swap"
    assert no_template.unchecked("a large orange triangle at the left on a large background") is None
    assert no_template.unchecked("") == "no word to swap" and swaps.rivals("") == []
    assert no_template.unchecked(" ".join(["red"] * 20)) == f"more than {MAX_RIVALS} rivals"
    assert len(swaps.rivals(" ".join(["red"] * 20))) == MAX_RIVALS
    assert swaps.unchecked(" ".join(["a"] * 65)) == "more than 64 words"
    # Case and spacing do not matter; the rivals come back lower-cased and single-spaced.
    assert swaps.unchecked("A  Small RED circle at the left on a white background") is None
    assert "a large red circle at the left on a white background" in swaps.rivals("A  Small RED circle at the left "
                                                                                     "on a white background")


def test_hostile_captions_get_an_answer_quickly_and_a_bounded_one() -> None:
    swaps = load_swaps("general")
    start = time.perf_counter()
    for caption in ("red " * 500_000, "\x00\u202e\ud800 red", "a" * 1_000_000, "🙂 " * 10_000, "a red car\n\t" * 999):
        reason, rivals = swaps.unchecked(caption), swaps.rivals(caption)
        assert reason is not None and len(reason) <= 500 and len(rivals) <= MAX_RIVALS
    assert time.perf_counter() - start < 5.0


def test_the_general_vocabulary_checks_a_plain_caption_and_not_an_unknown_object() -> None:
    swaps = load_swaps("general")
    assert swaps.unchecked("a man riding a horse next to a red car") is None
    rivals = swaps.rivals("a man riding a horse next to a red car")
    assert "a woman riding a horse next to a red car" in rivals and "a man riding a horse next to a blue car" in rivals
    assert "parking" in swaps.unchecked("a dog on a skateboard in a parking lot")


def test_a_bad_vocabulary_file_is_refused_with_its_reason(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="no such file, nor a packaged one"):
        load_swaps(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    for content, reason in (("{", "Expecting"), ('{"kinds": []}', "expected"),
                            ('{"kinds": {"colour": ["red"]}, "fixed": []}', "at least two"),
                            ('{"kinds": {"colour": ["red", "blue"], "hue": ["red", "green"]}, "fixed": []}', "twice"),
                            ('{"kinds": {"colour": ["red", "blue"]}, "fixed": ["red"]}', "twice"),
                            ('{"kinds": {"colour": ["Red", "blue"]}, "fixed": []}', "lower-case"),
                            ('{"kinds": {"colour": "red blue"}, "fixed": []}', "list of words"),
                            ('{"kinds": {"colour": ["red", "blue"]}, "fixed": ["a"], "templates": ["a {hue}"]}',
                             "expected fixed words and"),
                            ('{"kinds": {"colour": ["red", "blue"]}, "fixed": ["a"], "templates": "a {colour}"}',
                             "list of strings")):
        bad.write_text(content)
        with pytest.raises(VocabularyError, match=reason):
            load_swaps(str(bad))


def test_the_fingerprint_follows_the_content_not_the_file() -> None:
    mini = load_swaps("mini")
    same = Swaps(dict(mini.kinds), frozenset(mini.fixed), "copy", mini.templates)
    assert same.fingerprint() == mini.fingerprint() != load_swaps("general").fingerprint()
    kinds = json.loads(json.dumps(mini.kinds)) | {"size": ["small", "large", "medium"]}
    assert Swaps({k: tuple(v) for k, v in kinds.items()}, mini.fixed, templates=mini.templates).fingerprint() != \
        mini.fingerprint()
    assert Swaps(dict(mini.kinds), mini.fixed).fingerprint() != mini.fingerprint()  # the templates count
